"""The SSH executor's process probe and start lines, run with /bin/sh here as the remote runs them.

Real processes throughout: `python -m remote.run` on a job whose kind does not exist (it
writes its result and exits within a second). The local executor lost jobs to the instant
after exec when /proc/<pid>/cmdline is empty (tests/test_executor_contract.py reproduces it);
here the same rule for the remote probe, and the start that prints the PID only once the
probe knows it. On this machine the remote window was not hit even with the old probe (dash
vforks, and the probe's own fork outlasts an exec), so these check meaning, not the race.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from remote.executors.ssh import JOB_ALIVE_SH, start_lines

REPO = Path(__file__).resolve().parents[1]


def sh(script: str) -> list[str]:
    p = subprocess.run(["/bin/sh", "-c", f"{JOB_ALIVE_SH}\n{script}"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def job_dirs(tmp_path: Path, n: int) -> list[Path]:
    dirs = []
    for i in range(n):
        d = tmp_path / f"job {i}"  # a space: quoting is part of what is tested
        d.mkdir()
        (d / "spec.json").write_text(json.dumps({"kind": "no-such-kind", "job_id": f"j{i}"}))
        dirs.append(d)
    return dirs


def alive(pid: int | str, d: Path) -> str:
    return sh(f"job_alive {pid} '{d}' && echo alive || echo gone")[0]


def test_a_started_job_is_alive_at_once_and_gone_once_it_ends(tmp_path):
    dirs = job_dirs(tmp_path, 10)
    lines = []
    for d in dirs:
        lines += start_lines(sys.executable, str(d))
        lines += [f"job_alive $pid '{d}' && echo alive || echo gone",
                  f"i=0; while job_alive $pid '{d}' && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done",
                  f"job_alive $pid '{d}' && echo alive || echo gone"]
    out = sh("\n".join(lines))
    assert all(p.isdigit() for p in out[0::3]), out
    assert [out[i + 1:i + 3] for i in range(0, len(out), 3)] == [["alive", "gone"]] * len(dirs), out
    for d in dirs:  # each ran to its own end: the result says why it failed
        assert "unknown job kind" in json.loads((d / "result.json").read_text())["error"]


def test_a_zombie_is_gone(tmp_path):
    d = job_dirs(tmp_path, 1)[0]
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)", str(d)])
    try:
        time.sleep(0.2)
        assert alive(p.pid, d) == "alive"
        stat = Path(f"/proc/{p.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # ended, not yet reaped
            time.sleep(0.05)
        assert alive(p.pid, d) == "gone"
    finally:
        p.wait()


def test_other_processes_are_not_the_job(tmp_path):
    d = job_dirs(tmp_path, 1)[0]
    assert sh(f"job_alive $$ '{d}' && echo alive || echo gone") == ["gone"]  # the shell: DIR not an argument
    assert alive(1, d) == "gone"  # someone else's process
    assert alive(4194304, d) == "gone"  # above pid_max: no such process
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)", f"{d}x"])
    try:  # an argument that only starts with DIR, once exec is over (mid-exec it would count as alive)
        while not Path(f"/proc/{p.pid}/cmdline").read_bytes():
            time.sleep(0.01)
        assert alive(p.pid, d) == "gone"
    finally:
        p.kill()
        p.wait()


def test_a_start_that_dies_at_once_reports_its_pid_without_waiting_out_the_5_s(tmp_path):
    d = job_dirs(tmp_path, 1)[0]
    t0 = time.monotonic()
    out = sh("\n".join(start_lines("/bin/false", str(d))))  # not python: exits at once
    assert len(out) == 1 and out[0].isdigit(), out
    assert time.monotonic() - t0 < 4.5  # the wait loop gives up after 100 × 0.05 s
