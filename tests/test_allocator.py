"""remote.allocator: a job keeps the memory it frees, so the next step does not page-fault it back in."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# malloc, touch and free 64 MiB, then malloc and touch it again: count the minor page faults of the second.
# Plain malloc through ctypes, as torch's CPU allocator does (numpy would madvise huge pages and hide them).
PROBE = """
import ctypes, ctypes.util, json, resource, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "keep":
    from remote.allocator import keep_freed_memory
    assert keep_freed_memory()
n = 64 << 20
p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(n); ctypes.memset(p, 1, n)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(not (ctypes.util.find_library("c") or "").startswith("libc.so"), reason="glibc only")
@pytest.mark.skipif(THP.exists() and "[always]" in THP.read_text(), reason="huge pages for every mmap: few faults either way")
def test_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    assert faults("default") > pages // 2    # glibc's default: a fresh mmap, every page faulted in again
    assert faults("keep") < pages // 20      # kept in the heap: the pages are already there

