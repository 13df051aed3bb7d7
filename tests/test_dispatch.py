"""The dispatcher without a cluster: polling backoff, resource use → SQLite, cancel_round in one go,
failed submissions leave the session unchanged, array status aggregation (pure), usage from events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import db_snapshot
from remote.dispatch import Backoff, Dispatcher
from remote.executors.base import Executor, JobStatus, usage_from_events
from sessions import jobs, rounds
from sessions.errors import FibError


class FakeExecutor(Executor):
    """Scripted states; records every call."""

    name = "fake"
    max_poll_s = 30.0

    def __init__(self, script=None):
        self.script = list(script or [])  # one JobStatus per status call (the last one repeats)
        self.calls: list[tuple] = []
        self.fail_submit: Exception | None = None
        self.fail_preflight: Exception | None = None
        self.n = 0

    def preflight(self):
        self.calls.append(("preflight",))
        if self.fail_preflight:
            raise self.fail_preflight

    def submit(self, job_dir):
        self.calls.append(("submit", Path(job_dir).name))
        if self.fail_submit:
            raise self.fail_submit
        self.n += 1
        return f"x{self.n}"

    def status(self, pairs):
        self.calls.append(("status", tuple(e for e, _ in pairs)))
        st = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return {e: st for e, _ in pairs}

    def cancel(self, ext, job_dir):
        self.calls.append(("cancel", ext))

    def cancel_many(self, pairs):
        self.calls.append(("cancel_many", tuple(e for e, _ in pairs)))

    def log_tail(self, ext, job_dir, lines=20):
        return "tail"

    def results(self, ext, job_dir):
        return Path(job_dir)


@pytest.fixture
def disp(session):
    rounds.new_round(session)
    sleeps: list[float] = []
    d = Dispatcher(session, sleep=sleeps.append)
    d.sleeps = sleeps
    return d


def use(d: Dispatcher, ex: FakeExecutor) -> FakeExecutor:
    d._executors[ex.name] = ex
    return ex


def test_backoff_schedule():
    b = Backoff(1.0, 30.0, 1.5)
    s = b.schedule(12)
    assert s[:4] == [1.0, 1.5, 2.25, 3.375]
    assert all(a <= b_ for a, b_ in zip(s, s[1:])) and s[-1] == 30.0 and max(s) == 30.0
    b.reset()
    assert b.next() == 1.0
    assert Backoff(1, 2).schedule(4) == [1.0, 1.5, 2.0, 2.0]
    with pytest.raises(ValueError):
        Backoff(5, 1)


def test_wait_backs_off_and_resets_on_state_change(disp):
    pending, running = JobStatus("PENDING"), JobStatus("RUNNING", None, 10.0, 1)
    ex = use(disp, FakeExecutor([pending] * 6 + [running] * 6 + [JobStatus("COMPLETED", None, 20.0, 1)]))
    job = disp.submit(1, "predict", {}, "fake")
    done = disp.wait(job["id"], poll_s=1.0, max_poll_s=30.0)
    assert done["state"] == "COMPLETED"
    queries = [c for c in ex.calls if c[0] == "status"]
    assert len(queries) == 13  # one batched query per poll, nothing more
    # pauses between queries (the fake sleep gets 1 s steps): 1, 1.5, 2.25, ... then back to 1 at RUNNING
    total = sum(disp.sleeps)
    pend = Backoff(1.0, 30.0).schedule(6)
    run = Backoff(1.0, 30.0).schedule(6)
    assert total == pytest.approx(sum(pend) + sum(run))
    assert max(disp.sleeps) <= 1.0  # events are folded every second in between (events_local)
    row = jobs.get(disp.session, job["id"])
    assert row["elapsed_s"] == 20.0 and row["gpus"] == 1 and row["gpu_hours"] == pytest.approx(20 / 3600)


def test_wait_caps_at_the_executors_max_poll(disp):
    ex = use(disp, FakeExecutor([JobStatus("RUNNING")] * 20 + [JobStatus("COMPLETED")]))
    ex.max_poll_s = 2.0
    ex.events_local = False
    job = disp.submit(1, "predict", {}, "fake")
    disp.wait(job["id"])
    assert max(disp.sleeps) == 2.0 and disp.sleeps[:3] == [1.0, 1.5, 2.0]


def test_usage_is_recorded_and_requeues_add_up(disp):
    job = jobs.create(disp.session, 1, "train", {}, "fake")
    job = jobs.record_usage(disp.session, job, 1800.0, 2)
    assert job["gpu_hours"] == pytest.approx(1.0)
    job = jobs.record_usage(disp.session, job, 3600.0, 2)
    assert job["elapsed_s"] == 3600.0 and job["gpu_hours"] == pytest.approx(2.0)
    job = jobs.record_usage(disp.session, job, 60.0, 2)  # requeued: Slurm's clock starts again
    assert job["elapsed_s"] == 3660.0 and job["gpu_hours"] == pytest.approx(2.0 + 120 / 3600)
    job = jobs.record_usage(disp.session, job, 120.0, 2)
    row = jobs.get(disp.session, job["id"])
    assert row["elapsed_s"] == 3720.0 and row["gpu_hours"] == pytest.approx(2.0 + 240 / 3600)
    cpu = jobs.record_usage(disp.session, jobs.create(disp.session, 1, "train", {}, "fake"), 50.0, 0)
    assert cpu["gpu_hours"] == 0.0


def test_cancel_round_is_one_call_per_executor(disp):
    ex = use(disp, FakeExecutor([JobStatus("RUNNING")]))
    a = disp.submit(1, "train", {}, "fake")
    b = disp.submit(1, "predict", {}, "fake")
    rounds.new_round(disp.session)
    other = disp.submit(2, "train", {}, "fake")
    out = disp.cancel_round(1)
    assert sorted(j["id"] for j in out) == sorted([a["id"], b["id"]])
    assert [c for c in ex.calls if c[0].startswith("cancel")] == [("cancel_many", ("x1", "x2"))]
    assert jobs.get(disp.session, a["id"])["state"] == "CANCELLED"
    assert jobs.get(disp.session, other["id"])["state"] == "PENDING"
    assert disp.cancel_round(1) == []


@pytest.mark.parametrize("where", ["preflight", "submit"])
def test_failed_submission_leaves_the_session_unchanged(disp, where):
    ex = use(disp, FakeExecutor([JobStatus("RUNNING")]))
    setattr(ex, f"fail_{where}", FibError("ssh box: cannot connect to 127.0.0.1:1 (refused)"))
    before = db_snapshot(disp.session.root)
    with pytest.raises(FibError) as e:
        disp.submit(1, "train", {"x": 1}, "fake")
    assert str(e.value) == "ssh box: cannot connect to 127.0.0.1:1 (refused)"
    assert db_snapshot(disp.session.root) == before


def test_refresh_survives_an_unreachable_executor(disp):
    ex = use(disp, FakeExecutor([JobStatus("RUNNING")]))
    job = disp.submit(1, "train", {}, "fake")

    def down(pairs):
        raise FibError("ssh box: cannot connect")

    ex.status = down
    disp.refresh()
    assert disp.errors == {"fake": "ssh box: cannot connect"}
    assert jobs.get(disp.session, job["id"])["state"] == "PENDING"


def test_usage_from_events(tmp_path):
    ev = tmp_path / "events.jsonl"
    lines = [{"t": 100.0, "type": "started", "gpus": 1}, {"t": 130.0, "type": "progress"},
             {"t": 200.0, "type": "started", "gpus": 1}, {"t": 260.0, "type": "finished"}]
    ev.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert usage_from_events(tmp_path, running=False) == (90.0, 1)  # two runs: 30 s + 60 s
    assert usage_from_events(tmp_path, running=True, now=300.0) == (130.0, 1)
    assert usage_from_events(tmp_path / "nope", running=False) == (None, None)


def _array_dir(tmp_path, tasks, results):
    d = tmp_path / "job"
    for i in range(tasks):
        (d / "tasks" / str(i)).mkdir(parents=True)
        if results.get(i):
            (d / "tasks" / str(i) / "result.json").write_text(json.dumps(results[i]))
    (d / "array.json").write_text(json.dumps({"tasks": tasks, "blocks": 8}))
    return d


def test_array_status_is_the_aggregate_of_its_tasks(tmp_path):
    from remote.executors.slurm import Row, SlurmExecutor

    ex = SlurmExecutor()
    d = _array_dir(tmp_path, 3, {0: {"status": "completed"}})
    rows = {"10_0": Row("COMPLETED", "None", 30.0, 1), "10_1": Row("RUNNING", "None", 20.0, 1),
            "10_2": Row("PENDING", "JobArrayTaskLimit", 0.0, 1), "11": Row("PENDING", "Dependency", 0.0, 0)}
    st = ex.settle(rows, [("10,11", d)])["10,11"]
    assert st.state == "RUNNING" and st.elapsed_s == 50.0 and st.gpu_hours == pytest.approx(50 / 3600)
    rows["10_1"] = Row("FAILED", "NonZeroExitCode", 25.0, 1)
    (d / "tasks" / "1" / "stderr.log").write_text("RuntimeError: boom\n")
    st = ex.settle(rows, [("10,11", d)])["10,11"]
    assert st.state == "FAILED" and st.reason.startswith("array task 1 of 3:") and "boom" in st.reason
    done = {f"10_{i}": Row("COMPLETED", "None", 30.0, 1) for i in range(3)}
    st = ex.settle({**done, "11": Row("RUNNING", "None", 5.0, 0)}, [("10,11", d)])["10,11"]
    assert st.state == "RUNNING"
    (d / "result.json").write_text(json.dumps({"status": "completed"}))
    st = ex.settle({**done, "11": Row("COMPLETED", "None", 6.0, 0)}, [("10,11", d)])["10,11"]
    assert st.state == "COMPLETED" and st.elapsed_s == 96.0 and st.gpu_hours == pytest.approx(90 / 3600)
    assert ex.settle({}, [("10,11", d)])["10,11"].state == "COMPLETED"  # Slurm forgot; the directory remembers
    cancelled = {f"10_{i}": Row("CANCELLED by 0", "None", 1.0, 1) for i in range(3)}
    (d / "result.json").unlink()
    st = ex.settle({**cancelled, "11": Row("CANCELLED", "Dependency", 0.0, 0)}, [("10,11", d)])["10,11"]
    assert st.state == "CANCELLED"


def test_log_tail_of_an_array_job_includes_its_tasks(tmp_path):
    from remote.executors.base import read_tail

    d = _array_dir(tmp_path, 2, {})
    (d / "stderr.log").write_text("final line\n")
    (d / "tasks" / "1" / "stderr.log").write_text("a\nb\n")
    assert read_tail(d, 20).splitlines() == ["final line", "task 1: a", "task 1: b"]
    assert read_tail(d, 1) == "task 1: b"
