"""Parallel, resumable, out-of-core conversion of a raw volume into a sharded OME-Zarr pyramid.

The work is cut into z-slabs one shard deep. A slab task reads its slices
once, converts them to uint8, writes level 0 and every pyramid level whose
shards the slab covers whole (a 64-deep slab feeds levels down to 4 slices),
and records itself in a ledger. Coarser levels follow in a second stage
from the last level written, the same way. Every shard is written aside and
renamed and is a pure function of the source, so a run killed at any moment
and started again skips the finished slabs and ends byte-identical to an
uninterrupted one. Memory is `workers` slabs of full slices, whatever the depth.
"""

from __future__ import annotations

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

from sessions import omezarr

from sessions.errors import FibError
from sessions.shards import ShardWriter

FORMAT = "fibtui-ingest/1"
SLAB = omezarr.DEFAULT_SHARDS[0]   # level-0 slab depth = shard depth
MIN_DEPTH = 4                      # a slab feeds a level while it yields at least this many slices
LEDGER = ".fibtui-ingest"
Progress = Callable[..., None] | None


@dataclass(frozen=True)
class Stage:
    """Levels `first..last` written from slabs of level `first - 1` (or the source when first == 0)."""

    first: int
    last: int
    zf: tuple[int, ...]   # cumulative z factor of each level relative to `first`


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def layout(shape, voxel_size) -> tuple[list, list, list[Stage]]:
    """Per-level chunk and shard shapes, and the stages that fill them."""
    plan = omezarr.pyramid_plan(shape, voxel_size)
    factors = [(1, 1, 1)] + plan
    chunks, shards, stages = [], [], []
    first = 0
    while first < len(factors):
        zf, last, cum = [1], first, 1
        while last + 1 < len(factors) and SLAB % (cum * factors[last + 1][0]) == 0 \
                and SLAB // (cum * factors[last + 1][0]) >= MIN_DEPTH:
            last += 1
            cum *= factors[last][0]
            zf.append(cum)
        stages.append(Stage(first, last, tuple(zf)))
        for z in zf:
            depth = SLAB // z
            chunks.append((min(omezarr.DEFAULT_CHUNKS[0], depth), *omezarr.DEFAULT_CHUNKS[1:]))
            shards.append((depth, *omezarr.DEFAULT_SHARDS[1:]))
        first = last + 1
    return chunks, shards, stages


