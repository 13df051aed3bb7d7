"""The scientist's answer, as data: pores per nucleus, envelope area, density with its interval.

Pure functions over the tables a measure job leaves (remote.objects): no zarr, no jobs.

- **Counting pores cut by the volume's border**: a pore whose centre lies outside the volume
  still shows a cap inside it; the generator's truth counts a pore when its centre is inside.
  A pore is symmetric about its centre, so a cut pore shows more than half of itself exactly
  when its centre is inside: a border-touching object counts when it has at least half the
  median voxels of the pores that do not touch the border.
- **Assignment**: a pore belongs to the nucleus whose envelope voxel is nearest its centroid,
  within ASSIGN_NM. Pores sit *in* the envelope band (distance 0 on labels); a predicted
  pore's centroid can drift off the band by about its radius (55 nm) when the prediction is
  lopsided, so 100 nm (≈ a pore diameter, below the 120–150 nm pore spacing and far below
  the micrometres between nuclei) keeps those and nothing that floats in the cytoplasm.
- **Interval**: a bootstrap over ~1 µm² envelope patches (cubes of 1 µm the surface passes
  through): density is a ratio of sums, and pores cluster (pore-free islands), so resampling
  patches rather than pores keeps that clustering in the interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ASSIGN_NM = 100.0
MIN_NUCLEUS_UM2 = 1.0  # smaller envelope objects are fragments (a predicted mitochondrion, a sliver at the
#                        border): ~6 pores at typical density, too few for a density; reported, not measured
PLAUSIBLE = (2.0, 20.0)  # pores/µm² for somatic cells; outside it, a warning
BOOTSTRAP = 2000
# splitting touching pores (`fibtui measure --split`; remote/objects/split.py)
SPLIT_SPACING_NM = 120.0
SPLIT_EXTENT_NM = 400.0


def split_settings(spacing_nm: float = SPLIT_SPACING_NM, max_extent_nm: float = SPLIT_EXTENT_NM) -> dict:
    """What a measure spec records for `--split`: the peak spacing and the largest object that is split.

    **Spacing 120 nm** (GUIDE §6: pores are ~100–120 nm across and never closer than ~120–150 nm
    centre to centre; the generator's PORE_MIN_SPACING_NM is 130): distance-transform peaks closer
    than this belong to one object. Every point of a pore lies within 120 nm of its highest peak,
    so a single pore, or any round blob up to ~240 nm across, keeps one peak and is never cut,
    while each pore of a touching pair (centres ≥ 120 nm apart) keeps its own.
    **Largest split object 400 nm** along each axis: a clump of up to three pores in a row (3 ×
    130 nm, plus a prediction's blur). Anything larger is not a clump of pores (an envelope
    fragment, a smear of false positives) and is left whole. It is also the halo each block reads
    to split exactly across blocks, so it bounds the extra reading: a block of edges b nm reads
    Π(1 + 800/b) times its voxels (≈ 5× for 64×256×256 at 8 nm), only when splitting."""
    return {"spacing_nm": float(spacing_nm), "max_extent_nm": float(max_extent_nm)}


def counted(table: dict) -> np.ndarray:
    """Which objects count as pores inside the volume (the border rule above)."""
    vox = np.asarray(table["voxels"])
    border = np.asarray(table["touches_border"], bool)
    if not len(vox):
        return np.zeros(0, bool)
    ref = np.median(vox[~border]) if (~border).any() else np.median(vox)
    return ~border | (vox >= 0.5 * ref)


def density_interval(pores_per_patch: np.ndarray, area_per_patch: np.ndarray, seed: int = 0,
                     n: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile bootstrap interval of Σpores/Σarea over patches."""
    k = len(area_per_patch)
    if k < 2 or area_per_patch.sum() <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n, k))
    a = area_per_patch[idx].sum(1)
    d = pores_per_patch[idx].sum(1) / np.where(a > 0, a, np.nan)
    lo, hi = np.nanpercentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def readout(nuclei: list[dict], pores: dict, patch_nm: float, seed: int = 0) -> dict:
    """Per nucleus: pores, area, density, interval, warnings; and the total.

    `nuclei`: [{"id", "area_um2", "patches": {(cz,cy,cx): µm²}, "partial", "voxels"}];
    `pores`: the pore table with "nucleus" (0: unassigned), "z_nm"/"y_nm"/"x_nm" and "counted"."""
    nid = np.asarray(pores.get("nucleus", []), np.int64)
    cnt = np.asarray(pores.get("counted", []), bool)
    pos = np.stack([np.asarray(pores.get(k, []), float) for k in ("z_nm", "y_nm", "x_nm")], 1) if len(nid) else \
        np.zeros((0, 3))
    out, fragments = [], []
    for nu in nuclei:
        if nu["area_um2"] < MIN_NUCLEUS_UM2:
            fragments.append(nu)
            continue
        mine = (nid == nu["id"]) & cnt
        cells = {tuple(c): a for c, a in nu["patches"].items()}
        pc = [tuple(c) for c in np.floor(pos[mine] / patch_nm).astype(np.int64).tolist()]
        keys = sorted(set(cells) | set(pc))
        area = np.array([cells.get(k, 0.0) for k in keys])
        npp = np.zeros(len(keys))
        where = {k: i for i, k in enumerate(keys)}
        for c in pc:
            npp[where[c]] += 1
        n = int(mine.sum())
        a = float(nu["area_um2"])
        dens = n / a if a > 0 else float("nan")
        lo, hi = density_interval(npp, area, seed=seed + nu["id"])
        warn = []
        if nu.get("partial"):
            warn.append("partly imaged (cut by the volume border): area and count cover the imaged part only")
        if a > 0 and not PLAUSIBLE[0] <= dens <= PLAUSIBLE[1]:
            warn.append(f"density {dens:.2f}/µm² is outside the plausible {PLAUSIBLE[0]:g}–{PLAUSIBLE[1]:g}/µm² "
                        "for somatic cells: check the segmentation")
        out.append({"nucleus": nu["id"], "pores": n, "envelope_um2": round(a, 4),
                    "density_per_um2": round(dens, 4), "ci95": [round(lo, 4), round(hi, 4)],
                    "partial": bool(nu.get("partial")), "patches": len(keys), "warnings": warn})
    tot_n = sum(r["pores"] for r in out)
    tot_a = sum(r["envelope_um2"] for r in out)
    frag_ids = [f["id"] for f in fragments]
    return {"nuclei": out, "pores": tot_n, "envelope_um2": round(tot_a, 4),
            "density_per_um2": round(tot_n / tot_a, 4) if tot_a > 0 else None,
            "unassigned_pores": int(((nid == 0) & cnt).sum()),
            "fragments": {"count": len(fragments), "envelope_um2": round(sum(f["area_um2"] for f in fragments), 4),
                          "pores": int((np.isin(nid, frag_ids) & cnt).sum())}}


