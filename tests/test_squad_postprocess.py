"""SQuAD post-processing on hand-made features and synthetic logits."""
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from utils.squad import postprocess as pp

WORDS = ["The", "band", "(Steve", "Smith's)", "played", "in", "Paris."]
# Lower-cased WordPiece tokens of WORDS and the word each comes from.
DOC = [("the", 0), ("band", 1), ("(", 2), ("steve", 2), ("smith", 3), ("'", 3), ("s", 3), (")", 3),
       ("played", 4), ("in", 5), ("paris", 6), (".", 6)]
QUERY = ["[CLS]", "who", "?", "[SEP]"]  # document tokens start at position 4
SEQ = 20


def example(qid="q"):
    return SimpleNamespace(qas_id=qid, doc_tokens=WORDS)


def feature(unique_id, example_index=0, doc_start=0, doc_end=len(DOC), not_max_context=()):
    """A window over DOC[doc_start:doc_end]; positions listed in not_max_context are flagged False."""
    window = DOC[doc_start:doc_end]
    tokens = QUERY + [t for t, _ in window] + ["[SEP]"]
    positions = range(len(QUERY), len(QUERY) + len(window))
    return SimpleNamespace(
        unique_id=unique_id, example_index=example_index, tokens=tokens,
        token_to_orig_map={p: w for p, (_, w) in zip(positions, window)},
        token_is_max_context={p: p not in not_max_context for p in positions})


def logits(peaks, low=-10.0, length=SEQ):
    """A logit vector of `low` with {position: value} peaks."""
    out = np.full(length, low)
    for position, value in peaks.items():
        out[position] = value
    return out


def test_get_final_text_alignment():
    # Prediction "steve smith ' s" inside "(Steve Smith's)": the brackets fall away, case comes back.
    assert pp.get_final_text("steve smith ' s", "(Steve Smith's)", True) == "Steve Smith's"
    assert pp.get_final_text("1895", "(1895-1943).", True) == "1895"
    assert pp.get_final_text("paris", "Paris.", True) == "Paris"
    # Not found after basic tokenization: the whole original text.
    assert pp.get_final_text("london", "Paris.", True) == "Paris."
    # "Café" (one code point for é) strips to "cafe", same length, so the span maps back exactly ...
    assert pp.get_final_text("cafe", "(Café)", True) == "Café"
    # ... but with a combining accent the stripped text is one character shorter: no alignment.
    assert pp.get_final_text("cafe", "(Cafe\u0301)", True) == "(Cafe\u0301)"
    # Cased: the prediction must match case-sensitively.
    assert pp.get_final_text("Steve", "(Steve", False) == "Steve"
    assert pp.get_final_text("steve", "(Steve", False) == "(Steve"


def test_detokenize_and_best_indexes():
    assert pp.detokenize(["un", "##believ", "##able", "!"]) == "unbelievable !"
    assert pp.best_indexes([0.5, 2.0, 2.0, -1.0, 3.0], 3) == [4, 1, 2]  # ties keep index order
    probs = pp.softmax([1.0, 2.0, 3.0])
    z = math.exp(1) + math.exp(2) + math.exp(3)
    assert probs == pytest.approx([math.exp(1) / z, math.exp(2) / z, math.exp(3) / z])


def test_best_span_skips_padding_query_and_bad_spans():
    f = feature(1000000000)  # 17 tokens: [CLS] who ? [SEP] + 12 document tokens at 4..15 + [SEP]
    start = logits({18: 9.0, 1: 8.0, 7: 5.0, 12: 6.0, 5: 4.0})  # 18 is padding, 1 is the query
    end = logits({10: 5.0, 16: 7.0, 14: 4.0})                    # 16 is the final [SEP]
    result = pp.compute_predictions([example()], [f], {f.unique_id: (start, end)}, n_best_size=20,
                                    max_answer_length=30)
    # Starts in logit order 18, 1, 12, 7, 5; ends 16, 10, 14. Skipped: 18 (padding), 1 (query), end 16
    # ([SEP]), (12, 10) (ends first). Left, by score: (12, 14) = 6 + 4 = 10 "played in paris",
    # (7, 10) = 10 "steve smith ' s" (a tie: start 12 was visited first), (7, 14) = 9, (5, 10) = 8 ...
    top = result.nbest["q"][:3]
    assert [e["text"] for e in top] == ["played in Paris", "Steve Smith's", "Steve Smith's) played in Paris"]
    assert result.predictions["q"] == "played in Paris"
    assert result.null_odds is None


