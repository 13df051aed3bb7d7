"""N5 reader (tensorstore, imported when an N5 source is opened)."""

from __future__ import annotations

import os
from pathlib import Path

from sessions.errors import FibError
from sessions.volumes.sources.base import (
    CHUNK_REMEDY,
    Source,
    _check_grey,
    _list5,
    _read_json,
    _tree_files,
    _unit_nm,
    _unreadable,
    _voxel,
)


def _n5_voxel(attrs: dict) -> tuple[float, float, float] | None:
    """N5 `resolution` (list, X,Y,Z; unit from `units`/`unit`, nm if absent) or `pixelResolution`."""
    res, unit = attrs.get("resolution"), attrs.get("units", attrs.get("unit", "nm"))
    if isinstance(attrs.get("pixelResolution"), dict):
        res, unit = attrs["pixelResolution"].get("dimensions"), attrs["pixelResolution"].get("unit", "nm")
    elif res is None:
        res = attrs.get("pixelResolution")
    if not isinstance(res, list) or len(res) != 3:
        return None
    if isinstance(unit, list):
        unit = unit[0] if len(set(unit)) == 1 else None
    return _voxel(res[::-1], _unit_nm(unit))


def _n5_dataset(path: Path) -> Path:
    """The dataset directory to read: `path` itself, `s0` of a multiscale group, or a group's only 3D dataset."""
    if "dimensions" in _read_json(path / "attributes.json"):
        return path
    if (path / "s0" / "attributes.json").is_file():
        return path / "s0"
    found = []
    for d, subdirs, names in os.walk(path):
        dims = _read_json(Path(d) / "attributes.json").get("dimensions") if "attributes.json" in names else None
        if dims is not None:
            subdirs.clear()  # a dataset: below are only its blocks, maybe millions of them
            if len(dims) == 3:
                found.append(Path(d))
    if len(found) != 1:
        names = sorted(str(p.relative_to(path)) for p in found)
        raise FibError(f"{path}: N5 group with {len(found)} 3D datasets ({_list5(names) or 'none'}); "
                       f"name one, e.g. {path / (names[0] if names else 'raw')}")
    return found[0]


class N5Source(Source):
    """An N5 dataset via tensorstore. N5 lists dimensions X,Y,Z; reads are returned Z,Y,X."""

    kind = "n5"

    def __init__(self, path: Path):
        import tensorstore as ts
        self.path = path
        self.array_dir = _n5_dataset(path)
        attrs = _read_json(self.array_dir / "attributes.json")
        try:
            store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(self.array_dir)}},
                            read=True, open=True).result()
        except (ValueError, RuntimeError) as e:
            raise FibError(f"{self.array_dir}: not a readable N5 dataset ({e})") from None
        self._store = store.T  # X,Y,Z → Z,Y,X; the bytes of a block are X-fastest, i.e. C order here
        self.shape, self.dtype = _check_grey(self.array_dir, self._store.shape, store.dtype.numpy_dtype)
        self.voxel_size = _n5_voxel(attrs) or (_n5_voxel(_read_json(path / "attributes.json"))
                                               if self.array_dir != path else None)
        block = "×".join(map(str, attrs.get("blockSize", [])[::-1]))
        comp = (attrs.get("compression") or {}).get("type", attrs.get("compressionType", "raw"))
        self._desc = f"N5 dataset, {self._dims()}, blocks {block}, {comp}"

    def _read(self, out, z0, z1, y0, y1):
        try:
            out[...] = self._store[z0:z1, y0:y1].read().result()
        except ValueError as e:  # tensorstore: a chunk that does not decode
            raise _unreadable(f"{self.array_dir} [z {z0}:{z1}, y {y0}:{y1}]", e, CHUNK_REMEDY) from None

    def files(self):
        return _tree_files(self.array_dir)

    def describe(self):
        return self._desc
