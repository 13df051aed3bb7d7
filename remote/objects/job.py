"""The measure job: both label passes, the merge, areas, assignment and tables; single or as a Slurm array."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from remote.blocks import block_key, plan_blocks, task_slice
from sessions.geometry import Box
from sessions.measure import open_volume
from remote.objects.areas import PATCH_NM, envelope_areas, nearest_object
from remote.objects.labels import GlobalLabels, label_blocks, labels_store, merge, npz_path, threshold_mask


# ---------------------------------------------------------------- the measure job
class MaxOf:
    """Voxelwise maximum of several same-shaped arrays (envelope ∪ pore probabilities)."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.shape = tuple(arrays[0].shape)

    def __getitem__(self, sl):
        out = np.asarray(self.arrays[0][sl])
        for a in self.arrays[1:]:
            out = np.maximum(out, np.asarray(a[sl]))
        return out


def _source(part: dict):
    arrays = [open_volume(p) for p in part["paths"]]
    src = arrays[0] if len(arrays) == 1 else MaxOf(arrays)
    if part["kind"] == "labels":
        return src, threshold_mask(classes=part["classes"]), False
    return src, threshold_mask(part.get("threshold", 0.5)), True


def table_columns(table: dict, extra: dict | None = None):
    import pyarrow as pa

    cols = {k: np.asarray(v) for k, v in {**table, **(extra or {})}.items()}
    return pa.table(cols)


def write_tables(job_dir: Path, name: str, table: dict) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t = table_columns(table)
    for ext, write in (("parquet", lambda t, p: pq.write_table(t, p)), ("csv", lambda t, p: pcsv.write_csv(t, p))):
        final = job_dir / f"{name}.{ext}"
        tmp = job_dir / f".{name}.{ext}.partial"
        write(t, str(tmp))
        os.replace(tmp, final)


PASSES = ("envelope", "pores")  # the two label passes of a measure job, in this order
STAGE = {"envelope": "envelope objects", "pores": "pore objects"}  # their progress messages
WORK = "work"                    # job_dir/work/<pass>/: a single job's ledger; the kept envelope labels


def _block(spec: dict) -> tuple[int, int, int]:
    return tuple(int(b) for b in spec.get("block", (64, 256, 256)))


def _passes(spec: dict) -> dict[str, dict]:
    """Per label pass: its source and how it is labelled and filtered (the single job and the array's
    tasks and final step all read them from here)."""
    vs = tuple(float(v) for v in spec["voxel_size"])
    env_src, env_mask, env_prob = _source(spec["envelope"])
    pore_src, pore_mask, pore_prob = _source(spec["pores"])
    if tuple(env_src.shape) != tuple(pore_src.shape):
        raise ValueError(f"pores {tuple(pore_src.shape)} and envelope {tuple(env_src.shape)} differ in shape")
    min_env = int(spec.get("min_envelope_voxels") or max(1, round(1e7 / float(np.prod(vs)))))
    return {"envelope": {"source": env_src, "mask_fn": env_mask, "prob": env_prob, "keep_labels": True,
                         "min_voxels": min_env, "high": None, "split": None},
            "pores": {"source": pore_src, "mask_fn": pore_mask, "prob": pore_prob, "keep_labels": False,
                      "min_voxels": int(spec["pores"].get("min_voxels", 1)), "high": spec["pores"].get("high"),
                      "split": spec["pores"].get("split")}}


def _label_passes(spec: dict, job_dir: Path, passes: dict, blocks: list[Box], npz_dir: Callable[[str], Path],
                  say, create: bool = True) -> None:
    """Pass 1 of both label passes over `blocks`, each pass's npz into `npz_dir(pass)`."""
    vs = tuple(float(v) for v in spec["voxel_size"])
    for name, p in passes.items():
        shape = tuple(int(s) for s in p["source"].shape)
        store = labels_store(Path(job_dir) / WORK / name, shape, _block(spec), create) if p["keep_labels"] else None
        label_blocks(p["source"], blocks, npz_dir(name), mask_fn=p["mask_fn"], prob=p["prob"], store=store,
                     split=p["split"], voxel_size=vs, progress=lambda d, t, name=name: say(STAGE[name], d, t))


