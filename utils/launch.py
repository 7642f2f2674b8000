"""`python -m utils.launch ...` is `python -m oneflow.distributed.launch ...` with the launcher's own OneFlow import
quieted too (utils/oneflow_logs.py, applied by importing this package); the ranks it starts inherit the setting."""
import runpy

if __name__ == "__main__":
    runpy.run_module("oneflow.distributed.launch", run_name="__main__", alter_sys=True)