def test_max_answer_length_and_probabilities():
    f = feature(1000000000)
    start = logits({5: 6.0, 13: 1.0})   # "band", "in"
    end = logits({14: 5.0, 13: 0.5})    # "paris", "in"
    results = {f.unique_id: (start, end)}
    long_ok = pp.compute_predictions([example()], [f], results, n_best_size=2, max_answer_length=10)
    # n_best_size 2: starts {5, 13}, ends {14, 13}. Spans (5,14) = 11 "band (Steve Smith's) played in Paris",
    # (5,13) = 6.5, (13,14) = 6, (13,13) = 1.5; the n-best stops at 2 entries.
    nbest = long_ok.nbest["q"]
    assert [e["text"] for e in nbest] == ["band (Steve Smith's) played in Paris", "band (Steve Smith's) played in"]
    assert [e["probability"] for e in nbest] == pytest.approx([1 / (1 + math.exp(-4.5)), 1 / (1 + math.exp(4.5))])
    assert (nbest[0]["start_logit"], nbest[0]["end_logit"]) == (6.0, 5.0)
    # Span 5..14 is 10 tokens, 5..13 is 9: with max_answer_length 8 both go, "in Paris" (13..14) wins.
    short = pp.compute_predictions([example()], [f], results, n_best_size=2, max_answer_length=8)
    assert short.predictions["q"] == "in Paris"


def test_non_max_context_start_is_skipped():
    # Window 0 holds document tokens 0..8, window 1 tokens 4..11. "Paris" is not in window 0; "played"
    # (document token 8) is at position 12 of window 0, where it is not max-context, and at position 8
    # of window 1, where it is.
    w0 = feature(1000000000, doc_start=0, doc_end=9, not_max_context={12})
    w1 = feature(1000000001, doc_start=4, doc_end=12, not_max_context={4, 5, 6, 7})
    results = {
        w0.unique_id: (logits({12: 9.0, 4: 1.0}), logits({12: 9.0, 5: 1.0})),  # "played" scores 18 here
        w1.unique_id: (logits({8: 3.0}), logits({8: 3.0})),                    # and only 6 here
    }
    # max_answer_length 5 rules out window 0's (4, 12) "The band ... played" (9 tokens, score 10).
    result = pp.compute_predictions([example()], [w0, w1], results, n_best_size=2, max_answer_length=5)
    texts = [e["text"] for e in result.nbest["q"]]
    assert texts[0] == "played"
    assert result.nbest["q"][0]["start_logit"] == 3.0  # it came from window 1
    assert texts == ["played", "The band"]  # window 0's (4, 5) = 2 has a max-context start


def test_v2_null_answer_threshold():
    w0 = feature(1000000000, doc_start=0, doc_end=9)
    w1 = feature(1000000001, doc_start=4, doc_end=12, not_max_context={4, 5, 6, 7})
    results = {
        # [CLS] scores: window 0 4 + 3 = 7, window 1 2 + 1.5 = 3.5 -> the null score is the minimum, 3.5.
        w0.unique_id: (logits({0: 4.0, 5: 1.0}), logits({0: 3.0, 5: 1.0})),
        w1.unique_id: (logits({0: 2.0, 10: 1.5}), logits({0: 1.5, 10: 1.0})),  # "paris" = 2.5
    }
    # Best non-null span: window 1 (10, 10) "Paris" = 2.5; window 0 "band" (5, 5) = 2. The diff is 3.5 - 2.5 = 1.
    strict = pp.compute_predictions([example()], [w0, w1], results, n_best_size=3, max_answer_length=30,
                                    version_2_with_negative=True, null_score_diff_threshold=0.0)
    assert strict.null_odds["q"] == pytest.approx(1.0)
    assert strict.predictions["q"] == ""
    texts = [e["text"] for e in strict.nbest["q"]]
    assert texts[0] == "" and "Paris" in texts
    null_entry = strict.nbest["q"][0]
    assert (null_entry["start_logit"], null_entry["end_logit"]) == (2.0, 1.5)  # from window 1
    lenient = pp.compute_predictions([example()], [w0, w1], results, n_best_size=3, max_answer_length=30,
                                     version_2_with_negative=True, null_score_diff_threshold=1.5)
    assert lenient.predictions["q"] == "Paris"