def _conclude(spec: dict, job_dir: Path, passes: dict, where: Callable[[str], Callable[[Box], Path]], say) -> dict:
    """After pass 1 of both: the merges, size filters, envelope areas, pore → nucleus assignment, the
    readout and the tables (Parquet + CSV beside the job). `where(pass)(block)`: that block's npz."""
    from sessions import measure as readout_mod

    job_dir = Path(job_dir)
    vs = tuple(float(v) for v in spec["voxel_size"])
    block = _block(spec)
    env, pores = passes["envelope"], passes["pores"]
    shape = tuple(int(s) for s in env["source"].shape)
    env_dir = job_dir / WORK / "envelope"
    nuc_table, nuc_lut = merge(shape, block, env_dir, vs, min_voxels=env["min_voxels"], prob=env["prob"],
                               where=where("envelope"))
    if not len(nuc_table["id"]):
        raise ValueError(f"no nucleus: the envelope has no object of {env['min_voxels']} voxels or more; train the "
                         "envelope more, or lower the threshold")
    gl = GlobalLabels(env_dir, nuc_lut, block)
    areas = envelope_areas(gl, nuc_table["id"], vs, progress=lambda d, t: say("envelope area", d, t))
    (job_dir / WORK / "pores").mkdir(parents=True, exist_ok=True)
    pore_table, _ = merge(shape, block, job_dir / WORK / "pores", vs, min_voxels=pores["min_voxels"],
                          high=pores["high"], prob=pores["prob"], where=where("pores"))
    pts = np.stack([pore_table["z"], pore_table["y"], pore_table["x"]], 1) if len(pore_table["id"]) else \
        np.zeros((0, 3))
    assign_nm = float(spec.get("assign_nm", readout_mod.ASSIGN_NM))
    nid, dist = nearest_object(gl, pts, vs, assign_nm)
    pore_table["nucleus"] = nid
    pore_table["envelope_distance_nm"] = dist
    pore_table["counted"] = readout_mod.counted(pore_table)
    nuclei = [{"id": int(i), "area_um2": areas[int(i)]["area_um2"], "patches": areas[int(i)]["patches"],
               "partial": bool(nuc_table["touches_border"][k]), "voxels": int(nuc_table["voxels"][k])}
              for k, i in enumerate(nuc_table["id"])]
    result = readout_mod.readout(nuclei, pore_table, PATCH_NM, seed=int(spec.get("seed", 0)))
    nuc_out = {"id": nuc_table["id"], "voxels": nuc_table["voxels"], "partial": nuc_table["touches_border"],
               "envelope_um2": np.array([n["area_um2"] for n in nuclei]),
               "pores": np.array([int(((nid == i) & pore_table["counted"]).sum()) for i in nuc_table["id"]], np.int64),
               "fragment": np.array([n["area_um2"] < readout_mod.MIN_NUCLEUS_UM2 for n in nuclei], bool),
               **{k: nuc_table[k] for k in ("z_nm", "y_nm", "x_nm")}}
    write_tables(job_dir, "pores", pore_table)
    write_tables(job_dir, "nuclei", nuc_out)
    return {"status": "completed", "readout": result, "tables": {"pores": "pores.parquet", "nuclei": "nuclei.parquet"},
            "objects": int(len(pore_table["id"])), "provenance": spec.get("provenance", {})}


