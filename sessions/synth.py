"""Synthetic FIB-SEM-like cell volumes with exact ground truth.

Why this exists: demos, tests and scale benchmarks need a volume whose answer
is known exactly (which voxel is envelope, how many pores there are) and that
can be larger than memory.  So the scene is *analytic*: `make_scene` draws a
few ellipsoids and pore positions (in nm) from the seed, and `iter_slabs`
evaluates them slice by slice.  Each z-slice is computed on its own, with the
same array shapes whatever the slab size, and its noise comes from an RNG
seeded by ``(seed, z)``; that is what makes the output byte-identical for any
slab size and lets a 100 GB volume be written with a few MB of RAM.

Geometry lives in nm and depends only on the physical extent
``shape * voxel_size`` and the seed, so the same seed at half the voxel size
and twice the shape gives the same cell at a finer sampling.  Membrane-like
layers are never thinner than one voxel, so they survive coarse sampling.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessions.errors import FibError

__all__ = [
    "BACKGROUND",
    "NUCLEUS",
    "ENVELOPE",
    "PORE",
    "MITO",
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "Scene",
    "Nucleus",
    "Pore",
    "Mitochondrion",
    "Wave",
    "make_scene",
    "iter_slabs",
    "write_tiff",
]

BACKGROUND, NUCLEUS, ENVELOPE, PORE, MITO = 0, 1, 2, 3, 4
CLASS_NAMES = ("background", "nucleus", "envelope", "pore", "mito")
GENERATOR_VERSION = "synth-1"

# --- physical constants of the scene (nm) ----------------------------------
MEMBRANE_NM = 8.0  # one lipid bilayer as seen in FIB-SEM
PERINUCLEAR_NM = 30.0  # lumen between the two nuclear membranes
PORE_DIAMETER_NM = 110.0
PORE_MIN_SPACING_NM = 130.0
MAX_PORE_DENSITY = 30.0  # /µm²; random packing at 130 nm spacing jams near 40
ISLAND_FRACTION = 0.10  # pore-free share of each envelope
MITO_PER_UM3 = 0.4
NOISE_SIGMA = 12.0

# --- grey levels (before shading and noise) ---------------------------------
CYTOPLASM_GREY = 150.0
NUCLEOPLASM_GREY = 172.0
MEMBRANE_GREY = 85.0
LUMEN_GREY = 165.0
PLUG_GREY = 60.0
MITO_MEMBRANE_GREY = 75.0
MATRIX_GREY = 92.0
CRISTA_GREY = 135.0

_TAG = 0x5F1B  # keeps scene RNG streams apart from the per-slice noise streams


# --- scene description -------------------------------------------------------


@dataclass(frozen=True)
class Wave:
    """One plane wave of the smooth texture; analytic so any slice can be
    evaluated alone."""

    k: tuple[float, float, float]  # rad/nm, (z, y, x)
    phase: float
    amplitude: float


@dataclass(frozen=True)
class Nucleus:
    """Ellipsoid whose surface is the *outer* face of the envelope."""

    centre_nm: tuple[float, float, float]
    radii_nm: tuple[float, float, float]  # along the local axes (columns of rotation)
    rotation: tuple[tuple[float, float, float], ...]  # 3x3, world = R @ local
    islands: tuple[tuple[tuple[float, float, float], float], ...]  # (local unit dir, cos half-angle)
    envelope_area_um2: float  # whole mid-envelope surface
    envelope_area_in_volume_um2: float


@dataclass(frozen=True)
class Pore:
    """A pore complex: a cylinder of PORE_DIAMETER_NM through the envelope."""

    nucleus: int
    centre_nm: tuple[float, float, float]  # on the mid-envelope surface
    normal: tuple[float, float, float]  # outward unit normal


@dataclass(frozen=True)
class Mitochondrion:
    centre_nm: tuple[float, float, float]
    radii_nm: tuple[float, float, float]  # local axis 0 is the long one
    rotation: tuple[tuple[float, float, float], ...]
    cristae_period_nm: float
    cristae_phase: float
    wobble_nm: float  # wavelength of the cristae's waviness


@dataclass(frozen=True)
class Scene:
    """Everything analytic that defines the volume, derived from the seed.

    Voxel (z, y, x) covers [z*vz, (z+1)*vz) x ... nm, so the box is
    [0, shape*voxel_size) whatever the sampling; truth reports positions in
    voxel-index units (voxel centres are integers).
    """

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    seed: int
    pore_density: float
    shading: float
    nuclei: tuple[Nucleus, ...]
    pores: tuple[Pore, ...]
    mitochondria: tuple[Mitochondrion, ...]
    texture: tuple[Wave, ...]  # slow cytoplasm/stain variation
    granules: tuple[Wave, ...]  # fine chromatin texture inside nuclei

    @property
    def membrane_nm(self) -> float:
        return max(MEMBRANE_NM, max(self.voxel_size))

    @property
    def lumen_nm(self) -> float:
        return max(PERINUCLEAR_NM, max(self.voxel_size))

    @property
    def envelope_nm(self) -> float:
        return 2 * self.membrane_nm + self.lumen_nm

    def truth(self) -> dict:
        """JSON-able ground truth, so benchmarks can score counts without
        re-deriving the geometry."""
        vs = np.asarray(self.voxel_size)
        owner = np.array([p.nucleus for p in self.pores], int)
        centres = np.array([p.centre_nm for p in self.pores]).reshape(-1, 3)
        in_box = _inside_box(centres, self.shape, self.voxel_size)
        inside = np.bincount(owner[in_box], minlength=len(self.nuclei))
        every = np.bincount(owner, minlength=len(self.nuclei))
        nuclei = []
        for i, n in enumerate(self.nuclei):
            area = n.envelope_area_in_volume_um2
            nuclei.append(
                {
                    "centre_voxels": [round(float(c), 3) for c in np.asarray(n.centre_nm) / vs - 0.5],
                    "radii_nm": [round(r, 2) for r in n.radii_nm],
                    "rotation": [list(r) for r in n.rotation],
                    "envelope_area_um2": round(area, 4),
                    "envelope_area_total_um2": round(n.envelope_area_um2, 4),
                    "pore_count": int(inside[i]),
                    "pore_count_total": int(every[i]),
                    "pore_density_per_um2": round(int(inside[i]) / area, 4) if area > 0 else None,
                }
            )
        total_area = sum(n.envelope_area_in_volume_um2 for n in self.nuclei)
        total = int(inside.sum())
        return {
            "generator": "sessions.synth",
            "version": GENERATOR_VERSION,
            "shape": list(self.shape),
            "voxel_size_nm": list(self.voxel_size),
            "seed": self.seed,
            "pore_density_param": self.pore_density,
            "shading": self.shading,
            "classes": {name: i for i, name in enumerate(CLASS_NAMES)},
            "membrane_nm": self.membrane_nm,
            "perinuclear_space_nm": self.lumen_nm,
            "pore_diameter_nm": PORE_DIAMETER_NM,
            "pore_min_spacing_nm": PORE_MIN_SPACING_NM,
            "nuclei": nuclei,
            "envelope_area_um2": round(total_area, 4),
            "pore_count": total,
            "pore_density_per_um2": round(total / total_area, 4) if total_area > 0 else None,
            "mitochondria_count": len(self.mitochondria),
        }


# --- validation ----------------------------------------------------------------


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        ok = len(shape) == 3 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 16 for s in shape
        )
    except TypeError:
        ok = False
    if not ok:
        raise FibError(
            f"shape={shape!r} is invalid: give 3 integers (z, y, x), each >= 16, e.g. (64, 256, 256)"
        )
    return tuple(int(s) for s in shape)


def _check_voxel(voxel_size) -> tuple[float, float, float]:
    try:
        vs = tuple(float(v) for v in voxel_size)
        ok = len(vs) == 3 and all(math.isfinite(v) and v > 0 for v in vs)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FibError(
            f"voxel_size={voxel_size!r} is invalid: give 3 positive finite sizes in nm (z, y, x), e.g. (8, 8, 8)"
        )
    return vs


def _validate(shape, seed, voxel_size, pore_density, shading):
    shape = _check_shape(shape)
    vs = _check_voxel(voxel_size)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise FibError(f"seed={seed!r} is invalid: give a non-negative integer")
    try:
        pd = float(pore_density)
    except (TypeError, ValueError):
        pd = float("nan")
    if not (math.isfinite(pd) and 0 < pd <= MAX_PORE_DENSITY):
        raise FibError(
            f"pore_density={pore_density!r} is invalid: give pores per µm² in (0, {MAX_PORE_DENSITY:g}], e.g. 6.5"
        )
    try:
        sh = float(shading)
    except (TypeError, ValueError):
        sh = float("nan")
    if not (math.isfinite(sh) and 0 <= sh < 1):
        raise FibError(
            f"shading={shading!r} is invalid: give the x-gradient depth in [0, 1), e.g. 0.3"
        )
    return shape, int(seed), vs, pd, sh


# --- geometry helpers --------------------------------------------------------------


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fibonacci_sphere(n: int) -> np.ndarray:
    """Quasi-uniform directions: a deterministic, low-variance quadrature."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


