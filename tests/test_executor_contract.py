"""One contract, every executor (zarr-python's StoreTests pattern).

`ExecutorContract` holds the tests; each subclass says how to make its executor
and where the job data must live. Real jobs throughout: tiny `train` runs of
`python -m remote.run` (a 16×64×64 volume, a 2-level U-Net with base 4), one
that runs until it is cancelled, one whose volume does not exist.
Slurm and SSH need tests/infra/up.sh's loopback cluster (markers `slurm`,
`ssh`): they skip with the reason without it, and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import tifffile

from conftest import blobs_volume
from sessions import jobfiles
from sessions.jobs import ACTIVE, TERMINAL

WAIT_S = 240  # generous: 2 cores shared with whatever else runs


def _session_with_crop(root: Path) -> dict:
    """A session with one volume and one crop; returns a train spec template (paths under root)."""
    from sessions import labels, rounds
    from sessions.volumes import catalog
    from sessions.workspace import init_session

    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(root / "v.tif", raw)
    tifffile.imwrite(root / "c.tif", gt + 1)
    s = init_session(root / "s")
    try:
        catalog.ingest(s, root / "v.tif", voxel_size=(8, 8, 8))
        rnd = rounds.new_round(s)
        labels.add_crop(s, rnd["n"], "v", root / "c.tif", (0, 0, 0), ["bg", "blob"])
        spec = rounds.train_spec(s, rnd, target="blob", iterations=3, patch=(8, 32, 32), base=4, levels=2,
                                 threads=1, checkpoint_every=1000)
    finally:
        s.close()
    return {**spec, "kind": "train", "log_every": 1}


class Jobs:
    """Job directories with real specs: quick (completes), long (runs until stopped), broken (fails)."""

    def __init__(self, spec: dict, root: Path):
        self.spec, self.root, self.n = spec, root, 0

    def make(self, variant: str = "quick") -> Path:
        self.n += 1
        spec = json.loads(json.dumps(self.spec))
        if variant == "long":
            spec["iterations"] = 1_000_000
        elif variant == "broken":
            spec["volume"]["path"] = str(self.root / "nowhere.ome.zarr")
        spec["job_id"] = f"t{self.n}-{variant}"
        d = self.root / "jobs" / spec["job_id"]
        d.mkdir(parents=True)
        jobfiles.atomic_write_json(d / "spec.json", spec)
        return d


def events(job_dir: Path, type_: str | None = None) -> list[dict]:
    evs = jobfiles.read_events(job_dir)[0]
    return [e for e in evs if type_ is None or e["type"] == type_]


class ExecutorContract:
    """Subclasses provide `make_executor` (a fresh instance each call) and may move `data_root`."""

    @pytest.fixture(scope="class")
    @classmethod
    def data_root(cls, tmp_path_factory):
        return tmp_path_factory.mktemp("contract")

    @pytest.fixture(scope="class")
    @classmethod
    def jobs(cls, data_root):
        return Jobs(_session_with_crop(data_root), data_root)

    @pytest.fixture
    def executor(self, request):
        ex = self.make_executor(request)
        yield ex
        if hasattr(ex, "close"):
            ex.close()

    def make_executor(self, request):
        raise NotImplementedError

    # -- helpers
    def wait(self, ex, pairs, until, timeout=WAIT_S):
        """Poll status (batched) until `until(states)` holds; return the last states and every state seen."""
        seen: dict[str, list[str]] = {e: [] for e, _ in pairs}
        t0 = time.monotonic()
        while True:
            st = ex.status(pairs)
            assert set(st) == {e for e, _ in pairs}, f"status must answer for every job: {st}"
            for e, s in st.items():
                assert s.state in ACTIVE + TERMINAL, s
                if not seen[e] or seen[e][-1] != s.state:
                    seen[e].append(s.state)
            if until(st):
                return st, seen
            if time.monotonic() - t0 > timeout:
                logs = {str(d): jobfiles.tail(d / "stderr.log", 5) for _, d in pairs}
                raise AssertionError(f"timed out after {timeout} s; states {st}; seen {seen}; stderr {logs}")
            time.sleep(0.5)

    # -- the contract
    def test_submit_runs_to_completion(self, executor, jobs):
        d = jobs.make("quick")
        ext = executor.submit(d)
        assert isinstance(ext, str) and ext
        st, seen = self.wait(executor, [(ext, d)], lambda s: s[ext].state in TERMINAL)
        assert st[ext].state == "COMPLETED", (st, jobfiles.tail(d / "stderr.log"))
        assert set(seen[ext]) <= {"PENDING", "RUNNING", "COMPLETED"}, seen
        # the job's files are here, locally, whatever the executor
        res = json.loads((d / "result.json").read_text())
        assert res["status"] == "completed" and res["iterations"] == 3
        assert (d / res["checkpoint"]).stat().st_size > 0
        types = [e["type"] for e in events(d)]
        assert types[0] == "started" and types[-1] == "finished" and "progress" in types
        assert (d / "stdout.log").exists() and (d / "stderr.log").exists()
        # resource use: elapsed wall time and GPUs (none here: CPU jobs, no gres) → GPU-hours
        assert st[ext].elapsed_s is not None and 0 < st[ext].elapsed_s < WAIT_S, st[ext]
        assert st[ext].gpus is not None and st[ext].gpu_hours == pytest.approx(st[ext].gpus * st[ext].elapsed_s / 3600)
        if not __import__("torch").cuda.is_available():
            assert st[ext].gpus == 0 and st[ext].gpu_hours == 0.0, st[ext]
        # results: the job directory, here, with what the job wrote (over SSH: synced back again)
        if not executor.events_local:
            (d / "result.json").unlink()
        assert Path(executor.results(ext, d)) == d and json.loads((d / "result.json").read_text()) == res
        assert isinstance(executor.log_tail(ext, d, 5), str)
        # a fresh executor (a restarted TUI) sees the same
        fresh = self.make_executor(None)
        try:
            assert fresh.status([(ext, d)])[ext].state == "COMPLETED"
        finally:
            getattr(fresh, "close", lambda: None)()

    def test_batched_status_failure_and_cancel(self, executor, jobs):
        long_d, broken_d = jobs.make("long"), jobs.make("broken")
        long_ext = executor.submit(long_d)
        broken_ext = executor.submit(broken_d)
        assert long_ext != broken_ext
        pairs = [(long_ext, long_d), (broken_ext, broken_d)]
        # one call answers for both; the long one gets going, the broken one fails with its reason
        st, _ = self.wait(executor, pairs, lambda s: s[broken_ext].state in TERMINAL and s[long_ext].state == "RUNNING"
                          and events(long_d, "progress"))
        assert st[broken_ext].state == "FAILED"
        assert "nowhere.ome.zarr" in (st[broken_ext].reason or ""), st[broken_ext]
        assert json.loads((broken_d / "result.json").read_text())["status"] == "failed"
        # the log tail shows why (over SSH it is pulled again if the local copy is gone)
        if not executor.events_local:
            (broken_d / "stderr.log").unlink()
        log = executor.log_tail(broken_ext, broken_d, 30)
        assert "nowhere.ome.zarr" in log, log
        assert len(executor.log_tail(broken_ext, broken_d, 2).splitlines()) <= 2
        assert st[long_ext].elapsed_s is not None and st[long_ext].elapsed_s > 0

        executor.cancel(long_ext, long_d)
        st, _ = self.wait(executor, pairs, lambda s: s[long_ext].state in TERMINAL, timeout=90)
        assert st[long_ext].state == "CANCELLED", st
        assert not (long_d / "result.json").exists()
        # cancel is SIGTERM first: training checkpoints before it goes (events arrive here, even over SSH)
        t0 = time.monotonic()
        while not events(long_d, "interrupted") and time.monotonic() - t0 < 20:
            time.sleep(0.3)
            executor.status(pairs)
        assert events(long_d, "interrupted")[0]["signal"] == "SIGTERM"
        assert (long_d / "checkpoint.pt").exists()
        # cancelling again, or cancelling a job that already ended, is harmless
        executor.cancel(long_ext, long_d)
        executor.cancel(broken_ext, broken_d)
        fresh = self.make_executor(None)
        try:
            again = fresh.status(pairs)
        finally:
            getattr(fresh, "close", lambda: None)()
        assert again[long_ext].state == "CANCELLED" and again[broken_ext].state == "FAILED", again

    def test_status_of_no_jobs_is_empty(self, executor):
        assert executor.status([]) == {}

    def is_stopped(self, executor, ext, job_dir) -> bool:
        """Whether the job's process no longer runs (each executor asks its own way)."""
        raise NotImplementedError

    def test_deleted_job_directory_fails_and_stops_the_job(self, executor, jobs):
        d = jobs.make("long")
        ext = executor.submit(d)
        self.wait(executor, [(ext, d)], lambda s: s[ext].state == "RUNNING" and events(d, "progress"))
        t0 = time.monotonic()
        while d.exists() and time.monotonic() - t0 < 10:  # the job may be writing a file as we delete
            shutil.rmtree(d, ignore_errors=True)
        assert not d.exists()
        st = executor.status([(ext, d)])[ext]
        assert st.state == "FAILED" and "was deleted" in st.reason and str(d.name) in st.reason, st
        assert "\n" not in st.reason
        assert not d.exists()  # nobody recreated it (an SSH pull must not)
        t0 = time.monotonic()
        while not self.is_stopped(executor, ext, d) and time.monotonic() - t0 < 60:
            time.sleep(0.5)
        assert self.is_stopped(executor, ext, d), "the job outlived its directory"
        assert executor.status([(ext, d)])[ext].state == "FAILED"  # asking again is harmless


