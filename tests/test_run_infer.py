"""run_infer.py on real text: hidden states of the real MiniLM checkpoint against a direct BertModel run, and
NSP / fill-mask / QA outputs of small checkpoints that have those heads against direct computations."""
import json
import os

import numpy as np
import oneflow as flow
import pytest

import run_infer
from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering, BertModel
from runs import run as run_script
from utils.checkpoints import native
from utils.checkpoints.hf import read_hf
from utils.checkpoints.lazy import write_lazy_snapshot
from utils.checkpoints.loading import load_pretrained
from utils.data.tokenization import load_wordpiece_tokenizer
from utils.paths import shared_data_path

VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")
TINY_CONFIG = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)
TINY_FLAGS = ["--num_hidden_layers", "2", "--num_attention_heads", "2", "--hidden_size", "32",
              "--intermediate_size", "64", "--max_position_embeddings", "64"]
SENTENCE_A = "The old lighthouse keeper climbed the stairs every evening."
SENTENCE_B = "He lit the lamp before the ships came back to harbor."


@pytest.fixture(scope="module")
def minilm_model(minilm_dir):
    config, _ = read_hf(minilm_dir)
    model = BertModel(config)
    load_pretrained(model, minilm_dir)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    if not os.path.isfile(VOCAB):
        pytest.skip(f"shared vocab {VOCAB} not found")
    return load_wordpiece_tokenizer(VOCAB, True)


@pytest.fixture(scope="module")
def pretraining_model(tmp_path_factory):
    """A small BertForPreTraining whose MLM/NSP heads are part of the checkpoint, saved natively and as a lazy
    snapshot (the heads are random, but loaded, so outputs must equal a direct computation)."""
    flow.manual_seed(7)
    model = BertForPreTraining(TINY_CONFIG).eval()
    root = tmp_path_factory.mktemp("pretraining")
    native.save_checkpoint(str(root / "native"), 1, TINY_CONFIG, model.state_dict(), {}, {"world_size": 1}, keep=0)
    write_lazy_snapshot(model.state_dict(), str(root / "lazy"))
    return model, str(root / "native"), str(root / "lazy")


def infer(argv, capsys):
    """run_infer.main in this process -> (JSON records printed on stdout, stderr)."""
    run_infer.main(argv)
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return records, captured.err


def packed(tokenizer, a, b=None):
    """[CLS] A [SEP] (B [SEP]) ids and segments, built here from the tokenizer's plain ids."""
    ids_a = tokenizer.encode(a).ids
    ids = [tokenizer.token_to_id("[CLS]"), *ids_a, tokenizer.token_to_id("[SEP]")]
    segments = [0] * len(ids)
    if b is not None:
        ids_b = tokenizer.encode(b).ids + [tokenizer.token_to_id("[SEP]")]
        ids, segments = ids + ids_b, segments + [1] * len(ids_b)
    return ids, segments


def as_batch(ids, segments):
    return (flow.tensor([ids], dtype=flow.int64), flow.ones(1, len(ids), dtype=flow.int64),
            flow.tensor([segments], dtype=flow.int64))


def direct_states(model, ids, segments):
    with flow.no_grad():
        return model(*as_batch(ids, segments))[0].numpy()[0]


@pytest.mark.parametrize("mode,pair", [("graph", False), ("eager", True)])
def test_minilm_hidden_states_equal_a_direct_run(mode, pair, minilm_dir, minilm_model, tokenizer, tmp_path, capsys):
    out = tmp_path / "states.npy"
    text_b = ["--input_text_b", SENTENCE_B] if pair else []
    records, err = infer(["--hf_model_dir", minilm_dir, "--mode", mode, "--input_text", SENTENCE_A, *text_b,
                          "--output_hidden_states", str(out)], capsys)
    states = np.load(out)
    ids, segments = packed(tokenizer, SENTENCE_A, SENTENCE_B if pair else None)
    expected_count = len(tokenizer.encode(SENTENCE_A).ids) + (len(tokenizer.encode(SENTENCE_B).ids) + 3 if pair else 2)
    assert states.dtype == np.float32 and states.shape == (expected_count, 384) and len(ids) == expected_count
    np.testing.assert_allclose(states, direct_states(minilm_model, ids, segments), atol=2e-5)
    assert records[0]["task"] == "features" and records[0]["file"] == str(out)
    assert "load time:" in err and "inference time:" in err and ("graph compile time:" in err) == (mode == "graph")


def test_minilm_has_no_nsp_or_mlm_head_and_says_so(minilm_dir, capsys):
    for task, text in (("nsp", ["--input_text", SENTENCE_A, "--input_text_b", SENTENCE_B]),
                       ("fill_mask", ["--input_text", "The keeper lit the [MASK] every evening."])):
        records, err = infer(["--hf_model_dir", minilm_dir, "--mode", "eager", "--task", task, *text], capsys)
        assert "newly initialized (random)" in err and "NOT meaningful" in err
        assert len(records) == 1 and records[0]["task"] == task