def _signed_distance(points: np.ndarray, centre, radii, rot) -> np.ndarray:
    """First-order distance to an ellipsoid surface (nm, negative inside);
    exact enough within a few hundred nm of µm-sized ellipsoids."""
    q = (np.asarray(points) - np.asarray(centre)) @ np.asarray(rot)
    r = np.asarray(radii)
    u = q / r
    rho2 = (u * u).sum(-1)
    g2 = ((u / r) ** 2).sum(-1)
    ratio = np.clip(g2 / np.maximum(rho2, 1e-30), 1 / r.max() ** 2, 1 / r.min() ** 2)
    return (np.sqrt(rho2) - 1) / np.sqrt(ratio)


def _inside_box(points: np.ndarray, shape, vs) -> np.ndarray:
    hi = np.asarray(shape) * np.asarray(vs)
    return np.all((points >= 0) & (points < hi), axis=-1)


def _half_extent(radii, rot) -> np.ndarray:
    """Axis-aligned half-size of a rotated ellipsoid."""
    return np.sqrt(((np.asarray(rot) * np.asarray(radii)) ** 2).sum(axis=1))


def _area_quadrature(radii, rot, centre, shape, vs, n=40000) -> tuple[float, float]:
    """(total, inside-volume) ellipsoid area in µm², integrating over the unit
    sphere with the sphere→ellipsoid area factor r1 r2 r3 |u/r|."""
    u = _fibonacci_sphere(n)
    r = np.asarray(radii)
    w = r.prod() * np.linalg.norm(u / r, axis=1) * (4 * math.pi / n)
    pts = np.asarray(centre) + (u * r) @ np.asarray(rot).T
    inside = _inside_box(pts, shape, vs)
    return float(w.sum()) * 1e-6, float(w[inside].sum()) * 1e-6


