"""utils/benchmark_infer.py on a tiny QA checkpoint: every path runs every shape and computes the same logits."""
import importlib.util
import json

import numpy as np
import oneflow as flow
import pytest

from modeling import BertConfig, BertForQuestionAnswering
from utils import benchmark_infer
from utils.checkpoints import native

TINY = BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=32)
HAS_ONNX = importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("oneflow_onnx")


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory):
    flow.manual_seed(5)
    root = tmp_path_factory.mktemp("tiny_qa")
    native.save_checkpoint(str(root), 1, TINY, BertForQuestionAnswering(TINY).state_dict(), {}, {"world_size": 1},
                           keep=0)
    return str(root)


def run(tiny_qa, tmp_path, paths):
    rows_file, table_file = tmp_path / "rows.json", tmp_path / "table.md"
    benchmark_infer.main(["--model_load_dir", tiny_qa, "--batch_size", "1", "3", "--seq_length", "8", "32",
                          "--iterations", "4", "--paths", *paths, "--json", str(rows_file),
                          "--markdown", str(table_file)])
    return json.loads(rows_file.read_text()), table_file.read_text()


def check_rows(rows, paths):
    assert [(r["path"], r["batch_size"], r["seq_length"]) for r in rows] == [
        (p, b, s) for b in (1, 3) for s in (8, 32) for p in paths]
    for row in rows:
        assert row["calls"] == 4
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["sequences_per_s"] == pytest.approx(1000 * row["batch_size"] / row["p50_ms"])
        assert row["max_abs_diff_vs_eager"] < 1e-4


def test_oneflow_paths_agree_and_are_timed(tiny_qa, tmp_path):
    paths = ["eager", "eager_no_blas", "graph"]
    rows, table = run(tiny_qa, tmp_path, paths)
    check_rows(rows, paths)
    assert table.splitlines()[0].count("seq/s") == 4
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == paths


@pytest.mark.skipif(not HAS_ONNX, reason="the ONNX extra is not installed (bash scripts/setup_env.sh --onnx)")
def test_onnx_runtime_paths_agree_with_oneflow(tiny_qa, tmp_path):
    paths = ["eager", "ort1", "ort2"]
    rows, _ = run(tiny_qa, tmp_path, paths)
    check_rows(rows, paths)


def test_a_path_that_computes_something_else_shows():
    reference = [np.zeros((2, 8)), np.zeros((2, 8))]
    assert benchmark_infer.largest_difference([np.zeros((2, 8)), np.full((2, 8), 0.25)], reference) == 0.25


def test_too_long_a_sequence_is_one_clear_error(tiny_qa, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark_infer.main(["--model_load_dir", tiny_qa, "--seq_length", "64", "--paths", "eager"])
    assert exit_info.value.code == 2
    assert "--seq_length 64 exceeds the checkpoint's max_position_embeddings 32" in capsys.readouterr().err
