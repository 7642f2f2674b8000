"""The README's main job, examples/quickstart.sh, as a user runs it (shortened by its env vars), and what it says
to run next: fill-mask with the checkpoint it saved."""
import json
import os
import subprocess

import pytest

from runs import ROOT, read_metrics
from utils import tokenizer_settings
from utils.paths import DEMO_DATA_DIR

SHORT = {"STEPS": "20", "LAYERS": "1", "HIDDEN": "64", "HEADS": "1", "BATCH": "8"}


def quickstart(tmp_path, **env):
    run_dir = tmp_path / "run"
    return run_dir, subprocess.run(["bash", os.path.join(ROOT, "examples", "quickstart.sh")], cwd=tmp_path,
                                   env={**os.environ, **SHORT, "RUN_DIR": str(run_dir), **env},
                                   capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return quickstart(tmp_path_factory.mktemp("quickstart"))


def test_default_layout_trains_and_reports_a_falling_loss(default_run):
    run_dir, result = default_run
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "quickstart: total_loss" in result.stdout
    steps = [row["step"] for row in read_metrics(str(run_dir / "metrics.jsonl"))]
    assert steps == [9, 19]
    assert os.path.isdir(run_dir / "checkpoints" / "step_00000020" / "model")


def test_fill_mask_runs_on_the_quickstart_checkpoint(default_run):
    run_dir, result = default_run
    if tokenizer_settings.of_pretraining_data(DEMO_DATA_DIR).vocab_file is None:
        pytest.skip("the demo set's vocab is not here (no shared data folder, no MiniLM package)")
    command = f"TASK=fill_mask MODEL_PATH={run_dir}/checkpoints bash examples/infer.sh"
    assert command in result.stdout
    infer = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert infer.returncode == 0, infer.stderr[-2000:]
    (record,) = [json.loads(line) for line in infer.stdout.splitlines() if line.startswith("{")]
    assert len(record["masks"][0]) == 5


def test_unknown_mode_is_refused(tmp_path):
    _, result = quickstart(tmp_path, MODE="fast")
    assert result.returncode == 2 and "MODE must be eager, graph, ddp2 or global2" in result.stderr