def _waves(rng, n, wl_lo, wl_hi, amp) -> tuple[Wave, ...]:
    dirs = _unit(rng, n)
    wl = rng.uniform(wl_lo, wl_hi, n)
    ph = rng.uniform(0, 2 * math.pi, n)
    return tuple(
        Wave(tuple(float(c) for c in dirs[i] * (2 * math.pi / wl[i])), float(ph[i]), amp)
        for i in range(n)
    )


_NEIGHBOURS = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]


def _place_pores(rng, idx, radii, rot, centre, islands, density, area_um2) -> list[Pore]:
    """Dart throwing (Poisson disk) on the area-uniform ellipsoid surface;
    islands are rejected so real-looking bare patches appear."""
    target = int(round(density * area_um2))
    r = np.asarray(radii)
    rot = np.asarray(rot)
    cell = PORE_MIN_SPACING_NM
    grid: dict[tuple[int, int, int], list[np.ndarray]] = {}
    out: list[Pore] = []
    attempts, budget = 0, 60 * target + 2000
    isl_dirs = np.array([d for d, _ in islands]) if islands else np.zeros((0, 3))
    isl_cos = np.array([c for _, c in islands]) if islands else np.zeros(0)
    min2 = PORE_MIN_SPACING_NM**2
    while len(out) < target and attempts < budget:
        u = _unit(rng, 4096)
        keep = rng.random(4096) < np.linalg.norm(u / r, axis=1) * r.min()  # area-uniform
        u = u[keep]
        if len(isl_dirs):
            u = u[~np.any(u @ isl_dirs.T > isl_cos, axis=1)]
        local = u * r
        normals = (local / r**2) @ rot.T
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        pts = centre + local @ rot.T
        for p, nrm in zip(pts, normals):
            attempts += 1
            key = tuple(int(k) for k in np.floor(p / cell))
            near = (
                q
                for oz, oy, ox in _NEIGHBOURS
                for q in grid.get((key[0] + oz, key[1] + oy, key[2] + ox), ())
            )
            if not any((p - q) @ (p - q) < min2 for q in near):
                grid.setdefault(key, []).append(p)
                out.append(Pore(idx, tuple(float(c) for c in p), tuple(float(c) for c in nrm)))
                if len(out) >= target:
                    break
            if attempts >= budget:
                break
    return out