class TestLocalExecutor(ExecutorContract):
    def make_executor(self, request):
        from remote.executors.local import LocalExecutor

        return LocalExecutor()

    def test_status_at_once_after_submit(self, executor, jobs):
        """Read back the instant it is submitted, a job is active, both to us and to a later
        fibtui that finds it by PID (regression: mid-exec, /proc/<pid>/cmdline is empty, and
        the job was reported FAILED before it had started)."""
        from remote.executors.local import LocalExecutor

        pairs = []
        for i in range(20):  # the window is short: before the fix, 1 in 5 tries landed in it
            d = jobs.root / "jobs" / f"at-once-{i}"
            d.mkdir(parents=True)
            jobfiles.atomic_write_json(d / "spec.json", {"kind": "no-such-kind", "job_id": d.name})
            ext = executor.submit(d)
            later = LocalExecutor().status([(ext, d)])[ext]
            mine = executor.status([(ext, d)])[ext]
            assert later.state in ACTIVE and mine.state in ACTIVE, (i, later, mine)
            pairs.append((ext, d))
        st, _ = self.wait(executor, pairs, lambda s: all(v.state in TERMINAL for v in s.values()))
        for ext, _ in pairs:  # failed for its own reason, with a result, not "ended without a result"
            assert st[ext].state == "FAILED" and "unknown job kind" in st[ext].reason, st[ext]

    def is_stopped(self, executor, ext, job_dir):
        from remote.executors.local import _proc_state

        executor.status([(ext, job_dir)])  # reaps our own child
        return _proc_state(int(ext), Path(job_dir).resolve()) != "alive"


