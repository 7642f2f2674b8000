"""The project's modules. Importing any of them first quiets OneFlow's CPU-only start-up logs (utils/oneflow_logs.py),
which must happen before oneflow is imported: every entry point imports a utils module first."""
from utils.oneflow_logs import quiet_cpu_logs

quiet_cpu_logs()
