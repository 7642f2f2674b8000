"""Running the project's scripts as a user would: a subprocess, optionally under oneflow.distributed.launch."""
import json
import os
import signal
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

TINY_MODEL = ["--num_hidden_layers", "2", "--num_attention_heads", "2", "--hidden_size", "32",
              "--intermediate_size", "64", "--vocab_size", "64", "--seq_length", "32",
              "--max_predictions_per_seq", "5", "--max_position_embeddings", "64",
              "--hidden_dropout_prob", "0", "--attention_probs_dropout_prob", "0"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(script, args, nproc=1, extra_launch=()):
    if nproc == 1 and not extra_launch:
        return [PYTHON, os.path.join(ROOT, script), *args]
    return [PYTHON, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(nproc),
            "--master_port", str(free_port()), *extra_launch, os.path.join(ROOT, script), *args]


def run(script, args, nproc=1, timeout=600, check=True, env=None):
    """Runs to completion in its own session (the launcher may killpg its group); returns CompletedProcess."""
    proc = subprocess.Popen(command(script, args, nproc), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{script} timed out after {timeout}s\n{out[-3000:]}\n{err[-3000:]}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}")
    return result


def read_metrics(path, kind="train"):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r["kind"] == kind]


def losses(path):
    return [r["total_loss"] for r in read_metrics(path)]
