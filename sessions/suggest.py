"""Where to label next: candidate crop boxes, never on held-out regions nor on existing crops.

Methods:
- `random` (the default): foreground-aware random sampling. The 2025 nnActive benchmark found random
  sampling with a share of foreground patches as good as uncertainty-based active learning for 3D
  segmentation. A third of the boxes are centred on a random voxel the latest prediction calls
  foreground (p ≥ 0.5), the rest are uniform; without a prediction, all are uniform.
- `uncertainty`: the boxes of highest mean binary entropy of the latest prediction.
- `disagreement`: the boxes where the last two predictions differ most (mean |p₁ − p₂|).

Scores are read from the coarsest prediction level at which a box still spans ≥ 4 voxels per axis,
so a suggestion over a large volume reads a small fraction of it.
"""

from __future__ import annotations

import json

import numpy as np

from sessions import jobs
from sessions.errors import FibError
from sessions.geometry import Box, fmt
from sessions.volumes import catalog, omezarr
from sessions.workspace import Session

METHODS = ("random", "uncertainty", "disagreement")
CANDIDATES_PER_PICK = 40
FOREGROUND_SHARE = 1 / 3


def predictions(session: Session, volume: str, n: int = 2) -> list[tuple[str, omezarr.Multiscale]]:
    """The newest `n` completed predictions of `volume`: (job id, multiscale), newest first."""
    out = []
    for job in session.db["jobs"].rows_where("kind = 'predict' and state = 'COMPLETED'", order_by="rowid desc"):
        spec = jobs.spec(session, job) or {}
        res = jobs.result(session, job) or {}
        if spec.get("volume", {}).get("name") == volume and res.get("output"):
            try:
                out.append((job["id"], omezarr.open_multiscale(jobs.job_dir(session, job) / res["output"])))
            except FibError:
                continue
        if len(out) == n:
            break
    return out


def taken_boxes(session: Session, volume: str) -> list[Box]:
    """Boxes a suggestion must avoid: the held-out regions and the crops of `volume`."""
    from sessions.labels import crop_boxes, holdout_boxes

    return [b for _, b in holdout_boxes(session, volume)] + [b for _, b in crop_boxes(session, volume)]


def _level(ms: omezarr.Multiscale, size) -> int:
    best = 0
    for lvl in range(len(ms.levels)):
        f = ms.factor(lvl, base=0)
        if all(s / k >= 4 or k == 1 for s, k in zip(size, f)):
            best = lvl
    return best


def _read(ms: omezarr.Multiscale, level: int, box: Box) -> np.ndarray:
    f = ms.factor(level, base=0)
    sl = tuple(slice(o // k, max(-(-e // k), o // k + 1)) for o, e, k in zip(box.offset, box.stop, f))
    return np.asarray(ms.levels[level][sl], np.float32) / 255.0


def _entropy(p: np.ndarray) -> float:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return float(np.mean(-(q * np.log2(q) + (1 - q) * np.log2(1 - q))))


def suggest(session: Session, volume: str | None = None, *, method: str = "random", count: int = 5,
            size=None, seed: int | None = None) -> list[dict]:
    if method not in METHODS:
        raise FibError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if count < 1:
        raise FibError(f"--count {count}: ask for at least one box")
    volume = volume or catalog.default_volume(session)
    shape = tuple(catalog.get_volume(session, volume)["shape"])
    if size is None:
        held = next(session.db["holdout"].rows_where("volume = ?", [volume], limit=1), None)
        size = tuple(int(v) for v in held["shape"].split(",")) if held else (8, 64, 64)
    size = tuple(min(s, n) for s, n in zip(size, shape))
    preds = predictions(session, volume, 2)
    if method == "uncertainty" and not preds:
        raise FibError("--method uncertainty needs a prediction: run `fibtui round predict` first")
    if method == "disagreement" and len(preds) < 2:
        raise FibError("--method disagreement needs two predictions (two rounds predicted); "
                       f"this volume has {len(preds)}")
    seed = int(np.random.SeedSequence().entropy % (1 << 31)) if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    taken = taken_boxes(session, volume)

    def free(box: Box) -> bool:
        return box.inside(shape) and not any(box.overlaps(b) for b in taken)

    def uniform() -> Box:
        return Box(tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size)), size)

    def around(z, y, x) -> Box:
        off = tuple(int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip((z, y, x), size, shape))
        return Box(off, size)

    picks: list[dict] = []
    if method == "random":
        fg = None
        if preds:
            ms = preds[0][1]
            lvl = len(ms.levels) - 1
            coarse = np.asarray(ms.levels[lvl][:])
            fg = (np.argwhere(coarse >= 128), ms.factor(lvl, base=0))
        n_fg = int(round(count * FOREGROUND_SHARE)) if fg is not None and len(fg[0]) else 0
        tries = 0
        while len(picks) < count and tries < CANDIDATES_PER_PICK * count * 5:
            tries += 1
            want_fg = sum(p["foreground"] for p in picks) < n_fg
            if want_fg:
                v, f = fg[0][rng.integers(len(fg[0]))], fg[1]
                box = around(*(int(c * k + rng.integers(k)) for c, k in zip(v, f)))
            else:
                box = uniform()
            if free(box) and not any(box.overlaps(Box(tuple(p["offset"]), size)) for p in picks):
                picks.append({"offset": list(box.offset), "shape": list(size), "score": None, "foreground": want_fg})
    else:
        cands = []
        for _ in range(CANDIDATES_PER_PICK * count):
            box = uniform()
            if free(box):
                cands.append(box)
        lvl = _level(preds[0][1], size)
        scored = []
        for box in cands:
            if method == "uncertainty":
                score = _entropy(_read(preds[0][1], lvl, box))
            else:
                score = float(np.mean(np.abs(_read(preds[0][1], lvl, box) - _read(preds[1][1], lvl, box))))
            scored.append((score, box))
        for score, box in sorted(scored, key=lambda t: -t[0]):
            if len(picks) == count:
                break
            if not any(box.overlaps(Box(tuple(p["offset"]), size)) for p in picks):
                picks.append({"offset": list(box.offset), "shape": list(size), "score": round(score, 4),
                              "foreground": None})
    if not picks:
        raise FibError(f"no free box of size {fmt(size)} outside the held-out regions and crops; ask for smaller")
    return [{"rank": i + 1, "method": method, "seed": seed, "volume": volume, **p,
             "range": ",".join(f"{o}:{o + s}" for o, s in zip(p["offset"], p["shape"]))}
            for i, p in enumerate(picks)]


def to_json(rows: list[dict]) -> str:
    return json.dumps(rows)
