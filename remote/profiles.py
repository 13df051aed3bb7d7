"""Cluster profiles: where and how jobs run, from TOML.

```toml
[profiles.janelia-gpu]
partition = "gpu_a100"
account = "cellmap"
time = "04:00:00"
gres = "gpu:1"            # or gpus = "1"
cpus = 8
mem = "64G"
setup = ["module load cuda/12.1", "source ~/venvs/fibtui/bin/activate"]
python = "python"         # the interpreter after `setup`; default: this process's own
signal_s = 120            # training gets USR1 this long before the time limit (--signal=B:USR1@120)
array_tasks = 8           # prediction as a job array of 8 tasks (+ a final step for the pyramid)
array_throttle = 4        # at most 4 tasks at once

[profiles.lab-box]          # a machine reached over SSH (no Slurm there)
ssh_host = "labbox"         # a Host alias from ~/.ssh/config
remote_workdir = "/scratch/me/fibtui-jobs"
scheduler = "direct"        # or "slurm": sbatch on the remote
remote_setup = ["module load slurm"]   # before every remote command
```

Executors by name: `slurm:<profile>` and `ssh:<profile>` (the name is stored
with each job, so a restarted TUI finds the same cluster again).

Config files, nearest first: `--config FILE`, `./fibtui.toml`, then
`platformdirs.user_config_path("fibtui")/config.toml`. Errors are one line
naming the file, the profile and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from sessions.errors import FibError

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.I)
_SAFE = re.compile(r"^[^\s'\"\\`$;&|<>]+$")  # values that go into #SBATCH lines verbatim


@dataclass(frozen=True)
class ClusterProfile:
    name: str = "default"
    # Slurm
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None          # Slurm --time: "MM", "HH:MM:SS", "D-HH:MM:SS"
    gres: str | None = None          # --gres, e.g. "gpu:1" or "gpu:a100:1"
    gpus: str | None = None          # --gpus, e.g. "1" or "a100:1"
    cpus: int | None = None          # --cpus-per-task (default: the job's thread count, if any)
    mem: str | None = None           # --mem, e.g. "32G"
    setup: tuple[str, ...] = ()      # shell lines run before the job (module load, source venv)
    python: str | None = None        # interpreter for `-m remote.run`; None: this process's sys.executable
    signal_s: int = 120              # training: USR1 this many seconds before the time limit
    requeue: bool = True             # --requeue: preemption/time-limit restarts resume from checkpoint
    sbatch_args: tuple[str, ...] = ()  # anything else, verbatim: ("--constraint=a100",)
    array_tasks: int = 1             # prediction as a job array of this many tasks (1: one job)
    array_throttle: int | None = None  # at most this many tasks at once (--array=0-(K-1)%throttle)
    # SSH
    ssh_host: str | None = None      # Host alias in ~/.ssh/config
    remote_workdir: str | None = None
    scheduler: str = "slurm"         # over SSH: "slurm" (sbatch there) or "direct" (a detached process)
    remote_setup: tuple[str, ...] = ()  # over SSH: shell lines before every remote command (module load slurm)
    ssh_config: str | None = None    # default ~/.ssh/config
    known_hosts: str | None = None   # default ~/.ssh/known_hosts

    def __post_init__(self):
        where = f"profile {self.name!r}"
        for key in ("partition", "account", "qos", "gres", "gpus"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, str) or not _SAFE.match(v)):
                raise FibError(f"{where}: {key} = {v!r} is not a valid Slurm value (no spaces or quotes)")
        if self.time is not None and not (isinstance(self.time, str) and _TIME.match(self.time)):
            raise FibError(f"{where}: time = {self.time!r}; use minutes, \"HH:MM:SS\" or \"D-HH:MM:SS\"")
        if self.mem is not None and not (isinstance(self.mem, str) and _MEM.match(self.mem)):
            raise FibError(f"{where}: mem = {self.mem!r}; use a size such as \"32G\" or \"4000M\"")
        if self.cpus is not None and (not isinstance(self.cpus, int) or isinstance(self.cpus, bool) or self.cpus < 1):
            raise FibError(f"{where}: cpus = {self.cpus!r}; use a whole number ≥ 1")
        if not isinstance(self.signal_s, int) or not 0 <= self.signal_s <= 65535:
            raise FibError(f"{where}: signal_s = {self.signal_s!r}; use seconds between 0 and 65535")
        for key in ("array_tasks", "array_throttle"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise FibError(f"{where}: {key} = {v!r}; use a whole number ≥ 1")
        if self.scheduler not in ("slurm", "direct"):
            raise FibError(f"{where}: scheduler = {self.scheduler!r}; use \"slurm\" or \"direct\"")
        for line in (*self.setup, *self.remote_setup):
            if not isinstance(line, str) or "\n" in line:
                raise FibError(f"{where}: setup/remote_setup must be lists of single-line strings, got {line!r}")
        for arg in self.sbatch_args:
            if not (isinstance(arg, str) and arg.startswith("-") and _SAFE.match(arg)):
                raise FibError(f"{where}: sbatch_args entry {arg!r} must be one option like \"--constraint=a100\"")

    @classmethod
    def from_dict(cls, name: str, d: dict, source: str = "config") -> "ClusterProfile":
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FibError(f"{source}: [profiles.{name}] has unknown key(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(known))}")
        kw = dict(d)
        for key in ("setup", "sbatch_args", "remote_setup"):
            if key in kw:
                if isinstance(kw[key], str):
                    kw[key] = [kw[key]]
                if not isinstance(kw[key], list):
                    raise FibError(f"{source}: [profiles.{name}] {key} must be a list of strings")
                kw[key] = tuple(kw[key])
        if isinstance(kw.get("time"), int) and not isinstance(kw.get("time"), bool):
            kw["time"] = str(kw["time"])
        if isinstance(kw.get("gpus"), int) and not isinstance(kw.get("gpus"), bool):
            kw["gpus"] = str(kw["gpus"])
        try:
            return cls(name=name, **kw)
        except FibError as e:
            raise FibError(f"{source}: {e}") from None


def config_paths(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Where profiles are looked for, nearest first."""
    if explicit:
        return [Path(explicit)]
    paths = [Path.cwd() / "fibtui.toml"]
    try:
        import platformdirs

        paths.append(platformdirs.user_config_path("fibtui") / "config.toml")
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        pass
    return paths


