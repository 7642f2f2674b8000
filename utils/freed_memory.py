"""glibc malloc told to keep freed memory for reuse instead of returning it to the kernel (called by utils/__init__.py).

A training step allocates and frees the same activations every step. With glibc's defaults, blocks above its
mmap threshold and the free top of the heap go back to the kernel, and the next step touches fresh pages again:
a BERT-base eager CPU step took ~38,000 minor page faults (150 MB of zeroed pages), and about 40% of the
benchmark's CPU time was kernel time. With the settings below a step takes under 1,000 and runs 5-12% faster
(paired runs, docs/performance.md). Peak memory is unchanged; the process just keeps its peak.
BERT_KEEP_FREED_MEMORY=0 leaves glibc's defaults.
"""
import ctypes
import ctypes.util
import os

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit
TOP_PAD = 256 << 20
TRIM_THRESHOLD = (1 << 31) - 1  # effectively never trim: mallopt takes an int


def keep_freed_memory():
    """Returns True when glibc accepted the settings (False on other C libraries or when turned off)."""
    if os.environ.get("BERT_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