def sentence(r: dict, truth: dict | None = None) -> str:
    """'nucleus 1: 212 pores on 31.4 µm² of envelope = 6.8 /µm² [6.1–7.5]; truth 205 pores, 6.6 /µm²'."""
    lo, hi = r["ci95"]
    s = (f"nucleus {r['nucleus']}: {r['pores']} pores on {r['envelope_um2']:.1f} µm² of envelope = "
         f"{r['density_per_um2']:.2f} /µm² [{lo:.2f}–{hi:.2f}]" + (" (partial)" if r["partial"] else ""))
    if truth:
        s += f"; truth {truth['pore_count']} pores, {truth['envelope_area_um2']:.1f} µm², " \
             f"{truth['pore_density_per_um2']:.2f} /µm²"
    return s


def match_truth(readout_: dict, truth: dict) -> list[dict | None]:
    """The truth nucleus of each measured nucleus, one to one, closest envelope areas first (None: no match)."""
    cand = [t for t in truth.get("nuclei", []) if t.get("envelope_area_um2", 0) > 0]
    nuc = readout_["nuclei"]
    pairs = sorted((abs(t["envelope_area_um2"] - r["envelope_um2"]), i, j)
                   for i, r in enumerate(nuc) for j, t in enumerate(cand))
    out: list[dict | None] = [None] * len(nuc)
    used: set[int] = set()
    for _, i, j in pairs:  # one to one, closest areas first
        if out[i] is None and j not in used:
            out[i] = cand[j]
            used.add(j)
    return out


