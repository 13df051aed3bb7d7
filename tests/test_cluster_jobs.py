"""Issue 4 against the real loopback Slurm + sshd: prediction as a job array, cancelling a round in one
scancel, GPU-hours from Slurm's TRES, SSH reconnect and keepalive, quoting under hypothesis, and bad input
(unreachable host, a remote without fibtui, a remote job directory deleted) as one line each with the
session unchanged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import blobs_volume, db_snapshot
from remote.dispatch import Dispatcher
from remote.executors.slurm import Shell, SlurmExecutor
from remote.profiles import ClusterProfile
from sessions import jobfiles, jobs
from sessions.errors import FibError


# ----------------------------------------------------------------- helpers

def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class CountingShell(Shell):
    """The local Shell, recording every command it runs."""

    def __init__(self):
        self.argv: list[list[str]] = []

    def run(self, argv, **kw):
        self.argv.append(list(argv))
        return super().run(argv, **kw)

    def count(self, cmd: str) -> int:
        return sum(1 for a in self.argv if a[0] == cmd)


def _predict_session(root: Path, shape=(32, 256, 256)):
    """A session with a volume big enough for several prediction blocks, and a checkpoint (random weights:
    equality of array vs single-process prediction does not need a trained model)."""
    import torch

    from remote.model import UNet3D, UNetConfig
    from sessions import rounds
    from sessions.volumes import catalog
    from sessions.workspace import init_session

    raw, _ = blobs_volume(shape, seed=5)
    tifffile.imwrite(root / "v.tif", raw)
    s = init_session(root / "s")
    catalog.ingest(s, root / "v.tif", voxel_size=(8, 8, 8))
    rounds.new_round(s)
    torch.manual_seed(0)
    cfg = UNetConfig(voxel_size=(8, 8, 8), base=4, levels=2)
    ck = root / "model.pt"
    torch.save({"config": cfg.to_dict(), "model": UNet3D(cfg).state_dict()}, ck)
    vol = catalog.get_volume(s, "v")
    spec = {"volume": {"name": "v", "path": str(s.path(vol["path"])), "voxel_size": [8, 8, 8]},
            "checkpoint": str(ck), "threads": 1, "device": "cpu", "block": [16, 128, 128]}
    return s, spec


def _train_spec(s) -> dict:
    from sessions import labels, rounds

    raw = np.zeros((16, 64, 64), np.uint8)
    raw[:, 20:40, 20:40] = 1
    tifffile.imwrite(s.root.parent / "c.tif", raw + 1)
    rnd = rounds.current(s)
    labels.add_crop(s, rnd["n"], "v", s.root.parent / "c.tif", (0, 0, 0), ["bg", "blob"])
    spec = rounds.train_spec(s, rnd, target="blob", iterations=1_000_000, patch=(8, 32, 32), base=4, levels=2,
                             threads=1, checkpoint_every=1000)
    return {**spec, "log_every": 1}


SLURM_CI = dict(partition="debug", time="00:10:00", cpus=1, mem="500M")


# ----------------------------------------------------------------- Slurm: job array, cancel_round, GPU-hours

@pytest.mark.slurm
def test_prediction_as_job_array_equals_single_process(slurm_infra, tmp_path):
    """8 blocks over a 3-task array (throttle 2) + a dependent final step: each task its own ledger, logs and
    events; the stitched multiscale output equals the local single-process prediction, level by level."""
    from remote import predict
    from sessions.volumes import omezarr

    s, spec = _predict_session(tmp_path)
    shell = CountingShell()
    ex = SlurmExecutor(ClusterProfile(name="arr", array_tasks=3, array_throttle=2, **SLURM_CI), shell=shell)
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    t0 = time.monotonic()
    job = d.submit(1, "predict", spec, ex.name)
    assert "," in job["external_id"]  # <array>,<final step>
    seen = []
    done = d.wait(job["id"], on_update=lambda j: seen.append((j["state"], j["progress"])), poll_s=0.5, max_poll_s=2)
    secs = time.monotonic() - t0
    jd = jobs.job_dir(s, done)
    assert done["state"] == "COMPLETED", (done, d.log_tail(job["id"], 30))
    assert done["progress"] == 1.0 and done["gpu_hours"] == 0.0 and done["elapsed_s"] > 0
    res = json.loads((jd / "result.json").read_text())
    assert res["tasks"] == 3 and res["blocks"] == 8
    ledgers = [set((jd / "tasks" / str(i) / "blocks.done").read_text().split()) for i in range(3)]
    assert all(ledgers) and sum(map(len, ledgers)) == 8 and len(set.union(*ledgers)) == 8  # disjoint, complete
    for i in range(3):
        assert json.loads((jd / "tasks" / str(i) / "result.json").read_text())["status"] == "completed"
        assert [e["type"] for e in jobfiles.read_events(jd / "tasks" / str(i))[0]][0] == "started"
    # the array ran through one squeue per refresh, and sbatch twice (array + final), nothing else
    assert shell.count("sbatch") == 2
    # the same prediction in one local process
    local = tmp_path / "local"
    local.mkdir()
    predict.run({**spec, "kind": "predict"}, local)
    a = omezarr.open_multiscale(jd / "prediction.ome.zarr")
    b = omezarr.open_multiscale(local / "prediction.ome.zarr")
    assert len(a.levels) == len(b.levels) > 1
    for la, lb in zip(a.levels, b.levels):
        np.testing.assert_array_equal(la[...], lb[...])
    print(f"array prediction: {secs:.1f} s submit→COMPLETED; progress seen {sorted(set(p for _, p in seen))}")
    s.close()


def _measure_session(root: Path):
    """A session with one round, and a measure spec of the generator's truth masks (8 blocks; --split on)."""
    from sessions import rounds
    from sessions.measure import split_settings
    from sessions.workspace import init_session
    from test_objects import truth_spec

    spec, truth = truth_spec(root, (48, 192, 192), 12.0, 7)
    s = init_session(root / "s")
    rounds.new_round(s)
    return s, {**spec, "pores": {**spec["pores"], "split": split_settings()}}, truth