# --- scene construction --------------------------------------------------------------


def make_scene(shape, seed, voxel_size=(8.0, 8.0, 8.0), pore_density=6.5, shading=0.3,
               nucleus_densities=None) -> Scene:
    """Draw a cell from the seed.

    Only the physical extent and the seed drive the draws, so the same seed
    gives the same cell at any sampling.  `pore_density` is the mean over the
    whole envelope, islands included (they raise the local density elsewhere);
    `nucleus_densities` (optional, pores/µm² for nuclei 0, 1, ...) overrides it per nucleus,
    so two nuclei of different known densities can be told apart (the other draws are unchanged).
    """
    shape, seed, vs, pore_density, shading = _validate(shape, seed, voxel_size, pore_density, shading)
    per_nucleus = [_validate(shape, seed, vs, d, shading)[3] for d in (nucleus_densities or ())]
    ext = np.asarray(shape, float) * np.asarray(vs)  # nm
    lo, hi = np.zeros(3), ext
    mid = (lo + hi) / 2
    rng = np.random.default_rng([seed, _TAG, 1])
    envelope = 2 * MEMBRANE_NM + PERINUCLEAR_NM  # geometry must not depend on sampling

    texture = _waves(rng, 4, 800.0, 3000.0, 4.0)
    granules = _waves(rng, 8, 120.0, 300.0, 3.0)

    # Nuclei: put a random point P of the volume's inner 80 % on the surface, so
    # the envelope always crosses the volume; face the outward normal at P
    # towards the volume centre so the nucleus does not swallow the volume.
    nuclei_geo = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(50):
            base = rng.uniform(1500.0, 3000.0)
            radii = np.clip(base * rng.uniform(0.6, 1.0, 3), 1000.0, 3000.0)
            rot = _rotation(rng)
            p = lo + (hi - lo) * rng.uniform(0.1, 0.9, 3)
            u = _unit(rng, 1)[0]
            if u @ (p - mid) > 0:
                u = -u
            # surface point along world direction u from the centre
            t = 1.0 / np.linalg.norm((u @ rot) / radii)
            centre = p - t * u
            if all(
                np.linalg.norm(centre - c) > radii.max() + r.max() + 300.0
                for c, r, _ in nuclei_geo
            ):
                nuclei_geo.append((centre, radii, rot))
                break

    nuclei: list[Nucleus] = []
    pores: list[Pore] = []
    for i, (centre, radii, rot) in enumerate(nuclei_geo):
        n_isl = int(rng.integers(1, 3))
        cos_t = 1 - 2 * ISLAND_FRACTION / n_isl  # sphere cap share of area
        islands = tuple((tuple(float(c) for c in d), cos_t) for d in _unit(rng, n_isl))
        mid_r = radii - envelope / 2
        total, inside = _area_quadrature(mid_r, rot, centre, shape, vs)
        prng = np.random.default_rng([seed, _TAG, 2, i])
        dens = per_nucleus[i] if i < len(per_nucleus) else pore_density
        pores += _place_pores(prng, i, mid_r, rot, centre, islands, dens, total)
        nuclei.append(
            Nucleus(
                tuple(float(c) for c in centre),
                tuple(float(r) for r in radii),
                tuple(tuple(float(c) for c in row) for row in rot),
                islands,
                total,
                inside,
            )
        )

    # Mitochondria: centres inside the volume, clear of nuclei and each other.
    vol_um3 = float(np.prod(ext)) * 1e-9
    target = max(3, int(round(MITO_PER_UM3 * vol_um3)))
    probe = _fibonacci_sphere(64)
    mitos: list[Mitochondrion] = []
    placed_c, placed_r = np.empty((target, 3)), np.empty(target)
    for _ in range(40 * target):
        if len(mitos) >= target:
            break
        b = rng.uniform(150.0, 500.0)
        radii = np.array([b * rng.uniform(1.0, 3.0), b, b * rng.uniform(0.8, 1.0)])
        radii[0] = min(radii[0], 1500.0)
        rot = _rotation(rng)
        centre = lo + (hi - lo) * rng.uniform(0, 1, 3)
        period = rng.uniform(80.0, 140.0)
        phase = rng.uniform(0, 1)
        wobble = rng.uniform(150.0, 350.0)
        k = len(mitos)
        gap = np.linalg.norm(placed_c[:k] - centre, axis=1) - placed_r[:k]
        if k and gap.min() < radii.max() + 40.0:
            continue
        surf = centre + (probe * radii) @ rot.T
        if any(
            _signed_distance(np.vstack([surf, centre]), n.centre_nm, n.radii_nm, n.rotation).min() < 60.0
            for n in nuclei
        ):
            continue
        placed_c[k], placed_r[k] = centre, radii.max()
        mitos.append(
            Mitochondrion(
                tuple(float(c) for c in centre),
                tuple(float(r) for r in radii),
                tuple(tuple(float(c) for c in row) for row in rot),
                float(period),
                float(phase),
                float(wobble),
            )
        )

    return Scene(
        shape=shape,
        voxel_size=vs,
        seed=seed,
        pore_density=pore_density,
        shading=shading,
        nuclei=tuple(nuclei),
        pores=tuple(pores),
        mitochondria=tuple(mitos),
        texture=texture,
        granules=granules,
    )


