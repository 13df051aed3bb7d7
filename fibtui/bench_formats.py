"""`fibtui bench formats`: one volume, four storage layouts, the same random reads.

Why: the layout of a FIB-SEM volume (the microscope's TIFF stack, HDF5 from the
classic tools, fibtui's sharded OME-Zarr, Parquet from the data-lake world) decides
how fast training crops and viewer slices come off a cluster's filesystem, and it
is usually argued rather than measured. This measures it where the data will live
(`--workdir` on the shared filesystem) with the requests fibtui actually makes.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fibtui.output import console, emit_json, progress, stage_callback
from sessions.volumes import omezarr
from sessions.errors import FibError
from sessions.fsinfo import filesystem_type
from sessions.geometry import parse_triple

CHUNKS = omezarr.VOLUME_CHUNKS  # the unit every chunked format shares, so they differ only in container
PARQUET_BRICK = (1, 2, 2)  # chunks per Parquet row group: 16x256x256 voxels, ~0.5-1 MB compressed
HDF5_GZIP = 1  # gzip (deflate) is the one filter every HDF5 build has; level 1 is its fast end
VERIFY = 3  # first requests of each kind compared with the in-memory volume
VOXEL_NM = (8.0, 8.0, 8.0)  # nominal: the layouts do not depend on it

Box = tuple[slice, slice, slice]
Tick = Callable[[int], None]


# ----------------------------------------------------------------------------- page cache & I/O counters


def disk_read_bytes() -> int | None:
    """Bytes this process made the kernel fetch from storage (not from the page cache)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def sync(paths: list[Path]) -> None:
    """Flush to storage: part of an honest write time, and dirty pages cannot be evicted."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def evict(paths: list[Path]) -> bool:
    """Drop these files' clean pages from the page cache (no root needed), so reads start cold.

    Best effort: network filesystems may keep their own client cache.
    """
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def readahead_kb(path: Path) -> int | None:
    """Kernel readahead of the block device under `path`: how much one cold small read pulls in.

    None on filesystems without a local block device (NFS, Lustre, overlay): they have their own.
    """
    st = os.stat(path)
    dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not dev.exists():
        return None
    dev = dev.resolve()
    for d in (dev, dev.parent):  # a partition's queue settings are its disk's
        f = d / "queue" / "read_ahead_kb"
        if f.is_file():
            return int(f.read_text())
    return None


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def clipped_chunks(shape) -> tuple[int, int, int]:
    return tuple(min(c, s) for c, s in zip(CHUNKS, shape))


# ----------------------------------------------------------------------------- the four formats


class Format:
    """One on-disk layout: stream a volume in, then open a reader of boxes.

    `slab` is how many z-slices a write step takes: whole chunks (or shards), so
    no format re-reads what it just wrote.
    """

    name = ""
    filename = ""

    def __init__(self, root: Path, shape):
        self.path = root / self.filename
        self.shape = tuple(shape)
        self.chunks = clipped_chunks(shape)

    @property
    def layout(self) -> str:
        raise NotImplementedError

    @property
    def slab(self) -> int:
        return self.chunks[0]

    @contextmanager
    def writer(self) -> Iterator[Callable[[int, np.ndarray], None]]:
        raise NotImplementedError

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        raise NotImplementedError

    def write(self, vol: np.ndarray, tick: Tick) -> None:
        with self.writer() as put:
            for z0, z1 in omezarr.slabs(vol.shape[0], self.slab):
                put(z0, vol[z0:z1])
                tick(z1)
        sync(self.files())

    def files(self) -> list[Path]:
        return files_under(self.path)


@dataclass
class Reader:
    """An opened store: `read(box)` returns a new array; `forget()` lets go of pages the
    reader itself keeps mapped (mapped pages cannot be evicted from the page cache)."""

    read: Callable[[Box], np.ndarray]
    forget: Callable[[], None] = lambda: None


def _chunk(c: tuple[int, int, int]) -> str:
    return "×".join(map(str, c))


def _setter(arr) -> Callable[[int, np.ndarray], None]:
    """A writer step for array-like stores (h5py, zarr): assign the slab at z0."""
    def put(z0: int, slab: np.ndarray) -> None:
        arr[z0: z0 + len(slab)] = slab

    return put


class Tiff(Format):
    """What microscopes write: one uncompressed BigTIFF page per z, read through a memmap."""

    name, filename = "TIFF", "volume.tif"

    @property
    def layout(self) -> str:
        return f"multipage BigTIFF, {self.shape[0]} uncompressed pages, read via tifffile.memmap"

    @contextmanager
    def writer(self):
        import tifffile

        with tifffile.TiffWriter(self.path, bigtiff=True) as w:
            yield lambda z0, slab: [w.write(page, contiguous=True, photometric="minisblack") for page in slab]

    @contextmanager
    def reader(self):
        import tifffile

        mm = tifffile.memmap(self.path, mode="r")  # unmapped when the reader is dropped
        mapping = getattr(mm, "_mmap", None)  # numpy keeps the mmap object here

        def forget() -> None:
            if mapping is not None:
                mapping.madvise(mmap.MADV_DONTNEED)

        yield Reader(lambda box: np.array(mm[box]), forget)


class Hdf5(Format):
    name, filename = "HDF5", "volume.h5"

    @property
    def layout(self) -> str:
        return f"h5py chunks {_chunk(self.chunks)}, gzip-{HDF5_GZIP}"

    @contextmanager
    def writer(self):
        import h5py

        with h5py.File(self.path, "w") as f:
            ds = f.create_dataset("raw", shape=self.shape, dtype="uint8", chunks=self.chunks,
                                  compression="gzip", compression_opts=HDF5_GZIP)
            yield _setter(ds)

    @contextmanager
    def reader(self):
        import h5py

        with h5py.File(self.path, "r") as f:
            ds = f["raw"]
            yield Reader(lambda box: ds[box])


class Zarr(Format):
    """fibtui's own ingest layout (sessions.volumes.omezarr), read with zarr-python."""

    name, filename = "Zarr", "volume.ome.zarr"

    @property
    def shards(self) -> tuple[int, int, int]:
        return tuple(min(h, -(-s // c) * c) for h, s, c in zip(omezarr.VOLUME_SHARDS, self.shape, self.chunks))

    @property
    def layout(self) -> str:
        return f"OME-Zarr 0.5 (zarr v3), shards {_chunk(self.shards)} of chunks {_chunk(self.chunks)}, zstd-3"

    @property
    def slab(self) -> int:
        return self.shards[0]  # whole shards: a partial shard write would read-modify-write it

    @contextmanager
    def writer(self):
        arr = omezarr.create(self.path, self.shape, VOXEL_NM, shards=omezarr.VOLUME_SHARDS, levels=1).levels[0]
        yield _setter(arr)

    @contextmanager
    def reader(self):
        arr = omezarr.open_multiscale(self.path).levels[0]
        yield Reader(lambda box: arr[box])


class Parquet(Format):
    """Chunks as rows: (cz, cy, cx, zstd bytes), one row group per brick of PARQUET_BRICK chunks.

    Parquet's unit of random access is the row group (pyarrow cannot seek to a
    row), so the brick size is the read-amplification knob: big row groups, the
    analytics default, would make every crop read megabytes it does not need.
    """

    name, filename = "Parquet", "volume.parquet"

    @property
    def brick(self) -> tuple[int, int, int]:
        return tuple(b * c for b, c in zip(PARQUET_BRICK, self.chunks))

    @property
    def layout(self) -> str:
        n = int(np.prod(PARQUET_BRICK))
        return (f"pyarrow, 1 row per {_chunk(self.chunks)} chunk (zstd-3 via numcodecs), "
                f"row group = {n} chunks ({_chunk(self.brick)} voxels)")

    @property
    def slab(self) -> int:
        return self.brick[0]

    @contextmanager
    def writer(self):
        import pyarrow as pa
        import pyarrow.parquet as pq
        from numcodecs import Zstd

        codec = Zstd(level=3)
        meta = {"shape": self.shape, "chunks": self.chunks, "codec": "zstd-3", "brick_chunks": PARQUET_BRICK}
        schema = pa.schema([("cz", pa.int32()), ("cy", pa.int32()), ("cx", pa.int32()), ("data", pa.binary())],
                           metadata={"fibtui": json.dumps(meta)})
        with pq.ParquetWriter(self.path, schema, compression="none", use_dictionary=False) as w:
            def put(z0: int, slab: np.ndarray) -> None:
                for y0, y1 in omezarr.slabs(self.shape[1], self.brick[1]):
                    for x0, x1 in omezarr.slabs(self.shape[2], self.brick[2]):
                        cols = list(zip(*self._brick_rows(slab, z0, (y0, y1), (x0, x1), codec)))
                        w.write_table(pa.table([pa.array(c, t.type) for c, t in zip(cols, schema)], schema=schema),
                                      row_group_size=len(cols[0]))  # one brick, one row group

            yield put

    def _brick_rows(self, slab: np.ndarray, z0: int, ys, xs, codec) -> Iterator[tuple]:
        """(cz, cy, cx, compressed bytes) for each chunk of one brick, in C order."""
        cz, cy, cx = self.chunks
        for z in range(0, len(slab), cz):
            for y in range(*ys, cy):
                for x in range(*xs, cx):
                    block = np.ascontiguousarray(slab[z: z + cz, y: y + cy, x: x + cx])
                    yield (z0 + z) // cz, y // cy, x // cx, codec.encode(block)

    @contextmanager
    def reader(self):
        import pyarrow.parquet as pq
        from numcodecs import Zstd

        pf = pq.ParquetFile(self.path)
        index = pf.read(columns=["cz", "cy", "cx"])  # the small columns, once per opened file
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        group = np.repeat(np.arange(len(sizes)), sizes)
        local = np.arange(len(group)) - np.repeat(np.cumsum([0] + sizes[:-1]), sizes)
        keys = zip(*(index.column(k).to_numpy().tolist() for k in ("cz", "cy", "cx")))
        where = {key: (int(g), int(i)) for key, g, i in zip(keys, group, local)}
        codec = Zstd()
        try:
            yield Reader(lambda box: self._assemble(box, pf, where, codec))
        finally:
            pf.close()

    def _assemble(self, box: Box, pf, where: dict, codec) -> np.ndarray:
        """Read the row groups holding the chunks `box` touches; decompress and paste."""
        ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(box, self.chunks)]
        keys = [(a, b, c) for a in ranges[0] for b in ranges[1] for c in ranges[2]]
        groups = {where[k][0] for k in keys}
        data = {g: pf.read_row_group(g, columns=["data"]).column(0) for g in groups}
        out = np.empty(tuple(s.stop - s.start for s in box), np.uint8)
        for key in keys:
            g, i = where[key]
            lo = [k * c for k, c in zip(key, self.chunks)]
            shape = [min(c, s - o) for c, s, o in zip(self.chunks, self.shape, lo)]
            chunk = np.frombuffer(codec.decode(data[g][i].as_buffer()), np.uint8).reshape(shape)
            src = tuple(slice(max(s.start - o, 0), min(s.stop - o, n)) for s, o, n in zip(box, lo, shape))
            dst = tuple(slice(o + q.start - s.start, o + q.stop - s.start) for s, o, q in zip(box, lo, src))
            out[dst] = chunk[src]
        return out


FORMATS: tuple[type[Format], ...] = (Tiff, Hdf5, Zarr, Parquet)


# ----------------------------------------------------------------------------- data


def shared_vnc() -> Path | None:
    """The real ssTEM stack, if this checkout sits beside the shared data (or FIBTUI_SHARED says where)."""
    root = Path(__file__).resolve().parents[1]
    candidates = [root.parent / "shared" / "data" / "vnc-mito" / "raw.tif"]
    if os.environ.get("FIBTUI_SHARED"):
        candidates.insert(0, Path(os.environ["FIBTUI_SHARED"]) / "data" / "vnc-mito" / "raw.tif")
    return next((p for p in candidates if p.is_file()), None)


def open_stack(path: Path):
    """The --source volume through fibtui's own readers, checked to be 3D uint8 without reading pixels."""
    from sessions.volumes.sources import open_source

    try:
        src = open_source(path)
    except FibError as e:
        raise FibError(f"--source {path}: need a 3D uint8 stack ({e})") from None
    if src.dtype != np.uint8:
        raise FibError(f"--source {path}: need a 3D uint8 stack (Z,Y,X), got {src.dtype} {src.shape}")
    return src


def read_stack(path: Path) -> np.ndarray:
    src = open_stack(path)
    return src.read(0, src.shape[0])


def tile(vol: np.ndarray, shape) -> np.ndarray:
    """Repeat (or cut) `vol` to `shape`; plain wrap-around, so no chunk holds a mirrored copy of itself."""
    for axis, n in enumerate(shape):
        vol = np.take(vol, np.arange(n) % vol.shape[axis], axis=axis)
    return np.ascontiguousarray(vol)


def synthetic(shape, seed: int, tick: Tick) -> np.ndarray:
    """fibtui's synthetic cell (sessions.synth), rendered slab by slab (~30 ms per 1024² slice)."""
    from sessions import synth

    scene = synth.make_scene(tuple(max(s, 16) for s in shape), seed)  # synth needs >= 16 per axis
    vol = np.empty(scene.shape, np.uint8)
    for z0, raw, _ in synth.iter_slabs(scene, 16):
        vol[z0: z0 + len(raw)] = raw
        tick(min(z0 + len(raw), shape[0]))
        if z0 + len(raw) >= shape[0]:
            break
    return np.ascontiguousarray(vol[: shape[0], : shape[1], : shape[2]])


def load_volume(source: Path | None, shape, seed: int, tick: Tick) -> tuple[np.ndarray, str]:
    """The volume to store, and a line saying what it is."""
    if source is not None:
        vol = read_stack(source)
        return tile(vol, shape), f"{source} {tuple(vol.shape)}" + (" tiled" if vol.shape != tuple(shape) else "")
    vnc = shared_vnc()
    if vnc is not None:
        vol = read_stack(vnc)
        return tile(vol, shape), f"vnc-mito ssTEM {tuple(vol.shape)} ({vnc}) tiled to the shape"
    return synthetic(shape, seed, tick), f"synthetic FIB-SEM cell (sessions.synth, seed {seed})"


# ----------------------------------------------------------------------------- requests & measurement


@dataclass
class Requests:
    """Random boxes, drawn once so every format answers the very same requests."""

    crops: list[Box]
    xy: list[Box]
    xz: list[Box]

    @classmethod
    def draw(cls, shape, crop, side: int, n_crops: int, n_slices: int, seed: int) -> Requests:
        rng = np.random.default_rng(seed)

        def at(size, axis):
            o = int(rng.integers(0, shape[axis] - size + 1))
            return slice(o, o + size)

        crops = [tuple(at(crop[a], a) for a in range(3)) for _ in range(n_crops)]
        xy = [(at(1, 0), at(side, 1), at(side, 2)) for _ in range(n_slices)]
        xz = [(slice(0, shape[0]), at(1, 1), at(side, 2)) for _ in range(n_slices)]
        return cls(crops, xy, xz)


KINDS = ("crops", "xy", "xz")


@dataclass
class Phase:
    per_s: float
    disk_bytes: float | None  # mean per request; None when not measured (warm cache, no /proc/self/io)
    cold: bool


@dataclass
class Result:
    fmt: Format
    write_s: float
    open_s: float = 0.0
    phases: dict[str, Phase] = field(default_factory=dict)


def check(name: str, box: Box, got: np.ndarray, vol: np.ndarray) -> None:
    if got.shape != vol[box].shape or not np.array_equal(got, vol[box]):
        raise AssertionError(f"{name}: read of {box} differs from the source volume: the benchmark (or a library) "
                             "is broken and its numbers would be meaningless")


def timed(fmt: Format, reader: Reader, boxes: list[Box], vol: np.ndarray, cold: bool) -> Phase:
    """Time each request on its own, from a cold page cache when `cold` (eviction is not timed)."""
    files, seconds, disk = fmt.files(), 0.0, 0
    for i, box in enumerate(boxes):
        if cold:
            reader.forget()
            evict(files)
        b0, t0 = disk_read_bytes(), time.perf_counter()
        got = reader.read(box)
        seconds += time.perf_counter() - t0
        b1 = disk_read_bytes()
        disk = None if disk is None or b0 is None or b1 is None else disk + b1 - b0
        if i < VERIFY:
            check(fmt.name, box, got, vol)
    return Phase(len(boxes) / seconds, disk / len(boxes) if cold and disk is not None else None, cold)


def measure(fmt: Format, requests: Requests, vol: np.ndarray, cold: bool, tick: Tick) -> tuple[float, dict]:
    """Open the format once (cold, timed apart), then run the three kinds of request through it."""
    cold = cold and evict(fmt.files())
    t0 = time.perf_counter()
    with fmt.reader() as reader:
        open_s = time.perf_counter() - t0
        phases = {}
        for i, kind in enumerate(KINDS):
            phases[kind] = timed(fmt, reader, getattr(requests, kind), vol, cold)
            tick(i + 1)
    return open_s, phases


def run_bench(vol: np.ndarray, root: Path, requests: Requests, cold: bool,
              cb: Callable[[str, int, int], None]) -> list[Result]:
    """Write every format, then read each with the same requests."""
    results = []
    for cls in FORMATS:
        fmt = cls(root, vol.shape)
        t0 = time.perf_counter()
        fmt.write(vol, lambda z, name=fmt.name: cb(f"write {name}", z, vol.shape[0]))
        results.append(Result(fmt, time.perf_counter() - t0))
    for r in results:
        r.open_s, r.phases = measure(r.fmt, requests, vol, cold, lambda i, n=r.fmt.name: cb(f"read {n}", i, 3))
    return results


# ----------------------------------------------------------------------------- reporting


def row(r: Result, vol: np.ndarray, crop) -> dict:
    files = r.fmt.files()
    size = sum(p.stat().st_size for p in files)
    ph = r.phases
    crop_mb = float(np.prod(crop)) / 1e6
    return {
        "format": r.fmt.name, "layout": r.fmt.layout, "size_bytes": size, "size_mb": round(size / 1e6, 2),
        "compression_ratio": round(vol.nbytes / size, 3), "files": len(files),
        "write_s": round(r.write_s, 3), "open_ms": round(1000 * r.open_s, 2),
        "crops_per_s": round(ph["crops"].per_s, 2), "crop_mb_per_s": round(ph["crops"].per_s * crop_mb, 2),
        "xy_per_s": round(ph["xy"].per_s, 2), "xz_per_s": round(ph["xz"].per_s, 2),
        "disk_bytes_per_crop": _round(ph["crops"].disk_bytes), "disk_bytes_per_xy": _round(ph["xy"].disk_bytes),
        "disk_bytes_per_xz": _round(ph["xz"].disk_bytes), "verified": True,
    }


def _round(v):
    return None if v is None else int(round(v))


def _mb(v) -> str:
    if v is None:
        return "n/a"
    v /= 1e6
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def _rate(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.2f}"


COLUMNS = ["format", "on disk\nMB (ratio)", "files", "write\ns", "3D crops/s\n(MB/s)", "xy\n/s", "xz\n/s",
           "disk MB per\ncrop/xy/xz"]


DISK = ("disk_bytes_per_crop", "disk_bytes_per_xy", "disk_bytes_per_xz")


def cells(r: dict) -> list[str]:
    return [r["format"], f"{r['size_mb']:.1f} ({r['compression_ratio']:.2f}×)", str(r["files"]),
            f"{r['write_s']:.2f}", f"{_rate(r['crops_per_s'])} ({r['crop_mb_per_s']:.0f})", _rate(r["xy_per_s"]),
            _rate(r["xz_per_s"]), "/".join(_mb(r[k]) for k in DISK)]


def render(rows: list[dict], title: str, notes: list[str]) -> None:
    """One compact table (fits 80 columns), then the footnotes that say how to read it."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
              pad_edge=False)
    measured = any(r[k] is not None for r in rows for k in DISK)  # not when warm: then skip the column
    n = len(COLUMNS) if measured else len(COLUMNS) - 1
    for i, c in enumerate(COLUMNS[:n]):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*cells(r)[:n])
    console.print(t)
    for n in notes:
        console.print(f"[dim]{n}[/]", highlight=False)


# ----------------------------------------------------------------------------- command & validation


def check_inputs(shape, crop, side: int, n_crops: int, n_slices: int) -> None:
    if any(c > s for c, s in zip(crop, shape)):
        raise FibError(f"--crop {','.join(map(str, crop))} does not fit in the volume "
                       f"{','.join(map(str, shape))}: every side must be ≤ the volume's; give a smaller --crop")
    if side < 1 or side > min(shape[1:]):
        raise FibError(f"--slice-size {side}: must be between 1 and the volume's Y and X ({shape[1]}, {shape[2]})")
    if n_crops < 1 or n_slices < 1:
        raise FibError(f"--crops {n_crops} / --slices {n_slices}: each must be ≥ 1")


def check_room(shape, workdir: Path) -> None:
    """The volume lives in memory and up to ~4 copies go to disk: say so before an hour is lost."""
    need = int(np.prod(shape, dtype=np.int64))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if mem and 2 * need > mem:
        raise FibError(f"--shape {','.join(map(str, shape))}: the volume ({need / 1e9:.1f} GB) must fit in half "
                       f"the memory ({mem / 1e9:.1f} GB); give a smaller --shape")
    free = shutil.disk_usage(workdir).free
    if 4 * need > free:
        raise FibError(f"--workdir {workdir}: {free / 1e9:.1f} GB free, up to {4 * need / 1e9:.1f} GB needed "
                       "for four copies; free space or give a smaller --shape")


def formats(shape, source, crop, side, n_crops, n_slices, seed, workdir, keep, warm, as_json) -> None:
    """`fibtui bench formats` (options documented in `fibtui.cli`)."""
    src_shape = open_stack(source).shape if source is not None else None
    shape = parse_triple(shape, "--shape", positive=True) if shape else (src_shape or (128, 1024, 1024))
    crop = parse_triple(crop, "--crop", positive=True)
    check_inputs(shape, crop, side, n_crops, n_slices)
    if workdir is not None:
        if workdir.exists() and not workdir.is_dir():
            raise FibError(f"--workdir {workdir}: not a directory")
        workdir.mkdir(parents=True, exist_ok=True)
    check_room(shape, workdir or Path(tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix="fibtui-bench-", dir=workdir))
    try:
        rows, title, notes = _bench(shape, source, crop, side, n_crops, n_slices, seed, root, not warm, as_json)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if as_json:
        emit_json(rows)
        return
    render(rows, title, notes)
    if keep:
        console.print(f"files kept in [bold]{root}[/]")


def _bench(shape, source, crop, side, n_crops, n_slices, seed, root: Path, cold: bool, as_json: bool):
    requests = Requests.draw(shape, crop, side, n_crops, n_slices, seed)
    with progress(not as_json) as p:
        cb = stage_callback(p)
        vol, data = load_volume(source, shape, seed, lambda z: cb("load data", z, shape[0]))
        results = run_bench(vol, root, requests, cold, cb)
    rows = [row(r, vol, crop) for r in results]
    cold = all(ph.cold for r in results for ph in r.phases.values())
    fstype, mount = filesystem_type(root)
    ra = readahead_kb(root)
    for r in rows:
        r.update(data=data, shape=list(shape), crop=list(crop), slice_size=side, cache="cold" if cold else "warm",
                 filesystem=fstype, readahead_kb=ra)
    title = (f"{'×'.join(map(str, shape))} uint8 ({vol.nbytes / 1e6:.0f} MB) on {fstype} ({mount}): "
             f"{n_crops} crops {'×'.join(map(str, crop))}, {n_slices} xy {side}² and xz {shape[0]}×{side} slices")
    notes = [f"data: {data}"] + [f"{r['format']}: {r['layout']}" for r in rows] + [
        "Same seeded positions for every format; the first "
        f"{VERIFY} reads of each kind matched the source volume exactly.",
        ("Cache: cold — before every request the format's files are evicted from the page cache "
         "(posix_fadvise DONTNEED, not timed; readers stay open), as for a volume far larger than RAM; "
         "disk MB = /proc/self/io read_bytes per request, kernel readahead included"
         + (f" (this device reads ahead {ra} KB)." if ra is not None else ".") if cold else
         "Cache: warm — files were just written and stay in the page cache; timings are decode + library "
         "overhead, and disk bytes are not measured."),
        "Write s includes compression and fsync. One cold open (not in the rates; TIFF IFDs, HDF5/Zarr "
        "metadata, Parquet footer + cz/cy/cx index): " + ", ".join(f"{r['format']} {r['open_ms']:.1f} ms" for r in rows)
        + ".",
    ]
    return rows, title, notes