def _discard(paths) -> None:
    """The scratch of a finished measure (ledgers, kept labels), unless the spec keeps it."""
    import shutil

    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def measure(spec: dict, job_dir: Path, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Pores and envelope → object tables (Parquet + CSV beside the job) and the per-nucleus readout, in one
    process; resumable from the ledger in work/<pass>/."""
    job_dir = Path(job_dir)
    say = progress or (lambda *a: None)
    passes = _passes(spec)
    blocks = plan_blocks(tuple(passes["envelope"]["source"].shape), _block(spec))
    _label_passes(spec, job_dir, passes, blocks, lambda name: job_dir / WORK / name, say)
    result = _conclude(spec, job_dir, passes, lambda name: (lambda bx: npz_path(job_dir / WORK / name, bx)), say)
    if not spec.get("keep_work"):
        _discard([job_dir / WORK])
    return result


def run(spec: dict, job_dir: Path) -> dict:
    from sessions.jobfiles import append_event

    def progress(stage, d, t):
        append_event(job_dir, "progress", step=d, total=t, message=stage)

    return measure(spec, job_dir, progress)


# ---------------------------------------------------------------- the measure job as a Slurm job array
def _shape(spec: dict) -> tuple[int, int, int]:
    return tuple(int(s) for s in spec["shape"]) if "shape" in spec else \
        tuple(int(s) for s in _source(spec["envelope"])[0].shape)


def prepare_array(spec: dict, job_dir: Path) -> dict:
    """Submit side (remote/job_array.py): the envelope's label store, which every task writes its own
    blocks of (so no two tasks race to create it); {blocks, passes} for array.json."""
    shape = _shape(spec)
    labels_store(Path(job_dir) / WORK / "envelope", shape, _block(spec))
    return {"blocks": len(plan_blocks(shape, _block(spec))), "passes": len(PASSES)}


def _array(job_dir: Path) -> int:
    from sessions.jobs import ARRAY, array_info

    info = array_info(job_dir)
    if info is None:
        raise RuntimeError(f"{Path(job_dir) / ARRAY} missing: the array was not prepared at submission")
    return int(info["tasks"])


def run_task(spec: dict, job_dir: Path, task: int) -> dict:
    """One task of the array: pass 1 of both label passes on its slice of the blocks, its ledger (the npz
    files) in tasks/<task>/<pass>/; a rerun resumes from it."""
    from remote.job_array import task_dir
    from sessions.jobfiles import append_event

    job_dir = Path(job_dir)
    tasks = _array(job_dir)
    if not 0 <= task < tasks:
        raise RuntimeError(f"task {task} outside the array's 0..{tasks - 1}")
    tdir = task_dir(job_dir, task)
    passes = _passes(spec)
    blocks = plan_blocks(_shape(spec), _block(spec))
    mine = blocks[task_slice(len(blocks), tasks, task)]
    _label_passes(spec, job_dir, passes, mine, lambda name: tdir / name,
                  lambda stage, d, t: append_event(tdir, "progress", step=d, total=t, message=stage), create=False)
    return {"status": "completed", "task": task, "blocks": len(mine)}


def finalize(spec: dict, job_dir: Path) -> dict:
    """The dependent step after every task: check every block of both passes has its npz, then the merges,
    areas, assignment, readout and tables, as the single job does."""
    from remote.job_array import task_dir

    job_dir = Path(job_dir)
    tasks = _array(job_dir)
    blocks = plan_blocks(_shape(spec), _block(spec))
    owner = {bx.offset: t for t in range(tasks) for bx in blocks[task_slice(len(blocks), tasks, t)]}

    def where(name):
        return lambda bx: npz_path(task_dir(job_dir, owner[bx.offset]) / name, bx)

    missing = [f"{name} {block_key(bx)}" for name in PASSES for bx in blocks if not where(name)(bx).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(PASSES) * len(blocks)} blocks were not labelled "
                           f"(first: {missing[0]}); see tasks/*/stderr.log")
    # no progress events here: the job's progress is the tasks' ledgers, complete by now
    result = _conclude(spec, job_dir, _passes(spec), where, lambda *a: None)
    if not spec.get("keep_work"):
        _discard([job_dir / WORK] + [task_dir(job_dir, t) / name for t in range(tasks) for name in PASSES])
    return {**result, "tasks": tasks}
