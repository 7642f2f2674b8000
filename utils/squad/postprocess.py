"""SQuAD post-processing: start/end logits of every window -> answer text per question.

Follows Google BERT's reference run_squad.py (write_predictions, _get_best_indexes, get_final_text,
_compute_softmax). Pure functions on plain data; nothing here imports oneflow or re-runs WordPiece.

Inputs are the eval side data built by utils.squad.features (load_eval_side_file), used by duck typing:
- an example has `qas_id` and `doc_tokens` (the context's whitespace words);
- a feature has `unique_id`, `example_index`, `tokens`, `token_to_orig_map` {token position: word index}
  and `token_is_max_context` {token position: bool}, the maps covering the document tokens only;
- results map unique_id -> (start_logits, end_logits), each a sequence over the feature's positions.
"""
import json
import math
import os
from collections import OrderedDict, namedtuple

import numpy as np
from tokenizers import normalizers, pre_tokenizers

Predictions = namedtuple("Predictions", ["predictions", "nbest", "null_odds"])
_Candidate = namedtuple("_Candidate", ["feature_index", "start_index", "end_index", "start_logit", "end_logit"])
_NBest = namedtuple("_NBest", ["text", "start_logit", "end_logit"])


def best_indexes(logits, n_best_size):
    """Indexes of the n largest logits, largest first; ties keep the lower index first."""
    return np.argsort(-np.asarray(logits, dtype=np.float64), kind="stable")[:n_best_size].tolist()


def softmax(scores):
    """Numerically stable softmax of a list of floats -> list of floats."""
    if not scores:
        return []
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def basic_tokenize(text, do_lower_case):
    """BERT's BasicTokenizer (clean, CJK split, optional lower-case + accent strip, whitespace and
    punctuation split) via the `tokenizers` library's BertNormalizer and BertPreTokenizer."""
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                            strip_accents=do_lower_case, lowercase=do_lower_case)
    return [piece for piece, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(normalizer.normalize_str(text))]


def _without_spaces(text):
    """text -> (text without ' ', {index in that text: index in the original})."""
    chars, to_original = [], {}
    for i, c in enumerate(text):
        if c != " ":
            to_original[len(chars)] = i
            chars.append(c)
    return "".join(chars), to_original


def get_final_text(pred_text, orig_text, do_lower_case):
    """Projects a de-tokenized prediction back onto the original words' text (Google's get_final_text).

    pred_text is normalized WordPiece text ("steve smith's" for original "Steve Smith's"); orig_text is the
    original words the span covers, which may hold extra characters ("(Steve Smith's)."). The original text
    is basic-tokenized the same way, the prediction is located in it, and its characters are aligned to the
    original by position after removing spaces. Whenever the alignment is not one-to-one (say, accent
    stripping changed the length) the whole orig_text is returned, as Google's heuristic does.
    """
    tok_text = " ".join(basic_tokenize(orig_text, do_lower_case))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1
    orig_ns, orig_ns_to_s = _without_spaces(orig_text)
    tok_ns, tok_ns_to_s = _without_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return orig_text
    tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
    if start not in tok_s_to_ns or end not in tok_s_to_ns:
        return orig_text
    orig_start = orig_ns_to_s.get(tok_s_to_ns[start])
    orig_end = orig_ns_to_s.get(tok_s_to_ns[end])
    if orig_start is None or orig_end is None:
        return orig_text
    return orig_text[orig_start:orig_end + 1]


def detokenize(tokens):
    """WordPiece tokens -> text: '##' pieces join the previous token, whitespace is collapsed."""
    text = " ".join(tokens).replace(" ##", "").replace("##", "")
    return " ".join(text.split())


def span_text(example, feature, start_index, end_index, do_lower_case):
    """Original text of the answer span [start_index, end_index] (feature token positions)."""
    pred_text = detokenize(feature.tokens[start_index:end_index + 1])
    first_word = feature.token_to_orig_map[start_index]
    last_word = feature.token_to_orig_map[end_index]
    orig_text = " ".join(example.doc_tokens[first_word:last_word + 1])
    return get_final_text(pred_text, orig_text, do_lower_case)


def _logits(results, feature, example):
    try:
        start_logits, end_logits = results[feature.unique_id]
    except KeyError:
        raise KeyError(f"no logits for unique_id {feature.unique_id} (question {example.qas_id})") from None
    return np.asarray(start_logits, dtype=np.float64), np.asarray(end_logits, dtype=np.float64)


def span_candidates(feature, start_logits, end_logits, n_best_size, max_answer_length, feature_index=0):
    """Candidate spans from the n best starts x n best ends of one feature. A span is skipped if either end
    is padding or outside the document, if its start token is not in its max-context window, if it ends
    before it starts, or if it is longer than max_answer_length tokens."""
    candidates = []
    for start in best_indexes(start_logits, n_best_size):
        if start >= len(feature.tokens) or start not in feature.token_to_orig_map:
            continue
        if not feature.token_is_max_context.get(start, False):
            continue
        for end in best_indexes(end_logits, n_best_size):
            if end >= len(feature.tokens) or end not in feature.token_to_orig_map:
                continue
            if end < start or end - start + 1 > max_answer_length:
                continue
            candidates.append(_Candidate(feature_index, start, end, float(start_logits[start]),
                                         float(end_logits[end])))
    return candidates


