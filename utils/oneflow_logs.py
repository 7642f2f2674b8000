"""OneFlow's start-up lines that a CPU-only machine can do nothing about, turned off before oneflow loads.

The OneFlow 0.9 wheel is a CUDA build. On a machine without an NVIDIA driver, importing it logs a glog WARNING
("CUDA driver version is insufficient for CUDA runtime version") and the first device query a glog ERROR
("Failed to get cuda runtime version"); every nn.Graph build adds a Python UserWarning ("Ones() is called in a
nn.Graph, but not registered into a nn.Graph") from OneFlow's own modules. None of them is about the run.

utils/__init__.py calls quiet_cpu_logs(), so every entry point gets it: each imports a utils module before oneflow.
What still shows:
- errors: OneFlow raises them as Python exceptions, and glog's FATAL level (a failed CHECK) is kept;
- "libibverbs not available, ibv_fork_init skipped": OneFlow's library prints it straight to stderr while it loads;
- every glog line, when GLOG_minloglevel is already set (GLOG_minloglevel=0 brings them all back).
"""
import os
import warnings

NVIDIA_DRIVER = "/proc/driver/nvidia/version"  # exists while an NVIDIA kernel driver is loaded
GLOG_FATAL_ONLY = "3"  # glog levels: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL


def quiet_cpu_logs():
    """Sets the environment that the oneflow import (here or in a child process) reads its log level from."""
    if not os.path.exists(NVIDIA_DRIVER):
        os.environ.setdefault("GLOG_minloglevel", GLOG_FATAL_ONLY)
    warnings.filterwarnings("ignore", message=r"Ones\(\) is called in a nn\.Graph", category=UserWarning)