def test_no_valid_span_gives_placeholder():
    f = feature(1000000000)
    results = {f.unique_id: (logits({1: 5.0}), logits({2: 5.0}))}  # only query positions stand out
    result = pp.compute_predictions([example()], [f], results, n_best_size=1, max_answer_length=30)
    assert result.predictions["q"] == "empty"
    v2 = pp.compute_predictions([example()], [f], results, n_best_size=1, max_answer_length=30,
                                version_2_with_negative=True)
    # Only the null entry (-10 + -10) is left; the placeholder scores 0, so the diff is -20 - 0 and the
    # placeholder is the prediction.
    assert v2.null_odds["q"] == pytest.approx(-20.0) and v2.predictions["q"] == "empty"


def test_missing_logits_and_side_data(tmp_path):
    f = feature(1000000007)
    with pytest.raises(KeyError, match="1000000007"):
        pp.compute_predictions([example()], [f], {}, 20, 30)
    side = SimpleNamespace(settings={"do_lower_case": True, "version_2_with_negative": True},
                           examples=[example("a"), example("b")],
                           features=[feature(1000000000, 0), feature(1000000001, 1)])
    results = {1000000000: (logits({0: 9.0}), logits({0: 9.0})),
               1000000001: (logits({14: 5.0}), logits({14: 5.0}))}
    result = pp.predictions_from_side_data(side, results, n_best_size=5, max_answer_length=30)
    assert result.predictions == {"a": "", "b": "Paris"}
    paths = pp.write_predictions(str(tmp_path), result)
    assert json.load(open(paths["predictions"])) == {"a": "", "b": "Paris"}
    assert set(json.load(open(paths["nbest"]))) == {"a", "b"}
    odds = json.load(open(paths["null_odds"]))
    assert odds["b"] == pytest.approx(-20.0 - 10.0)  # null -10 + -10, best span 5 + 5
    assert odds["a"] == pytest.approx(18.0 + 20.0)   # null 9 + 9, best span (4, 4) "The" -10 + -10


def test_oracle_logits_on_shared_dev_score_near_100(tmp_path):
    """End to end on real data: eval features + logits that peak at the gold answer's training positions
    -> predictions -> our evaluator. Misses are only answers inside a WordPiece token or > 30 tokens."""
    from utils.squad import features as sf
    from utils.data.tokenization import load_wordpiece_tokenizer
    from utils.paths import shared_data_path
    from utils.squad.evaluate import evaluate

    data_file = shared_data_path("squad", "v2.0", "dev.json")
    vocab = shared_data_path("vocab", "bert-base-uncased-vocab.txt")
    if not (os.path.isfile(data_file) and os.path.isfile(vocab)):
        pytest.skip(f"shared SQuAD v2.0 dev or vocab not found ({data_file}); set BERT_SHARED_DATA")
    built = sf.build_features(data_file, vocab, str(tmp_path), False, True, progress=False)
    side = sf.load_eval_side_file(built.side_file)
    examples = sf.read_squad_examples(data_file, True, True)
    train_features = sf.convert_examples_to_features(examples, load_wordpiece_tokenizer(vocab), is_training=True,
                                                     progress=False)
    assert len(train_features) == len(side.features) == built.num_features
    results = {}
    for gold, feature in zip(train_features, side.features):
        assert gold.tokens == feature.tokens
        results[feature.unique_id] = (logits({gold.start_position: 10.0}, 0.0, 384),
                                      logits({gold.end_position: 10.0}, 0.0, 384))
    result = pp.predictions_from_side_data(side, results)
    with open(data_file) as f:
        scores = evaluate(json.load(f), result.predictions, result.null_odds)
    assert scores["NoAns_exact"] == 100.0
    assert scores["HasAns_exact"] > 99.5 and scores["f1"] > 99.5
