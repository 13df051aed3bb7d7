"""Jobs on another machine over SSH (paramiko): the job directory travels by SFTP.

- The connection follows the user's ssh config (`paramiko.SSHConfig`: Host
  alias → HostName, User, Port, IdentityFile, ProxyCommand), authenticates with
  the agent and keys only, and checks the host key against known_hosts with a
  rejecting policy: an unknown host is refused with its fingerprint shown (for
  the user to accept once, out of band), a changed key is refused loudly.
- Every remote command is one `/bin/sh -c '<script>'` whose pieces are
  `shlex.quote`d, so the user's login shell (bash, tcsh, fish) does not matter.
- `submit` uploads the job directory to `<remote_workdir>/<job>-<hash of the
  local path>` and starts `python -m remote.run` there as a detached process
  (`setsid nohup … &`, its PID is the external id), or with `sbatch` when the
  remote has Slurm (`scheduler="slurm"`). `status` asks once for all jobs, then
  copies what the jobs wrote (events.jsonl, logs, result.json, checkpoints,
  outputs) back into the local job directory; `cancel` marks the job cancelled
  and stops it.

Paths inside spec.json (volume, crops, checkpoints of earlier jobs) must be valid
on the remote machine: only the job directory itself is synced.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shlex
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import paramiko

from remote.executors.base import Executor, JobStatus, deleted_reason, read_tail, usage_from_events
from remote.executors.slurm import Shell, SlurmExecutor, explain_probe, probe_line
from remote.profiles import ClusterProfile
from remote.sbatch import ARRAY_SCRIPT, FINAL_SCRIPT, SCRIPT
from sessions.errors import FibError
from sessions.jobfiles import EVENTS, SPEC, STDERR, STDOUT, read_json, read_result, tail

CANCELLED = "cancelled"          # marker file: the curator cancelled this job
APPEND_ONLY = {EVENTS, STDOUT, STDERR}
NOT_DOWN = {SPEC, SCRIPT, ARRAY_SCRIPT, FINAL_SCRIPT}  # the local copies are the source of these

# `proc_stat PID`: the fields of /proc/PID/stat after the command name (state first), empty if gone.
# `job_alive PID DIR`: true while PID is the job started in DIR (its cmdline holds DIR as an
# argument) and not a zombie. Mid-exec a process has an empty cmdline for a moment: that is the
# job starting, unless it is a kernel thread (flag PF_KTHREAD, 0x200000). POSIX sh.
JOB_ALIVE_SH = """proc_stat() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null; }
job_alive() {
  s=$(proc_stat "$1") || return 1
  set -- "$1" "$2" $s
  [ -n "$3" ] && [ "$3" != Z ] || return 1
  c=$(tr '\\000' '\\n' < "/proc/$1/cmdline" 2>/dev/null)
  if [ -z "$c" ]; then [ $(( $9 & 2097152 )) -eq 0 ]; return; fi
  printf '%s\\n' "$c" | grep -qxF -- "$2"
}"""


def start_lines(python: str, rdir: str) -> list[str]:
    """Shell lines (after JOB_ALIVE_SH) that start `python -m remote.run RDIR` detached and print its PID.

    They print the PID only once `job_alive` knows it (or the process has already ended, at most
    5 s): until the forked shell has exec'd, its cmdline is the remote shell's, and a status
    query in that instant would call a starting job gone.
    """
    q = shlex.quote
    return [
        f"PYTHONUNBUFFERED=1 setsid nohup {q(python)} -m remote.run {q(rdir)} "
        f"</dev/null >>{q(rdir + '/' + STDOUT)} 2>>{q(rdir + '/' + STDERR)} &",
        "pid=$! i=0",
        f"until job_alive $pid {q(rdir)} || [ $i -ge 100 ]; do",
        '  case "$(proc_stat $pid)" in ""|Z*) break;; esac',
        "  sleep 0.05; i=$((i + 1))",
        "done",
        "echo $pid",
    ]


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:…", as OpenSSH prints it


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy, with a message that lets the user check and accept the key once."""

    def __init__(self, alias: str, known_hosts: list[str]):
        self.alias, self.known_hosts = alias, known_hosts

    def missing_host_key(self, client, hostname, key):
        files = " or ".join(self.known_hosts) or "~/.ssh/known_hosts"
        raise FibError(
            f"ssh {self.alias}: host {hostname} is not in {files}; it offers {key.get_name()} key "
            f"{_fingerprint(key)}. If that is the server's real key (compare with `ssh-keygen -lf` on the server "
            f"or your admins' list), accept it once with `ssh {self.alias} true` or add this line to "
            f"{self.known_hosts[0] if self.known_hosts else '~/.ssh/known_hosts'}: "
            f"{hostname} {key.get_name()} {key.get_base64()}")


