"""OneFlow lazy snapshots: round trips through write_lazy_snapshot / load_params_from_lazy, layouts, errors."""
import os

import numpy as np
import oneflow as flow
import pytest

from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering
from utils.checkpoints import CheckpointError
from utils.checkpoints.lazy import read_lazy_snapshot, write_lazy_snapshot, write_variable
from utils.compare_lazy_outputs import load_params_from_lazy
from utils.compare_lazy_outputs import main as compare_main

TINY = BertConfig(
    vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=20
)
H, P = TINY.hidden_size, TINY.max_position_embeddings


def numpy_state(model):
    return {name: t.numpy() for name, t in model.state_dict().items()}


def random_model(model_cls, seed):
    """A model whose every parameter (LayerNorm and biases too) is distinct random data."""
    flow.manual_seed(seed)
    model = model_cls(TINY)
    rng = np.random.RandomState(seed)
    with flow.no_grad():
        for param in model.parameters():
            param.copy_(flow.tensor(rng.normal(size=tuple(param.shape)).astype(np.float32)))
    return model


def raw(snapshot, name):
    return read_lazy_snapshot(str(snapshot))[name]


def test_pretraining_round_trip_with_lazy_layouts(tmp_path):
    source = random_model(BertForPreTraining, 1)
    expected = numpy_state(source)
    write_lazy_snapshot(source.state_dict(), str(tmp_path))
    assert os.path.getsize(tmp_path / "snapshot_done") == 0

    # Lazy layouts on disk: dense/query weights [in, out], position [1, P, H], NSP output_weights [2, H].
    query = "bert.encoder.layer.1.attention.self.query.weight"
    assert np.array_equal(raw(tmp_path, "bert-encoder-layer_1-attention-self-query-weight"), expected[query].T)
    intermediate = expected["bert.encoder.layer.0.intermediate.dense.weight"]  # [24, 16]: not square
    assert raw(tmp_path, "bert-encoder-layer_0-intermediate-dense-weight").shape == (H, 24)
    assert np.array_equal(raw(tmp_path, "bert-encoder-layer_0-intermediate-dense-weight"), intermediate.T)
    assert raw(tmp_path, "bert-embeddings-position_embeddings").shape == (1, P, H)
    assert np.array_equal(raw(tmp_path, "cls-seq_relationship-output_weights"), expected["cls.seq_relationship.weight"])
    assert np.array_equal(raw(tmp_path, "cls-predictions-output_bias"), expected["cls.predictions.bias"])
    assert np.array_equal(
        raw(tmp_path, "bert-encoder-layer_1-output-LayerNorm-gamma"), expected["bert.encoder.layer.1.output.LayerNorm.weight"]
    )
    meta = (tmp_path / "bert-embeddings-word_embeddings" / "meta").read_text()
    assert meta.split() == ["shape", "{", "dim:", "40", "dim:", "16", "}", "data_type:", "kFloat"]

    target = BertForPreTraining(TINY)
    report = load_params_from_lazy(target, str(tmp_path))
    assert report.missing == [] and report.unused == []
    loaded = numpy_state(target)
    assert all(np.array_equal(loaded[name], expected[name]) for name in expected)


def test_oneflow_legacy_loader_reads_our_snapshot(tmp_path):
    source = random_model(BertForQuestionAnswering, 2)
    written = write_lazy_snapshot(source.state_dict(), str(tmp_path))
    legacy = flow.load(str(tmp_path))  # OneFlow's own reader for this format
    assert sorted(legacy) == sorted(written)
    assert all(np.array_equal(legacy[name].numpy(), raw(tmp_path, name)) for name in legacy)


def test_squad_head_round_trip(tmp_path):
    source = random_model(BertForQuestionAnswering, 3)
    write_lazy_snapshot(source.state_dict(), str(tmp_path))
    assert np.array_equal(raw(tmp_path, "cls-squad-output-weight"), source.qa_outputs.weight.numpy().T)  # [H, 2]
    target = BertForQuestionAnswering(TINY)
    assert load_params_from_lazy(target, str(tmp_path)).missing == []
    assert np.array_equal(target.qa_outputs.weight.numpy(), source.qa_outputs.weight.numpy())
    assert np.array_equal(target.bert.embeddings.word_embeddings.weight.numpy(), source.bert.embeddings.word_embeddings.weight.numpy())


