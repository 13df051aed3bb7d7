"""Against the real loopback Slurm + sshd (tests/infra/up.sh): refusals are one clear line; host keys
are checked; USR1 reaches training through the batch shell and the job requeues itself."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from remote.executors.slurm import SlurmExecutor
from remote.profiles import ClusterProfile
from sessions import jobfiles
from sessions.errors import FibError


def _job(tmp_path: Path, spec: dict | None = None) -> Path:
    d = tmp_path / "job"
    d.mkdir()
    jobfiles.atomic_write_json(d / "spec.json", spec or {"kind": "evaluate", "job_id": "j1"})
    return d


@pytest.mark.slurm
@pytest.mark.parametrize("profile,says", [
    (ClusterProfile(name="typo", partition="nosuchpartition"), "Invalid partition name specified"),
    (ClusterProfile(name="tpu", gres="tpu:1"), "Invalid generic resource (gres) specification"),
    (ClusterProfile(name="greedy", gres="gpu:5"), "Requested node configuration is not available"),
])
def test_sbatch_refusal_is_one_clear_line(slurm_infra, tmp_path, profile, says):
    d = _job(tmp_path, {"kind": "predict", "job_id": "j1"})  # a kind that asks for the profile's GPU
    with pytest.raises(FibError) as e:
        SlurmExecutor(profile).submit(d)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"sbatch refused job job (profile {profile.name!r}): {says}")
    assert f"[profiles.{profile.name}]" in msg


@pytest.mark.slurm
def test_fake_gpu_is_scheduled(slurm_infra, tmp_path):
    """gres from the profile reaches the job: CUDA_VISIBLE_DEVICES is set on the (fake) GPU node."""
    d = tmp_path / "gpujob"
    d.mkdir()
    (d / "probe.sh").write_text("#!/bin/bash\n#SBATCH --gres=gpu:1\necho \"gpus=$CUDA_VISIBLE_DEVICES\"\n")
    out = subprocess.run(["sbatch", "--parsable", "--wait", f"--output={d}/out", str(d / "probe.sh")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (d / "out").read_text().strip() in ("gpus=0", "gpus=1")


def _known_hosts(path: Path, line: str) -> Path:
    path.write_text(line + "\n")
    return path


def _fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.mark.ssh
def test_unknown_host_key_is_refused_with_its_fingerprint(ssh_infra, tmp_path):
    from remote.executors.ssh import SSHConnection

    empty = _known_hosts(tmp_path / "known_hosts", "")
    conn = SSHConnection(ssh_infra.ssh_host, ssh_config=ssh_infra.ssh_config, known_hosts=empty)
    with pytest.raises(FibError) as e:
        conn.run("true")
    msg = str(e.value)
    assert "\n" not in msg
    assert "[127.0.0.1]:2222 is not in" in msg and _fingerprint(ssh_infra.host_pubkey) in msg
    assert "ssh-ed25519 AAAA" in msg  # the line to add, once checked


@pytest.mark.ssh
def test_changed_host_key_is_refused_loudly(ssh_infra, tmp_path):
    from remote.executors.ssh import SSHConnection

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    pub = (tmp_path / "impostor.pub").read_text().split()
    kh = _known_hosts(tmp_path / "known_hosts", f"[127.0.0.1]:2222 {pub[0]} {pub[1]}")
    conn = SSHConnection(ssh_infra.ssh_host, ssh_config=ssh_infra.ssh_config, known_hosts=kh)
    with pytest.raises(FibError) as e:
        conn.run("true")
    msg = str(e.value)
    assert "\n" not in msg and "has CHANGED" in msg
    assert _fingerprint(tmp_path / "impostor.pub") in msg and _fingerprint(ssh_infra.host_pubkey) in msg
    assert "ssh-keygen -R '[127.0.0.1]:2222'" in msg


@pytest.mark.ssh
def test_pinned_key_connects_and_quotes_arguments(ssh_infra):
    from remote.executors.ssh import RemoteShell, SSHConnection

    conn = SSHConnection(ssh_infra.ssh_host, ssh_config=ssh_infra.ssh_config, known_hosts=ssh_infra.known_hosts)
    try:
        nasty = "a b'c\"$(touch /tmp/pwned-fibtui);`id`"
        proc = RemoteShell(conn).run(["printf", "%s|%s", nasty, "$HOME"])
        assert proc.returncode == 0 and proc.stdout == f"{nasty}|$HOME"
        assert not os.path.exists("/tmp/pwned-fibtui")
        rc, out, _ = conn.run("id -un")
        assert rc == 0 and out.strip() == ssh_infra.ssh_user
    finally:
        conn.close()


@pytest.mark.ssh
def test_unreachable_and_unknown_alias_are_one_line(ssh_infra, tmp_path):
    from remote.executors.ssh import SSHConnection

    cfg = tmp_path / "config"
    cfg.write_text("Host closed\n    HostName 127.0.0.1\n    Port 1\n    User nobody\n")
    with pytest.raises(FibError, match=r"ssh closed: cannot connect to 127\.0\.0\.1:1"):
        SSHConnection("closed", ssh_config=cfg, known_hosts=ssh_infra.known_hosts).run("true")


def _long_training(tmp_path: Path, iterations: int | None = None):
    """A real training job on the `debug` partition, submitted and seen making progress."""
    from test_executor_contract import Jobs, _session_with_crop, events

    d = Jobs(_session_with_crop(tmp_path), tmp_path).make("long")
    if iterations:
        spec = json.loads((d / "spec.json").read_text())
        jobfiles.atomic_write_json(d / "spec.json", {**spec, "iterations": iterations})
    ex = SlurmExecutor(ClusterProfile(name="ci", partition="debug", cpus=1, mem="500M", signal_s=60))
    ext = ex.submit(d)
    t0 = time.monotonic()
    while not events(d, "progress") and time.monotonic() - t0 < 120:
        time.sleep(0.3)
    assert events(d, "progress"), jobfiles.tail(d / "stderr.log")
    return ex, ext, d, events


def _until(ex, ext, d, done, timeout: float, pause: float = 0.3):
    """Poll the real status until `done(state)`; return the last status."""
    t0 = time.monotonic()
    while True:
        st = ex.status([(ext, d)])[ext]
        if done(st.state) or time.monotonic() - t0 > timeout:
            return st
        time.sleep(pause)


def _release_and_finish(ex, ext, d, events, stopped: int) -> None:
    """Requeued jobs wait ~120 s (BeginTime); release now (StartTime=now fails in 22.05) and see it resume."""
    subprocess.run(["scontrol", "update", f"JobId={ext}", "StartTime=now+2"], check=True)
    st = _until(ex, ext, d, lambda s: s not in ("PENDING", "RUNNING"), 240, pause=0.5)
    assert st.state == "COMPLETED", (st, jobfiles.tail(d / "stderr.log"))
    assert events(d, "resumed")[0]["step"] == stopped


@pytest.mark.slurm
@pytest.mark.slow
def test_usr1_checkpoints_and_job_requeues_itself(slurm_infra, tmp_path):
    """`--signal=B:USR1@s` reaches the batch shell; it passes USR1 on, training checkpoints and exits 143,
    the script requeues the job; released early, the next run resumes from the checkpoint and completes."""
    ex, ext, d, events = _long_training(tmp_path, iterations=400)
    try:
        subprocess.run(["scancel", "--batch", "--signal=USR1", ext], check=True)  # what Slurm does at @s
        st = _until(ex, ext, d, lambda s: s == "PENDING" and bool(events(d, "interrupted")), 60)
        assert st.state == "PENDING", (st, jobfiles.tail(d / "stderr.log"))
        assert events(d, "interrupted")[0]["signal"] == "SIGUSR1" and (d / "checkpoint.pt").exists()
        assert "requeueing job" in (d / "stderr.log").read_text()
        _release_and_finish(ex, ext, d, events, events(d, "interrupted")[0]["step"])
    finally:
        ex.cancel(ext, d)


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_signals_checkpoint_and_requeues(slurm_infra, tmp_path):
    """A job in the higher-priority partition `high` takes the node: the running training job gets USR1
    (GraceTime, preempt_send_user_signal), checkpoints, and is requeued rather than lost."""
    ex, ext, d, events = _long_training(tmp_path)
    hog = None
    try:
        ncpu = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]
        hog = subprocess.run(["sbatch", "--parsable", "--partition=high", f"--cpus-per-task={ncpu}", "--mem=100M",
                              f"--output={tmp_path}/hog.out", "--wrap", "sleep 2"],
                             capture_output=True, text=True, check=True).stdout.strip()
        st = _until(ex, ext, d, lambda s: s == "PENDING" and bool(events(d, "interrupted")), 60)
        assert st.state == "PENDING", (st, jobfiles.tail(d / "stderr.log"))
        assert events(d, "interrupted")[0]["signal"] == "SIGUSR1" and (d / "checkpoint.pt").exists()
        restarts = subprocess.run(["scontrol", "-o", "show", "job", ext], capture_output=True, text=True).stdout
        assert "Restarts=1" in restarts, restarts  # requeued once, not twice (Slurm + the script's request)
    finally:
        ex.cancel(ext, d)
        if hog:
            subprocess.run(["scancel", hog])


@pytest.mark.slurm
@pytest.mark.slow
def test_scontrol_requeue_checkpoints_and_resumes(slurm_infra, tmp_path):
    """An admin's (or Slurm's) `scontrol requeue` sends SIGTERM: training checkpoints and exits; the
    requeued run resumes from that checkpoint and completes."""
    ex, ext, d, events = _long_training(tmp_path, iterations=400)
    try:
        subprocess.run(["scontrol", "requeue", ext], check=True)
        t0 = time.monotonic()
        while not events(d, "interrupted") and time.monotonic() - t0 < 60:
            time.sleep(0.3)
        assert events(d, "interrupted")[0]["signal"] == "SIGTERM" and (d / "checkpoint.pt").exists()
        _until(ex, ext, d, lambda s: s == "PENDING", 60)
        _release_and_finish(ex, ext, d, events, events(d, "interrupted")[0]["step"])
    finally:
        ex.cancel(ext, d)
