"""HDF5 reader (h5py, imported when an HDF5 source is opened)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sessions.errors import FibError
from sessions.volumes.sources.base import FORMATS_HINT, Source, _check_grey, _list5, _unreadable, _voxel


def _h5py():
    """h5py, with hdf5plugin's filters registered (Blosc, LZ4, Zstd, bitshuffle… as EM pipelines write)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the filters on import)
    return h5py


def _filters(ds) -> str:
    plist = ds.id.get_create_plist()
    names = [plist.get_filter(i)[3].decode(errors="replace") for i in range(plist.get_nfilters())]
    return ", ".join(names) or "uncompressed"


def _corrupt(where: str, e: Exception) -> FibError:
    return _unreadable(where, e, "the file is corrupt or needs an HDF5 filter this machine lacks — copy it again, "
                                 "or re-save the dataset with gzip")


def _h5_datasets(f) -> list[tuple[str, tuple, np.dtype]]:
    h5py = _h5py()
    found = []
    f.visititems(lambda name, obj: found.append(("/" + name, obj.shape, obj.dtype))
                 if isinstance(obj, h5py.Dataset) else None)
    return found


class Hdf5Source(Source):
    """One 3D dataset of an HDF5 file (h5py).

    Voxel size from the dataset's attributes: `resolution` is taken as nm in
    Z,Y,X order (the CREMI convention), `element_size_um` as µm in Z,Y,X
    order (ilastik / the Fiji HDF5 plugin).
    """

    kind = "hdf5"

    def __init__(self, path: Path, dataset: str | None):
        h5py = _h5py()
        self.path = path
        if not path.is_file():
            raise FibError(f"{path}: no such file; {FORMATS_HINT}")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise FibError(f"{path}: not a readable HDF5 file ({e}); give file.h5:/dataset") from None
        with f:
            if not dataset:
                cands = [d for d in _h5_datasets(f) if len(d[1]) == 3]
                if len(cands) != 1:
                    names = [d[0] for d in (cands or _h5_datasets(f))]
                    what = (f"holds {len(cands)} 3D datasets ({_list5(names)})" if cands else
                            f"holds no 3D dataset (found: {_list5(names) or 'none'})")
                    raise FibError(f"{path}: {what}; name one as {path}:/path/to/dataset")
                dataset = cands[0][0]
            dataset = "/" + dataset.strip("/")
            ds = f.get(dataset)
            if not isinstance(ds, h5py.Dataset):
                names = [d[0] for d in _h5_datasets(f)]
                what = "is a group, not a dataset" if ds is not None else "not found"
                raise FibError(f"{path}:{dataset}: {what}; datasets in the file: {_list5(names) or 'none'}")
            self.dataset = dataset
            self.shape, self.dtype = _check_grey(f"{path}:{dataset}", ds.shape, ds.dtype,
                                                 " (one channel; multi-channel data must be split first)")
            attrs = ds.attrs
            if "resolution" in attrs:
                self.voxel_size = _voxel(np.ravel(attrs["resolution"]), 1.0)
            elif "element_size_um" in attrs:
                self.voxel_size = _voxel(np.ravel(attrs["element_size_um"]), 1e3)
            try:  # one chunk now, so a missing filter or a corrupt file fails before any work
                ds[(0,) * 3]
            except OSError as e:
                raise _corrupt(f"{path}:{dataset}", e) from None
            self._desc = (f"HDF5 dataset {dataset}, {self._dims()}, "
                          + (f"chunks {'×'.join(map(str, ds.chunks))}, {_filters(ds)}" if ds.chunks else "contiguous"))

    def _read(self, out, z0, z1, y0, y1):
        with _h5py().File(self.path, "r") as f:  # a handle per call; h5py serialises calls on its own lock
            try:
                f[self.dataset].read_direct(out, np.s_[z0:z1, y0:y1, :])
            except OSError as e:
                raise _corrupt(f"{self.path}:{self.dataset} [z {z0}:{z1}, y {y0}:{y1}]", e) from None

    def files(self):
        return [self.path]

    def describe(self):
        return self._desc
