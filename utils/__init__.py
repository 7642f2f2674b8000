"""The project's modules.

Importing any of them first prepares the process, which must happen before numpy and oneflow load, so every entry
point starts with `import utils`:
- numpy's OpenBLAS is told this CPU's kernel (utils/openblas_kernel.py): the eager matrix products run on it
  (utils/numpy_blas.py), and with OneFlow loaded first it falls back to a slow generic kernel;
- OneFlow's CPU-only start-up logs are turned off (utils/oneflow_logs.py);
- glibc keeps freed memory for the next step instead of returning it to the kernel (utils/freed_memory.py).
"""
from utils.freed_memory import keep_freed_memory
from utils.oneflow_logs import quiet_cpu_logs
from utils.openblas_kernel import load_numpy_with_native_kernel

keep_freed_memory()
load_numpy_with_native_kernel()
quiet_cpu_logs()