class SSHConnection:
    """One lazily opened, kept-alive SSH connection to a Host alias."""

    def __init__(self, alias: str, *, ssh_config: str | os.PathLike | None = None,
                 known_hosts: str | os.PathLike | list | None = None, connect_timeout: float = 15,
                 keepalive_s: int = 30):
        self.alias = alias
        cfg_path = Path(ssh_config or Path.home() / ".ssh" / "config").expanduser()
        if ssh_config and not cfg_path.exists():
            raise FibError(f"ssh config {cfg_path} does not exist")
        cfg = paramiko.SSHConfig.from_path(str(cfg_path)) if cfg_path.exists() else paramiko.SSHConfig()
        self.cfg = cfg.lookup(alias)
        self.host = self.cfg.get("hostname", alias)
        self.port = int(self.cfg.get("port", 22))
        self.user = self.cfg.get("user") or os.environ.get("USER") or None
        if known_hosts is None:
            known = self.cfg.get("userknownhostsfile", "~/.ssh/known_hosts").split()
        elif isinstance(known_hosts, (list, tuple)):
            known = [str(k) for k in known_hosts]
        else:
            known = [str(known_hosts)]
        self.known_hosts = [os.path.expanduser(k) for k in known]
        self.identity = [os.path.expanduser(p) for p in self.cfg.get("identityfile", [])]
        self.connect_timeout = float(self.cfg.get("connecttimeout", connect_timeout))
        self.keepalive_s = int(self.cfg.get("serveraliveinterval", keepalive_s))
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    @property
    def where(self) -> str:
        return f"{self.alias} ({self.user}@{self.host}:{self.port})" if self.alias != self.host else self.host

    def client(self) -> paramiko.SSHClient:
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if t is not None and t.is_active():
                return self._client
            self.close()
            self._client = self._connect()
            return self._client

    def _connect(self) -> paramiko.SSHClient:
        c = paramiko.SSHClient()
        loaded = [k for k in self.known_hosts if os.path.exists(k)]
        for k in loaded:
            c.load_host_keys(k)
        c.set_missing_host_key_policy(_RejectUnknownHost(self.alias, self.known_hosts))
        sock = None
        if self.cfg.get("proxycommand") and self.cfg["proxycommand"].lower() != "none":
            sock = paramiko.ProxyCommand(self.cfg["proxycommand"])
        if self.cfg.get("proxyjump"):
            raise FibError(f"ssh {self.alias}: ProxyJump is not supported yet; use "
                           f"`ProxyCommand ssh -W %h:%p {self.cfg['proxyjump']}` in your ssh config")
        try:
            c.connect(self.host, port=self.port, username=self.user, key_filename=self.identity or None,
                      allow_agent=True, look_for_keys=not self.identity, timeout=self.connect_timeout,
                      banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout, sock=sock,
                      passphrase=None)
        except FibError:
            c.close()
            raise
        except paramiko.BadHostKeyException as e:
            c.close()
            name = _known_hosts_name(self.host, self.port)
            raise FibError(
                f"ssh {self.alias}: the host key of {name} has CHANGED: known_hosts has {e.expected_key.get_name()} "
                f"{_fingerprint(e.expected_key)}, the server now offers {e.key.get_name()} {_fingerprint(e.key)}. "
                f"Someone may be intercepting the connection; if the key was legitimately replaced, remove the old "
                f"entry with `ssh-keygen -R '{name}' -f {self.known_hosts[0]}` and accept the new one") from None
        except paramiko.AuthenticationException as e:
            c.close()
            keys = ", ".join(self.identity) or "~/.ssh/id_*"
            raise FibError(f"ssh {self.alias}: authentication as {self.user} failed ({e}); tried the agent and "
                           f"{keys}; check IdentityFile/User in your ssh config or `ssh-add`") from None
        except (OSError, socket.timeout, paramiko.SSHException) as e:
            c.close()
            raise FibError(f"ssh {self.alias}: cannot connect to {self.host}:{self.port} ({e})") from None
        c.get_transport().set_keepalive(self.keepalive_s)
        return c

    def alive(self) -> bool:
        with self._lock:
            t = self._client.get_transport() if self._client else None
            return t is not None and t.is_active()

    def keepalive_interval(self) -> int:
        """The keepalive interval set on the live transport (0: none), read back from paramiko."""
        t = self.client().get_transport()
        return int(getattr(t.packetizer, "_Packetizer__keepalive_interval", 0))

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            client = self.client()
            if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
                self._sftp = client.open_sftp()
            return self._sftp

    def _open_channel(self) -> paramiko.Channel:
        """A session channel; a connection that died under us (dropped, server restarted) is reopened once.

        Only the opening is retried: a command that may have started is never run twice."""
        for attempt in (0, 1):
            with self._lock:
                client = self.client()
            try:
                return client.get_transport().open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError, AttributeError) as e:
                self.close()
                if attempt:
                    raise ConnectionLost(f"ssh {self.alias}: the connection dropped and could not be reopened "
                                         f"({e or type(e).__name__})") from None
        raise AssertionError("unreachable")

    def run(self, script: str, timeout: float = 120) -> tuple[int, str, str]:
        """Run a POSIX sh script remotely; (exit code, stdout, stderr)."""
        chan = self._open_channel()
        try:
            chan.settimeout(timeout)
            chan.exec_command("/bin/sh -c " + shlex.quote(script))
            out, err = chan.makefile("rb", -1), chan.makefile_stderr("rb", -1)
            o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
            return chan.recv_exit_status(), o, e
        except (socket.timeout, paramiko.SSHException, EOFError, OSError) as e:
            dead = not self.alive()
            if dead:
                self.close()
            raise (ConnectionLost if dead else FibError)(
                f"ssh {self.alias}: remote command failed to complete ({e or type(e).__name__})") from None
        finally:
            chan.close()

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:  # noqa: BLE001 - closing a dead channel
                    pass
                self._sftp = None
            if self._client is not None:
                self._client.close()
                self._client = None