def _same_measure(jd: Path, spec: dict, local: Path) -> dict:
    """The array's result and tables equal the single local job's; returns the array's result."""
    import pyarrow.parquet as pq

    from remote import objects

    local.mkdir()
    single = objects.measure({**spec, "kind": "measure"}, local)
    res = json.loads((jd / "result.json").read_text())
    assert res["readout"] == single["readout"] and res["objects"] == single["objects"]
    for name in ("pores", "nuclei"):
        assert pq.read_table(jd / f"{name}.parquet").equals(pq.read_table(local / f"{name}.parquet")), name
    return res


@pytest.mark.slurm
def test_measure_as_job_array_equals_single_job(slurm_infra, tmp_path):
    """The measure's label pass as a 3-task array (throttle 2; --array-tasks in the spec, as a prediction's) + the
    dependent final step: each task its own ledger under tasks/<i>/; the object table, nuclei and density equal
    the single local job's."""
    s, spec, truth = _measure_session(tmp_path)
    shell = CountingShell()
    ex = SlurmExecutor(ClusterProfile(name="marr", array_throttle=2, **SLURM_CI), shell=shell)
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    job = d.submit(1, "measure", {**spec, "array_tasks": 3}, ex.name)
    assert "," in job["external_id"] and shell.count("sbatch") == 2  # <array>,<final step>
    seen = []
    done = d.wait(job["id"], on_update=lambda j: seen.append(j["progress"]), poll_s=0.5, max_poll_s=2)
    jd = jobs.job_dir(s, done)
    assert done["state"] == "COMPLETED", (done, d.log_tail(job["id"], 30))
    assert done["progress"] == 1.0 and done["elapsed_s"] > 0
    assert json.loads((jd / "array.json").read_text()) == {"tasks": 3, "blocks": 8, "passes": 2}
    assert "measure array of 3 tasks" in (jd / "array.sbatch").read_text()
    for i in range(3):
        assert json.loads((jd / "tasks" / str(i) / "result.json").read_text())["status"] == "completed"
        assert [e["type"] for e in jobfiles.read_events(jd / "tasks" / str(i))[0]][0] == "started"
    res = _same_measure(jd, spec, tmp_path / "local")
    assert res["tasks"] == 3 and res["readout"]["pores"] == truth["pore_count"]
    print(f"measure array: progress seen {sorted(set(seen))}")
    s.close()


