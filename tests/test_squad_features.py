"""SQuAD feature building: hand-checked windows on a tiny vocab, then invariants on the shared SQuAD sets."""
import json
import os
from collections import Counter

import numpy as np
import pytest

import dataset
from utils.squad import features as sf
from utils.data.tokenization import load_wordpiece_tokenizer
from utils.paths import shared_data_path
from utils.squad.postprocess import basic_tokenize, detokenize

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "q1", "q2", "q3", "q4", "##x",
              *[f"w{i}" for i in range(10)]]
# Words w0..w9 with w5 written "w5x": WordPiece gives 11 tokens w0 w1 w2 w3 w4 w5 ##x w6 w7 w8 w9
# (document token index 0..10; token 6 "##x" belongs to word 5).
CONTEXT = "w0 w1 w2 w3 w4 w5x w6 w7 w8 w9"
# max_seq_length 12, query cut to 3 tokens: 12 - 3 - 3 = 6 document tokens per window, doc_stride 3:
# windows (start, length) = (0, 6), (3, 6), (6, 5), covering tokens 0-5, 3-8, 6-10.
SEQ, STRIDE, QUERY = 12, 3, 3


def squad_json(qas, version="1.1"):
    return {"version": version, "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}


def qa(qid, answer=None, impossible=False):
    item = {"id": qid, "question": "q1 q2 q3 q4", "is_impossible": impossible, "answers": []}
    if answer:
        item["answers"] = [{"text": answer, "answer_start": CONTEXT.index(answer)}]
    return item


@pytest.fixture
def tiny(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n")
    data = tmp_path / "squad.json"
    data.write_text(json.dumps(squad_json([
        qa("mid", "w5x w6"), qa("sub", "w5"), qa("long", "w4 w5x w6 w7 w8 w9"), qa("none", impossible=True)],
        version="v2.0")))
    return vocab, data, load_wordpiece_tokenizer(str(vocab))


def convert(tiny, is_training, v2=True):
    vocab, data, tokenizer = tiny
    examples = sf.read_squad_examples(str(data), is_training, v2)
    return examples, sf.convert_examples_to_features(examples, tokenizer, SEQ, STRIDE, QUERY, is_training,
                                                     progress=False)


def test_split_words_char_offsets():
    words, char_to_word = sf.split_words(" ab  c\td\u202fe")
    assert words == ["ab", "c", "d", "e"]
    # ' ' before the first word maps to -1; spaces map to the preceding word.
    assert char_to_word == [-1, 0, 0, 0, 0, 1, 1, 2, 2, 3]


def test_doc_spans_and_max_context_by_hand():
    spans = sf.doc_spans(11, 6, 3)
    assert spans == [(0, 6), (3, 6), (6, 5)]
    # Score = min(left, right) + 0.01 * length. Token 4: window 0 gives min(4, 1) + .06, window 1 min(1, 4)
    # + .06, a tie that the first window wins. Token 5: 0.06 vs 2.06 -> window 1. Token 7: window 1
    # min(4, 1) + .06 = 1.06 beats window 2 min(1, 3) + .05. Token 8: 0.06 vs 2.05 -> window 2.
    owner = {p: [i for i in range(3) if sf.is_max_context(spans, i, p)] for p in range(11)}
    assert owner == {0: [0], 1: [0], 2: [0], 3: [0], 4: [0], 5: [1], 6: [1], 7: [1], 8: [2], 9: [2], 10: [2]}
    assert sf.doc_spans(0, 6, 3) == [(0, 0)]
    assert sf.doc_spans(20, 8, 10) == [(0, 8), (8, 8), (16, 4)]  # the step is never more than the window


def test_tiny_windows_tokens_and_maps(tiny):
    examples, features = convert(tiny, is_training=False)
    assert [f.example_index for f in features] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [f.unique_id for f in features] == list(range(1000000000, 1000000012))
    f0, f1, f2 = features[:3]
    query = ["[CLS]", "q1", "q2", "q3", "[SEP]"]  # "q4" is cut by max_query_length 3
    assert f0.tokens == query + ["w0", "w1", "w2", "w3", "w4", "w5", "[SEP]"]
    assert f1.tokens == query + ["w3", "w4", "w5", "##x", "w6", "w7", "[SEP]"]
    assert f2.tokens == query + ["##x", "w6", "w7", "w8", "w9", "[SEP]"]
    # Document tokens start at position 5; maps are keyed by position and give the word index.
    assert f1.token_to_orig_map == {5: 3, 6: 4, 7: 5, 8: 5, 9: 6, 10: 7}
    assert f2.token_to_orig_map == {5: 5, 6: 6, 7: 7, 8: 8, 9: 9}
    # Max-context flags follow the ownership worked out in test_doc_spans_and_max_context_by_hand.
    assert f0.token_is_max_context == {5: True, 6: True, 7: True, 8: True, 9: True, 10: False}
    assert f1.token_is_max_context == {5: False, 6: False, 7: True, 8: True, 9: True, 10: False}
    assert f2.token_is_max_context == {5: False, 6: False, 7: True, 8: True, 9: True}
    ids = {t: i for i, t in enumerate(TINY_VOCAB)}
    assert f2.input_ids.tolist() == [ids[t] for t in f2.tokens] + [0]
    assert f2.input_mask.tolist() == [1] * 11 + [0]
    assert f2.segment_ids.tolist() == [0] * 5 + [1] * 6 + [0]
    assert f0.input_mask.tolist() == [1] * 12


def test_tiny_answer_positions(tiny):
    examples, features = convert(tiny, is_training=True)
    positions = [(examples[f.example_index].qas_id, f.start_position, f.end_position) for f in features]
    assert positions == [
        # "w5x w6" = document tokens 5..7: only window 1 (tokens 3-8) holds it, at 5 - 3 + 5 = 7 .. 9.
        ("mid", 0, 0), ("mid", 7, 9), ("mid", 0, 0),
        # "w5" inside the word "w5x": the improved span is token 5 alone ("w5", not "##x"), so windows 0
        # and 1 both hold it, at 5 + 5 = 10 and 5 - 3 + 5 = 7.
        ("sub", 10, 10), ("sub", 7, 7), ("sub", 0, 0),
        # Tokens 4..10 are longer than any window: [CLS] everywhere.
        ("long", 0, 0), ("long", 0, 0), ("long", 0, 0),
        # v2.0 impossible question.
        ("none", 0, 0), ("none", 0, 0), ("none", 0, 0),
    ]
    assert examples[1].start_position == examples[1].end_position == 5


def test_v1_training_requires_answers(tiny):
    vocab, data, tokenizer = tiny
    with pytest.raises(sf.SquadDataError, match="version_2_with_negative"):
        sf.read_squad_examples(str(data), True, False)


def test_training_skips_answer_not_at_offset(tmp_path, capsys):
    data = tmp_path / "bad.json"
    bad = qa("bad", "w1")
    bad["answers"][0]["answer_start"] = CONTEXT.index("w7")
    data.write_text(json.dumps(squad_json([bad, qa("good", "w2")])))
    examples = sf.read_squad_examples(str(data), True)
    assert [e.qas_id for e in examples] == ["good"]
    assert "skipped 1" in capsys.readouterr().err


def test_records_and_side_file_round_trip(tiny, tmp_path):
    vocab, data, tokenizer = tiny
    train = sf.build_features(str(data), str(vocab), str(tmp_path / "train"), True, True, SEQ, STRIDE, QUERY,
                              num_parts=2, progress=False)
    assert (train.num_examples, train.num_features, train.side_file) == (4, 12, None)
    _, expected = convert(tiny, is_training=True)
    index = dataset.RecordIndex(train.data_dir, dataset.squad_train_schema(SEQ), expected_parts=2)
    assert len(index) == 12
    loader = dataset.RecordLoader(index, 5, shuffle=False, pad_last=True)
    rows = [{name: batch[name][i] for name in index.schema} for batch in loader for i in range(5)][:12]
    loader.close()
    for record, feature in zip(rows, expected):  # parts hold contiguous chunks, so order is kept
        assert record["input_ids"].tolist() == feature.input_ids.tolist()
        assert record["segment_ids"].tolist() == feature.segment_ids.tolist()
        assert (int(record["start_positions"][0]), int(record["end_positions"][0])) == \
            (feature.start_position, feature.end_position)

    evals = sf.build_features(str(data), str(vocab), str(tmp_path / "eval"), False, True, SEQ, STRIDE, QUERY,
                              progress=False)
    index = dataset.RecordIndex(evals.data_dir, dataset.squad_eval_schema(SEQ))
    loader = dataset.RecordLoader(index, 12, shuffle=False, pad_last=True)
    batch = next(iter(loader))
    loader.close()
    assert batch["unique_ids"].ravel().tolist() == list(range(1000000000, 1000000012))
    side = sf.load_eval_side_file(evals.side_file)
    examples, features = convert(tiny, is_training=False)
    assert side.settings["do_lower_case"] is True and side.settings["version_2_with_negative"] is True
    assert [(e.qas_id, e.doc_tokens) for e in side.examples] == [(e.qas_id, e.doc_tokens) for e in examples]
    for loaded, built in zip(side.features, features):
        assert (loaded.unique_id, loaded.example_index, loaded.doc_span_index, loaded.tokens) == \
            (built.unique_id, built.example_index, built.doc_span_index, built.tokens)
        assert loaded.token_to_orig_map == built.token_to_orig_map
        assert loaded.token_is_max_context == built.token_is_max_context


def test_build_features_cache(tiny, tmp_path):
    vocab, data, _ = tiny
    out = str(tmp_path / "feat")
    first = sf.build_features(str(data), str(vocab), out, True, True, SEQ, STRIDE, QUERY, num_parts=3,
                              progress=False)
    again = sf.build_features(str(data), str(vocab), out, True, True, SEQ, STRIDE, QUERY, num_parts=3,
                              progress=False)
    assert not first.reused and again.reused and again.num_features == 12
    # Other settings rebuild, and stale part files of the earlier build go away.
    other = sf.build_features(str(data), str(vocab), out, True, True, SEQ, 6, QUERY, num_parts=1,
                              progress=False)
    assert not other.reused and other.num_features == 8  # windows (0, 6), (6, 5): 2 per question
    assert sorted(n for n in os.listdir(out) if n.startswith("part-")) == ["part-0"]
    with pytest.raises(sf.SquadDataError, match="--max_seq_length 8"):
        sf.build_features(str(data), str(vocab), out, True, True, 8, STRIDE, 5)
    with pytest.raises(sf.SquadDataError, match="--input_file"):
        sf.build_features(str(tmp_path / "missing.json"), str(vocab), out, True)


def test_cli_prints_counts(tiny, tmp_path, capsys):
    vocab, data, _ = tiny
    sf.main(["--input_file", str(data), "--vocab_file", str(vocab), "--output_dir", str(tmp_path / "cli"),
             "--max_seq_length", "12", "--doc_stride", "3", "--max_query_length", "3", "--do_lower_case", "True"])
    assert "4 examples -> 12 eval features" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "cli" / sf.SIDE_FILE)


# ---------------------------------------------------------------- shared SQuAD data

VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")


def shared_or_skip(*parts):
    path = shared_data_path("squad", *parts)
    if not (os.path.isfile(path) and os.path.isfile(VOCAB)):
        pytest.skip(f"shared SQuAD data or vocab not found ({path}, {VOCAB}); set BERT_SHARED_DATA")
    return path


@pytest.fixture(scope="module")
def v1_train():
    path = shared_or_skip("v1.1", "train.json")
    tokenizer = load_wordpiece_tokenizer(VOCAB, True)
    examples = sf.read_squad_examples(path, True, False)
    return examples, sf.convert_examples_to_features(examples, tokenizer, 384, 128, 64, True, progress=False), \
        tokenizer


def test_per_word_tokens_match_one_call_per_word(v1_train):
    examples, _, tokenizer = v1_train
    words = examples[0].doc_tokens + examples[-1].doc_tokens
    doc = sf.tokenize_documents(tokenizer, [words])[0]
    one_by_one = [(t, i) for i, w in enumerate(words) for t in tokenizer.encode(w).tokens]
    assert list(zip(doc.tokens, doc.tok_to_orig)) == one_by_one
    assert all(doc.tok_to_orig[doc.orig_to_tok[i]] == i for i in range(len(words)))


def test_real_answers_rejoin(v1_train):
    examples, features, _ = v1_train
    by_id = {}
    for f in features:
        by_id.setdefault(examples[f.example_index].qas_id, []).append(f)

    def answer_text(f):
        return detokenize(f.tokens[f.start_position:f.end_position + 1])

    # Words '"Super', 'Bowl', 'L"),': the improved span drops the quotes and brackets.
    [f] = by_id["56beace93aeaaa14008c91e2"]
    assert answer_text(f) == "super bowl l"
    # Word '1995.' -> tokens '1995' '.', the answer is the first one.
    [f] = by_id["56be4e1facb8001400a502fa"]
    assert f.start_position == f.end_position and answer_text(f) == "1995"
    # A two-window question: the same answer sits doc_stride = 128 positions earlier in window 1.
    w0, w1 = by_id["56beb4e43aeaaa14008c9266"]
    assert answer_text(w0) == answer_text(w1) == "brock osweiler"
    assert (w0.start_position - w1.start_position, w0.end_position - w1.end_position) == (128, 128)
    # Its first question's answer lies before window 1's start: [CLS] there.
    w0, w1 = by_id["56beb4e43aeaaa14008c9265"]
    assert answer_text(w0) == "gary kubiak" and (w1.start_position, w1.end_position) == (0, 0)

    # Over the whole set, spans rejoin to the tokenized answer except answers that are part of a
    # WordPiece token (e.g. "8" of "18"), which Google's algorithm keeps as the whole token.
    spans = [f for f in features if f.start_position > 0]
    rejoined = sum(answer_text(f) == " ".join(basic_tokenize(examples[f.example_index].orig_answer_text, True))
                   for f in spans)
    assert rejoined / len(spans) > 0.99


def test_real_feature_invariants(v1_train):
    examples, features, _ = v1_train
    assert len(examples) == 5317 and len(features) >= len(examples)
    max_context_owner = Counter()
    for f in features:
        assert len(f.tokens) <= 384 and f.input_mask.sum() == len(f.tokens)
        sep = f.tokens.index("[SEP]")
        assert f.tokens[0] == "[CLS]" and f.tokens[-1] == "[SEP]" and sep - 1 <= 64
        assert sorted(f.token_to_orig_map) == list(range(sep + 1, len(f.tokens) - 1))
        assert f.segment_ids[:sep + 1].sum() == 0 and f.segment_ids[sep + 1:len(f.tokens)].all()
        for position, owner in f.token_is_max_context.items():
            if owner:
                max_context_owner[f.example_index, position - sep - 1 + 128 * f.doc_span_index] += 1
    # Windows start 128 tokens apart, so "document token index" above is exact (windows are long enough
    # here that no step is shortened), and every document token is max-context in exactly one window.
    assert set(max_context_owner.values()) == {1}
    doc_lengths = {i: len(sf.tokenize_documents(v1_train[2], [e.doc_tokens])[0].tokens)
                   for i, e in enumerate(examples[:50])}
    for i, length in doc_lengths.items():
        assert sum(1 for (ex, _) in max_context_owner if ex == i) == length


def test_v2_impossible_point_at_cls():
    path = shared_or_skip("v2.0", "train.json")
    tokenizer = load_wordpiece_tokenizer(VOCAB, True)
    examples = sf.read_squad_examples(path, True, True)
    features = sf.convert_examples_to_features(examples[:400], tokenizer, 384, 128, 64, True, progress=False)
    impossible = [f for f in features if examples[f.example_index].is_impossible]
    possible = [f for f in features if not examples[f.example_index].is_impossible]
    assert impossible and possible
    assert all(f.start_position == f.end_position == 0 for f in impossible)
    assert sum(f.start_position > 0 for f in possible) >= 0.95 * len(possible)
    assert np.all([f.start_position <= f.end_position for f in possible])
