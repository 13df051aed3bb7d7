"""Fixtures for tests against the real loopback Slurm + sshd of tests/infra/up.sh.

Imported into tests/conftest.py (`from infra.fixtures import *`). Behaviour:

- `FIBTUI_INFRA` set (`. /tmp/fibtui-infra/env.sh`): use that cluster; a broken one fails.
- not set, and `CI=true` or `FIBTUI_INFRA_UP=1`: run tests/infra/up.sh for the
  session and tests/infra/down.sh after it. up.sh's "unavailable" (exit 3: not
  root, packages not installable) skips outside CI and fails in CI.
- not set otherwise: skip, with the reason and the command to run.
In CI (`CI=true`) these tests never skip: missing infrastructure is a failure.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_STATE = Path(os.environ.get("FIBTUI_INFRA_STATE", "/tmp/fibtui-infra"))
UNAVAILABLE = 3  # up.sh's exit code for "cannot run here"


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the loopback Slurm cluster of tests/infra/up.sh")
    config.addinivalue_line("markers", "ssh: needs the loopback sshd of tests/infra/up.sh")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str):
    """Skip outside CI, fail in CI: in CI missing infrastructure is a bug, never a skip."""
    if in_ci():
        pytest.fail(f"CI=true but the test cluster is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Infra:
    state: Path
    slurm_conf: Path
    ssh_config: Path
    known_hosts: Path
    ssh_host: str
    ssh_user: str
    ssh_workdir: Path
    ssh_python: str

    @classmethod
    def from_env(cls, env) -> "Infra":
        state = Path(env["FIBTUI_INFRA"])
        return cls(state=state, slurm_conf=Path(env.get("SLURM_CONF", state / "slurm.conf")),
                   ssh_config=Path(env.get("FIBTUI_SSH_CONFIG", state / "ssh_config")),
                   known_hosts=Path(env.get("FIBTUI_KNOWN_HOSTS", state / "ssh" / "known_hosts")),
                   ssh_host=env.get("FIBTUI_SSH_HOST", "fibtui-test"), ssh_user=env.get("FIBTUI_SSH_USER", "fibtui-ci"),
                   ssh_workdir=Path(env.get("FIBTUI_SSH_WORKDIR", state / "work")),
                   ssh_python=env.get("FIBTUI_SSH_PYTHON") or "")

    @property
    def host_pubkey(self) -> Path:
        return self.state / "ssh" / "ssh_host_ed25519_key.pub"


def read_env_sh(path: Path) -> dict[str, str]:
    """The `export K=V` lines of up.sh's env.sh."""
    env = {}
    for line in path.read_text().splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            env[k] = v
    return env


def _bring_up(state: Path) -> dict[str, str]:
    import sys

    proc = subprocess.run(["bash", str(HERE / "up.sh"), str(state)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "FIBTUI_PYTHON": os.environ.get("FIBTUI_PYTHON", sys.executable)})
    if proc.returncode == UNAVAILABLE:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        missing(f"tests/infra/up.sh: {lines[-1] if lines else 'unavailable'}")
    if proc.returncode != 0:
        pytest.fail(f"tests/infra/up.sh {state} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return read_env_sh(state / "env.sh")


@pytest.fixture(scope="session")
def infra():
    """The loopback cluster (Slurm + sshd), its env exported into os.environ for the session."""
    started = None
    if os.environ.get("FIBTUI_INFRA"):
        env = dict(os.environ)
    elif in_ci() or os.environ.get("FIBTUI_INFRA_UP") == "1":
        started = DEFAULT_STATE
        env = _bring_up(started)
    else:
        why = ""
        flag = DEFAULT_STATE / "unavailable"
        if flag.exists():
            why = f" (tests/infra/up.sh said: {flag.read_text().strip()})"
        missing("no test cluster: FIBTUI_INFRA is not set" + why + "; run `bash tests/infra/up.sh` as root and "
                "`. /tmp/fibtui-infra/env.sh`, or set FIBTUI_INFRA_UP=1 to let the tests start (and stop) it")
    saved = {k: os.environ.get(k) for k in env if k.startswith(("FIBTUI_", "SLURM_CONF"))}
    for k in saved:
        os.environ[k] = env[k]
    try:
        yield Infra.from_env(env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if started is not None:
            subprocess.run(["bash", str(HERE / "down.sh"), str(started)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def slurm_infra(infra):
    """The cluster, checked to answer `sinfo` (a set FIBTUI_INFRA that does not answer is a failure)."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20,
                              env={**os.environ, "SLURM_CONF": str(infra.slurm_conf)})
    except FileNotFoundError:
        pytest.fail(f"FIBTUI_INFRA={infra.state} but sinfo is not installed", pytrace=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"FIBTUI_INFRA={infra.state} but Slurm does not answer: {proc.stderr.strip()}; "
                    f"run `bash tests/infra/up.sh {infra.state}` again", pytrace=False)
    return infra


@pytest.fixture(scope="session")
def ssh_infra(infra):
    """The sshd, checked to accept a TCP connection on its port."""
    import socket

    import paramiko

    cfg = paramiko.SSHConfig.from_path(str(infra.ssh_config)).lookup(infra.ssh_host)
    host, port = cfg.get("hostname", "127.0.0.1"), int(cfg.get("port", 22))
    if host not in ("127.0.0.1", "localhost", "::1"):
        pytest.fail(f"{infra.ssh_config}: {infra.ssh_host} points at {host}, not loopback", pytrace=False)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        pytest.fail(f"FIBTUI_INFRA={infra.state} but sshd on {host}:{port} does not answer ({e}); "
                    f"run `bash tests/infra/up.sh {infra.state}` again", pytrace=False)
    return infra


@pytest.fixture
def shared_tmp(infra, request):
    """A fresh directory inside the 1777 work dir, readable by the SSH test user (jobs run as that user)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="t-", dir=infra.ssh_workdir))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


__all__ = ["Infra", "infra", "slurm_infra", "ssh_infra", "shared_tmp", "missing", "in_ci", "read_env_sh",
           "pytest_configure", "DEFAULT_STATE"]
