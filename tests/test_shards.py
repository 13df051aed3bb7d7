"""ShardWriter: shards zarr-python reads back exactly, the same bytes every time and by either write path."""

import numpy as np
import pytest
import zarr

from sessions.volumes import omezarr
from sessions.volumes.shards import ShardWriter


@pytest.fixture
def array(tmp_path):
    """A level whose extents are not multiples of the shard or the chunk: edge shards and padded chunks."""
    ms = omezarr.create(tmp_path / "v.ome.zarr", (70, 600, 300), (8, 8, 8), chunks=(16, 128, 128),
                        shards=(32, 256, 256), levels=1)
    return ms, ms.levels[0]


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, shape, dtype=np.uint8)
    data[:32, :256, :256] = 0          # one whole shard of zeros: no file at all
    data[32:48, 256:384, 0:128] = 0    # one zero chunk inside a shard: left out of it
    return data


@pytest.mark.parametrize("direct", [True, False])
def test_zarr_python_reads_what_was_written(array, direct):
    ms, arr = array
    data = _data(arr.shape)
    writer = ShardWriter(arr, ms.path, direct=direct)
    for z0 in range(0, 70, 32):
        for f in writer.write_region(z0, 0, data[z0: z0 + 32]):
            f.result()
    np.testing.assert_array_equal(zarr.open_array(str(ms.path / "0"), mode="r")[:], data)
    assert not (ms.path / "0" / "c" / "0" / "0" / "0").exists()       # the all-zero shard
    assert not list(ms.path.rglob("*.tmp"))


def test_direct_and_buffered_writes_give_identical_files(tmp_path):
    trees = []
    for direct in (True, False):
        ms = omezarr.create(tmp_path / f"{direct}.ome.zarr", (70, 600, 300), (8, 8, 8), chunks=(16, 128, 128),
                            shards=(32, 256, 256), levels=1)
        writer = ShardWriter(ms.levels[0], ms.path, direct=direct)
        data = _data(ms.levels[0].shape, seed=1)
        for z0 in range(0, 70, 32):
            for f in writer.write_region(z0, 0, data[z0: z0 + 32]):
                f.result()
        trees.append({p.relative_to(ms.path): p.read_bytes() for p in sorted((ms.path / "0" / "c").rglob("*"))
                      if p.is_file()})
    assert trees[0] == trees[1] and len(trees[0]) > 1


def test_misaligned_region_is_refused(array):
    ms, arr = array
    with pytest.raises(ValueError, match="not shard-aligned"):
        ShardWriter(arr, ms.path).write_region(16, 0, np.zeros((16, 600, 300), np.uint8))