class ConnectionLost(FibError):
    """The SSH connection died while a command ran (the next call reconnects)."""


class RemoteShell(Shell):
    """Shell for SlurmExecutor: argv run over SSH after the profile's remote setup lines."""

    def __init__(self, conn: SSHConnection, setup: tuple[str, ...] = ()):
        self.conn, self.setup = conn, tuple(setup)
        self.where = conn.alias

    def run(self, argv, *, cwd=None, timeout=60):
        import subprocess

        lines = list(self.setup)
        if cwd:
            lines.append("cd " + shlex.quote(cwd))
        lines.append(shlex.join(argv))
        rc, out, err = self.conn.run("\n".join(lines), timeout=timeout)
        if rc == 127 and "not found" in err:
            raise FibError(f"`{argv[0]}` not found on {self.where}: does it have Slurm? "
                           f"(use scheduler = \"direct\" in the profile otherwise)")
        return subprocess.CompletedProcess(argv, rc, out, err)


class SSHExecutor(Executor):
    name = "ssh"
    cancel_wait_s = 15.0  # how long `cancel` waits for the job to stop before its last pull
    events_local = False  # events arrive with each status call (a pull)

    def __init__(self, host_alias: str | None = None, *, profile: ClusterProfile | None = None,
                 ssh_config: str | os.PathLike | None = None, known_hosts=None,
                 remote_workdir: str | None = None, python: str | None = None, scheduler: str | None = None,
                 remote_setup: tuple[str, ...] | list[str] = ()):
        self.profile = profile or ClusterProfile(name=host_alias or "ssh")
        alias = host_alias or self.profile.ssh_host
        if not alias:
            raise FibError(f"profile {self.profile.name!r} has no ssh_host; set it to a Host alias from ~/.ssh/config")
        self.conn = SSHConnection(alias, ssh_config=ssh_config or self.profile.ssh_config,
                                  known_hosts=known_hosts or self.profile.known_hosts)
        self.workdir_cfg = remote_workdir or self.profile.remote_workdir or "fibtui-jobs"
        self.python = python or self.profile.python or sys.executable
        self.scheduler = scheduler or (self.profile.scheduler if self.profile.ssh_host else "direct")
        if self.scheduler not in ("direct", "slurm"):
            raise FibError(f"scheduler {self.scheduler!r}: use \"direct\" or \"slurm\"")
        self.remote_setup = tuple(remote_setup) or self.profile.remote_setup
        if profile is not None and host_alias is None:
            self.name = f"ssh:{profile.name}"  # stored with each job: a fresh process can rebuild this executor
        self._workdir: str | None = None
        self._env_ok = False
        self.max_poll_s = 30.0 if self.scheduler == "slurm" else 10.0
        self._slurm = SlurmExecutor(ClusterProfile(**{**_fields(self.profile), "python": self.python}),
                                    shell=RemoteShell(self.conn, self.remote_setup))

    # -- paths
    def workdir(self) -> str:
        if self._workdir is None:
            w = self.workdir_cfg
            if w.startswith("~/"):
                w = w[2:]
            if not w.startswith("/"):
                w = posixpath.join(self.conn.sftp().normalize("."), w)
            self._workdir = w
        return self._workdir

    def remote_dir(self, job_dir: Path) -> str:
        job_dir = Path(job_dir).resolve()
        tag = hashlib.sha1(str(job_dir).encode()).hexdigest()[:8]
        return posixpath.join(self.workdir(), f"{job_dir.name}-{tag}")

    # -- sync
    def _mkdirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        parts, cur = path.strip("/").split("/"), ""
        for p in parts:
            cur += "/" + p
            try:
                sftp.stat(cur)
            except FileNotFoundError:
                try:
                    sftp.mkdir(cur)
                except OSError as e:
                    raise FibError(f"ssh {self.conn.alias}: cannot create {cur} ({e}); "
                                   f"check remote_workdir {self.workdir_cfg!r}") from None

    def push(self, job_dir: Path) -> str:
        job_dir = Path(job_dir).resolve()
        sftp, rdir = self.conn.sftp(), self.remote_dir(job_dir)
        self._mkdirs(sftp, rdir)
        for local in sorted(job_dir.rglob("*")):
            rel = local.relative_to(job_dir).as_posix()
            remote = posixpath.join(rdir, rel)
            if local.is_dir():
                self._mkdirs(sftp, remote)
            elif local.is_file() and not local.name.endswith(".tmp"):
                sftp.put(str(local), remote)
        return rdir

    def pull(self, job_dir: Path, only: str | None = None) -> bool:
        """Copy what the job wrote back: new bytes of append-only files, changed files whole.

        `only`: just that top-level file (log tails). False when the remote job directory is gone."""
        job_dir = Path(job_dir).resolve()
        sftp, rdir = self.conn.sftp(), self.remote_dir(job_dir)
        return self._pull_dir(sftp, rdir, job_dir, top=True, only=only)

    def _pull_dir(self, sftp, rdir: str, ldir: Path, top: bool = False, only: str | None = None) -> bool:
        try:
            entries = sftp.listdir_attr(rdir)
        except FileNotFoundError:
            return False
        ldir.mkdir(parents=True, exist_ok=True)
        # result.json last: whoever sees it must already have every event before it
        entries.sort(key=lambda a: a.filename == "result.json")
        for a in entries:
            name, remote, local = a.filename, posixpath.join(rdir, a.filename), ldir / a.filename
            if stat.S_ISDIR(a.st_mode):
                if only is None or (only == STDERR and top and name == "tasks"):
                    self._pull_dir(sftp, remote, local, only=only)
                continue
            if only is not None and name != only:
                continue
            if (top and name in NOT_DOWN) or name.endswith(".tmp") or not stat.S_ISREG(a.st_mode):
                continue
            try:
                st = local.stat()
                size, mtime = st.st_size, int(st.st_mtime)
            except FileNotFoundError:
                size, mtime = -1, None
            if size == a.st_size and mtime == a.st_mtime:
                continue
            if name in APPEND_ONLY and 0 <= size < a.st_size:
                with sftp.open(remote, "rb") as fh, open(local, "ab") as out:
                    fh.seek(size)
                    out.write(fh.read(a.st_size - size))
            else:
                tmp = local.with_name(f".{local.name}.pull.tmp")
                sftp.get(remote, str(tmp))
                os.replace(tmp, local)
            os.utime(local, (a.st_atime, a.st_mtime))
        return True

    def _retry(self, fn):
        """Run an idempotent operation; if the connection died under it, reconnect and run it once more."""
        try:
            return fn()
        except (FileNotFoundError, PermissionError):
            raise
        except (ConnectionLost, EOFError, OSError, paramiko.SSHException) as e:
            if isinstance(e, FibError) and not isinstance(e, ConnectionLost):
                raise
            if self.conn.alive() and not isinstance(e, ConnectionLost):
                raise
            self.conn.close()
            return fn()

    # -- environment
    def preflight(self) -> None:
        """Connect (unreachable host, host key: one line each) and check the remote python has fibtui."""
        if self._env_ok:
            return
        script = "\n".join([*self.remote_setup, *self.profile.setup, probe_line(self.python)])
        rc, out, err = self.conn.run(script, timeout=60)
        explain_probe(rc, out + err, self.python, f"ssh {self.conn.alias}", self.profile.name)
        self._env_ok = True

    # -- direct runs
    def _start(self, rdir: str) -> str:
        q = shlex.quote
        py = q(self.python)
        script = "\n".join([
            *self.remote_setup,
            f"cd {q(rdir)} || exit 4",
            *self.profile.setup,
            f"command -v {py} >/dev/null 2>&1 || {{ echo \"python {self.python} not found\" >&2; exit 3; }}",
            JOB_ALIVE_SH,
            *start_lines(self.python, rdir),
        ])
        rc, out, err = self.conn.run(script)
        if rc == 3:
            raise FibError(f"ssh {self.conn.alias}: the remote python {self.python!r} was not found; "
                           f"set `python` in the profile (or its setup lines)")
        if rc != 0 or not out.strip().isdigit():
            raise FibError(f"ssh {self.conn.alias}: could not start the job in {rdir} "
                           f"(exit {rc}: {(err or out).strip()[:200]})")
        return out.strip()

    def _probe(self, jobs: list[tuple[str, str]]) -> dict[str, str]:
        """{pid: 'alive' | 'gone'} for many (pid, remote dir) at once, in one remote command."""
        q = shlex.quote
        lines = [JOB_ALIVE_SH]
        lines += [f"job_alive {q(pid)} {q(rdir)} && echo {q(pid)} alive || echo {q(pid)} gone" for pid, rdir in jobs]
        rc, out, err = self.conn.run("\n".join(lines))
        if rc != 0:
            raise FibError(f"ssh {self.conn.alias}: could not ask for job states ({err.strip()[:200]})")
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def _kill(self, jobs: list[tuple[str, str]], mark: bool) -> None:
        """SIGTERM to the process groups of many (pid, remote dir) in one command; `mark`: write the cancel marker."""
        q = shlex.quote
        lines = [JOB_ALIVE_SH]
        for pid, rdir in jobs:
            if not str(pid).isdigit():
                raise FibError(f"ssh job id {pid!r} is not a process id")
            if mark:
                lines.append(f"[ -d {q(rdir)} ] && : > {q(rdir + '/' + CANCELLED)}")
            lines += [
                f"if job_alive {pid} {q(rdir)}; then",
                f"  kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null",
                "fi",
            ]
        lines.append("exit 0")
        rc, _, err = self.conn.run("\n".join(lines))
        if rc != 0:
            raise FibError(f"ssh {self.conn.alias}: could not stop process(es) "
                           f"{', '.join(p for p, _ in jobs)} ({err.strip()[:200]})")

    # -- the Executor contract
    def submit(self, job_dir: Path) -> str:
        job_dir = Path(job_dir).resolve()
        self.preflight()
        if self.scheduler == "slurm":
            rdir = self.remote_dir(job_dir)
            spec = read_json(job_dir / SPEC)
            tasks, _ = self._slurm.array_tasks(spec)
            if tasks > 1:
                return self._submit_array(job_dir, rdir, tasks)
            text = self._slurm.script(job_dir, rdir)
            (job_dir / SCRIPT).write_text(text)
            self.push(job_dir)
            return self._slurm.sbatch(posixpath.join(rdir, SCRIPT), rdir, job_dir.name)
        return self._start(self.push(job_dir))

    def _submit_array(self, job_dir: Path, rdir: str, tasks: int) -> str:
        """Push, create what the tasks share and their dirs on the remote side, then the array + final step."""
        import json

        self.push(job_dir)
        q = shlex.quote
        script = "\n".join([*self.remote_setup, f"cd {q(rdir)} || exit 4", *self.profile.setup,
                            f"{q(self.python)} -m remote.job_array {q(rdir)} {int(tasks)}"])
        rc, out, err = self.conn.run(script, timeout=300)
        lines = out.strip().splitlines()
        if rc != 0 or not lines:
            raise FibError(f"ssh {self.conn.alias}: could not prepare the job array in {rdir} "
                           f"({(err or out).strip().splitlines()[-1][:200] if (err or out).strip() else f'exit {rc}'})")
        info = json.loads(lines[-1])
        self._slurm.write_array_scripts(job_dir, rdir, int(info["tasks"]))
        sftp = self.conn.sftp()
        for name in (ARRAY_SCRIPT, FINAL_SCRIPT):
            sftp.put(str(job_dir / name), posixpath.join(rdir, name))
        self.pull(job_dir)  # array.json and tasks/ back here
        return self._slurm.sbatch_array(rdir, job_dir.name)

    def status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        jobs = [(str(e), Path(d).resolve()) for e, d in jobs]
        if not jobs:
            return {}
        return self._retry(lambda: self._status(jobs))

    def _status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        gone_here = [(e, d) for e, d in jobs if not d.is_dir()]   # deleted locally: never recreate it
        live = [(e, d) for e, d in jobs if d.is_dir()]
        out: dict[str, JobStatus] = {}
        if self.scheduler == "slurm":
            rows = self._slurm.query([e for e, _ in jobs])  # before pulling: a job ending now is seen next time
            gone_there = {e for e, d in live if not self.pull(d)}
            out.update(self._slurm.settle(rows, live))
            out.update(self._slurm.settle(rows, gone_here))  # cancels them, FAILED "deleted"
            for e, d in live:
                if e in gone_there and read_result(d) is None:
                    if out[e].state in ("PENDING", "RUNNING"):
                        self._slurm.scancel(e)
                    out[e] = JobStatus("FAILED", deleted_reason(self.remote_dir(d), f"{self.conn.alias}:"))
            return out
        alive = self._probe([(e, self.remote_dir(d)) for e, d in jobs])
        stop = [(e, self.remote_dir(d)) for e, d in gone_here if alive.get(e) == "alive"]
        for e, d in gone_here:
            out[e] = JobStatus("FAILED", deleted_reason(d))
        for ext, d in live:
            present = self.pull(d)
            running = alive.get(ext) == "alive"
            elapsed, gpus = usage_from_events(d, running=running)
            res = read_result(d)
            if not present and res is None:
                if running:
                    stop.append((ext, self.remote_dir(d)))
                out[ext] = JobStatus("FAILED", deleted_reason(self.remote_dir(d), f"{self.conn.alias}:"), elapsed, gpus)
            elif running:
                out[ext] = JobStatus("RUNNING", None, elapsed, gpus)
            elif res is not None and res.get("status") == "completed":
                out[ext] = JobStatus("COMPLETED", None, elapsed, gpus)
            elif res is not None:
                out[ext] = JobStatus("FAILED", res.get("error", "failed"), elapsed, gpus)
            elif (d / CANCELLED).exists():
                out[ext] = JobStatus("CANCELLED", "cancelled by the curator", elapsed, gpus)
            else:
                last = [ln for ln in tail(d / STDERR, 5).splitlines() if ln.strip()]
                out[ext] = JobStatus("FAILED", "the remote process ended without a result; "
                                     + (f"stderr: {last[-1].strip()[:300]}" if last else "see stderr.log"),
                                     elapsed, gpus)
        if stop:
            self._kill(stop, mark=False)
        return out

    def cancel(self, external_id: str, job_dir: Path) -> None:
        self.cancel_many([(external_id, job_dir)])

    def cancel_many(self, jobs: list[tuple[str, Path]]) -> None:
        jobs = [(str(e), Path(d).resolve()) for e, d in jobs]
        if not jobs:
            return
        if self.scheduler == "slurm":
            self._slurm.scancel(*[e for e, _ in jobs])  # one scancel, over one connection
            return
        pairs = [(e, self.remote_dir(d)) for e, d in jobs]
        for _, d in jobs:
            if d.is_dir():
                (d / CANCELLED).touch()
        self._kill(pairs, mark=True)
        # training writes a checkpoint on SIGTERM: give it a moment, then bring the last events home
        # (the session stops polling a cancelled job, so this is the last pull)
        deadline = time.monotonic() + self.cancel_wait_s
        while time.monotonic() < deadline and "alive" in self._probe(pairs).values():
            time.sleep(0.3)
        for _, d in jobs:
            if d.is_dir():
                self.pull(d)

    def log_tail(self, external_id: str, job_dir: Path, lines: int = 20) -> str:
        job_dir = Path(job_dir).resolve()
        if job_dir.is_dir():
            self._retry(lambda: self.pull(job_dir, only=STDERR))
        return read_tail(job_dir, lines)

    def results(self, external_id: str, job_dir: Path) -> Path:
        job_dir = Path(job_dir).resolve()
        if not job_dir.is_dir():
            raise FibError(f"job directory {job_dir} was deleted; nothing to sync back into")
        if not self._retry(lambda: self.pull(job_dir)):
            raise FibError(f"ssh {self.conn.alias}: remote job directory {self.remote_dir(job_dir)} is gone; "
                           f"only what was synced before is in {job_dir}")
        return job_dir

    def close(self) -> None:
        self.conn.close()


def _fields(p: ClusterProfile) -> dict:
    from dataclasses import asdict

    return asdict(p)


__all__ = ["SSHExecutor", "SSHConnection", "RemoteShell", "ConnectionLost", "CANCELLED"]
