"""The curator's uncommitted interventions: sparse painted voxels in a crop box, undo/redo, autosave, commit.

Painted voxels are kept sparse (level-0 voxel → class; erasing removes the
voxel, so it is unlabelled again) until *commit*, which turns the crop box
into a dense crop (unpainted = 0) through `labels.add_crop_array`, the
same checks as `fibtui crop add`. Every change is one undoable `Op`;
proofreading decisions (accept / reject / missed) are ops that carry what
was decided, so undoing one takes it out of what commit logs.

The autosave (`annotations/autosave.npz` in the session) is rewritten,
aside then renamed, after every op, so a dropped SSH connection or a killed
TUI loses nothing that was on screen; the next viewer start offers it back.
Undo history is not saved: a restored annotation starts a fresh history.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sessions.errors import FibError
from sessions.geometry import Box
from sessions.timeutil import now

AUTOSAVE = ("annotations", "autosave.npz")
DECISIONS = {"accepted": "object accepted", "rejected": "object rejected", "missed": "missed object marked"}


def autosave_path(root: Path) -> Path:
    return Path(root).joinpath(*AUTOSAVE)


@dataclass
class Op:
    keys: np.ndarray          # packed level-0 voxel indices (int64), unique
    before: np.ndarray        # their values before (0 = unlabelled)
    after: int                # the value painted (0 = erased)
    decision: dict | None = None  # {"decision": "accepted", "object": 3, "voxels": 120}
    group: int | None = None      # ops of one drag or pen-down stroke share it: one undo step


@dataclass
class Annotation:
    volume: str
    shape: tuple[int, int, int]           # the volume's level-0 shape (to pack voxels)
    box: Box | None = None
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    vox: dict[int, int] = field(default_factory=dict)
    undo_stack: list[Op] = field(default_factory=list)
    redo_stack: list[Op] = field(default_factory=list)
    restored: list[dict] = field(default_factory=list)   # decisions of a restored autosave
    saved: str | None = None

    # -- voxels ----------------------------------------------------------------
    def pack(self, zyx: np.ndarray) -> np.ndarray:
        z, y, x = np.asarray(zyx, np.int64).reshape(-1, 3).T
        return (z * self.shape[1] + y) * self.shape[2] + x

    def unpack(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, np.int64)
        yx = self.shape[1] * self.shape[2]
        return np.stack([keys // yx, (keys % yx) // self.shape[2], keys % self.shape[2]], axis=1)

    def inside_box(self, zyx: np.ndarray) -> np.ndarray:
        zyx = np.asarray(zyx, np.int64).reshape(-1, 3)
        if self.box is None:
            return np.zeros(len(zyx), bool)
        return np.all((zyx >= self.box.offset) & (zyx < self.box.stop), axis=1)

    def apply(self, zyx: np.ndarray, value: int, decision: dict | None = None, group: int | None = None) -> int:
        """Set the voxels (N×3, level-0) inside the box to `value` (0 erases); one undoable op.
        Returns how many voxels changed (a decision is recorded even when none did). Consecutive
        ops of the same `group` (one drag, one pen-down stroke) merge into one undo step."""
        zyx = np.asarray(zyx, np.int64).reshape(-1, 3)
        keys = np.unique(self.pack(zyx[self.inside_box(zyx)]))
        before = np.fromiter((self.vox.get(k, 0) for k in keys.tolist()), np.uint8, len(keys))
        changed = before != value
        if not changed.any() and decision is None:
            return 0
        op = Op(keys[changed], before[changed], int(value),
                None if decision is None else {**decision, "voxels": int(len(keys))}, group)
        self._set(op.keys, np.full(len(op.keys), op.after, np.uint8))
        last = self.undo_stack[-1] if self.undo_stack else None
        if group is not None and last is not None and last.group == group and last.after == op.after:
            # one drag or pen-down stroke is one undo step
            last.keys, last.before = np.concatenate([last.keys, op.keys]), np.concatenate([last.before, op.before])
        else:
            self.undo_stack.append(op)
        self.redo_stack.clear()
        return int(changed.sum())

    def _set(self, keys: np.ndarray, values: np.ndarray) -> None:
        for k, v in zip(keys.tolist(), values.tolist()):
            if v:
                self.vox[k] = v
            else:
                self.vox.pop(k, None)

    def undo(self) -> Op | None:
        if not self.undo_stack:
            return None
        op = self.undo_stack.pop()
        self._set(op.keys, op.before)
        self.redo_stack.append(op)
        return op

    def redo(self) -> Op | None:
        if not self.redo_stack:
            return None
        op = self.redo_stack.pop()
        self._set(op.keys, np.full(len(op.keys), op.after, np.uint8))
        self.undo_stack.append(op)
        return op

    @property
    def decisions(self) -> list[dict]:
        return self.restored + [op.decision for op in self.undo_stack if op.decision]

    @property
    def empty(self) -> bool:
        return not self.vox and not self.decisions

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(N×3 level-0 voxels, their classes)."""
        keys = np.fromiter(self.vox.keys(), np.int64, len(self.vox))
        vals = np.fromiter(self.vox.values(), np.uint8, len(self.vox))
        return self.unpack(keys), vals

    def dense(self) -> np.ndarray:
        """The crop box as a label array: painted classes, 0 (unlabelled) elsewhere."""
        if self.box is None:
            raise FibError("no crop box yet: press b to draw one at the view, paint inside it, then commit")
        zyx, vals = self.arrays()
        inside = self.inside_box(zyx)
        if not inside.all():
            raise FibError(f"{int((~inside).sum())} painted voxels lie outside the crop box {self.box}; "
                           "enlarge the box or erase them")
        out = np.zeros(self.box.shape, np.uint8)
        z, y, x = (zyx - np.asarray(self.box.offset)).T
        out[z, y, x] = vals
        return out

    # -- autosave ----------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything the autosave holds, copied (a worker thread may write it while painting goes on)."""
        return {"meta": {"volume": self.volume, "shape": list(self.shape), "uid": self.uid, "saved": now(),
                         "box": None if self.box is None else [list(self.box.offset), list(self.box.shape)],
                         "decisions": [dict(d) for d in self.decisions]},
                "keys": np.fromiter(self.vox.keys(), np.int64, len(self.vox)),
                "values": np.fromiter(self.vox.values(), np.uint8, len(self.vox)),
                "seq": next(_SEQ)}

    def save(self, root: Path) -> Path:
        snap = self.snapshot()
        self.saved = snap["meta"]["saved"]
        return write_autosave(root, snap)

    @classmethod
    def load(cls, root: Path) -> "Annotation | None":
        path = autosave_path(root)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                keys, vals = z["keys"], z["values"]
        except (OSError, ValueError, KeyError) as e:
            raise FibError(f"{path}: unreadable autosave ({e}); move it away to start afresh") from None
        box = Box(tuple(meta["box"][0]), tuple(meta["box"][1])) if meta.get("box") else None
        ann = cls(meta["volume"], tuple(meta["shape"]), box, meta["uid"], restored=list(meta.get("decisions", [])),
                  saved=meta.get("saved"))
        ann.vox = dict(zip(keys.tolist(), vals.tolist()))
        return ann

    def summary(self) -> str:
        n = len(self.decisions)
        box = f"box {self.box}" if self.box else "no box"
        return (f"{len(self.vox)} painted voxels, {n} object decision{'s' * (n != 1)}, {box} in {self.volume}"
                + (f", saved {self.saved}" if self.saved else ""))


