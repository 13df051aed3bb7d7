"""Objects at any size, blockwise: connected components, per-object stats, envelope areas.

Memory is bounded by the block, never the volume:

1. **Label pass** (one block at a time, resumable): threshold the block (or its hysteresis
   low level), label it with cc3d (26-connected), and write, aside-then-rename, `<key>.npz`
   holding the block's per-label statistics and its six boundary planes. The npz files *are*
   the ledger: a restarted job skips the blocks that have one. Run as a Slurm job array, each
   task labels its slice of the blocks into its own `tasks/<i>/<pass>/` (`run_task`), and the
   dependent step (`finalize`) checks that every block has its file before the merge.
2. **Merge**: for each of the 13 forward neighbours of every block (faces, edges and corners,
   which 26-connectivity needs), the touching boundary planes are compared with shifts of
   −1..1 along the shared axes; equal-object pairs go to a sparse graph whose connected
   components (scipy.sparse.csgraph) are the global objects. Statistics are reduced per root:
   voxels, centroid, bounding box, mean and max probability. Then the size filter (and the
   hysteresis high level).
3. Optionally the block labels are kept in a zarr (`labels.zarr`, chunk = block) with a lookup
   table (`lut.npy`: block offset + local label → global id), which is what the envelope
   area pass and the pore → nucleus assignment read.
4. Optionally (`split`) touching pores are split apart in the label pass (`split_touching`,
   `split_block` in remote/objects/split.py: why it stays exact across blocks is said there).

Why our own face merge rather than dask-image or daisy: the object table (not a label volume)
is the product, the merge needs only the boundary planes (a few MB), and the per-block
statistics make the reduction exact without a second pass over the volume; dask-image's
`label` would need a second blockwise pass for the statistics and daisy brings a scheduler we
already have (our executors). Measured against whole-volume cc3d in tests/test_objects.py
(identical partitions) and benchmarks/objects_scale.py (throughput ratio).
"""


from remote.objects.areas import envelope_areas, nearest_object
from remote.objects.job import finalize, measure, prepare_array, run, run_task, table_columns, write_tables
from remote.objects.labels import (COLUMNS, GlobalLabels, label_block, label_blocks, label_volume, labels_store, merge,
                                   npz_path, threshold_mask)
from remote.objects.split import split_touching

__all__ = ["COLUMNS", "GlobalLabels", "envelope_areas", "finalize", "label_block", "label_blocks", "label_volume",
           "labels_store", "measure", "merge", "nearest_object", "npz_path", "prepare_array", "run", "run_task",
           "split_touching", "table_columns", "threshold_mask", "write_tables"]
