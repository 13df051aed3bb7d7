"""Parameters and actions: the types, the parsers (text → value, one-line FibError naming the flag),
parsing a form's or a command line's raw text, and the intervention entry every action writes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote.dispatch import Dispatcher
from sessions import interventions
from sessions.errors import FibError
from sessions.geometry import Box, parse_triple
from sessions.workspace import Session


# ---------------------------------------------------------------- parsers: text -> value, FibError naming the flag
def integer(lo: int | None = None):
    def parse(text: str, flag: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise FibError(f"{flag} {text!r}: expected a whole number") from None
        if lo is not None and v < lo:
            raise FibError(f"{flag} {text!r}: must be ≥ {lo}")
        return v
    return parse


def number(gt: float | None = None, lt: float | None = None):
    def parse(text: str, flag: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise FibError(f"{flag} {text!r}: expected a number") from None
        if not math.isfinite(v) or (gt is not None and v <= gt) or (lt is not None and v >= lt):
            bounds = " and ".join(b for b in (f"> {gt:g}" if gt is not None else "",
                                              f"< {lt:g}" if lt is not None else "") if b)
            raise FibError(f"{flag} {text!r}: must be a finite number {bounds}".rstrip())
        return v
    return parse


def triple(positive: bool = True):
    def parse(text: str, flag: str):
        return parse_triple(text, flag, positive=positive)
    return parse


def text(value: str, flag: str) -> str:
    return value


def path(value: str, flag: str) -> Path:
    p = Path(value).expanduser()
    if not p.exists():
        raise FibError(f"{flag} {value}: no such file or directory")
    return p


def yes_no(value: str, flag: str) -> bool:
    """A switch's text: yes/no (the form), or `yes` from a bare flag on the command line."""
    v = value.strip().lower()
    if v in ("yes", "y", "true", "on", "1"):
        return True
    if v in ("no", "n", "false", "off", "0"):
        return False
    raise FibError(f"{flag} {value!r}: expected yes or no")


def names(value: str, flag: str) -> list[str]:
    return [c.strip() for c in value.split(",")]


def box_range(value: str, flag: str) -> Box:
    """`z0:z1,y0:y1,x0:x1` → Box (sessions.geometry.fmt_range writes it)."""
    try:
        parts = [tuple(int(v) for v in p.split(":")) for p in value.split(",")]
        assert len(parts) == 3 and all(len(p) == 2 and 0 <= p[0] < p[1] for p in parts)
    except (ValueError, AssertionError):
        raise FibError(f"{flag} {value!r}: expected z0:z1,y0:y1,x0:x1 with start < stop") from None
    return Box(tuple(p[0] for p in parts), tuple(p[1] - p[0] for p in parts))


def augment_spec(value: str, flag: str) -> dict:
    """`PRESET[,kind=strength...]` → {kind: strength} (sessions.train_options.parse_augment)."""
    from sessions.train_options import parse_augment

    return parse_augment(value, flag)


def preprocess_method(value: str, flag: str) -> str:
    """A preprocessing method of sessions.train_options (its parameters take their defaults)."""
    from sessions.train_options import preprocess_record

    return preprocess_record(value, flag)["method"]


def init_source(value: str, flag: str):
    """`auto` (the target's last model), `scratch`, or a round number."""
    if value in ("auto", "scratch"):
        return value
    try:
        return integer(1)(value, flag)
    except FibError:
        raise FibError(f"{flag} {value!r}: use auto (this target's last model), scratch, or a round number") from None


# ---------------------------------------------------------------- parameters and actions
@dataclass(frozen=True)
class Param:
    name: str                      # keyword of the action's function
    flag: str                      # CLI flag; also names the input in errors
    label: str                     # the form's label
    parse: Callable[[str, str], Any] = text
    default: Any = None            # a value, or a function of (session, context values) giving one
    help: str = ""
    choices: Callable[[Session], list[str]] | None = None  # the form offers these (the CLI takes any text)
    required: bool = False
    switch: bool = False           # a bare flag on the command line (given: "yes"); parse with yes_no

    def default_text(self, session: Session, ctx: dict) -> str:
        v = self.default(session, ctx) if callable(self.default) else self.default
        if v is None:
            return ""
        return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


@dataclass(frozen=True)
class Action:
    name: str                      # the function's name, the CLI's dispatch key
    title: str                     # the palette entry and the form's title; starts with its verb
    key: str                       # the TUI key
    help: str
    params: tuple[Param, ...]
    run: Callable[..., dict]       # run(session, ctx, **values) -> {"summary": str, ...}
    confirm: Callable[[Session, dict], str] | None = None  # the question before an irreversible action
    cli: str = ""                  # the CLI command that does the same

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


@dataclass
class Context:
    """Who acts, from where, and the executor cache to reuse (the TUI keeps its SSH connections open)."""

    via: str = "cli"
    author: str | None = None
    executors: dict = field(default_factory=dict)
    config: str | None = None


def parse(session: Session, action: Action, raw: dict[str, str | None]) -> dict:
    """Every raw text through its parser; empty or missing → the default; a missing required value → one line.

    The given values are parsed first, so a default may depend on any of them, also on a later
    parameter (a fine-tune's patch on `--from`)."""
    values: dict = {}
    for p in action.params:
        given = raw.get(p.name)
        given = given.strip() if isinstance(given, str) else given
        if given not in (None, ""):
            values[p.name] = p.parse(given, p.flag) if isinstance(given, str) else given
    for p in action.params:
        if p.name in values:
            continue
        given = p.default_text(session, values) or None
        if given is None and p.required:
            raise FibError(f"{p.flag}: required ({p.help or p.label})")
        values[p.name] = None if given is None else p.parse(given, p.flag)
    return {p.name: values[p.name] for p in action.params}


def log(session: Session, ctx: Context, action: str, subject: str | None, subject_id, round_n: int | None,
        params: dict) -> dict:
    return interventions.record(session, action, subject=subject, subject_id=subject_id, round_n=round_n,
                                params={k: v for k, v in params.items() if v is not None},
                                author=ctx.author, via=ctx.via)


def _dispatcher(session: Session, ctx: Context) -> Dispatcher:
    return Dispatcher(session, executors=ctx.executors)