@pytest.mark.slurm
def test_cancel_round_cancels_every_job_in_one_scancel(slurm_infra, tmp_path):
    s, pspec = _predict_session(tmp_path, shape=(32, 256, 128))
    tspec = _train_spec(s)
    shell = CountingShell()
    ex = SlurmExecutor(ClusterProfile(name="cr", array_tasks=2, **SLURM_CI), shell=shell)
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    a = d.submit(1, "train", tspec, ex.name)
    b = d.submit(1, "train", tspec, ex.name)
    p = d.submit(1, "predict", pspec, ex.name)  # an array + its final step
    ids = [i for j in (a, b, p) for i in j["external_id"].split(",")]
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        if any(j["state"] == "RUNNING" for j in d.refresh()):
            break
        time.sleep(0.5)
    before = shell.count("scancel")
    out = d.cancel_round(1)
    assert shell.count("scancel") == before + 1
    cmd = [c for c in shell.argv if c[0] == "scancel"][-1]
    assert sorted(cmd[1:]) == sorted(ids)
    assert {j["id"] for j in out} == {a["id"], b["id"], p["id"]}
    assert all(jobs.get(s, j["id"])["state"] == "CANCELLED" for j in (a, b, p))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        q = subprocess.run(["squeue", "-h", "--array", "-j", ",".join(ids), "-o", "%i %T"], capture_output=True,
                           text=True).stdout.split("\n")
        live = [ln for ln in q if ln.strip() and ln.split()[1] in ("RUNNING", "PENDING", "CONFIGURING")]
        if not live:
            break
        time.sleep(0.5)
    assert not live, live
    s.close()


@pytest.mark.slurm
def test_gpu_hours_from_slurm_tres(slurm_infra, tmp_path):
    """A job given a (fake) GPU by --gres: squeue's tres-alloc says gres/gpu=1, GPU-hours = elapsed × 1."""
    s, _ = _predict_session(tmp_path, shape=(16, 64, 64))
    tspec = {**_train_spec(s), "iterations": 3}
    ex = SlurmExecutor(ClusterProfile(name="gpu", gres="gpu:1", **SLURM_CI))
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    job = d.submit(1, "train", tspec, ex.name)
    done = d.wait(job["id"], poll_s=0.5, max_poll_s=2)
    assert done["state"] == "COMPLETED", d.log_tail(job["id"])
    row = jobs.get(s, job["id"])
    assert row["gpus"] == 1 and row["elapsed_s"] >= 1
    assert row["gpu_hours"] == pytest.approx(row["elapsed_s"] / 3600)
    s.close()


# ----------------------------------------------------------------- Slurm: resume a cancelled training

def _weights_equal(a: Path, b: Path) -> bool:
    import torch

    wa, wb = torch.load(a, weights_only=False)["model"], torch.load(b, weights_only=False)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slurm
@pytest.mark.parametrize("resume_on", ["slurm", "local"])
def test_slurm_cancelled_training_resumes_to_identical_weights(slurm_infra, tmp_path, resume_on):
    """scancel through Dispatcher.cancel: SIGTERM reaches the training, it checkpoints and exits; the new attempt
    (on Slurm again, or here on the local executor) continues from that iteration and ends on the weights of
    an uninterrupted run, bit for bit."""
    from sessions import rounds

    s, _ = _predict_session(tmp_path, shape=(16, 64, 64))
    spec = {**_train_spec(s), "iterations": 60, "checkpoint_every": 5}
    ex = SlurmExecutor(ClusterProfile(name="resume", **SLURM_CI))
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    try:
        ref = d.submit(1, "train", spec, "local")  # the uninterrupted run, side by side
        job = d.submit(1, "train", spec, ex.name)
        jd = jobs.job_dir(s, job)
        t0 = time.monotonic()
        while not any(e["type"] == "progress" and e["step"] >= 8 for e in jobfiles.read_events(jd)[0]):
            assert time.monotonic() - t0 < 120, (jobs.get(s, job["id"]), d.log_tail(job["id"]))
            assert not (jd / "result.json").exists(), "finished before it could be cancelled"
            time.sleep(0.1)
        assert d.cancel(job["id"])["state"] == "CANCELLED"
        d._settle(jobs.get(s, job["id"]), 60)  # Slurm lets it finish stopping
        at = jobs.resumable(s, jobs.get(s, job["id"]))
        stopped = [e for e in jobfiles.read_events(jd)[0] if e["type"] == "interrupted"]
        assert stopped and stopped[0]["signal"] == "SIGTERM" and at == stopped[0]["step"] < 60, stopped
        new = d.resume(job["id"], executor=None if resume_on == "slurm" else "local")
        assert new["executor"] == (ex.name if resume_on == "slurm" else "local") and new["resumes"] == job["id"]
        done = d.wait(new["id"], poll_s=0.5, max_poll_s=2)
        assert done["state"] == "COMPLETED", (done, d.log_tail(new["id"], 30))
        assert [e["step"] for e in jobfiles.read_events(jobs.job_dir(s, done))[0] if e["type"] == "resumed"] == [at]
        assert jobs.lineage(s, job["id"]) == [job["id"], new["id"]]
        assert rounds.started_from(s, 1) == "scratch"
        assert d.wait(ref["id"], poll_s=0.5)["state"] == "COMPLETED"
        assert _weights_equal(jobs.job_dir(s, ref) / "model.pt", jobs.job_dir(s, done) / "model.pt")
    finally:
        d.cancel_round(1)
        s.close()


