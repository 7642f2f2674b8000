"""Checkpoint detection, config resolution and load_pretrained across formats and model classes."""
import json
import os
from dataclasses import replace

import numpy as np
import oneflow as flow
import pytest

from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering, BertModel
from utils.checkpoints import CheckpointError
from utils.checkpoints.hf import export_hf
from utils.checkpoints.lazy import write_lazy_snapshot
from utils.checkpoints.loading import detect_format, load_pretrained, peek_config, read_checkpoint, resolve_config

TINY = BertConfig(
    vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=20
)


def numpy_state(model):
    return {name: t.numpy() for name, t in model.state_dict().items()}


def new_model(model_cls, seed, config=TINY):
    flow.manual_seed(seed)
    return model_cls(config)


def write_step(root, step, model, config=TINY):
    """The native layout: <root>/step_<8 digits>/{config.json, model/, train_state/, meta.json}."""
    step_dir = os.path.join(root, f"step_{step:08d}")
    os.makedirs(step_dir)
    config.to_json_file(os.path.join(step_dir, "config.json"))
    flow.save(model.state_dict(), os.path.join(step_dir, "model"))
    flow.save({"step": step}, os.path.join(step_dir, "train_state"))
    with open(os.path.join(step_dir, "meta.json"), "w") as f:
        json.dump({"step": step}, f)
    return step_dir


def test_detect_format(tmp_path):
    model = new_model(BertForPreTraining, 0)
    write_step(str(tmp_path / "run"), 3, model)
    flow.save(model.state_dict(), str(tmp_path / "bare"))
    export_hf(model, TINY, str(tmp_path / "hf"))
    write_lazy_snapshot(model.state_dict(), str(tmp_path / "lazy"))
    assert detect_format(str(tmp_path / "run")) == "oneflow"
    assert detect_format(str(tmp_path / "run" / "step_00000003")) == "oneflow"
    assert detect_format(str(tmp_path / "bare")) == "oneflow"
    assert detect_format(str(tmp_path / "hf")) == "hf"
    assert detect_format(str(tmp_path / "lazy")) == "lazy"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=f"{tmp_path}/empty: not a checkpoint"):
        detect_format(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match=f"{tmp_path}/nope: checkpoint path does not exist"):
        detect_format(str(tmp_path / "nope"))


def test_temp_dirs_are_not_checkpoints(tmp_path):
    flow.save(new_model(BertModel, 0).state_dict(), str(tmp_path / ".tmp-step_00000009" / "model"))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        detect_format(str(tmp_path))


def test_forced_format(tmp_path):
    model = new_model(BertForPreTraining, 1)
    flow.save(model.state_dict(), str(tmp_path / "bare"))
    with pytest.raises(CheckpointError, match="cannot read HF config"):
        read_checkpoint(str(tmp_path / "bare"), "hf")
    with pytest.raises(CheckpointError, match="--init_format 'torch' is not one of"):
        read_checkpoint(str(tmp_path / "bare"), "torch")
    config, state = read_checkpoint(str(tmp_path / "bare"), "oneflow")
    assert config is None and "bert.encoder.layer.1.output.dense.weight" in state
    os.remove(tmp_path / "bare" / "pickled_data")
    write_lazy_snapshot(model.state_dict(), str(tmp_path / "lazy"))
    os.remove(tmp_path / "lazy" / "snapshot_done")  # a forced format does not need the completion marker
    assert load_pretrained(BertForPreTraining(TINY), str(tmp_path / "lazy"), "lazy").missing == []


def test_root_loads_newest_step(tmp_path):
    old, new = new_model(BertForPreTraining, 2), new_model(BertForPreTraining, 3)
    write_step(str(tmp_path), 5, old)
    write_step(str(tmp_path), 10, new)
    (tmp_path / ".tmp-abc").mkdir()
    target = BertForPreTraining(TINY)
    report = load_pretrained(target, str(tmp_path))
    assert report.format == "oneflow" and report.config == TINY and report.missing == [] and report.unused == []
    expected, loaded = numpy_state(new), numpy_state(target)
    assert all(np.array_equal(loaded[n], expected[n]) for n in expected)
    load_pretrained(target, str(tmp_path / "step_00000005"))
    assert np.array_equal(target.cls.seq_relationship.weight.numpy(), old.cls.seq_relationship.weight.numpy())
    assert peek_config(str(tmp_path)) == TINY