# --- rendering ---------------------------------------------------------------------------


class _WaveField:
    """Sum of plane waves for one z-slice as a (Y,2K)@(2K,X) product, using
    sin(a+b+c) = sin(a+c)cos(b) + cos(a+c)sin(b): only O(X) trig per slice."""

    def __init__(self, waves, y_nm, x_nm):
        self.k = np.array([w.k for w in waves])
        self.ph = np.array([w.phase for w in waves])
        amp = np.array([w.amplitude for w in waves])
        ky = np.outer(y_nm, self.k[:, 1])
        self.left = np.concatenate([amp * np.cos(ky), amp * np.sin(ky)], axis=1).astype(np.float32)
        self.x = np.asarray(x_nm)

    def __call__(self, z_nm: float) -> np.ndarray:
        a = np.outer(self.k[:, 2], self.x) + (self.k[:, 0] * z_nm + self.ph)[:, None]
        right = np.concatenate([np.sin(a), np.cos(a)], axis=0).astype(np.float32)
        return self.left @ right


class _Ellipsoids:
    """Per-object constants and bounding boxes, so a slice only touches the
    objects (and the window) it intersects."""

    def __init__(self, objs, shape, vs):
        self.objs = objs
        vs = np.asarray(vs)
        self.c = np.array([o.centre_nm for o in objs]).reshape(-1, 3)
        self.r = np.array([o.radii_nm for o in objs]).reshape(-1, 3)
        self.rot = np.array([o.rotation for o in objs]).reshape(-1, 3, 3)
        self.coef = self.rot / self.r[:, None, :]  # u_i = sum_j R[j,i]/r_i * d_j
        half = np.array([_half_extent(r, R) for r, R in zip(self.r, self.rot)]).reshape(-1, 3)
        half += 2 * vs
        first = np.floor((self.c - half) / vs - 0.5)  # voxel index range
        last = np.ceil((self.c + half) / vs - 0.5)
        top = np.asarray(shape) - 1
        self.lo = np.clip(first, 0, top).astype(int)
        self.hi = np.clip(last, 0, top).astype(int)
        self.empty = np.any((first > top) | (last < 0), axis=1)

    def at(self, z: int) -> list[int]:
        return np.nonzero(~self.empty & (self.lo[:, 0] <= z) & (self.hi[:, 0] >= z))[0].tolist()

    def window(self, i, z_nm, y_nm, x_nm):
        """(ys, xs, u0, u1, u2, d) for object i on one slice; d in nm."""
        ys = slice(self.lo[i, 1], self.hi[i, 1] + 1)
        xs = slice(self.lo[i, 2], self.hi[i, 2] + 1)
        dz = np.float32(z_nm - self.c[i, 0])
        dy = (y_nm[ys] - self.c[i, 1]).astype(np.float32)
        dx = (x_nm[xs] - self.c[i, 2]).astype(np.float32)
        cf = self.coef[i].astype(np.float32)
        r = self.r[i].astype(np.float32)
        u = [(cf[1, k] * dy)[:, None] + (cf[2, k] * dx + cf[0, k] * dz)[None, :] for k in range(3)]
        rho2 = u[0] * u[0] + u[1] * u[1] + u[2] * u[2]
        g2 = (u[0] / r[0]) ** 2 + (u[1] / r[1]) ** 2 + (u[2] / r[2]) ** 2
        ratio = np.clip(g2 / np.maximum(rho2, np.float32(1e-30)), 1 / r.max() ** 2, 1 / r.min() ** 2)
        d = (np.sqrt(rho2) - 1) / np.sqrt(ratio)
        return ys, xs, u, d


