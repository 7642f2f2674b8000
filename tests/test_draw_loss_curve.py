"""draw_loss_curve.py on the logs of real tiny eager and graph runs."""
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from draw_loss_curve import LogError, draw
from runs import PYTHON, ROOT, TINY_MODEL, losses, run
from synthetic import write_synthetic_dataset
from utils.metrics import format_train_line, parse_log

STEPS = 12


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """stdout logs and metrics files of an eager and a graph run: same init and data, validation at 6 and 12."""
    base = tmp_path_factory.mktemp("runs")
    data = write_synthetic_dataset(str(base / "data"), num_records=128, num_parts=2, val_records=32)
    paths = {}
    for name, script in (("eager", "run_eager_pretraining.py"), ("graph", "run_pretraining.py")):
        out = base / name
        out.mkdir()
        args = [*TINY_MODEL, "--ofrecord_path", data, "--train-batch-size", "8", "--train_steps", str(STEPS),
                "--lr", "1e-3", "--loss_print_every_n_iters", "1", "--val_print_every_n_iters", "6",
                "--checkpoint_path", str(out / "ckpt"), "--metrics_file", str(out / "metrics.jsonl")]
        result = run(script, args)
        (out / f"{name}.log").write_text(result.stdout)
        paths[name] = str(out / f"{name}.log")
        paths[f"{name}_metrics"] = str(out / "metrics.jsonl")
    return paths


def test_two_runs_draw_a_png_with_the_expected_curves(logs, tmp_path):
    png = str(tmp_path / "eager_vs_graph.png")
    drawn = draw([logs["eager"], logs["graph"]], png)
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1300, 1200)
    assert [r["label"] for r in drawn["runs"]] == ["eager.log", "graph.log"]
    for r in drawn["runs"]:
        assert r["steps"] == list(range(STEPS)) and r["val_steps"] == [5, 11]
    curves = drawn["curves"]
    assert curves["total_loss"] == ["eager.log", "graph.log"]  # validation lines carry no total loss
    assert curves["mlm_loss"] == ["eager.log", "eager.log val", "graph.log", "graph.log val"]
    assert len(curves["nsp_loss"]) == 4
    assert len(curves["accuracy"]) == 8  # NSP and MLM accuracy, training line + validation markers, per run
    assert curves["difference"] == ["total_loss", "mlm_loss", "nsp_loss"]


def test_difference_panel_is_graph_minus_eager_and_near_zero(logs, tmp_path):
    drawn = draw([logs["eager"], logs["graph"]], str(tmp_path / "d.png"))
    eager, graph = parse_log(logs["eager"])["train"], parse_log(logs["graph"])["train"]
    diff = drawn["difference"]
    assert diff["steps"] == list(range(STEPS))
    for name in ("total_loss", "mlm_loss", "nsp_loss"):
        expected = [g[name] - e[name] for e, g in zip(eager, graph)]
        np.testing.assert_allclose(diff[name], expected, atol=1e-12)
        # The log keeps 3 decimals: modes that agree to 1e-4 differ by at most one unit in the last place.
        assert max(abs(v) for v in diff[name]) <= 1e-3 + 1e-9
    assert eager[-1]["total_loss"] < eager[0]["total_loss"]


def test_metrics_files_resolve_the_difference_to_full_precision(logs, tmp_path):
    drawn = draw([logs["eager_metrics"], logs["graph_metrics"]], str(tmp_path / "m.png"), labels=["eager", "graph"])
    assert [r["label"] for r in drawn["runs"]] == ["eager", "graph"]
    eager, graph = losses(logs["eager_metrics"]), losses(logs["graph_metrics"])
    np.testing.assert_allclose(drawn["difference"]["total_loss"], np.subtract(graph, eager), atol=1e-12)
    assert max(abs(v) for v in drawn["difference"]["total_loss"]) <= 1e-4 * max(eager)


def test_three_runs_have_no_difference_panel(logs, tmp_path):
    drawn = draw([logs["eager"], logs["graph"], logs["eager_metrics"]], str(tmp_path / "three.png"))
    assert drawn["difference"] is None and "difference" not in drawn["curves"]
    assert len(drawn["curves"]["total_loss"]) == 3
    with Image.open(drawn["out_png"]) as image:
        assert image.size == (1300, 800)


def test_launcher_log_directory_gives_one_curve_per_rank_with_training_lines(logs, tmp_path):
    text = open(logs["eager"]).read()
    for rank, content in ((0, text), (1, "mode: eager ddp, world size 2\n")):  # only rank 0 prints training lines
        os.makedirs(tmp_path / "log" / f"local_rank_{rank}")
        (tmp_path / "log" / f"local_rank_{rank}" / "stdout").write_text(content)
    drawn = draw([str(tmp_path / "log"), logs["graph"]], str(tmp_path / "dir.png"))
    assert [r["label"] for r in drawn["runs"]] == ["log/local_rank_0/stdout", "graph.log"]
    assert drawn["difference"]["steps"] == list(range(STEPS))


def test_a_resumed_log_keeps_the_last_value_of_a_repeated_step_and_skips_a_truncated_line(tmp_path):
    lines = [format_train_line({"step": s, "total_loss": 5.0 - s, "mlm_loss": 4.0, "nsp_loss": 0.7, "pred_acc": 0.5,
                                "mlm_acc": 0.1}) for s in (0, 1, 2)]
    lines.append(format_train_line({"step": 1, "total_loss": 9.0, "mlm_loss": 4.0, "nsp_loss": 0.7, "pred_acc": 0.5,
                                    "mlm_acc": 0.1}))
    lines.append("step: 3, total_loss: 2.0, mlm_")  # killed while writing
    log = tmp_path / "resumed.log"
    log.write_text("\n".join(lines) + "\n")
    drawn = draw([str(log), str(log)], str(tmp_path / "r.png"), labels=["a", "b"])
    assert drawn["runs"][0]["steps"] == [0, 1, 2]
    assert drawn["difference"]["total_loss"] == [0.0, 0.0, 0.0]


def test_a_log_without_training_lines_is_a_clear_error(tmp_path):
    empty = tmp_path / "crashed.log"
    empty.write_text("mode: graph, world size 1\nTraceback (most recent call last):\n")
    with pytest.raises(LogError, match="crashed.log: no training lines"):
        draw([str(empty)], str(tmp_path / "x.png"))
    result = subprocess.run([PYTHON, os.path.join(ROOT, "draw_loss_curve.py"), str(empty), "--out",
                             str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {empty}: no training lines")
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(LogError, match="--labels gives 1 names for 2 logs"):
        draw([str(empty), str(empty)], str(tmp_path / "y.png"), labels=["one"])