def test_pretraining_to_squad_keeps_new_qa_head(tmp_path):
    pretrained = new_model(BertForPreTraining, 4)
    write_step(str(tmp_path), 1, pretrained)
    squad = new_model(BertForQuestionAnswering, 5)
    head_before = squad.qa_outputs.weight.numpy().copy()
    report = load_pretrained(squad, str(tmp_path))
    assert report.missing == ["qa_outputs.bias", "qa_outputs.weight"]
    assert report.unused == sorted(n for n in pretrained.state_dict() if n.startswith(("cls.", "bert.pooler.")))
    assert np.array_equal(squad.qa_outputs.weight.numpy(), head_before)
    expected, loaded = numpy_state(pretrained), numpy_state(squad)
    assert all(np.array_equal(loaded[n], expected[n]) for n in loaded if n.startswith("bert."))
    assert "qa_outputs.weight" in report.summary()


def test_squad_to_pretraining_and_bare_model(tmp_path):
    squad = new_model(BertForQuestionAnswering, 6)
    flow.save(squad.state_dict(), str(tmp_path))
    pretraining = BertForPreTraining(TINY)
    report = load_pretrained(pretraining, str(tmp_path))
    assert report.missing == sorted(n for n in pretraining.state_dict() if n.startswith(("cls.", "bert.pooler.")))
    assert report.unused == ["qa_outputs.bias", "qa_outputs.weight"]
    bare = BertModel(TINY, add_pooling_layer=False)
    load_pretrained(bare, str(tmp_path))
    assert np.array_equal(bare.encoder.layer[1].output.dense.weight.numpy(), squad.bert.encoder.layer[1].output.dense.weight.numpy())


def test_seed_era_native_names(tmp_path):
    """The seed's eager model saved the MLM bias as output_bias and the tied decoder separately."""
    source = new_model(BertForPreTraining, 7)
    state = dict(source.state_dict())
    state["cls.predictions.output_bias"] = state.pop("cls.predictions.bias")
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    flow.save(state, str(tmp_path))
    target = BertForPreTraining(TINY)
    assert load_pretrained(target, str(tmp_path)).missing == []
    assert np.array_equal(target.cls.predictions.bias.numpy(), source.cls.predictions.bias.numpy())


def test_errors_missing_shape_and_architecture(tmp_path):
    source = new_model(BertForPreTraining, 8)
    state = dict(source.state_dict())
    del state["bert.embeddings.LayerNorm.bias"]
    flow.save(state, str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match=r"missing: checkpoint lacks required encoder parameters: bert\.embeddings\.LayerNorm\.bias"):
        load_pretrained(BertForPreTraining(TINY), str(tmp_path / "missing"))

    flow.save(source.state_dict(), str(tmp_path / "bare"))
    with pytest.raises(CheckpointError, match=r"bert\.embeddings\.word_embeddings\.weight has shape \[40, 16\], the model expects \[41, 16\]"):
        load_pretrained(BertForPreTraining(replace(TINY, vocab_size=41)), str(tmp_path / "bare"))

    write_step(str(tmp_path / "run"), 1, source)
    with pytest.raises(CheckpointError, match="checkpoint has num_attention_heads 2, the model was built with 4"):
        load_pretrained(BertForPreTraining(replace(TINY, num_attention_heads=4)), str(tmp_path / "run"))


def test_resolve_config():
    defaults = BertConfig()
    checkpoint = replace(TINY, hidden_dropout_prob=0.3)
    assert resolve_config(checkpoint, {}, defaults) == replace(TINY, hidden_dropout_prob=defaults.hidden_dropout_prob)
    agreed = resolve_config(checkpoint, {"hidden_size": 16, "attention_probs_dropout_prob": 0.0}, defaults)
    assert agreed == replace(TINY, attention_probs_dropout_prob=0.0)
    with pytest.raises(CheckpointError, match="--num_hidden_layers 12 disagrees with the checkpoint's num_hidden_layers 2"):
        resolve_config(checkpoint, {"num_hidden_layers": 12}, defaults)
    assert resolve_config(None, {"num_hidden_layers": 3}, defaults) == replace(defaults, num_hidden_layers=3)
    with pytest.raises(ValueError, match="not BertConfig fields"):
        resolve_config(None, {"seq_length": 128}, defaults)


def test_load_into_global_model(tmp_path):
    source = new_model(BertForPreTraining, 9)
    write_step(str(tmp_path), 1, source)
    target = BertForPreTraining(TINY)
    target.to_global(placement=flow.placement("cpu", ranks=[0]), sbp=flow.sbp.broadcast)
    load_pretrained(target, str(tmp_path))
    weight = target.bert.encoder.layer[0].attention.self.query.weight
    assert weight.is_global
    assert np.array_equal(weight.to_local().numpy(), source.bert.encoder.layer[0].attention.self.query.weight.numpy())
