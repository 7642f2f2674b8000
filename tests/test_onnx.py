"""ONNX export (utils/export_onnx.py) and ONNX Runtime serving (run_infer.py --onnx).

Each task is exported from a tiny random checkpoint and from the real MiniLM weights (with seeded heads, saved as
a OneFlow checkpoint), then run on ONNX Runtime at batch 1 and 3 and compared with OneFlow within 1e-4; run_infer
gives the same records through ONNX Runtime as through OneFlow. Needs the extra: bash scripts/setup_env.sh --onnx.
"""
import importlib.util
import json
import os
import shutil

import numpy as np
import oneflow as flow
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (bash scripts/setup_env.sh --onnx)")
if importlib.util.find_spec("oneflow_onnx") is None:
    pytest.skip("oneflow-onnx is not installed (bash scripts/setup_env.sh --onnx)", allow_module_level=True)

import run_infer  # noqa: E402
from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering  # noqa: E402
from utils import export_onnx, onnx_serving  # noqa: E402
from utils.checkpoints import native  # noqa: E402
from utils.checkpoints.hf import read_hf  # noqa: E402
from utils.checkpoints.loading import load_pretrained, peek_config  # noqa: E402

TOLERANCE = 1e-4
TASKS = ("qa", "features", "nsp", "fill_mask")
TINY = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64)


def save(model, config, root, vocab=None):
    native.save_checkpoint(str(root), 1, config, model.state_dict(), {}, {"world_size": 1}, keep=0)
    if vocab:
        shutil.copyfile(vocab, root / "vocab.txt")
    return str(root)


