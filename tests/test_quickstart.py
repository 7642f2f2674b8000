"""The README's main job, examples/quickstart.sh, as a user runs it (shortened by its env vars)."""
import os
import subprocess

from runs import ROOT, read_metrics

SHORT = {"STEPS": "20", "LAYERS": "1", "HIDDEN": "64", "HEADS": "1", "BATCH": "8"}


def quickstart(tmp_path, **env):
    run_dir = tmp_path / "run"
    return run_dir, subprocess.run(["bash", os.path.join(ROOT, "examples", "quickstart.sh")], cwd=tmp_path,
                                   env={**os.environ, **SHORT, "RUN_DIR": str(run_dir), **env},
                                   capture_output=True, text=True, timeout=600)


def test_default_layout_trains_and_reports_a_falling_loss(tmp_path):
    run_dir, result = quickstart(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "quickstart: total_loss" in result.stdout
    steps = [row["step"] for row in read_metrics(str(run_dir / "metrics.jsonl"))]
    assert steps == [9, 19]
    assert os.path.isdir(run_dir / "checkpoints" / "step_00000020" / "model")


def test_unknown_mode_is_refused(tmp_path):
    _, result = quickstart(tmp_path, MODE="fast")
    assert result.returncode == 2 and "MODE must be eager, graph, ddp2 or global2" in result.stderr