def open_volume(path: str):
    """Level 0 of an OME-Zarr, a zarr array, or a (Big)TIFF (memory-mapped when uncompressed)."""
    import zarr

    p = Path(path)
    if p.suffix in (".zarr",) or p.name.endswith(".ome.zarr") or p.is_dir():
        node = zarr.open(p, mode="r")
        if isinstance(node, zarr.Array):
            return node
        from sessions.volumes import omezarr

        return omezarr.open_multiscale(p).levels[0]
    import tifffile

    try:
        return tifffile.memmap(p, mode="r")
    except ValueError:  # compressed or not memory-mappable: read it (labels crops are small)
        return tifffile.imread(p)


# ---------------------------------------------------------------- the session side: latest answer, exports, truth
def latest(session) -> dict | None:
    """The latest completed measure job: {"job", "readout", "provenance", "dir", "truth"} (None: none yet)."""
    from sessions import jobs

    row = next(session.db["jobs"].rows_where("kind = 'measure' and state = 'COMPLETED'", order_by="rowid desc",
                                             limit=1), None)
    if row is None:
        return None
    res = jobs.result(session, row) or {}
    if "readout" not in res:
        return None
    spec = jobs.spec(session, row) or {}
    return {"job": row["id"], "round": row["round"], "readout": res["readout"],
            "provenance": res.get("provenance") or spec.get("provenance", {}),
            "dir": str(jobs.job_dir(session, row)), "truth": truth_for(session, spec)}


def truth_for(session, spec: dict) -> dict | None:
    """The generator's truth.json for what was measured, when there is one: beside the labels
    file, or beside the volume's source (a synthetic volume)."""
    import json

    cands = []
    for part in (spec.get("provenance") or {}).values():
        if part.get("labels"):
            cands.append(Path(part["labels"]))
    for v in session.db["volumes"].rows:
        if v.get("source"):
            cands.append(Path(v["source"]))
    for c in cands:
        t = c.with_name(c.name.split(".")[0] + ".truth.json")
        if t.is_file():
            try:
                return json.loads(t.read_text())
            except ValueError:
                continue
    return None


def with_truth(answer: dict) -> list[str]:
    """One sentence per nucleus, beside the truth nucleus when the truth is known (matched by area)."""
    truth = answer.get("truth")
    r = answer["readout"]
    matched = match_truth(r, truth) if truth else [None] * len(r["nuclei"])
    lines = [sentence(n, t) for n, t in zip(r["nuclei"], matched)]
    f = r.get("fragments") or {}
    if f.get("count"):
        lines.append(f"(+ {f['count']} envelope fragment{'s' * (f['count'] > 1)} under {MIN_NUCLEUS_UM2:g} µm², "
                     f"{f['envelope_um2']:.2f} µm² with {f['pores']} pores, not measured: too small for a density)")
    return lines


def export(session, answer: dict) -> Path:
    """Copy the job's pore and nucleus tables (Parquet and CSV) to exports/<job>/; returns that folder."""
    import os
    import shutil

    dest = session.path("exports", answer["job"])
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pores", "nuclei"):
        for ext in ("parquet", "csv"):
            src = Path(answer["dir"]) / f"{name}.{ext}"
            if src.is_file():
                tmp = dest / f".{name}.{ext}.partial"
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest / f"{name}.{ext}")
    return dest