class _Renderer:
    def __init__(self, scene: Scene):
        self.s = scene
        Z, Y, X = scene.shape
        vz, vy, vx = scene.voxel_size
        self.y_nm = (np.arange(Y) + 0.5) * vy
        self.x_nm = (np.arange(X) + 0.5) * vx
        self.texture = _WaveField(scene.texture, self.y_nm, self.x_nm)
        self.granules = _WaveField(scene.granules, self.y_nm, self.x_nm)
        self.nuc = _Ellipsoids(scene.nuclei, scene.shape, scene.voxel_size)
        self.mito = _Ellipsoids(scene.mitochondria, scene.shape, scene.voxel_size)
        self.shade = (1.0 - scene.shading * np.arange(X) / (X - 1)).astype(np.float32)
        self.mem, self.lum, self.env = scene.membrane_nm, scene.lumen_nm, scene.envelope_nm
        self.mito_mem = max(MEMBRANE_NM, max(scene.voxel_size))
        self.crista = max(12.0, max(scene.voxel_size))
        # Pores: keep those whose window can touch the volume.
        vs = np.asarray(scene.voxel_size)
        reach = PORE_DIAMETER_NM / 2 + self.env + vs.max()
        pc = np.array([p.centre_nm for p in scene.pores]).reshape(-1, 3)
        pn = np.array([p.normal for p in scene.pores]).reshape(-1, 3)
        near = np.all((pc + reach >= 0) & (pc - reach <= np.asarray(scene.shape) * vs), axis=1)
        self.pc, self.pn = pc[near], pn[near]
        self.pz_lo = np.floor((self.pc[:, 0] - reach) / vz - 0.5).astype(int)
        self.pz_hi = np.ceil((self.pc[:, 0] + reach) / vz - 0.5).astype(int)
        self.py = np.arange(-math.ceil(reach / vy), math.ceil(reach / vy) + 1)
        self.px = np.arange(-math.ceil(reach / vx), math.ceil(reach / vx) + 1)

    def slice(self, z: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        Y, X = s.shape[1:]
        z_nm = (z + 0.5) * s.voxel_size[0]
        tex = self.texture(z_nm)
        tone = tex + np.float32(CYTOPLASM_GREY)
        lab = np.zeros((Y, X), np.uint8)

        nuc_ids = self.nuc.at(z)
        if nuc_ids:
            gran = self.granules(z_nm)
        for i in nuc_ids:
            ys, xs, _, d = self.nuc.window(i, z_nm, self.y_nm, self.x_nm)
            t, lb = tone[ys, xs], lab[ys, xs]
            interior = d <= -self.env
            env = (d <= 0) & ~interior
            membrane = env & ((d > -self.mem) | (d <= -(self.mem + self.lum)))
            t[interior] += NUCLEOPLASM_GREY - CYTOPLASM_GREY + gran[ys, xs][interior]
            t[env] += np.where(membrane[env], MEMBRANE_GREY, LUMEN_GREY) - CYTOPLASM_GREY
            lb[interior] = NUCLEUS
            lb[env] = ENVELOPE
        if nuc_ids and len(self.pc):
            self._pores(z, z_nm, tone, lab, tex)
        for i in self.mito.at(z):
            self._mito(i, z_nm, tone, lab)

        rng = np.random.default_rng([s.seed, z])
        tone += rng.standard_normal((Y, X), dtype=np.float32) * np.float32(NOISE_SIGMA)
        tone *= self.shade
        np.rint(tone, out=tone)
        np.clip(tone, 0, 255, out=tone)
        return tone.astype(np.uint8), lab

    def _pores(self, z, z_nm, tone, lab, tex):
        """All pores crossing this slice at once: a (P, wy, wx) window stack."""
        sel = np.nonzero((self.pz_lo <= z) & (self.pz_hi >= z))[0]
        if not len(sel):
            return
        Y, X = lab.shape
        vz, vy, vx = self.s.voxel_size
        c, n = self.pc[sel], self.pn[sel]
        iy = np.rint(c[:, 1] / vy - 0.5).astype(int)[:, None] + self.py
        ix = np.rint(c[:, 2] / vx - 0.5).astype(int)[:, None] + self.px
        oky, okx = (iy >= 0) & (iy < Y), (ix >= 0) & (ix < X)
        dz = (z_nm - c[:, 0])[:, None, None]
        dy = ((iy + 0.5) * vy - c[:, 1:2])[:, :, None]
        dx = ((ix + 0.5) * vx - c[:, 2:3])[:, None, :]
        ax = n[:, 0, None, None] * dz + n[:, 1, None, None] * dy + n[:, 2, None, None] * dx
        r2 = dz * dz + dy * dy + dx * dx - ax * ax
        iy, ix = np.clip(iy, 0, Y - 1), np.clip(ix, 0, X - 1)
        m = (r2 < (PORE_DIAMETER_NM / 2) ** 2) & (np.abs(ax) <= self.env) & oky[:, :, None] & okx[:, None, :]
        m &= lab[iy[:, :, None], ix[:, None, :]] == ENVELOPE
        p, j, k = np.nonzero(m)
        yy, xx = iy[p, j], ix[p, k]
        lab[yy, xx] = PORE
        tone[yy, xx] = PLUG_GREY + tex[yy, xx]  # replaces the envelope grey

    def _mito(self, i, z_nm, tone, lab):
        mt = self.s.mitochondria[i]
        ys, xs, u, d = self.mito.window(i, z_nm, self.y_nm, self.x_nm)
        t, lb = tone[ys, xs], lab[ys, xs]
        inside = (d <= 0) & (lb == BACKGROUND)  # never overwrite nuclei
        if not inside.any():
            return
        r = self.mito.r[i]
        along = u[0][inside] * np.float32(r[0])
        across = u[1][inside] * np.float32(r[1])
        s = along / np.float32(mt.cristae_period_nm) + np.float32(mt.cristae_phase)
        s += np.float32(0.3) * np.sin(across / np.float32(mt.wobble_nm))
        crista = (np.abs(s - np.rint(s)) * np.float32(mt.cristae_period_nm) < self.crista / 2) & (
            d[inside] < -(self.mito_mem + 6.0)
        )
        grey = np.where(
            d[inside] > -self.mito_mem, MITO_MEMBRANE_GREY, np.where(crista, CRISTA_GREY, MATRIX_GREY)
        )
        t[inside] += grey - CYTOPLASM_GREY
        lb[inside] = MITO


def iter_slabs(scene: Scene, slab: int = 16) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (z0, raw, labels) slabs in z order, memory O(slab*Y*X).

    Slices are rendered one at a time so a voxel never depends on `slab`.
    """
    if not isinstance(slab, (int, np.integer)) or isinstance(slab, bool) or slab < 1:
        raise FibError(f"slab={slab!r} is invalid: give a positive integer number of z-slices, e.g. 16")
    r = _Renderer(scene)
    Z, Y, X = scene.shape
    for z0 in range(0, Z, slab):
        dz = min(slab, Z - z0)
        raw = np.empty((dz, Y, X), np.uint8)
        lab = np.empty((dz, Y, X), np.uint8)
        for k in range(dz):
            raw[k], lab[k] = r.slice(z0 + k)
        yield z0, raw, lab


# --- output ----------------------------------------------------------------------------------


def _truth_path(raw_path: Path) -> Path:
    name = raw_path.name
    for suf in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    else:
        name = raw_path.stem
    return raw_path.with_name(name + ".truth.json")


def write_tiff(
    scene: Scene,
    raw_path,
    labels_path=None,
    slab: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Stream the volume to multipage BigTIFF (one page per z).

    Everything goes to `*.partial` first and is renamed at the end, raw last,
    so an existing raw file always comes with its labels and truth JSON.
    """
    import tifffile

    raw_path = Path(raw_path)
    lab_path = Path(labels_path) if labels_path is not None else None
    for p, what in ((raw_path, "raw_path"), (lab_path, "labels_path")):
        if p is not None and not p.parent.is_dir():
            raise FibError(f"{what}={str(p)!r}: folder {str(p.parent)!r} does not exist; create it first")
    if lab_path is not None and lab_path.resolve() == raw_path.resolve():
        raise FibError(f"labels_path={str(lab_path)!r} is the same as raw_path; give a different file")
    truth_path = _truth_path(raw_path)
    targets = [(raw_path, Path(str(raw_path) + ".partial"))]
    if lab_path is not None:
        targets.append((lab_path, Path(str(lab_path) + ".partial")))
    truth_tmp = Path(str(truth_path) + ".partial")
    meta = {"axes": "ZYX", "voxel_size_nm": list(scene.voxel_size), "generator": GENERATOR_VERSION}
    total = scene.shape[0]
    try:
        with ExitStack() as stack:
            writers = [stack.enter_context(tifffile.TiffWriter(tmp, bigtiff=True)) for _, tmp in targets]
            for z0, raw, lab in iter_slabs(scene, slab):
                for w, vol in zip(writers, (raw, lab)):
                    for page in vol:
                        w.write(page, contiguous=True, photometric="minisblack", metadata=meta)
                if progress is not None:
                    progress(z0 + raw.shape[0], total)
        truth_tmp.write_text(json.dumps(scene.truth(), indent=1))
        # raw last: its presence implies the others are complete
        for final, tmp in reversed(targets):
            if final == raw_path:
                os.replace(truth_tmp, truth_path)
            os.replace(tmp, final)
    except BaseException:
        for _, tmp in targets:
            tmp.unlink(missing_ok=True)
        truth_tmp.unlink(missing_ok=True)
        raise


def write_ome_zarr(scene: Scene, out_path, labels_path, slab: int = 16,
                   progress: Callable[[int, int], None] | None = None) -> None:
    """Stream the raw volume into an OME-Zarr pyramid (labels as BigTIFF beside it).

    The store is built under `<out>.partial` and renamed when complete.
    """
    import tifffile

    from sessions.volumes import omezarr

    out_path, lab_path = Path(out_path), Path(labels_path)
    partial, lab_tmp = out_path.with_name(out_path.name + ".partial"), Path(str(lab_path) + ".partial")
    truth_path = out_path.with_name(out_path.name.split(".")[0] + ".truth.json")
    omezarr.discard(partial)
    try:
        ms = omezarr.create(partial, scene.shape, scene.voxel_size, name=out_path.name.split(".")[0])
        meta = {"axes": "ZYX", "voxel_size_nm": list(scene.voxel_size), "generator": GENERATOR_VERSION}
        with tifffile.TiffWriter(lab_tmp, bigtiff=True) as w:
            for z0, raw, lab in iter_slabs(scene, slab):
                ms.levels[0][z0: z0 + raw.shape[0]] = raw
                for page in lab:
                    w.write(page, contiguous=True, photometric="minisblack", metadata=meta)
                if progress is not None:
                    progress(z0 + raw.shape[0], scene.shape[0])
        omezarr.build_pyramid(ms)
        truth_path.write_text(json.dumps(scene.truth(), indent=1))
        os.replace(lab_tmp, lab_path)
        omezarr.publish(partial, out_path)
    except BaseException:
        omezarr.discard(partial)
        lab_tmp.unlink(missing_ok=True)
        raise