def _slurm_stopped(slurm, ext) -> bool:
    rows = slurm.query([ext])
    return not any(r.state.split()[0] in ("RUNNING", "PENDING", "COMPLETING", "CONFIGURING") for r in rows.values())


@pytest.mark.slurm
class TestSlurmExecutor(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _cluster(self, slurm_infra):
        self.infra = slurm_infra

    def make_executor(self, request):
        from remote.executors.slurm import SlurmExecutor
        from remote.profiles import ClusterProfile

        return SlurmExecutor(ClusterProfile(name="ci", partition="debug", time="00:10:00", cpus=1, mem="500M"))

    def is_stopped(self, executor, ext, job_dir):
        return _slurm_stopped(executor, ext)


class _SSHBase(ExecutorContract):
    scheduler = "direct"

    @pytest.fixture(autouse=True)
    def _cluster(self, ssh_infra):
        self.infra = ssh_infra

    @pytest.fixture(scope="class")
    @classmethod
    def data_root(cls, ssh_infra):
        # jobs run as the SSH user: their inputs must be readable by it (a 0755 dir in the 1777 work dir)
        d = Path(tempfile.mkdtemp(prefix="contract-", dir=ssh_infra.ssh_workdir))
        d.chmod(0o755)
        (d / "remote").mkdir(mode=0o1777)
        (d / "remote").chmod(0o1777)  # the remote work dir: the SSH user writes job copies there
        yield d
        shutil.rmtree(d, ignore_errors=True)

    @pytest.fixture(autouse=True)
    def _remote_workdir(self, data_root):
        self.remote_workdir = data_root / "remote"

    def make_executor(self, request):
        from remote.executors.ssh import SSHExecutor

        i = self.infra
        return SSHExecutor(i.ssh_host, ssh_config=i.ssh_config, known_hosts=i.known_hosts,
                           remote_workdir=str(self.remote_workdir), python=i.ssh_python or None,
                           scheduler=self.scheduler, remote_setup=(f"export SLURM_CONF={i.slurm_conf}",))

    def is_stopped(self, executor, ext, job_dir):
        if executor.scheduler == "slurm":
            return _slurm_stopped(executor._slurm, ext)
        return executor._probe([(ext, executor.remote_dir(job_dir))]).get(ext) != "alive"


@pytest.mark.ssh
class TestSSHExecutor(_SSHBase):
    pass


@pytest.mark.ssh
@pytest.mark.slurm
class TestSSHSlurmExecutor(_SSHBase):
    """sbatch/squeue/scancel on the far side of the SSH connection."""

    scheduler = "slurm"

    @pytest.fixture(autouse=True)
    def _cluster(self, ssh_infra, slurm_infra):
        self.infra = ssh_infra