_SEQ = itertools.count(1)
_WRITE = threading.Lock()
_WRITTEN: dict[str, int] = {}


def write_autosave(root: Path, snap: dict) -> Path:
    """Write aside, fsync, rename over the last autosave; an older snapshot never replaces a newer one."""
    path = autosave_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _WRITE:
        if _WRITTEN.get(str(path), 0) > snap["seq"]:
            return path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, keys=snap["keys"], values=snap["values"], meta=np.array(json.dumps(snap["meta"])))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _WRITTEN[str(path)] = snap["seq"]
    return path


def discard(root: Path, keep: bool = False) -> Path | None:
    """Remove the autosave; `keep`: set it aside instead (`autosave-declined-<time>.npz`), for a curator who
    declined the offer by mistake."""
    path = autosave_path(root)
    if not path.exists():
        return None
    if keep:
        aside = path.with_name(f"autosave-declined-{now().replace(':', '').replace(' ', 'T')}.npz")
        os.replace(path, aside)
        return aside
    path.unlink(missing_ok=True)
    return None


def source_tag(ann: Annotation) -> str:
    """What a committed crop's `source` says: lets a restart see that an autosave was already committed."""
    return f"painted:{ann.uid}"


# ---------------------------------------------------------------- proofreading
def components(prob: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, list[dict]]:
    """Connected components (26-connected) of `prob` ≥ threshold (prob uint8 = p·255 or float 0..1).

    Returns the label image and one dict per object: id, voxels, centroid (array indices),
    uncertainty (mean of 1 − |2p − 1| over its voxels: 1 = all at p 0.5)."""
    import cc3d

    p = prob.astype(np.float32) / (255.0 if prob.dtype == np.uint8 else 1.0)
    lab = cc3d.connected_components(p >= threshold, connectivity=26).astype(np.int32)
    n = int(lab.max())
    if n == 0:
        return lab, []
    flat = lab.ravel()
    counts = np.bincount(flat, minlength=n + 1)
    unc = np.bincount(flat, weights=(1 - np.abs(2 * p - 1)).ravel(), minlength=n + 1)
    idx = np.indices(lab.shape).reshape(3, -1)
    cent = [np.bincount(flat, weights=i, minlength=n + 1) for i in idx]
    objs = [{"id": i, "voxels": int(counts[i]), "uncertainty": float(unc[i] / counts[i]),
             "centroid": tuple(float(c[i] / counts[i]) for c in cent)} for i in range(1, n + 1)]
    return lab, objs


def order(objects: list[dict], by: str) -> list[dict]:
    """Largest first (`size`) or most uncertain first (`uncertainty`)."""
    key = "voxels" if by == "size" else "uncertainty"
    return sorted(objects, key=lambda o: (-o[key], o["id"]))


def not_target_class(classes: list[str], target: str | None) -> int:
    """The class painted for "not the target": `background`/`bg` if there is one, else the first other class."""
    others = [i for i, c in enumerate(classes, 1) if c != target]
    if not others:
        raise FibError(f"no class other than the target {target!r} to mark 'not the target'; "
                       "the session needs a background class")
    named = [i for i in others if classes[i - 1].lower() in ("background", "bg")]
    return (named or others)[0]