def test_google_style_heads_slots_and_unmatched_names(tmp_path):
    source = random_model(BertForPreTraining, 4)
    expected = numpy_state(source)
    write_lazy_snapshot(source.state_dict(), str(tmp_path))
    # Rename the NSP head to the modified branch's spelling, stored [H, 2] like a _FullyConnected.
    os.rename(tmp_path / "cls-seq_relationship-output_weights", tmp_path / "nsp")
    write_variable(str(tmp_path / "cls-seq_relationship-weight"), expected["cls.seq_relationship.weight"].T.copy())
    os.rename(tmp_path / "cls-seq_relationship-output_bias", tmp_path / "cls-seq_relationship-bias")
    # A 2-D position table, optimizer slots, a System variable and an unknown variable.
    write_variable(str(tmp_path / "bert-embeddings-position_embeddings"), expected["bert.embeddings.position_embeddings.weight"])
    write_variable(str(tmp_path / "bert-embeddings-word_embeddings-m"), np.zeros((40, H), np.float32))
    write_variable(str(tmp_path / "bert-pooler-dense-weight-v"), np.zeros((H, H), np.float32))
    write_variable(str(tmp_path / "System-Train-TrainStep-Train"), np.array([7], np.int64))
    write_variable(str(tmp_path / "cls-predictions-extra_scale"), np.ones(3, np.float32))
    os.rename(tmp_path / "nsp", tmp_path / "bert-unknown_thing")

    target = BertForPreTraining(TINY)
    report = load_params_from_lazy(target, str(tmp_path))
    assert report.unused == ["bert.unknown_thing", "cls.predictions.extra_scale"]
    assert report.missing == []
    loaded = numpy_state(target)
    assert all(np.array_equal(loaded[name], expected[name]) for name in expected)


def test_google_style_squad_output_weights_are_not_transposed(tmp_path):
    source = random_model(BertForQuestionAnswering, 5)
    write_lazy_snapshot(source.state_dict(), str(tmp_path))
    for suffix in ("weight", "bias"):
        os.rename(tmp_path / f"cls-squad-output-{suffix}", tmp_path / f"unused-{suffix}")
    write_variable(str(tmp_path / "cls-squad-output_weights"), source.qa_outputs.weight.numpy())  # [2, H]
    write_variable(str(tmp_path / "cls-squad-output_bias"), source.qa_outputs.bias.numpy())
    target = BertForQuestionAnswering(TINY)
    load_params_from_lazy(target, str(tmp_path))
    assert np.array_equal(target.qa_outputs.weight.numpy(), source.qa_outputs.weight.numpy())
    assert np.array_equal(target.qa_outputs.bias.numpy(), source.qa_outputs.bias.numpy())


def test_seed_style_call_with_a_state_dict(tmp_path):
    source = random_model(BertForPreTraining, 6)
    write_lazy_snapshot(source.state_dict(), str(tmp_path))
    target = BertForPreTraining(TINY)
    load_params_from_lazy(target.state_dict(), str(tmp_path))
    assert np.array_equal(target.cls.seq_relationship.weight.numpy(), source.cls.seq_relationship.weight.numpy())
    assert np.array_equal(
        target.bert.encoder.layer[1].attention.self.key.weight.numpy(), source.bert.encoder.layer[1].attention.self.key.weight.numpy()
    )


def test_missing_required_variable_is_an_error(tmp_path):
    write_lazy_snapshot(random_model(BertForPreTraining, 7).state_dict(), str(tmp_path))
    for name in ("out", "meta"):
        os.remove(tmp_path / "bert-encoder-layer_1-attention-self-value-weight" / name)
    os.rmdir(tmp_path / "bert-encoder-layer_1-attention-self-value-weight")
    with pytest.raises(CheckpointError, match=r"lacks required encoder parameters: bert\.encoder\.layer\.1\.attention\.self\.value\.weight"):
        load_params_from_lazy(BertForPreTraining(TINY), str(tmp_path))


def test_truncated_or_mislabelled_variable_is_an_error(tmp_path):
    write_lazy_snapshot(random_model(BertForPreTraining, 8).state_dict(), str(tmp_path))
    data = tmp_path / "bert-pooler-dense-bias" / "out"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match=r"bert-pooler-dense-bias/out: holds 60 bytes, meta says \(16,\) float32 = 64 bytes"):
        load_params_from_lazy(BertForPreTraining(TINY), str(tmp_path))
    write_variable(str(tmp_path / "bert-pooler-dense-bias"), np.zeros(H + 1, np.float32))
    with pytest.raises(CheckpointError, match=r"bert\.pooler\.dense\.bias has shape \[17\], the model expects \[16\]"):
        load_params_from_lazy(BertForPreTraining(TINY), str(tmp_path))
    (tmp_path / "bert-pooler-dense-bias" / "meta").write_text("shape { dim: 16 } data_type: kNoSuchType")
    with pytest.raises(CheckpointError, match="bert-pooler-dense-bias/meta: cannot read variable meta"):
        load_params_from_lazy(BertForPreTraining(TINY), str(tmp_path))


def test_compare_cli_reports_zero_difference(tmp_path, capsys):
    source = random_model(BertForPreTraining, 9)
    with flow.no_grad():  # keep activations in a sane range: N(0, 1) everywhere saturates the tanh pooler
        for param in source.parameters():
            param.mul_(0.1)
    write_lazy_snapshot(source.state_dict(), str(tmp_path / "lazy"))
    flow.save(source.state_dict(), str(tmp_path / "eager"))
    TINY.to_json_file(str(tmp_path / "config.json"))
    compare_main(
        ["--lazy_dir", str(tmp_path / "lazy"), "--model_load_dir", str(tmp_path / "eager"),
         "--bert_config_file", str(tmp_path / "config.json"), "--seq_length", "16"]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "max abs diff" in line]
    assert [line.split(":")[0] for line in lines] == ["sequence_output", "pooled_output", "mlm_logits", "nsp_logits"]
    assert all(line.endswith("max abs diff 0.000e+00") for line in lines)
