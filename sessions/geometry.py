"""Boxes in voxel coordinates (z, y, x) and the parsing of `Z,Y,X` arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sessions.errors import FibError

Triple = tuple[int, int, int]


def parse_triple(text: str, what: str, *, positive: bool = False, integer: bool = True):
    """Parse `Z,Y,X` from the command line, naming `what` in the error."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(parts):
        raise FibError(f"{what} {text!r}: expected three comma-separated numbers Z,Y,X")
    try:
        vals = [int(p) if integer else float(p) for p in parts]
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise FibError(f"{what} {text!r}: expected {kind} Z,Y,X") from None
    if not integer and not all(math.isfinite(v) for v in vals):
        raise FibError(f"{what} {text!r}: values must be finite")
    if positive and any(v <= 0 for v in vals):
        raise FibError(f"{what} {text!r}: every value must be > 0")
    if not positive and any(v < 0 for v in vals):
        raise FibError(f"{what} {text!r}: values must be ≥ 0")
    return tuple(vals)


@dataclass(frozen=True)
class Box:
    offset: Triple
    shape: Triple

    @property
    def stop(self) -> Triple:
        return tuple(o + s for o, s in zip(self.offset, self.shape))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, e) for o, e in zip(self.offset, self.stop))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def inside(self, shape: Triple) -> bool:
        return all(o >= 0 and e <= s for o, e, s in zip(self.offset, self.stop, shape))

    def overlaps(self, other: "Box") -> bool:
        return all(a0 < b1 and b0 < a1 for a0, a1, b0, b1 in zip(self.offset, self.stop, other.offset, other.stop))

    def __str__(self) -> str:
        return "[" + ", ".join(f"{o}:{e}" for o, e in zip(self.offset, self.stop)) + "]"


def fmt(t) -> str:
    return ",".join(str(v) for v in t)


def fmt_range(box: Box) -> str:
    """`z0:z1,y0:y1,x0:x1`: a box as a `--region`/`--within` flag takes it (and errors quote it)."""
    return ",".join(f"{o}:{e}" for o, e in zip(box.offset, box.stop))


def unfmt(s: str, cast=int) -> tuple:
    return tuple(cast(v) for v in s.split(","))
