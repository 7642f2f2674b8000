"""HF safetensors import/export, checked on the real all-MiniLM-L6-v2 checkpoint and on tiny synthetic ones."""
import hashlib
import json
import math
import os

import numpy as np
import oneflow as flow
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering, BertModel
from utils.checkpoints import CheckpointError
from utils.checkpoints.export_hf import main as export_main
from utils.checkpoints.hf import export_hf, read_hf
from utils.checkpoints.loading import load_pretrained
from utils.checkpoints.lazy import write_lazy_snapshot
from utils.data.tokenization import load_wordpiece_tokenizer

TINY = BertConfig(
    vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=20
)


@pytest.fixture(scope="session")
def minilm_model(minilm_dir):
    config, _ = read_hf(minilm_dir)
    model = BertModel(config)
    report = load_pretrained(model, minilm_dir)
    model.eval()
    return model, report


def digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_minilm_config(minilm_dir):
    config, _ = read_hf(minilm_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)
    assert (config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (1536, 30522, 512)
    assert config.hidden_act == "gelu" and config.layer_norm_eps == 1e-12


def test_minilm_weights_hash_equal_to_safetensors(minilm_dir, minilm_model):
    model, report = minilm_model
    ours = {name: t.numpy() for name, t in model.state_dict().items()}
    with safe_open(os.path.join(minilm_dir, "model.safetensors"), framework="np") as f:
        theirs = {name: f.get_tensor(name) for name in f.keys()}
    assert "embeddings.position_ids" in theirs and theirs.pop("embeddings.position_ids").dtype == np.int64
    assert sorted(ours) == sorted(theirs)
    assert {name: digest(a) for name, a in ours.items()} == {name: digest(a) for name, a in theirs.items()}
    assert report.format == "hf" and report.missing == [] and report.unused == []
    assert len(report.loaded) == 6 * 16 + 5 + 2


def numpy_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def numpy_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_bert(w, config, input_ids, attention_mask, token_type_ids):
    """Reference BERT encoder (Devlin et al. 2018) on raw HF weights, float64, written independently of modeling.py."""
    w = {name: a.astype(np.float64) for name, a in w.items() if a.dtype == np.float32}
    eps, heads = config.layer_norm_eps, config.num_attention_heads
    batch, seq = input_ids.shape
    head = config.hidden_size // heads

    def dense(x, prefix):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    def norm(x, prefix):
        return numpy_layer_norm(x, w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def split(x):
        return x.reshape(batch, seq, heads, head).transpose(0, 2, 1, 3)

    h = (
        w["embeddings.word_embeddings.weight"][input_ids]
        + w["embeddings.position_embeddings.weight"][np.arange(seq)][None]
        + w["embeddings.token_type_embeddings.weight"][token_type_ids]
    )
    h = norm(h, "embeddings.LayerNorm")
    mask_bias = (1.0 - attention_mask[:, None, None, :]) * -10000.0
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (split(dense(h, p + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + mask_bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, -1)
        attended = norm(dense(context, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
        h = norm(dense(numpy_gelu(dense(attended, p + "intermediate.dense")), p + "output.dense") + attended, p + "output.LayerNorm")
    return h, np.tanh(dense(h[:, 0], "pooler.dense"))


def encode(tokenizer, text, seq):
    ids = [tokenizer.token_to_id("[CLS]")] + tokenizer.encode(text).ids + [tokenizer.token_to_id("[SEP]")]
    return ids + [0] * (seq - len(ids)), [1] * len(ids) + [0] * (seq - len(ids))


def test_minilm_forward_matches_numpy_reference(minilm_dir, minilm_model):
    model, _ = minilm_model
    config, _ = read_hf(minilm_dir)
    tokenizer = load_wordpiece_tokenizer(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True)
    texts = ["The quick brown fox jumps over the lazy dog.", "Checkpoints convert by name."]
    seq = 16
    rows = [encode(tokenizer, text, seq) for text in texts]
    input_ids = np.array([r[0] for r in rows])
    attention_mask = np.array([r[1] for r in rows])
    assert attention_mask[1].sum() < seq  # the second row is padded
    token_type_ids = np.zeros_like(input_ids)
    with flow.no_grad():
        sequence_output, pooled = model(*(flow.tensor(a, dtype=flow.int64) for a in (input_ids, attention_mask, token_type_ids)))
    expected_seq, expected_pooled = numpy_bert(
        load_file(os.path.join(minilm_dir, "model.safetensors")), config, input_ids, attention_mask, token_type_ids
    )
    np.testing.assert_allclose(sequence_output.numpy(), expected_seq, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pooled.numpy(), expected_pooled, rtol=1e-4, atol=1e-4)


def test_export_names_and_shapes_match_real_checkpoint(minilm_dir, minilm_model, tmp_path):
    model, _ = minilm_model
    config, _ = read_hf(minilm_dir)
    export_hf(model, config, str(tmp_path), vocab_file=os.path.join(minilm_dir, "vocab.txt"))
    real = load_file(os.path.join(minilm_dir, "model.safetensors"))
    exported = load_file(os.path.join(tmp_path, "model.safetensors"))
    real.pop("embeddings.position_ids")  # an index buffer, not a weight; recent transformers no longer save it
    assert {n: a.shape for n, a in exported.items()} == {n: a.shape for n, a in real.items()}
    assert all(np.array_equal(exported[n], real[n]) for n in real)
    with open(tmp_path / "config.json") as f:
        hf_config = json.load(f)
    assert hf_config["model_type"] == "bert" and hf_config["architectures"] == ["BertModel"]
    assert {k: hf_config[k] for k in config.to_dict()} == config.to_dict()
    with safe_open(os.path.join(tmp_path, "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}
    assert (tmp_path / "vocab.txt").read_bytes() == open(os.path.join(minilm_dir, "vocab.txt"), "rb").read()


def test_export_import_round_trip_pretraining(minilm_dir, tmp_path):
    config, _ = read_hf(minilm_dir)
    model = BertForPreTraining(config)
    report = load_pretrained(model, minilm_dir)
    assert sorted(report.missing) == sorted(n for n in model.state_dict() if n.startswith("cls."))
    export_hf(model, config, str(tmp_path))
    exported = load_file(os.path.join(tmp_path, "model.safetensors"))
    assert np.array_equal(exported["cls.predictions.decoder.weight"], exported["bert.embeddings.word_embeddings.weight"])
    assert np.array_equal(exported["cls.predictions.decoder.bias"], exported["cls.predictions.bias"])
    assert json.load(open(tmp_path / "config.json"))["architectures"] == ["BertForPreTraining"]

    reread_config, state = read_hf(str(tmp_path))
    assert reread_config == config
    ours = model.state_dict()
    assert sorted(state) == sorted(ours)
    assert all(np.array_equal(state[n], ours[n].numpy()) for n in ours)


def tiny_weights(model_cls, seed):
    flow.manual_seed(seed)
    model = model_cls(TINY)
    return {name: t.numpy() for name, t in model.state_dict().items()}


def write_hf_dir(path, tensors, architecture):
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**TINY.to_dict(), "model_type": "bert", "architectures": [architecture]}, f)


def assert_loaded(model, expected, prefix=""):
    state = model.state_dict()
    for name, array in expected.items():
        assert np.array_equal(state[prefix + name].numpy(), array), name


def test_import_hf_pretraining_with_tied_decoder_and_gamma_beta(tmp_path):
    weights = tiny_weights(BertForPreTraining, 1)
    tf_spelling = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    tensors = {}
    for name, array in weights.items():
        for ours, theirs in tf_spelling.items():
            name = name.replace(ours, theirs)
        tensors[name] = array
    tensors["cls.predictions.decoder.weight"] = weights["bert.embeddings.word_embeddings.weight"]
    tensors["cls.predictions.decoder.bias"] = weights["cls.predictions.bias"]
    tensors["bert.embeddings.position_ids"] = np.arange(TINY.max_position_embeddings, dtype=np.int64)[None]
    write_hf_dir(tmp_path, tensors, "BertForPreTraining")
    model = BertForPreTraining(TINY)
    report = load_pretrained(model, str(tmp_path))
    assert report.missing == [] and report.unused == []
    assert_loaded(model, weights)


def test_import_hf_masked_lm_and_qa(tmp_path):
    mlm = {n: a for n, a in tiny_weights(BertForPreTraining, 2).items() if not n.startswith(("cls.seq", "bert.pooler"))}
    write_hf_dir(tmp_path / "mlm", mlm, "BertForMaskedLM")
    model = BertForPreTraining(TINY)
    report = load_pretrained(model, str(tmp_path / "mlm"))
    assert sorted(report.missing) == sorted(
        ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    )
    assert_loaded(model, mlm)

    qa = tiny_weights(BertForQuestionAnswering, 3)
    write_hf_dir(tmp_path / "qa", qa, "BertForQuestionAnswering")
    model = BertForQuestionAnswering(TINY)
    assert load_pretrained(model, str(tmp_path / "qa")).missing == []
    assert_loaded(model, qa)
    encoder_only = BertModel(TINY, add_pooling_layer=False)
    report = load_pretrained(encoder_only, str(tmp_path / "qa"))
    assert report.unused == ["qa_outputs.bias", "qa_outputs.weight"]
    assert_loaded(encoder_only, {n[len("bert."):]: a for n, a in qa.items() if n.startswith("bert.")})


def test_import_float16_weights(tmp_path):
    weights = tiny_weights(BertModel, 6)
    write_hf_dir(tmp_path, {n: a.astype(np.float16) for n, a in weights.items()}, "BertModel")
    model = BertModel(TINY)
    load_pretrained(model, str(tmp_path))
    assert model.pooler.dense.weight.dtype == flow.float32
    assert_loaded(model, {n: a.astype(np.float16).astype(np.float32) for n, a in weights.items()})


def test_untied_decoder_is_an_error(tmp_path):
    weights = tiny_weights(BertForPreTraining, 4)
    weights["cls.predictions.decoder.weight"] = weights["bert.embeddings.word_embeddings.weight"] + 1.0
    write_hf_dir(tmp_path, weights, "BertForPreTraining")
    with pytest.raises(CheckpointError, match="cls.predictions.decoder.weight differs"):
        load_pretrained(BertForPreTraining(TINY), str(tmp_path))


def test_export_cli_from_lazy_snapshot(tmp_path, capsys):
    flow.manual_seed(5)
    source = BertForQuestionAnswering(TINY)
    write_lazy_snapshot(source.state_dict(), str(tmp_path / "lazy"))
    args = ["--model_load_dir", str(tmp_path / "lazy"), "--output_dir", str(tmp_path / "hf")]
    with pytest.raises(SystemExit, match="has no config; pass --bert_config_file"):
        export_main(args)
    TINY.to_json_file(str(tmp_path / "bert_config.json"))
    export_main(args + ["--bert_config_file", str(tmp_path / "bert_config.json")])
    assert "wrote BertForQuestionAnswering" in capsys.readouterr().out
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    expected = {n: t.numpy() for n, t in source.state_dict().items()}
    assert sorted(exported) == sorted(expected)
    assert all(np.array_equal(exported[n], expected[n]) for n in expected)
