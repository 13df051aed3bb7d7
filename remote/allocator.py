"""Keep freed memory in the job's heap instead of handing it back to the kernel (glibc only).

glibc serves every allocation over its mmap threshold (at most 32 MiB, adjusted
as it goes) with a fresh mmap and unmaps it on free. A 3D U-Net's activations
are tens of MiB each and are freed and allocated again every step, so each step
page-faults its whole working set back in: measured on this project's CPU
machine, a quarter of a training step was kernel time (docs/benchmarks.md,
"The allocator"). Raising the mmap and trim thresholds keeps those pages in the
process: the job's peak memory is unchanged (it held them at its peak anyway),
only no longer returned between steps. PyTorch's own CPU tuning guide gives the
same advice (jemalloc or tcmalloc); mallopt needs no extra library on the node.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BELOW = 2**31 - 1  # bytes: allocations below this come from the heap, which keeps what is freed


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False where the C library is not glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW))