def predict_example(example, features, results, n_best_size=20, max_answer_length=30, do_lower_case=True,
                    version_2_with_negative=False):
    """One question -> (nbest list of dicts {text, probability, start_logit, end_logit}, best non-null
    entry, null score). The null score (v2.0) is the smallest start_logits[0] + end_logits[0] over the
    question's features; the null answer "" competes in the n-best. The n-best holds distinct texts."""
    candidates = []
    null = None  # (score, start_logit, end_logit, feature index) of the lowest-scoring [CLS] pair
    for feature_index, feature in enumerate(features):
        start_logits, end_logits = _logits(results, feature, example)
        if version_2_with_negative:
            score = float(start_logits[0] + end_logits[0])
            if null is None or score < null[0]:
                null = (score, float(start_logits[0]), float(end_logits[0]), feature_index)
        candidates += span_candidates(feature, start_logits, end_logits, n_best_size, max_answer_length,
                                      feature_index)
    if null is not None:
        candidates.append(_Candidate(null[3], 0, 0, null[1], null[2]))
    candidates.sort(key=lambda c: c.start_logit + c.end_logit, reverse=True)

    nbest, seen = [], set()
    for c in candidates:
        if len(nbest) >= n_best_size:
            break
        text = "" if c.start_index == 0 else span_text(example, features[c.feature_index], c.start_index,
                                                       c.end_index, do_lower_case)
        if text in seen:
            continue
        seen.add(text)
        nbest.append(_NBest(text, c.start_logit, c.end_logit))
    if null is not None and "" not in seen:
        nbest.append(_NBest("", null[1], null[2]))
    if not any(entry.text for entry in nbest):
        # No span survived the filters: a zero-scored placeholder, as Google's script uses.
        nbest.insert(0, _NBest("empty", 0.0, 0.0))

    probabilities = softmax([e.start_logit + e.end_logit for e in nbest])
    nbest_json = [OrderedDict(text=e.text, probability=p, start_logit=e.start_logit, end_logit=e.end_logit)
                  for e, p in zip(nbest, probabilities)]
    best_non_null = next(e for e in nbest if e.text)
    return nbest_json, best_non_null, (null[0] if null is not None else None)


def _check_unique(values, what):
    """Outputs are dicts keyed by qas_id and logits are looked up by unique_id: a repeated key would make one
    question's answer overwrite another's, or two windows share one window's logits."""
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} appears more than once (it must be unique)")
        seen.add(value)


def compute_predictions(examples, features, results, n_best_size=20, max_answer_length=30, do_lower_case=True,
                        version_2_with_negative=False, null_score_diff_threshold=0.0):
    """All questions -> Predictions(predictions, nbest, null_odds), OrderedDicts keyed by qas_id.

    v1.1: the prediction is the top n-best text. v2.0: null_odds[qid] = null score - best non-null
    span score, and the prediction is "" when that exceeds null_score_diff_threshold; null_odds is None
    for v1.1. `features` may come in any order; each is matched to its example by example_index.
    A repeated qas_id or unique_id is a ValueError.
    """
    _check_unique((e.qas_id for e in examples), "question id")
    _check_unique((f.unique_id for f in features), "feature unique_id")
    by_example = {}
    for feature in features:
        by_example.setdefault(feature.example_index, []).append(feature)
    predictions, nbest, null_odds = OrderedDict(), OrderedDict(), OrderedDict()
    for example_index, example in enumerate(examples):
        example_features = by_example.get(example_index)
        if not example_features:
            raise ValueError(f"question {example.qas_id} (example {example_index}) has no features")
        nbest_json, best, null_score = predict_example(example, example_features, results, n_best_size,
                                                       max_answer_length, do_lower_case, version_2_with_negative)
        nbest[example.qas_id] = nbest_json
        if version_2_with_negative:
            diff = null_score - best.start_logit - best.end_logit
            null_odds[example.qas_id] = diff
            predictions[example.qas_id] = "" if diff > null_score_diff_threshold else best.text
        else:
            predictions[example.qas_id] = nbest_json[0]["text"]
    return Predictions(predictions, nbest, null_odds if version_2_with_negative else None)


def predictions_from_side_data(side, results, n_best_size=20, max_answer_length=30, null_score_diff_threshold=0.0):
    """compute_predictions with the examples, features, lower-casing and version of an EvalSideData."""
    settings = side.settings
    return compute_predictions(side.examples, side.features, results, n_best_size, max_answer_length,
                               settings["do_lower_case"], settings["version_2_with_negative"],
                               null_score_diff_threshold)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, ensure_ascii=False)
        f.write("\n")


def write_predictions(output_dir, result):
    """Writes predictions.json, nbest_predictions.json and (v2.0) null_odds.json; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"predictions": os.path.join(output_dir, "predictions.json"),
             "nbest": os.path.join(output_dir, "nbest_predictions.json")}
    _write_json(paths["predictions"], result.predictions)
    _write_json(paths["nbest"], result.nbest)
    if result.null_odds is not None:
        paths["null_odds"] = os.path.join(output_dir, "null_odds.json")
        _write_json(paths["null_odds"], result.null_odds)
    return paths
