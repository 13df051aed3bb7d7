"""What a training spec may say about preprocessing, augmentation, validation and test-time flips, and the defaults.

The vocabulary lives here, below both the UI (which offers it in forms and
flags) and the jobs (remote/preprocess.py and remote/sampling.py, which apply
it), so a spec is checked once, where it is made, and a job never meets a
method it does not know. The defaults are measured: docs/benchmarks.md,
"Preprocessing with today's defaults" and "Augmentation presets" (benchmarks/train_options.py).
"""

from __future__ import annotations

from sessions.errors import FibError

PREPROCESS = {
    "none": {},
    "percentile": {"low": 1.0, "high": 99.5},          # linear stretch of [p_low, p_high] to [0, 255]
    "clahe": {"kernel": 128.0, "clip_limit": 0.01},    # skimage.exposure.equalize_adapthist, per z-slice
    "denoise": {"weight": 0.08},                       # skimage.restoration.denoise_tv_chambolle, per z-slice
}
# none: CLAHE was ahead on each of 3 seeds on vnc-mito (+0.008 IoU) but equalises and caches every whole slice a
# prediction reads (0.12 CPU-s per megapixel, a second copy of the volume); the others were not ahead on all seeds
DEFAULT_PREPROCESS = "none"

# Each kind with its strength; 0 turns it off. Intensity kinds act on the normalised patch (range 2).
AUGMENT_KINDS = {
    "flip": "probability of a mirror, per axis",
    "rot90": "probability of a 90° rotation in the plane of equal voxel sizes (out of plane only if isotropic)",
    "contrast": "contrast factor drawn in [1-c, 1+c]",
    "brightness": "brightness shift drawn in [-b, b] (fraction of the range)",
    "gamma": "gamma drawn in [exp(-g), exp(g)]",
    "noise": "Gaussian noise, sd as a fraction of the range",
    "blur": "Gaussian blur, sigma drawn in [0, b] voxels, in-plane",
    "scale": "zoom drawn in [1-s, 1+s], in-plane (and z if isotropic)",
    "elastic": "smooth displacement, sd in voxels, in-plane",
    "shading": "a linear intensity ramp across the patch, amplitude as a fraction of the range",
}
AUGMENT_PRESETS = {
    "none": {k: 0.0 for k in AUGMENT_KINDS},
    "flips": {**{k: 0.0 for k in AUGMENT_KINDS}, "flip": 0.5, "rot90": 0.5},
    "intensity": {**{k: 0.0 for k in AUGMENT_KINDS}, "flip": 0.5, "rot90": 0.5, "contrast": 0.2, "brightness": 0.1,
                  "gamma": 0.2, "noise": 0.03, "blur": 1.0, "shading": 0.2},
    "all": {"flip": 0.5, "rot90": 0.5, "contrast": 0.2, "brightness": 0.1, "gamma": 0.2, "noise": 0.03, "blur": 1.0,
            "scale": 0.15, "elastic": 2.0, "shading": 0.2},
}
# A round's training when --iterations is not given: the vnc-mito round's budget, about 15 min on 2 CPU cores
# for training and prediction with validation and test-time flips, minutes on a GPU (docs/benchmarks.md).
DEFAULT_ITERATIONS = 2500
# flips: on vnc-mito (3 seeds, docs/benchmarks.md "Augmentation presets") `intensity` and `all` were ahead on two
# seeds of three (+0.009 and +0.005 IoU on the mean), and `all` trains 45 % slower (zoom and elastic per patch)
DEFAULT_AUGMENT = "flips"
DEFAULT_VALIDATION = 0.15  # fraction of each crop's extent held apart to choose the checkpoint
# Test-time flips: the axes (of N, C, z, y, x) each extra pass mirrors; the logits are averaged (remote/model.py).
# In-plane only: flipping z as well measured +0.003 IoU on vnc-mito for twice the cost (docs/benchmarks.md,
# "Test-time flips"), where in-plane flips gave +0.022 for four times the forward.
TTA = {"none": ((),), "flips": ((), (-1,), (-2,), (-2, -1))}
DEFAULT_TTA = "flips"
# Which weights model.pt keeps; either way at the threshold the validation slabs chose for them. On vnc-mito
# at 2000 iterations the two rules measured the same (3 seeds, docs/benchmarks.md, "The final weights").
CHOOSE = {"final": "the last step's weights", "best": "the weights that scored best on the validation slabs"}
DEFAULT_CHOOSE = "best"
# A U-Net trained from scratch, unless told (a fine-tune keeps its model's): channels at the first level, levels.
DEFAULT_BASE, DEFAULT_LEVELS = 16, 4
# The voxel size the U-Net's kernel plan (remote/model.plan: which levels convolve and pool across an axis) is
# drawn on, when a stem runs the levels on a coarser grid (without a stem both are the same).
KERNEL_GRIDS = {"stem": "the levels' grid: the stem's coarser voxels make more levels 3D",
                "input": "the volume's voxels: the levels stay as 2D as the plain net's (a thin z halo)"}
