"""Write whole zarr v3 shards straight from numpy: the ingest's hot path.

zarr-python's write path costs ~100 µs of interpreter time per chunk and
orders a shard's chunks by async completion, so its bytes differ from run to
run. Here a shard is a pure function of its data: inner chunks in C order,
zstd-compressed by numcodecs (which releases the GIL, so two threads keep two
cores busy), all-zero chunks left out, then the index and its CRC32C, exactly
as the `sharding_indexed` codec specifies. zarr-python reads the result (tested).

Shards are written with O_DIRECT where the filesystem allows it: through the
page cache, writing cost as much CPU as compressing (2.1 vs 1.5 core-s per GB
on this VM; O_DIRECT: 0.05), and a TB ingest on a shared login node would
otherwise evict everyone else's cached files.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import threading
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import zarr
from numcodecs import CRC32C, Zstd

EMPTY = np.uint64(2**64 - 1)
ALIGN = 4096            # O_DIRECT wants buffer, offset and length aligned to the logical block size
_CRC = CRC32C()


def reused(tls: threading.local, key, shape, dtype=np.uint8) -> np.ndarray:
    """A C-contiguous array of `shape` from a per-thread buffer that only ever grows: fresh memory
    costs a page fault per 4 KB, which on a VM is slower than compressing it (0.55 s per 256 MB)."""
    bufs = tls.__dict__.setdefault("bufs", {})
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if key not in bufs or bufs[key].size < n:
        bufs[key] = np.empty(n, np.uint8)
    return bufs[key][:n].view(dtype).reshape(shape)


class ShardWriter:
    """Encodes and writes the shards of one zarr v3 array created with a zstd-only sharding codec."""

    def __init__(self, arr: zarr.Array, store_root: Path, direct: bool = True):
        self.arr = arr
        self.shape = tuple(arr.shape)
        self.chunks = tuple(arr.chunks)
        self.shards = tuple(arr.shards or arr.chunks)
        self.per_shard = tuple(s // c for s, c in zip(self.shards, self.chunks))
        codec = next(c for c in arr.metadata.to_dict()["codecs"] if c["name"] == "sharding_indexed")
        inner = [c for c in codec["configuration"]["codecs"] if c["name"] != "bytes"]
        if [c["name"] for c in inner] != ["zstd"] or codec["configuration"]["index_location"] != "end":
            raise ValueError(f"{arr.path}: ShardWriter handles bytes+zstd inner codecs with the index at the end")
        self.zstd = Zstd(level=inner[0]["configuration"]["level"], checksum=inner[0]["configuration"]["checksum"])
        self.dir = Path(store_root) / arr.path
        self.direct = direct and hasattr(os, "O_DIRECT")
        self._tls = threading.local()

    def shard_path(self, idx) -> Path:
        return self.dir.joinpath("c", *map(str, idx))

    def write_region(self, z0: int, y0: int, data: np.ndarray, io: Executor | None = None) -> list[Future]:
        """Write every shard of the region starting at (z0, y0, 0), spanning all of X.

        The region must start on shard boundaries and end on one or at the
        array's end. With `io`, the writes go there, so the next shard is
        compressed while this one goes to disk; wait on the returned futures
        (their results are bytes written) before counting the region as done.
        """
        dz, dy, dx = data.shape
        ends = (z0 + dz, y0 + dy)
        if z0 % self.shards[0] or y0 % self.shards[1] or dx != self.shape[2] or any(
                e % h and e != s for e, h, s in zip(ends, self.shards, self.shape)):
            raise ValueError(f"region at z={z0}, y={y0} of shape {data.shape} is not shard-aligned for "
                             f"{self.shape} in shards of {self.shards}")
        futures = []
        for sz, sy, sx in itertools.product(range(0, dz, self.shards[0]), range(0, dy, self.shards[1]),
                                            range(0, dx, self.shards[2])):
            block = data[sz: sz + self.shards[0], sy: sy + self.shards[1], sx: sx + self.shards[2]]
            idx = ((z0 + sz) // self.shards[0], (y0 + sy) // self.shards[1], sx // self.shards[2])
            args = (self.shard_path(idx), self.encode(block))
            if io is None:
                done = Future()
                done.set_result(self._put(*args))
                futures.append(done)
            else:
                futures.append(io.submit(self._put, *args))
        return futures

    def encode(self, block: np.ndarray) -> list[bytes] | None:
        """One shard's bytes, as parts to write in order, from its (possibly edge-clipped) block;
        None when it is all zero. Parts, not one joined buffer: joining 16 MB costs a copy."""
        index = np.full((*self.per_shard, 2), EMPTY, dtype="<u8")
        parts, offset = [], 0
        c = self.chunks
        for i in itertools.product(*map(range, self.per_shard)):
            sub = block[i[0] * c[0]: (i[0] + 1) * c[0], i[1] * c[1]: (i[1] + 1) * c[1], i[2] * c[2]: (i[2] + 1) * c[2]]
            if sub.size == 0:
                continue
            if sub.shape != c:  # edge chunk: zarr stores full chunks, padded with the fill value
                sub = np.pad(sub, [(0, k - s) for k, s in zip(c, sub.shape)])
            chunk = reused(self._tls, "chunk", sub.shape, sub.dtype)
            np.copyto(chunk, sub)
            buf = self.zstd.encode(chunk)
            if len(buf) * 64 < sub.nbytes and not sub.any():  # only a near-empty chunk can be all zero
                continue
            index[i] = (offset, len(buf))
            parts.append(buf)
            offset += len(buf)
        if not parts:
            return None
        parts.append(bytes(_CRC.encode(index.tobytes())))
        return parts

    def _put(self, path: Path, parts: list[bytes] | None) -> int:
        """Write aside and rename, so a shard on disk is always whole."""
        if parts is None:
            path.unlink(missing_ok=True)
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        size = sum(map(len, parts))
        if not (self.direct and self._write_direct(tmp, parts, size)):
            with open(tmp, "wb") as fh:
                fh.writelines(parts)
        os.replace(tmp, path)
        return size

    def _write_direct(self, tmp: Path, parts: list[bytes], size: int) -> bool:
        """Write through O_DIRECT from a page-aligned per-thread buffer, padded to ALIGN and truncated
        back; False (and buffered writes from then on) where the filesystem refuses O_DIRECT."""
        padded = -(-size // ALIGN) * ALIGN
        buf = getattr(self._tls, "direct", None)
        if buf is None or len(buf) < padded:
            buf = self._tls.direct = mmap.mmap(-1, padded)
        view = memoryview(buf)
        offset = 0
        for part in parts:
            view[offset: offset + len(part)] = part
            offset += len(part)
        view[size:padded] = bytes(padded - size)
        fd = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
            done = 0
            while done < padded:
                done += os.write(fd, view[done:padded])
            os.ftruncate(fd, size)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.direct = False
            return False
        finally:
            if fd is not None:
                os.close(fd)
        return True