@pytest.mark.ssh
def test_ssh_cancelled_training_resumes_from_the_pulled_checkpoint(ssh_infra, shared_tmp):
    """Over SSH the checkpoint a cancelled training writes on its way out is on the far side: resume pulls
    the old job directory first, puts its checkpoint.pt in the new one, and the attempt ends bit-identical."""
    remote = shared_tmp / "remote"
    remote.mkdir(mode=0o1777)
    remote.chmod(0o1777)
    s, _ = _predict_session(shared_tmp, shape=(16, 64, 64))
    spec = {**_train_spec(s), "iterations": 60, "checkpoint_every": 5}
    ex = _ssh(ssh_infra, remote)
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    try:
        ref = d.submit(1, "train", spec, "local")
        job = d.submit(1, "train", spec, ex.name)
        t0 = time.monotonic()
        while not (jobs.get(s, job["id"])["progress"] or 0) >= 8 / 60:
            assert time.monotonic() - t0 < 120, d.log_tail(job["id"])
            d.refresh()
            time.sleep(0.3)
        d.cancel(job["id"])
        new = d.resume(job["id"])
        assert new["executor"] == ex.name and new["resumes"] == job["id"]
        at = json.loads((jobs.job_dir(s, new) / "spec.json").read_text())["resume_from"]["iteration"]
        old_events = jobfiles.read_events(jobs.job_dir(s, job))[0]
        assert [e["step"] for e in old_events if e["type"] == "interrupted"] == [at]  # pulled before the copy
        done = d.wait(new["id"], poll_s=0.5, max_poll_s=2)
        assert done["state"] == "COMPLETED", (done, d.log_tail(new["id"], 30))
        assert d.wait(ref["id"], poll_s=0.5)["state"] == "COMPLETED"
        assert _weights_equal(jobs.job_dir(s, ref) / "model.pt", d.results(new["id"]) / "model.pt")
    finally:
        d.close()
        s.close()


# ----------------------------------------------------------------- SSH: reconnect, keepalive, quoting

def _ssh(infra, workdir, **kw):
    from remote.executors.ssh import SSHExecutor

    return SSHExecutor(infra.ssh_host, ssh_config=infra.ssh_config, known_hosts=infra.known_hosts,
                       remote_workdir=str(workdir), python=infra.ssh_python or None, **kw)