def checkpoints(config, root, init=None, vocab=None):
    """{task: checkpoint dir} with every head loaded: a pre-training model and a QA model, heads seeded."""
    flow.manual_seed(3)
    saved = {}
    for name, model_class in (("pretraining", BertForPreTraining), ("qa", BertForQuestionAnswering)):
        model = model_class(config)
        if init:
            load_pretrained(model, init)
        saved[name] = save(model, config, root / name, vocab)
    return {task: saved["qa" if task == "qa" else "pretraining"] for task in TASKS}


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    return checkpoints(TINY, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def minilm_checkpoints(minilm_dir, tmp_path_factory):
    config, _ = read_hf(minilm_dir)
    return checkpoints(config, tmp_path_factory.mktemp("minilm"), minilm_dir, os.path.join(minilm_dir, "vocab.txt"))


@pytest.fixture(scope="module")
def minilm_exports(minilm_checkpoints, tmp_path_factory):
    """{task: (model.onnx, the export's own max |ONNX Runtime - OneFlow|)}, exported once for the module."""
    root = tmp_path_factory.mktemp("minilm_onnx")
    return {task: export(minilm_checkpoints[task], task, root / task / "model.onnx", seq_length=32)
            for task in TASKS}


def export(checkpoint, task, output, seq_length=16):
    worst = export_onnx.main(["--model_load_dir", checkpoint, "--task", task, "--output", str(output),
                              "--seq_length", str(seq_length)])
    return str(output), worst


def reference_model(checkpoint, task):
    model_class, task_def = run_infer.TASKS[task]
    model = model_class(peek_config(checkpoint))
    load_pretrained(model, checkpoint)
    return model.eval(), task_def


def random_batch(rng, fields, batch, length, vocab_size):
    """Rows of different lengths (padding masked), [MASK] positions inside each row."""
    lengths = rng.integers(4, length + 1, batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    arrays = {"input_ids": rng.integers(0, vocab_size, (batch, length)).astype(np.int32) * mask,
              "input_mask": mask,
              "segment_ids": (np.arange(length)[None, :] >= lengths[:, None] // 2).astype(np.int32) * mask,
              "masked_lm_positions": (rng.integers(0, 4, (batch, 3)) % lengths[:, None]).astype(np.int32)}
    return {field: arrays[field] for field in fields}


def largest_difference(onnx_path, checkpoint, task):
    """max |ONNX Runtime - OneFlow| at batch 1 and 3 and lengths other than the traced one."""
    model, task_def = reference_model(checkpoint, task)
    session = onnx_serving.open_session(onnx_path)
    rng = np.random.default_rng(1)
    worst = 0.0
    for batch, length in ((1, 9), (3, 21)):
        arrays = random_batch(rng, task_def.eval_fields, batch, length, model.config.vocab_size)
        expected = export_onnx.oneflow_outputs(model, task_def, arrays)
        got = session.run(list(export_onnx.OUTPUT_NAMES[task]), onnx_serving.feeds(session, arrays))
        for e, g in zip(expected, got):
            assert g.shape == e.shape
            worst = max(worst, float(np.abs(e - g).max()))
    return worst


@pytest.mark.parametrize("task", TASKS)
def test_tiny_export_matches_oneflow(task, tiny_checkpoints, tmp_path):
    path, worst = export(tiny_checkpoints[task], task, tmp_path / "model.onnx")
    assert worst <= TOLERANCE
    assert largest_difference(path, tiny_checkpoints[task], task) <= TOLERANCE


@pytest.mark.parametrize("task", TASKS)
def test_minilm_export_matches_oneflow(task, minilm_exports, minilm_checkpoints):
    path, worst = minilm_exports[task]
    assert worst <= TOLERANCE
    assert largest_difference(path, minilm_checkpoints[task], task) <= TOLERANCE
    assert os.path.isfile(os.path.join(os.path.dirname(path), "vocab.txt"))  # what run_infer --onnx reads


def infer(argv, capsys):
    run_infer.main(argv)
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def assert_same_records(onnx_records, oneflow_records):
    assert len(onnx_records) == len(oneflow_records)
    for got, want in zip(onnx_records, oneflow_records):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, abs=TOLERANCE), key
            elif key == "masks":
                for got_mask, want_mask in zip(got[key], value):
                    assert [c["token"] for c in got_mask] == [c["token"] for c in want_mask]
                    assert [c["probability"] for c in got_mask] == pytest.approx(
                        [c["probability"] for c in want_mask], abs=TOLERANCE)
            elif key != "file":
                assert got[key] == value, key


INPUTS = {
    "qa": ["--input_text", "Where did the keeper climb?",
           "--input_text_b", "Every evening the old keeper climbed the stairs of the lighthouse to light the lamp."],
    "nsp": ["--input_text", "The storm knocked out power.", "--input_text_b", "Crews restored it overnight."],
    "fill_mask": ["--input_text", "The river flows into the [MASK] near the old [MASK]."],
    "features": ["--input_text", "The river rises in the hills."],
}


@pytest.mark.parametrize("task", TASKS)
def test_run_infer_onnx_gives_the_oneflow_answer(task, minilm_exports, minilm_checkpoints, tmp_path, capsys):
    extra = {"features": ["--output_hidden_states", str(tmp_path / "{}.npy")]}.get(task, [])
    runs = {}
    for engine, model_flags in (("onnx", ["--onnx", minilm_exports[task][0]]),
                                ("oneflow", ["--model_load_dir", minilm_checkpoints[task], "--mode", "eager"])):
        flags = [flag.format(engine) for flag in extra]
        runs[engine] = infer(model_flags + ["--task", task] + INPUTS[task] + flags, capsys)
    assert_same_records(runs["onnx"], runs["oneflow"])
    if task == "features":
        got, want = (np.load(str(tmp_path / f"{engine}.npy")) for engine in ("onnx", "oneflow"))
        assert got.shape == want.shape and np.abs(got - want).max() <= TOLERANCE


def test_task_defaults_to_the_exported_one(minilm_exports, capsys):
    records = infer(["--onnx", minilm_exports["qa"][0]] + INPUTS["qa"], capsys)
    assert records[0]["task"] == "qa"


def test_bad_onnx_file_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(SystemExit) as exit_info:
        run_infer.main(["--onnx", str(bad), "--task", "nsp"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: --onnx {bad}: ONNX Runtime can't load it"), errors


def test_layer_norms_reach_onnx_runtime_as_its_fused_kernel(minilm_exports, tmp_path):
    """modeling.LayerNorm's matmul-broadcast form is exported as ReduceMean...Div, which ONNX Runtime fuses: each
    of MiniLM's 13 LayerNorms (embeddings + 2 per layer) becomes one LayerNormalization node."""
    import onnx
    import onnxruntime

    path, _ = minilm_exports["qa"]
    exported = onnx.load(path)
    initializers = {init.name for init in exported.graph.initializer}
    assert not any("averager" in name or "expander" in name for name in initializers)
    assert sum(node.op_type == "ReduceMean" for node in exported.graph.node) == 2 * 13
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    assert sum(node.op_type == "LayerNormalization" for node in optimized.graph.node) == 13
