"""Parallel, resumable, out-of-core conversion of a raw volume into a sharded OME-Zarr pyramid.

The work is cut into tasks of one shard depth (64 slices) by a band of
whole shard rows (full slices when they fit `TASK_BYTES`). A task reads its
region once, converts it to uint8, writes level 0 and every pyramid level
whose shards it covers whole (shards shrink with the level, so a 64×512 task
feeds levels down to 4×32), and records itself in a ledger. Coarser levels
follow in a second stage from the last level written, the same way. Every
shard is written aside and renamed and is a pure function of the source, so
a run killed at any moment and started again skips the finished tasks and
ends byte-identical to an uninterrupted one. Memory is `workers` tasks,
whatever the volume's size. The tasks also hash the source voxels they
read, so the provenance checksum costs no second pass over a TB source.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np

from sessions.errors import FibError
from sessions.provenance import code_version
from sessions.volumes import omezarr
from sessions.volumes.shards import ShardWriter, reused

FORMAT = "fibtui-ingest/1"
SLAB, BAND = omezarr.VOLUME_SHARDS[:2]   # a task covers whole level-0 shards: 64 slices × 512-row bands
MIN_DEPTH, MIN_ROWS = 4, 32               # a task feeds a level while it yields at least this much of it
TASK_BYTES = 256 << 20                    # rows per task: whole slices while a task stays under this
CONVERT_SLICES = 16                       # converted in pieces this thin, so float32 temporaries stay small
LEDGER = ".fibtui-ingest"
Progress = Callable[..., None] | None


@dataclass(frozen=True)
class Stage:
    """Levels `first..last`, written from tasks over level `first - 1` (or the source when first == 0)."""

    first: int
    last: int
    zf: tuple[int, ...]   # cumulative z factor of each level relative to `first`
    yf: tuple[int, ...]   # cumulative y factor


def default_workers() -> int:
    """Every CPU this process may use (a Slurm allocation's, under Slurm), but at most 8 and one per
    GB of available memory: a login node has many cores and many users."""
    try:
        with open("/proc/meminfo") as fh:
            avail_gb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable")) >> 20
    except (OSError, StopIteration, ValueError):
        avail_gb = 8
    return max(1, min(len(os.sched_getaffinity(0)), 8, avail_gb))


def layout(shape, voxel_size) -> tuple[list, list, list[Stage]]:
    """Per-level chunk and shard shapes, and the stages that fill them.

    Within a stage, level k's shard is the level-`first` shard divided by the
    factors so far, so one task writes whole shards on every level it feeds.
    """
    factors = [(1, 1, 1)] + omezarr.pyramid_plan(shape, voxel_size)
    chunks, shards, stages = [], [], []
    first = 0
    while first < len(factors):
        zf, yf, last = [1], [1], first
        while last + 1 < len(factors):
            fz, fy = zf[-1] * factors[last + 1][0], yf[-1] * factors[last + 1][1]
            if SLAB % fz or SLAB // fz < MIN_DEPTH or BAND % fy or BAND // fy < MIN_ROWS:
                break
            last += 1
            zf.append(fz)
            yf.append(fy)
        stages.append(Stage(first, last, tuple(zf), tuple(yf)))
        for z, y in zip(zf, yf):
            shards.append((SLAB // z, BAND // y, omezarr.VOLUME_SHARDS[2]))
            chunks.append((min(omezarr.VOLUME_CHUNKS[0], SLAB // z), min(omezarr.VOLUME_CHUNKS[1], BAND // y),
                           omezarr.VOLUME_CHUNKS[2]))
        first = last + 1
    return chunks, shards, stages


def band_rows(shape) -> int:
    """Rows per task: whole slices if 64 of them fit TASK_BYTES, else the most whole bands that do (≥ 1).

    Fixed by the shape alone, so a resumed run cuts the same tasks.
    """
    per_band = SLAB * BAND * shape[2]
    return min(max(1, TASK_BYTES // per_band) * BAND, -(-shape[1] // BAND) * BAND)


def plan_id(source, conversion, voxel_size) -> str:
    """What makes two ingests the same: source files (name, size, mtime), conversion, geometry, format."""
    files = [(str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in source.files()]
    blob = json.dumps({"format": FORMAT, "kind": source.kind, "shape": list(source.shape), "dtype": str(source.dtype),
                       "files": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
                       "conversion": conversion.to_json(), "voxel_size": list(voxel_size),
                       "chunks": omezarr.VOLUME_CHUNKS, "shards": omezarr.VOLUME_SHARDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def estimate_bytes(shape, voxel_size) -> int:
    """Upper bound of the store's size: every level's voxels, uncompressed (EM rarely compresses below 0.7)."""
    return sum(int(np.prod(s)) for s in omezarr.level_shapes(shape, voxel_size)) + (1 << 20)


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_free_space(partial: Path, need: int) -> None:
    have = shutil.disk_usage(partial.parent).free
    if need > have:
        raise FibError(f"{partial.parent}: needs ~{_size(need)} for the OME-Zarr (all levels, counted "
                       f"uncompressed) but only {_size(have)} is free; free space or put the session elsewhere")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def voxel_checksum(shape, dtype, digests) -> str:
    """The source's content checksum: BLAKE3 over its geometry and the BLAKE3 of every 512-row band of
    every z-slice, z-major (`unit_digests` gives them for one region).

    Hashed by the tasks as they read, so a TB source is read once, not twice;
    over voxels (C order, little-endian), not file bytes, so the same data gives
    the same checksum whatever its container. `recompute_checksum` verifies it.
    """
    h = blake3.blake3(json.dumps({"shape": list(shape), "dtype": np.dtype(dtype).newbyteorder("<").str,
                                  "band": BAND}).encode())
    for d in digests:
        h.update(bytes.fromhex(d))
    return "blake3-voxels:" + h.hexdigest()


def unit_digests(data: np.ndarray) -> list[list[str]]:
    """Per z-slice of `data` (a region starting on a 512-row boundary), the BLAKE3 of each 512-row band.

    Each band of one slice is contiguous, so nothing is copied."""
    return [[blake3.blake3(_le(data[z, y: y + BAND])).hexdigest() for y in range(0, data.shape[1], BAND)]
            for z in range(data.shape[0])]


def recompute_checksum(source) -> str:
    """Re-read a source and compute its `voxel_checksum` (e.g. to check it has not changed)."""
    Z, Y, _ = source.shape
    digests = []
    for z in range(Z):
        for row in unit_digests(source.read(z, z + 1)):
            digests += row
    return voxel_checksum(source.shape, source.dtype, digests)


def _le(a: np.ndarray) -> memoryview:
    a = a if a.dtype.byteorder in "<|=" else a.astype(a.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(a)).cast("B")


class Ingest:
    """One conversion into `partial`; `run()` resumes whatever an earlier, interrupted run left."""

    def __init__(self, source, conversion, voxel_size, partial: Path, name: str, *,
                 workers: int | None = None, progress: Progress = None, announce: Callable[[str], None] | None = None):
        self.source, self.conversion, self.voxel_size = source, conversion, tuple(voxel_size)
        self.partial, self.name = Path(partial), name
        self.workers = workers or default_workers()
        self.progress, self.announce = progress, announce
        self.plan = plan_id(source, conversion, voxel_size)
        self.chunks, self.shards, self.stages = layout(source.shape, voxel_size)
        self.ledger = self.partial / LEDGER
        self._tls = threading.local()

    def summary(self) -> str:
        """One line on what is about to happen, for the user to stop it early if the source was misread."""
        conv = self.conversion.to_json()
        how = conv["method"] + (f" {conv['low']:g}–{conv['high']:g}" if conv["method"] != "none" else "")
        voxel = ",".join(f"{v:g}" for v in self.voxel_size)
        levels = len(self.chunks)  # one chunk shape per level
        return (f"{self.source.describe()} @ {voxel} nm → {levels} levels, "
                f"≤ {_size(estimate_bytes(self.source.shape, self.voxel_size))}, conversion {how}, "
                f"{self.workers} workers")

    # ------------------------------------------------------------------ setup
    def _prepare(self) -> omezarr.Multiscale:
        """Reuse a partial store of the same plan; otherwise start afresh."""
        plan_file = self.ledger / "plan.json"
        try:
            same = json.loads(plan_file.read_text())["plan"] == self.plan
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            for tmp in self.partial.rglob("*.tmp"):   # a shard being written when the last run died
                tmp.unlink()
            check_free_space(self.partial, estimate_bytes(self.source.shape, self.voxel_size)
                             - _dir_bytes(self.partial))
            return omezarr.open_multiscale(self.partial, mode="r+")
        omezarr.discard(self.partial)
        check_free_space(self.partial, estimate_bytes(self.source.shape, self.voxel_size))
        ms = omezarr.create(self.partial, self.source.shape, self.voxel_size, chunks=self.chunks,
                            shards=self.shards, name=self.name)
        (self.ledger / "done").mkdir(parents=True)
        plan_file.write_text(json.dumps({"plan": self.plan}))
        return ms

    def _done(self, stage: int, j: int, b: int) -> Path:
        return self.ledger / "done" / f"{stage}-{j}-{b}"

    # ------------------------------------------------------------------ work
    def _read_base(self, ms, stage: Stage, z0: int, z1: int, y0: int, y1: int) -> tuple[np.ndarray, list]:
        """Level `stage.first`, region [z0:z1, y0:y1, :], as uint8; from the source also its `unit_digests`."""
        if stage.first == 0:
            out = reused(self._tls, "base", (z1 - z0, y1 - y0, self.source.shape[2]))
            if self.conversion.method == "none":
                data = self.source.read(z0, z1, y0, y1, out=out)
                return data, unit_digests(data)
            digests = []
            for a in range(z0, z1, CONVERT_SLICES):
                b = min(a + CONVERT_SLICES, z1)
                native = self.source.read(a, b, y0, y1)
                digests += unit_digests(native)
                self.conversion.apply(native, out=out[a - z0: b - z0])
            return out, digests
        f = ms.factor(stage.first)
        above = ms.levels[stage.first - 1]
        block = np.asarray(above[z0 * f[0]: z1 * f[0], y0 * f[1]: y1 * f[1]])
        return omezarr.downsample_mean(block, f)[: z1 - z0, : y1 - y0, : ms.levels[stage.first].shape[2]], []

    def _task(self, ms, writers, si: int, stage: Stage, j: int, b: int, rows: int) -> int:
        """One z-slab × y-band of level `first` and everything below it in the stage; returns voxels done."""
        Z, Y, _ = ms.levels[stage.first].shape
        z0, z1, y0, y1 = j * SLAB, min((j + 1) * SLAB, Z), b * rows, min((b + 1) * rows, Y)
        data, digest = self._read_base(ms, stage, z0, z1, y0, y1)
        writes = writers[stage.first].write_region(z0, y0, data, self._io)
        for k, lvl in enumerate(range(stage.first + 1, stage.last + 1), start=1):
            f = ms.factor(lvl)
            shape = ms.levels[lvl].shape
            out = reused(self._tls, lvl, tuple(-(-s // c) for s, c in zip(data.shape, f)))
            data = omezarr.downsample_mean(data, f, out=out)
            data = data[:, :, : shape[2]]
            writes += writers[lvl].write_region(z0 // stage.zf[k], y0 // stage.yf[k], data, self._io)
        for w in writes:
            w.result()
        self._done(si, j, b).write_text(json.dumps(digest))   # last: the task counts once all its shards are in
        return (z1 - z0) * (y1 - y0)

    def run(self) -> dict:
        ms = self._prepare()
        if self.announce:  # after the checks, so a refusal stays one line
            self.announce(self.summary())
        writers = [ShardWriter(a, self.partial) for a in ms.levels]
        t0 = time.monotonic()
        gc.freeze()   # the collector would walk zarr's and numpy's objects while holding the GIL: 14% of a run
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="ingest-io") as self._io:
                for si, stage in enumerate(self.stages):
                    self._run_stage(ms, writers, si, stage, t0)
        except OSError as e:
            raise FibError(f"{self.partial}: writing failed ({e.strerror or e}); fix it and run the same "
                           "command again to resume") from None
        finally:
            gc.unfreeze()
        checksum = voxel_checksum(self.source.shape, self.source.dtype, self._source_digests())
        shutil.rmtree(self.ledger)
        meta = {"source": self.source.describe(), "source_checksum": checksum, "plan": self.plan,
                "conversion": self.conversion.to_json(), "code": code_version()}  # which code made these voxels
        ms.group.attrs["fibtui"] = meta
        return {**meta, "levels": len(ms.levels), "elapsed_s": time.monotonic() - t0}

    def _source_digests(self) -> list[str]:
        """Every level-0 task's unit digests from the ledger, z-major then band (see `voxel_checksum`)."""
        Z, Y, _ = self.source.shape
        rows = band_rows(self.source.shape)
        out = []
        for j in range(-(-Z // SLAB)):
            tasks = [json.loads(self._done(0, j, b).read_text()) for b in range(-(-Y // rows))]
            for z in range(len(tasks[0])):
                for task in tasks:
                    out += task[z]
        return out

    def _run_stage(self, ms, writers, si: int, stage: Stage, t0: float) -> None:
        """The stage's tasks not yet in the ledger, `workers` at a time; progress in level-`first` slices."""
        Z, Y, X = ms.levels[stage.first].shape
        rows = band_rows((Z, Y, X))
        tasks = [(j, b) for j in range(-(-Z // SLAB)) for b in range(-(-Y // rows))]
        todo = [t for t in tasks if not self._done(si, *t).exists()]
        done = Z * Y - sum((min(SLAB, Z - j * SLAB)) * min(rows, Y - b * rows) for j, b in todo)
        label = f"level {stage.first}" if stage.first == stage.last else f"levels {stage.first}-{stage.last}"
        voxel_bytes = self.source.dtype.itemsize * X if si == 0 else X
        self._report(label, done // Y, Z, "")
        fresh = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ingest") as pool:
            futures = {pool.submit(self._task, ms, writers, si, stage, j, b, rows) for j, b in todo}
            try:
                while futures:
                    finished, futures = wait(futures, return_when=FIRST_EXCEPTION, timeout=0.5)
                    for fut in finished:
                        n = fut.result()
                        done += n
                        fresh += n
                    rate = fresh * voxel_bytes / max(time.monotonic() - t0, 1e-9)
                    self._report(label, done // Y, Z, f"{rate / 1e6:,.0f} MB/s" if si == 0 else "")
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _report(self, stage: str, done: int, total: int, info: str) -> None:
        if self.progress:
            self.progress(stage, done, total, info)
