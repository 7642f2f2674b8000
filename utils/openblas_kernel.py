"""numpy's OpenBLAS told which kernel this CPU runs, before numpy loads (called by utils/__init__.py).

Once OneFlow is loaded, numpy's OpenBLAS no longer detects the CPU and falls back to a slow generic kernel, so it
is named here (OPENBLAS_CORETYPE from the CPU flags) and the variable is removed again before OneFlow loads,
because OneFlow's own OpenBLAS kernels get slower with it.
"""
import os
import sys


def openblas_core_for_this_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if "avx512f" in flags:
        return "SkylakeX"
    if "avx2" in flags:
        return "Haswell"
    return None


def load_numpy_with_native_kernel():
    core = openblas_core_for_this_cpu()
    if "numpy" in sys.modules or "OPENBLAS_CORETYPE" in os.environ or core is None:
        return
    os.environ["OPENBLAS_CORETYPE"] = core
    import numpy  # noqa: F401  (OpenBLAS reads OPENBLAS_CORETYPE when it loads)

    del os.environ["OPENBLAS_CORETYPE"]