DEFAULT_KERNEL_GRID = "input"
DEFAULT_AVERAGE = 0.0      # span of the weights' moving average (remote/train.averager): measured no better, off


def preprocess_record(method: str | None, flag: str = "--preprocess", **params) -> dict:
    """The spec's preprocessing: method and parameters (defaults filled in); anything unknown is one line."""
    method = method or DEFAULT_PREPROCESS
    if method not in PREPROCESS:
        raise FibError(f"{flag} {method!r}: choose one of {', '.join(PREPROCESS)}")
    unknown = set(params) - set(PREPROCESS[method])
    if unknown:
        raise FibError(f"{flag} {method}: no parameter {', '.join(sorted(unknown))} "
                       f"(it takes {', '.join(PREPROCESS[method]) or 'none'})")
    return {"method": method, **PREPROCESS[method], **{k: float(v) for k, v in params.items()}}


def parse_augment(text: str | None, flag: str = "--augment") -> dict:
    """"PRESET[,kind=strength...]" or "kind=strength,..." (over the default preset) → {kind: strength}."""
    text = (text or DEFAULT_AUGMENT).strip()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    base = DEFAULT_AUGMENT
    if parts and "=" not in parts[0]:
        base = parts.pop(0)
        if base not in AUGMENT_PRESETS:
            raise FibError(f"{flag} {text!r}: no preset {base!r}; choose {', '.join(AUGMENT_PRESETS)}, "
                           f"optionally followed by kind=strength (kinds: {', '.join(AUGMENT_KINDS)})")
    out = dict(AUGMENT_PRESETS[base])
    for p in parts:
        k, _, v = p.partition("=")
        if k not in AUGMENT_KINDS:
            raise FibError(f"{flag} {text!r}: no augmentation {k!r}; kinds: {', '.join(AUGMENT_KINDS)}")
        try:
            out[k] = float(v)
        except ValueError:
            raise FibError(f"{flag} {text!r}: {k}={v!r} is not a number") from None
        if out[k] < 0 or (k in ("flip", "rot90") and out[k] > 1):
            raise FibError(f"{flag} {text!r}: {k}={v} out of range (≥ 0{', ≤ 1' if k in ('flip', 'rot90') else ''})")
    return out


def check_tta(mode: str | None, flag: str = "--tta") -> str:
    mode = DEFAULT_TTA if mode is None else mode
    if mode not in TTA:
        raise FibError(f"{flag} {mode!r}: choose one of {', '.join(TTA)}")
    return mode


def check_choose(rule: str | None, flag: str = "--choose") -> str:
    rule = DEFAULT_CHOOSE if rule is None else rule
    if rule not in CHOOSE:
        raise FibError(f"{flag} {rule!r}: choose one of {', '.join(CHOOSE)}")
    return rule


def check_kernel_grid(grid: str | None, flag: str = "--kernel-grid") -> str | None:
    """A kernel grid of KERNEL_GRIDS, or None (the starting model's, else the default: sessions/rounds.py)."""
    if grid is not None and grid not in KERNEL_GRIDS:
        raise FibError(f"{flag} {grid!r}: choose one of {', '.join(KERNEL_GRIDS)}")
    return grid


def check_validation(fraction: float, flag: str = "--validation") -> float:
    if not 0 <= fraction <= 0.5:
        raise FibError(f"{flag} {fraction:g}: give a fraction of each crop between 0 (no validation) and 0.5")
    return float(fraction)