def _noop_job(root: Path, name: str = "noop", spec: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    jobfiles.atomic_write_json(d / "spec.json", {"kind": "noop", "job_id": name, **(spec or {})})
    return d


def _server_side_pids(port: int, state: Path) -> list[int]:
    """The sshd processes serving our client port (their socket: 127.0.0.1:2222 ↔ 127.0.0.1:port); never the
    listening daemon up.sh started."""
    daemons = {int(ln.split()[1]) for ln in (state / "pids").read_text().splitlines() if len(ln.split()) == 2}
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[2].endswith(":%04X" % port) and f[1].endswith(":08AE"):
            inodes.add(f[9])
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in daemons:
            continue
        try:
            if (p / "comm").read_text().strip() != "sshd":
                continue
            if any(os.readlink(fd).strip("socket:[]") in inodes for fd in (p / "fd").iterdir()
                   if os.readlink(fd).startswith("socket:")):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


@pytest.mark.ssh
@pytest.mark.parametrize("how", ["kill the server-side session", "close the socket under the transport"])
def test_ssh_reconnects_after_a_drop(ssh_infra, shared_tmp, how):
    remote = shared_tmp / "remote"
    remote.mkdir(mode=0o1777)
    remote.chmod(0o1777)
    ex = _ssh(ssh_infra, remote)
    try:
        d = _noop_job(shared_tmp)
        ext = ex.submit(d)
        t0 = time.monotonic()
        while (st := ex.status([(ext, d)])[ext]).state == "RUNNING" and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        assert st.state == "FAILED" and "unknown job kind" in st.reason
        assert ex.conn.keepalive_interval() == 30  # keepalive on the live transport
        transport = ex.conn.client().get_transport()
        if how.startswith("kill"):
            pids = _server_side_pids(transport.sock.getsockname()[1], ssh_infra.state)
            assert pids, "found no sshd process for our connection"
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
        else:
            transport.sock.shutdown(socket.SHUT_RDWR)
        again = ex.status([(ext, d)])[ext]  # reconnects by itself
        assert again == st
        assert ex.conn.client().get_transport() is not transport
        assert ex.log_tail(ext, d, 5) == jobfiles.tail(d / "stderr.log", 5)
    finally:
        ex.close()


@pytest.mark.ssh
def test_keepalive_follows_the_ssh_config(ssh_infra, tmp_path):
    from remote.executors.ssh import SSHConnection

    cfg = tmp_path / "config"
    cfg.write_text(ssh_infra.ssh_config.read_text().replace("    BatchMode yes", "    BatchMode yes\n"
                                                            "    ServerAliveInterval 7"))
    conn = SSHConnection(ssh_infra.ssh_host, ssh_config=cfg, known_hosts=ssh_infra.known_hosts)
    try:
        assert conn.keepalive_interval() == 7
    finally:
        conn.close()


@pytest.mark.ssh
def test_hostile_names_never_run_as_commands(ssh_infra, shared_tmp):
    """Session names, paths and messages with spaces, quotes, $(), backticks, newlines and unicode go through
    submission over SSH (SFTP paths, remote shell scripts, spec.json) and never execute."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    token = f"PWNED{os.getpid()}"  # what an injection would create, relative to wherever it ran
    sentinel = ssh_infra.ssh_workdir / token
    # names hold no "/": their payloads create `token` in the shell's cwd; messages may name the absolute path
    names = [f"$(touch {token})", f"`touch {token}`", f"'; touch {token}; '", f"\"; touch {token}; \"",
             f"\ntouch {token}\n", f"$(touch${{IFS}}{token})", f"|| touch {token} #", "ünï cödé ✓ 日本"]
    payloads = names + [f"$(touch {sentinel})", f"`touch {sentinel}`", f"'; touch {sentinel}; '"]
    chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00") | st.sampled_from(
        [" ", "'", '"', "$", "`", "\n", "\t", ";", "&", "|", "\\", "*", "~"])
    piece = st.text(chars, min_size=0, max_size=8)
    name = st.builds(lambda a, p, b: (a + p + b)[:60], piece, st.sampled_from(names), piece)
    message = st.builds(lambda a, p, b: a + p + b, piece, st.sampled_from(payloads), piece)
    home = Path(os.path.expanduser(f"~{ssh_infra.ssh_user}"))

    def created() -> list[str]:
        found = [str(sentinel)] if sentinel.exists() else []
        for top in (shared_tmp, home, Path.cwd(), Path(tempfile.gettempdir()), Path.home()):
            if top.is_dir():
                depth = 6 if top in (shared_tmp,) else 1
                proc = subprocess.run(["find", str(top), "-maxdepth", str(depth), "-name", token],
                                      capture_output=True, text=True)
                found += proc.stdout.split()
        return found

    remote = shared_tmp / "remote"
    remote.mkdir(mode=0o1777)
    remote.chmod(0o1777)
    ex = _ssh(ssh_infra, remote)
    started: list[tuple[str, Path]] = []
    n = {"i": 0}
    t0 = time.monotonic()

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(session=name, job=name, msg=message)
    def submit(session, job, msg):
        n["i"] += 1
        root = shared_tmp / f"{n['i']}-{session}"
        root.mkdir()
        d = _noop_job(root, f"{job}", {"message": msg, "session": session, "target_name": msg})
        started.append((ex.submit(d), d))

    try:
        submit()
        # let every job run to its end, then look again
        t1 = time.monotonic()
        pending = list(started)
        while pending and time.monotonic() - t1 < 30:
            st_ = ex.status(pending)
            pending = [(e, d) for e, d in pending if st_[e].state == "RUNNING"]
            time.sleep(0.3)
        assert not created(), f"a hostile string was executed: {created()}"
        assert len(started) == 25
        print(f"hypothesis over SSH: {len(started)} submissions in {time.monotonic() - t0:.1f} s")
    finally:
        ex.close()
        sentinel.unlink(missing_ok=True)


# ----------------------------------------------------------------- bad input: one line, session unchanged

@pytest.fixture
def round_session(session):
    from sessions import rounds

    rounds.new_round(session)
    return session


def _refused(d: Dispatcher, executor, spec=None) -> str:
    d._executors[executor.name] = executor
    before = db_snapshot(d.session.root)
    with pytest.raises(FibError) as e:
        d.submit(1, "train", spec or {"x": 1}, executor.name)
    msg = str(e.value)
    assert "\n" not in msg
    assert db_snapshot(d.session.root) == before, "a refused submission changed the session"
    return msg


def test_unreachable_host_is_one_line_and_changes_nothing(round_session, tmp_path):
    """Nothing listens on the port (the alias resolves to loopback): refused at the preflight, no job created."""
    from remote.executors.ssh import SSHExecutor

    port = _free_port()
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host gone\n    HostName 127.0.0.1\n    Port {port}\n    User nobody\n")
    ex = SSHExecutor("gone", ssh_config=cfg, known_hosts=tmp_path / "kh", remote_workdir="/tmp/x")
    msg = _refused(Dispatcher(round_session), ex)
    assert msg.startswith(f"ssh gone: cannot connect to 127.0.0.1:{port}"), msg


def _refused_over_ssh(ssh_infra, round_session, shared_tmp, python: str) -> str:
    """The one line a dispatch to the loopback host gets when its `python` cannot run fibtui's jobs."""
    from remote.executors.ssh import SSHExecutor

    ex = SSHExecutor(ssh_infra.ssh_host, ssh_config=ssh_infra.ssh_config, known_hosts=ssh_infra.known_hosts,
                     remote_workdir=str(shared_tmp), python=python, scheduler="direct")
    try:
        return _refused(Dispatcher(round_session), ex)
    finally:
        ex.close()


@pytest.mark.ssh
@pytest.mark.parametrize("python,says", [
    ("/nonexistent/bin/python", "not found; install fibtui there"),
    ("/bin/true", "cannot import fibtui's job code"),
])
def test_remote_without_fibtui_is_one_line_and_changes_nothing(ssh_infra, round_session, shared_tmp, python, says):
    msg = _refused_over_ssh(ssh_infra, round_session, shared_tmp, python)
    assert says in msg and python in msg and msg.startswith(f"ssh {ssh_infra.ssh_host}:"), msg


@pytest.mark.ssh
def test_system_python_without_fibtui_is_named(ssh_infra, round_session, shared_tmp):
    """A real interpreter that lacks fibtui: the probe's ModuleNotFoundError is in the line."""
    py = shutil.which("python3", path="/usr/bin")
    probe = subprocess.run(["runuser", "-u", ssh_infra.ssh_user, "--", py, "-c", "import remote.run"],
                           cwd="/", capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{py} imports fibtui for {ssh_infra.ssh_user} on this machine")
    msg = _refused_over_ssh(ssh_infra, round_session, shared_tmp, py)
    assert "No module named 'remote'" in msg and "pip install" in msg, msg


@pytest.mark.ssh
def test_remote_job_directory_deleted_under_a_running_job(ssh_infra, shared_tmp):
    """The far copy of the job directory goes away while the job runs: FAILED with the reason, job stopped."""
    from test_executor_contract import Jobs, _session_with_crop, events

    root = Path(tempfile.mkdtemp(dir=shared_tmp))
    root.chmod(0o755)
    remote = root / "remote"
    remote.mkdir(mode=0o1777)
    remote.chmod(0o1777)
    jb = Jobs(_session_with_crop(root), root)
    ex = _ssh(ssh_infra, remote)
    try:
        d = jb.make("long")
        ext = ex.submit(d)
        t0 = time.monotonic()
        while not (ex.status([(ext, d)])[ext].state == "RUNNING" and events(d, "progress")):
            assert time.monotonic() - t0 < 240, jobfiles.tail(d / "stderr.log")
            time.sleep(0.5)
        rdir = ex.remote_dir(d)
        subprocess.run(["runuser", "-u", ssh_infra.ssh_user, "--", "rm", "-rf", rdir], check=True)
        st = ex.status([(ext, d)])[ext]
        assert st.state == "FAILED" and "was deleted" in st.reason and rdir in st.reason, st
        t0 = time.monotonic()
        while ex._probe([(ext, rdir)]).get(ext) == "alive" and time.monotonic() - t0 < 30:
            time.sleep(0.3)
        assert ex._probe([(ext, rdir)]).get(ext) != "alive"
    finally:
        ex.close()


@pytest.mark.ssh
@pytest.mark.slurm
def test_prediction_array_over_ssh_slurm(ssh_infra, slurm_infra, shared_tmp):
    """The same array through SSH: store and task dirs prepared on the far side, sbatch there, the
    directory pulled back; the result equals the local single-process prediction."""
    from remote import predict
    from sessions.volumes import omezarr

    s, spec = _predict_session(shared_tmp, shape=(32, 256, 128))
    d, ex = _ssh_slurm_array(s, ssh_infra, shared_tmp, "ssharr")
    try:
        job = d.submit(1, "predict", spec, ex.name)
        done = d.wait(job["id"], poll_s=0.5, max_poll_s=2)
        assert done["state"] == "COMPLETED", (done, d.log_tail(job["id"], 30))
        jd = Path(d.results(job["id"]))
        assert json.loads((jd / "result.json").read_text())["tasks"] == 2
        local = shared_tmp / "local"
        local.mkdir()
        predict.run({**spec, "kind": "predict"}, local)
        a, b = omezarr.open_multiscale(jd / "prediction.ome.zarr"), omezarr.open_multiscale(local / "prediction.ome.zarr")
        for la, lb in zip(a.levels, b.levels, strict=True):
            np.testing.assert_array_equal(la[...], lb[...])
    finally:
        d.close()
        s.close()


@pytest.mark.ssh
@pytest.mark.slurm
def test_measure_array_over_ssh_slurm(ssh_infra, slurm_infra, shared_tmp):
    """The measure array through SSH: the envelope's label store and the task dirs made on the far side
    (`python -m remote.job_array`), sbatch there, pulled back; the same tables as the single local job."""

    s, spec, _ = _measure_session(shared_tmp)
    d, ex = _ssh_slurm_array(s, ssh_infra, shared_tmp, "sshmarr")
    try:
        job = d.submit(1, "measure", spec, ex.name)
        done = d.wait(job["id"], poll_s=0.5, max_poll_s=2)
        assert done["state"] == "COMPLETED", (done, d.log_tail(job["id"], 30))
        jd = Path(d.results(job["id"]))
        assert _same_measure(jd, spec, shared_tmp / "local")["tasks"] == 2
    finally:
        d.close()
        s.close()


def _ssh_slurm_array(s, ssh_infra, shared_tmp, name: str):
    """A Dispatcher whose SSH executor submits 2-task arrays to the loopback Slurm from a fresh remote workdir."""
    from remote.executors.ssh import SSHExecutor

    remote = shared_tmp / "remote"
    remote.mkdir(mode=0o1777)
    remote.chmod(0o1777)
    i = ssh_infra
    ex = SSHExecutor(i.ssh_host, ssh_config=i.ssh_config, known_hosts=i.known_hosts, remote_workdir=str(remote),
                     python=i.ssh_python or None, scheduler="slurm",
                     remote_setup=(f"export SLURM_CONF={i.slurm_conf}",),
                     profile=ClusterProfile(name=name, array_tasks=2, ssh_host=i.ssh_host, **SLURM_CI))
    d = Dispatcher(s)
    d._executors[ex.name] = ex
    return d, ex
