"""Blockwise objects and envelope areas at scale: throughput against cc3d, memory against volume size.

    python benchmarks/objects_scale.py --shape 1000,3200,3200 --workdir /scratch/objscale [--workers 2]

Generates the synthetic cell's label volume (streamed into a zarr, never in memory), then, for
the full shape and for a 10x smaller one (z/10, same y, x): runs the measure job's core
(pores: blockwise components; envelope: blockwise components + blockwise marching cubes;
pore -> nucleus assignment) in a fresh subprocess, and prints wall time, Gvox/s, peak RSS,
and the answer beside truth.json. Side by side in the same run: cc3d on the same blocks held
in memory (no I/O), the ratio ours / cc3d. Deletes the volumes afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = (64, 512, 512)
CHUNK = (64, 512, 512)


def _render(args):
    shape, seed, vs, z0, z1, path = args
    import zarr

    from sessions import synth

    scene = synth.make_scene(shape, seed, voxel_size=vs)
    r = synth._Renderer(scene)
    z = zarr.open_array(path, mode="r+")
    for a in range(z0, z1, CHUNK[0]):
        b = min(z1, a + CHUNK[0])
        lab = np.empty((b - a, shape[1], shape[2]), np.uint8)
        for k in range(b - a):
            _, lab[k] = r.slice(a + k)
        z[a:b] = lab
    return z1 - z0


def generate(shape, seed, vs, path: Path, workers: int) -> dict:
    import zarr

    from sessions import synth

    if (path / "done.json").exists():
        return json.loads((path / "done.json").read_text())
    shutil.rmtree(path, ignore_errors=True)
    zarr.create_array(path, shape=shape, chunks=CHUNK, dtype="uint8", fill_value=0,
                      compressors=[zarr.codecs.ZstdCodec(level=1)])
    step = CHUNK[0] * max(1, -(-shape[0] // CHUNK[0]) // (workers * 4))
    tasks = [(shape, seed, vs, z0, min(shape[0], z0 + step), str(path)) for z0 in range(0, shape[0], step)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(_render, tasks))
    truth = synth.make_scene(shape, seed, voxel_size=vs).truth()
    info = {"truth": truth, "generate_s": time.perf_counter() - t0}
    (path / "done.json").write_text(json.dumps(info))
    return info


def run_measure(path: Path, vs, job: Path) -> dict:
    """In a fresh process, so its peak RSS is the measurement's alone."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from remote import objects
spec = {{"voxel_size": {list(vs)!r}, "block": {list(BLOCK)!r},
        "envelope": {{"paths": [{str(path)!r}], "kind": "labels", "classes": [2, 3]}},
        "pores": {{"paths": [{str(path)!r}], "kind": "labels", "classes": [3]}}}}
t = {{}}
def prog(stage, d, n):
    t.setdefault(stage, [time.perf_counter(), 0])[1] = time.perf_counter()
t0 = time.perf_counter()
r = objects.measure(spec, {str(job)!r}, prog)
print(json.dumps({{"seconds": time.perf_counter() - t0, "readout": r["readout"],
                  "stages": {{k: v[1] - v[0] for k, v in t.items()}},
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    shutil.rmtree(job, ignore_errors=True)
    job.mkdir(parents=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cc3d_in_memory(path: Path, n_blocks: int = 12) -> float:
    """Gvox/s of cc3d (26-connected) on blocks already in memory, on pore and envelope masks."""
    import cc3d
    import zarr

    z = zarr.open_array(path, mode="r")
    from remote.blocks import plan_blocks

    blocks = plan_blocks(z.shape, BLOCK)
    pick = [blocks[i] for i in np.linspace(0, len(blocks) - 1, min(n_blocks, len(blocks))).astype(int)]
    vox, secs = 0, 0.0
    for b in pick:
        lab = np.asarray(z[b.slices])
        for mask in (lab == 3, np.isin(lab, [2, 3])):
            t0 = time.perf_counter()
            cc3d.connected_components(mask, connectivity=26, out_dtype=np.uint32)
            secs += time.perf_counter() - t0
            vox += mask.size
    return vox / secs / 1e9 / 2  # two masks per voxel, as the measure job labels both


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1000,3200,3200")
    ap.add_argument("--voxel-size", default="8,8,8")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/objects-scale")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    big = tuple(int(v) for v in a.shape.split(","))
    small = (max(64, big[0] // 10), big[1], big[2])
    vs = tuple(float(v) for v in a.voxel_size.split(","))
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name, shape in (("small", small), ("big", big)):
            path = wd / f"{name}.labels.zarr"
            info = generate(shape, a.seed, vs, path, a.workers)
            m = run_measure(path, vs, wd / f"{name}-job")
            base = cc3d_in_memory(path)
            n = int(np.prod(shape))
            t, r = info["truth"], m["readout"]
            rows.append({"volume": name, "shape": shape, "voxels": n, "generate_s": round(info["generate_s"], 1),
                         "measure_s": round(m["seconds"], 1), "gvox_s": round(n / m["seconds"] / 1e9, 4),
                         "cc3d_in_memory_gvox_s": round(base, 4), "ratio": round(n / m["seconds"] / 1e9 / base, 3),
                         "peak_rss_mb": round(m["peak_rss_mb"]), "stages_s": {k: round(v, 1) for k, v in
                                                                              m["stages"].items()},
                         "pores": r["pores"], "truth_pores": t["pore_count"], "envelope_um2": r["envelope_um2"],
                         "truth_envelope_um2": t["envelope_area_um2"], "density": r["density_per_um2"],
                         "truth_density": t["pore_density_per_um2"]})
            print(json.dumps(rows[-1]), flush=True)
        print(f"peak memory big / small: {rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.3f}; "
              f"throughput ours / cc3d-in-memory: {rows[1]['ratio']:.3f}")
        print("command: python benchmarks/objects_scale.py " + " ".join(sys.argv[1:]))
    finally:
        if not a.keep:
            for name in ("small", "big"):
                shutil.rmtree(wd / f"{name}.labels.zarr", ignore_errors=True)
                shutil.rmtree(wd / f"{name}-job", ignore_errors=True)
    _ = resource


if __name__ == "__main__":
    main()