def load_profiles(path: str | os.PathLike) -> dict[str, ClusterProfile]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FibError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise FibError(f"{path} is not valid TOML ({e})") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise FibError(f"{path}: `profiles` must be a table of [profiles.<name>] tables")
    out = {}
    for name, d in profiles.items():
        if not isinstance(d, dict):
            raise FibError(f"{path}: profiles.{name} must be a table ([profiles.{name}])")
        out[name] = ClusterProfile.from_dict(name, d, source=str(path))
    return out


def load_profile(name: str, config: str | os.PathLike | None = None) -> ClusterProfile:
    """The named profile from the nearest config file that defines it."""
    searched = []
    for path in config_paths(config):
        if not path.exists() and not config:
            continue
        searched.append(str(path))
        profiles = load_profiles(path)
        if name in profiles:
            return profiles[name]
    where = ", ".join(searched) if searched else " or ".join(str(p) for p in config_paths(config))
    raise FibError(f"cluster profile {name!r} not found in {where}; add a [profiles.{name}] table")


def _files(config: str | os.PathLike | None) -> list[Path]:
    """The config files that exist (or the one named explicitly), nearest first."""
    return [p for p in config_paths(config) if config or p.exists()]


def all_profiles(config: str | os.PathLike | None = None) -> dict[str, ClusterProfile]:
    """Every profile of every config file; a nearer file's profile wins over a farther one's of the same name."""
    out: dict[str, ClusterProfile] = {}
    for path in reversed(_files(config)):
        out.update(load_profiles(path))
    return out


def executor_names(config: str | os.PathLike | None = None) -> list[str]:
    """What `--executor` can name here: local, slurm, then slurm:<p> / ssh:<p> for each profile."""
    names = ["local", "slurm"]
    for name, prof in all_profiles(config).items():
        names.append(f"ssh:{name}" if prof.ssh_host else f"slurm:{name}")
    return names


ROLES = ("curator", "scientist")


def config_role(config: str | os.PathLike | None = None) -> str:
    """`role = "scientist"` at the top of the nearest config that sets it: the TUI opens read-only."""
    for path in _files(config):
        try:
            role = tomllib.loads(path.read_text()).get("role")
        except (FileNotFoundError, tomllib.TOMLDecodeError):
            continue
        if role is not None:
            if role not in ROLES:
                raise FibError(f"{path}: role = {role!r}; use \"curator\" or \"scientist\"")
            return role
    return "curator"


def load_costs(config: str | os.PathLike | None = None) -> dict:
    """The `[costs]` table of the nearest config that has one: prices per GPU-hour by infrastructure.

    ```toml
    [costs]                 # price of one GPU-hour, per kind of infrastructure
    currency = "EUR"
    cloud = 2.90            # on-demand cloud GPU
    shared-cluster = 0.45   # the institute's shared cluster (its internal rate)
    dedicated = 1.10        # a small dedicated GPU server, amortised over its life
    ```
    Returns {"currency": str, "prices": {name: float}, "source": path or None}; no table: no prices."""
    for path in _files(config):
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            continue
        except tomllib.TOMLDecodeError as e:
            raise FibError(f"{path} is not valid TOML ({e})") from None
        costs = data.get("costs")
        if costs is None:
            continue
        if not isinstance(costs, dict):
            raise FibError(f"{path}: `costs` must be a table ([costs] with name = price per GPU-hour)")
        currency = costs.get("currency", "")
        if not isinstance(currency, str):
            raise FibError(f"{path}: costs.currency = {currency!r}; use a name such as \"EUR\"")
        prices = {}
        for name, v in costs.items():
            if name == "currency":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise FibError(f"{path}: costs.{name} = {v!r}; give a price per GPU-hour (a number >= 0)")
            prices[name] = float(v)
        return {"currency": currency, "prices": prices, "source": str(path)}
    return {"currency": "", "prices": {}, "source": None}


__all__ = ["ClusterProfile", "all_profiles", "config_paths", "config_role", "executor_names", "load_costs",
           "load_profile", "load_profiles"]