def plan_id(source, conversion, voxel_size) -> str:
    """What makes two ingests the same: source files (name, size, mtime), conversion, geometry, format."""
    files = [(str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in source.files()]
    blob = json.dumps({"format": FORMAT, "kind": source.kind, "shape": list(source.shape), "dtype": str(source.dtype),
                       "files": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
                       "conversion": conversion.to_json(), "voxel_size": list(voxel_size),
                       "chunks": omezarr.DEFAULT_CHUNKS, "shards": omezarr.DEFAULT_SHARDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def estimate_bytes(shape, voxel_size) -> int:
    """Upper bound of the store's size: every level's voxels, uncompressed (EM rarely compresses below 0.7)."""
    return sum(int(np.prod(s)) for s in level_shapes(shape, voxel_size)) + (1 << 20)


def level_shapes(shape, voxel_size) -> list[tuple[int, int, int]]:
    out = [tuple(shape)]
    for f in omezarr.pyramid_plan(shape, voxel_size):
        out.append(tuple(-(-s // k) for s, k in zip(out[-1], f)))
    return out


def check_free_space(partial: Path, need: int) -> None:
    have = shutil.disk_usage(partial.parent).free
    if need > have:
        raise FibError(f"{partial.parent}: needs ~{need / 1e9:.2f} GB for the OME-Zarr (all levels, counted "
                       f"uncompressed) but only {have / 1e9:.2f} GB is free; free space or put the session elsewhere")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def checksum_files(files, result: dict | None = None, stop: threading.Event | None = None) -> str | None:
    """BLAKE3 of the files' bytes in order, streamed (`cat files | b3sum` gives the same).

    BLAKE3, not SHA-256: it runs beside the ingest on the same cores, and costs
    a third of SHA-256's CPU time (measured here: 0.2 vs 0.55 core-s per GB).
    """
    h = blake3.blake3()
    buf = bytearray(1 << 23)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                if stop is not None and stop.is_set():
                    return None
                h.update(memoryview(buf)[:n])
    digest = "blake3:" + h.hexdigest()
    if result is not None:
        result["checksum"] = digest
    return digest


class Ingest:
    """One conversion into `partial`; `run()` resumes whatever an earlier, interrupted run left."""

    def __init__(self, source, conversion, voxel_size, partial: Path, name: str, *,
                 workers: int | None = None, progress: Progress = None):
        self.source, self.conversion, self.voxel_size = source, conversion, tuple(voxel_size)
        self.partial, self.name = Path(partial), name
        self.workers = workers or default_workers()
        self.progress = progress
        self.plan = plan_id(source, conversion, voxel_size)
        self.chunks, self.shards, self.stages = layout(source.shape, voxel_size)
        self.ledger = self.partial / LEDGER
        self._tls = threading.local()

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

    def _done(self, stage: int, slab: int) -> Path:
        return self.ledger / "done" / f"{stage}-{slab}"

    # ------------------------------------------------------------------ work
    def _buffer(self, key, shape) -> np.ndarray:
        """A per-thread array reused across slabs: fresh memory costs a page fault per 4 KB,
        which on a VM is slower than compressing it (measured: 0.55 s per 256 MB)."""
        bufs = self._tls.__dict__.setdefault("bufs", {})
        if key not in bufs or bufs[key].shape[1:] != shape[1:] or bufs[key].shape[0] < shape[0]:
            bufs[key] = np.empty(shape, np.uint8)
        return bufs[key][: shape[0]]

    def _read_base(self, ms, stage: Stage, z0: int, z1: int) -> np.ndarray:
        """Level `stage.first`, slices z0:z1, as uint8."""
        if stage.first == 0:
            out = self._buffer("base", (z1 - z0, *self.source.shape[1:]))
            if self.conversion.method == "none":
                return self.source.read(z0, z1, out=out)
            step = omezarr.DEFAULT_CHUNKS[0]   # convert in thin pieces: float32 temporaries stay small
            for a in range(z0, z1, step):
                b = min(a + step, z1)
                out[a - z0: b - z0] = self.conversion.apply(self.source.read(a, b))
            return out
        f = self._factor(stage.first)
        above = ms.levels[stage.first - 1]
        block = np.asarray(above[z0 * f[0]: min(z1 * f[0], above.shape[0])])
        shape = ms.levels[stage.first].shape
        return omezarr.downsample_mean(block, f)[: z1 - z0, : shape[1], : shape[2]]

    def _factor(self, level: int) -> tuple[int, int, int]:
        return tuple(int(round(b / a)) for a, b in zip(self.ms_scales[level - 1], self.ms_scales[level]))

    def _slab(self, ms, writers, si: int, stage: Stage, j: int) -> int:
        depth = SLAB
        n = ms.levels[stage.first].shape[0]
        z0, z1 = j * depth, min((j + 1) * depth, n)
        data = self._read_base(ms, stage, z0, z1)
        written = writers[stage.first].write_slab(z0, data)
        for lvl in range(stage.first + 1, stage.last + 1):
            f = self._factor(lvl)
            out = self._buffer(lvl, tuple(-(-s // k) for s, k in zip(data.shape, f)))
            data = omezarr.downsample_mean(data, f, out=out)
            written += writers[lvl].write_slab(j * (depth // stage.zf[lvl - stage.first]), data)
        self._done(si, j).touch()
        return z1 - z0

    def run(self) -> dict:
        ms = self._prepare()
        self.ms_scales = ms.scales
        writers = [ShardWriter(a, self.partial) for a in ms.levels]
        stop, digest = threading.Event(), {}
        hasher = threading.Thread(target=checksum_files, args=(self.source.files(), digest, stop), daemon=True)
        hasher.start()
        t0, slice_bytes = time.monotonic(), int(np.prod(self.source.shape[1:])) * self.source.dtype.itemsize
        try:
            for si, stage in enumerate(self.stages):
                self._run_stage(ms, writers, si, stage, t0, slice_bytes)
            hasher.join()
        except OSError as e:
            raise FibError(f"{self.partial}: writing failed ({e.strerror or e}); fix it and run the same "
                           "command again to resume") from None
        finally:
            stop.set()
        shutil.rmtree(self.ledger)
        meta = {"source": self.source.describe(), "source_checksum": digest["checksum"], "plan": self.plan,
                "conversion": self.conversion.to_json()}
        ms.group.attrs["fibtui"] = meta
        return {**meta, "levels": len(ms.levels), "elapsed_s": time.monotonic() - t0}

    def _run_stage(self, ms, writers, si: int, stage: Stage, t0: float, slice_bytes: int) -> None:
        """All slabs of one stage not yet in the ledger, `workers` at a time; progress in slices of level `first`."""
        n = ms.levels[stage.first].shape[0]
        slabs = [j for j in range(-(-n // SLAB)) if not self._done(si, j).exists()]
        done = n - sum(min(SLAB, n - j * SLAB) for j in slabs)
        label = "level 0" if si == 0 else f"levels {stage.first}-{stage.last}"
        self._report(label, done, n, "")
        fresh = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ingest") as pool:
            futures = {pool.submit(self._slab, ms, writers, si, stage, j) for j in slabs}
            try:
                while futures:
                    finished, futures = wait(futures, return_when=FIRST_EXCEPTION, timeout=0.5)
                    for fut in finished:
                        rows = fut.result()
                        done += rows
                        fresh += rows
                    rate = fresh * slice_bytes / max(time.monotonic() - t0, 1e-9)
                    self._report(label, done, n, f"{rate / 1e6:,.0f} MB/s" if si == 0 else "")
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _report(self, stage: str, done: int, total: int, info: str) -> None:
        if self.progress:
            self.progress(stage, done, total, info)