def test_nsp_of_several_pairs_from_a_file(pretraining_model, tokenizer, tmp_path, capsys):
    """--input_path lines with tabs, 3 pairs in batches of 2 (the last padded): P(IsNext) = softmax(nsp)[0]."""
    model, native_dir, _ = pretraining_model
    pairs = [(SENTENCE_A, SENTENCE_B), ("Rain fell all day.", "The river rose."), ("Short.", SENTENCE_A)]
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in pairs) + "\n")
    records, _ = infer(["--model_load_dir", native_dir, "--vocab_file", VOCAB, "--task", "nsp", "--batch_size", "2",
                        "--input_path", str(path)], capsys)
    assert [(r["text_a"], r["text_b"]) for r in records] == pairs
    for record, (a, b) in zip(records, pairs):
        ids, segments = packed(tokenizer, a, b)
        with flow.no_grad():
            _, nsp_logits = model(*as_batch(ids, segments), flow.zeros(1, 1, dtype=flow.int64))
        expected = flow.softmax(nsp_logits, dim=-1).numpy()[0, 0]
        assert record["is_next_probability"] == pytest.approx(float(expected), abs=1e-5)


def test_seed_lazy_command_fill_mask(pretraining_model, tokenizer):
    """The seed's `--use_lazy_model --model_path` (bare bool flag), top-k for two [MASK]s in a real sentence."""
    model, _, lazy_dir = pretraining_model
    text = "The keeper lit the [MASK] before the [MASK] came back."
    result = run_script("run_infer.py", ["--use_lazy_model", "--model_path", lazy_dir, *TINY_FLAGS,
                                         "--vocab_file", VOCAB, "--task", "fill_mask", "--top_k", "3",
                                         "--input_text", text], timeout=300)
    (record,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    mask_id = tokenizer.token_to_id("[MASK]")
    pieces = text.split("[MASK]")
    ids = [tokenizer.token_to_id("[CLS]")]
    for i, piece in enumerate(pieces):
        ids += tokenizer.encode(piece).ids + ([mask_id] if i < len(pieces) - 1 else [])
    ids.append(tokenizer.token_to_id("[SEP]"))
    positions = [i for i, t in enumerate(ids) if t == mask_id]
    with flow.no_grad():
        mlm_logits, _ = model(*as_batch(ids, [0] * len(ids)), flow.tensor([positions], dtype=flow.int64))
    probabilities = flow.softmax(mlm_logits, dim=-1).numpy()[0]
    assert len(record["masks"]) == 2
    for got, expected in zip(record["masks"], probabilities):
        best = np.argsort(-expected)[:3]
        assert [c["token"] for c in got] == [tokenizer.id_to_token(int(t)) for t in best]
        assert [c["probability"] for c in got] == pytest.approx(expected[best].tolist(), abs=1e-5)
    assert "newly initialized" not in result.stderr


def test_qa_span_is_the_best_valid_span(tokenizer, tmp_path, capsys):
    """A QA checkpoint's answer equals the highest start+end logit span inside the context, found by brute force."""
    flow.manual_seed(11)
    model = BertForQuestionAnswering(TINY_CONFIG).eval()
    native.save_checkpoint(str(tmp_path / "qa"), 1, TINY_CONFIG, model.state_dict(), {}, {"world_size": 1}, keep=0)
    question = "where does the river end"
    context = "the river rises in the green hills and ends in the cold sea near the old harbor"
    records, err = infer(["--model_load_dir", str(tmp_path / "qa"), "--vocab_file", VOCAB, "--task", "qa",
                          "--n_best_size", "64", "--max_query_length", "16", "--input_text", question,
                          "--input_text_b", context], capsys)
    ids, segments = packed(tokenizer, question, context)
    with flow.no_grad():
        start, end = (t.numpy()[0] for t in model(*as_batch(ids, segments)))
    first = len(tokenizer.encode(question).ids) + 2
    spans = [(s, e) for s in range(first, len(ids) - 1) for e in range(s, min(s + 30, len(ids) - 1))]
    s, e = max(spans, key=lambda span: start[span[0]] + end[span[1]])
    tokens = [tokenizer.id_to_token(i) for i in ids[s:e + 1]]
    expected = " ".join(tokens).replace(" ##", "")
    assert records[0]["answer"] == expected
    assert records[0]["start_logit"] == pytest.approx(float(start[s]), abs=1e-5)
    assert "newly initialized" not in err


def test_usage_errors(minilm_dir, capsys):
    cases = [
        (["--task", "nsp", "--output_hidden_states", "x.npy", "--input_text", "a"],
         "writes features, but --task is nsp"),
        (["--task", "nsp", "--input_text", "only one sentence"], "--task nsp needs a second sentence"),
        (["--task", "fill_mask", "--input_text", "no mask here"], "has no [MASK] token"),
        (["--model_load_dir", minilm_dir, "--input_text", "a", "--input_text_b", "b"], "both name a checkpoint"),
        (["--task", "qa", "--input_text", "q", "--input_text_b", "c", "--seq_length", "60"],
         "--seq_length 60 must exceed --max_query_length 64 + 3"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit):
            run_infer.main(["--hf_model_dir", minilm_dir, *argv])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_infer.main(["--use_lazy_model", "--hf_model_dir", minilm_dir])
    assert "--use_lazy_model needs --model_path" in capsys.readouterr().err
