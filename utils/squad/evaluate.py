"""SQuAD v1.1 / v2.0 evaluation, written from the metric's definition (Rajpurkar et al. 2016, 2018).

An answer is normalized by lower-casing, dropping punctuation, dropping the articles a/an/the and
collapsing whitespace. Exact match (EM) is 1 when the normalized prediction equals a normalized gold
answer; F1 is the harmonic mean of token precision and recall between the normalized token bags. Each
question takes the maximum over its gold answers, and the scores are averaged over questions, in percent.

v1.1 (as evaluate-v1.1.py): a question without a prediction scores 0; keys exact_match, f1.
v2.0 (as evaluate-v2.0.py): an unanswerable question's only gold answer is ""; an empty prediction
matches it, and for two empty token lists F1 is 1 exactly when both are empty. Questions without a
prediction are left out. A na-prob file turns a prediction into "no answer" when its probability exceeds
--na-prob-thresh, and best_* report the threshold on those probabilities that maximizes EM / F1.

Nothing is dropped silently: question ids of the data file must be unique, the predictions file must map
question id -> answer string (the na-prob file id -> number), and one warning line each says how many
questions have no prediction and how many ids of the predictions / na-prob file are not in the data file
(those are ignored; scores are over the data file's questions).

    python -m utils.squad_evaluate DATA.json PREDICTIONS.json [--na-prob-file null_odds.json]
        [--na-prob-thresh 1.0] [--out-file F]
"""
import json
import re
import string
import sys
from collections import Counter, OrderedDict, namedtuple

from utils import interrupts
from utils.cli import argument_parser
from utils.files import write_json_atomic

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)

QuestionScore = namedtuple("QuestionScore", ["exact", "f1", "has_answer"])


def normalize_answer(text):
    """Lower-case, drop punctuation, drop articles, collapse whitespace (in that order)."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction, gold):
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction, gold, empty_matches_empty=False):
    """Token-bag F1 of the normalized texts. With empty_matches_empty (v2.0), an empty side scores 1 when
    both are empty and 0 otherwise; v1.1 scores any pair with no common token 0."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if empty_matches_empty and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _questions(dataset_json):
    for article in dataset_json["data"]:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def question_ids(dataset_json):
    """The data file's question ids in order; a ValueError on a repeated id, whose scores would merge."""
    ids, seen = [], set()
    for qa in _questions(dataset_json):
        if qa["id"] in seen:
            raise ValueError(f"question id {qa['id']!r} appears more than once (ids must be unique)")
        seen.add(qa["id"])
        ids.append(qa["id"])
    return ids


def warn(message):
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def _warn_missing(missing, total, consequence):
    if missing:
        warn(f"{len(missing)} of {total} questions have no prediction (e.g. {missing[0]}): {consequence}")


def data_version(dataset_json):
    """1 or 2 from the 'version' field ('1.1', 'v2.0', ...); without one, 2 if any question has is_impossible."""
    version = str(dataset_json.get("version", "")).lstrip("vV")
    if version[:1] in ("1", "2"):
        return int(version[0])
    if version:
        raise ValueError(f"unknown SQuAD version {dataset_json['version']!r} (expected 1.1 or 2.0)")
    return 2 if any("is_impossible" in qa for qa in _questions(dataset_json)) else 1


def evaluate_v1(dataset_json, predictions):
    """{'exact_match', 'f1'} in percent over all questions; missing predictions score 0."""
    total = em = f1 = 0.0
    missing = []
    for qa in _questions(dataset_json):
        total += 1
        if qa["id"] not in predictions:
            missing.append(qa["id"])
            continue
        golds = [a["text"] for a in qa["answers"]]
        prediction = predictions[qa["id"]]
        em += max(exact_match(prediction, g) for g in golds)
        f1 += max(f1_score(prediction, g) for g in golds)
    _warn_missing(missing, int(total), "they score 0")
    return OrderedDict(exact_match=100.0 * em / total, f1=100.0 * f1 / total)


def raw_scores_v2(dataset_json, predictions):
    """Per question with a prediction: QuestionScore(exact, f1, has_answer), max over gold answers. has_answer means the
    question lists answers; when none of them is non-empty after normalization the gold is ""."""
    scores, missing = OrderedDict(), []
    for qa in _questions(dataset_json):
        if qa["id"] not in predictions:
            missing.append(qa["id"])
            continue
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        prediction = predictions[qa["id"]]
        scores[qa["id"]] = QuestionScore(max(exact_match(prediction, g) for g in golds),
                                         max(f1_score(prediction, g, empty_matches_empty=True) for g in golds),
                                         bool(qa["answers"]))
    _warn_missing(missing, len(scores) + len(missing), "they are left out of the scores (v2.0 rule)")
    return scores


def _apply_na_threshold(scores, na_probs, threshold):
    """Questions whose no-answer probability exceeds the threshold count as answered "no answer"."""
    out = OrderedDict()
    for qid, score in scores.items():
        if na_probs[qid] > threshold:
            no_answer_score = float(not score.has_answer)
            score = QuestionScore(no_answer_score, no_answer_score, score.has_answer)
        out[qid] = score
    return out


def best_threshold(scores, predictions, na_probs, metric):
    """Best total `metric` ("exact" or "f1", percent) over thresholds on na_probs, and that threshold.

    Start with every question predicted "no answer" (the unanswerable ones score 1), then switch questions
    to their prediction in increasing na_prob order (ties in the na-prob file's order), keeping the best
    running total; the threshold reported is the na_prob of the last question switched.
    """
    current = best = float(sum(1 for s in scores.values() if not s.has_answer))
    best_thresh = 0.0
    for qid in sorted(na_probs, key=na_probs.get):
        if qid not in scores:
            continue
        score = scores[qid]
        if score.has_answer:
            current += getattr(score, metric)
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def _averages(scores, prefix=""):
    n = len(scores)
    return OrderedDict([(f"{prefix}exact", 100.0 * sum(s.exact for s in scores.values()) / n),
                        (f"{prefix}f1", 100.0 * sum(s.f1 for s in scores.values()) / n),
                        (f"{prefix}total", n)])


def evaluate_v2(dataset_json, predictions, na_probs=None, na_prob_thresh=1.0):
    """exact, f1, total, HasAns_*, NoAns_* (when present) and, with na_probs, best_* and their thresholds."""
    raw = raw_scores_v2(dataset_json, predictions)
    if not raw:
        raise ValueError("no question of the data file has a prediction")
    probs = na_probs if na_probs is not None else {qid: 0.0 for qid in raw}
    missing = [qid for qid in raw if qid not in probs]
    if missing:
        raise ValueError(f"the na-prob file has no entry for {len(missing)} questions, e.g. {missing[0]}")
    scores = _apply_na_threshold(raw, probs, na_prob_thresh)
    result = _averages(scores)
    has_answer = OrderedDict((q, s) for q, s in scores.items() if s.has_answer)
    no_answer = OrderedDict((q, s) for q, s in scores.items() if not s.has_answer)
    if has_answer:
        result.update(_averages(has_answer, "HasAns_"))
    if no_answer:
        result.update(_averages(no_answer, "NoAns_"))
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = best_threshold(raw, predictions, probs, "exact")
        result["best_f1"], result["best_f1_thresh"] = best_threshold(raw, predictions, probs, "f1")
    return result


def evaluate(dataset_json, predictions, na_probs=None, na_prob_thresh=1.0):
    """Scores for a whole SQuAD JSON dict and {qid: text}; the version comes from the data."""
    question_ids(dataset_json)
    if data_version(dataset_json) == 1:
        return evaluate_v1(dataset_json, predictions)
    return evaluate_v2(dataset_json, predictions, na_probs, na_prob_thresh)


def _refuse_duplicate_keys(pairs):
    # json.load keeps the last of repeated keys: a repeated question id would silently lose an answer.
    mapping = dict(pairs)
    if len(mapping) < len(pairs):
        repeated = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"question id {repeated!r} appears more than once")
    return mapping


def _load_json(path, what, **options):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, **options)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {what} {path}: {e}")


def _is_text(value):
    return isinstance(value, str)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_id_map(path, what, value_kind, value_ok):
    """A JSON object question id -> value (an answer string, a number); exits naming the file otherwise."""
    mapping = _load_json(path, what, object_pairs_hook=_refuse_duplicate_keys)
    if not isinstance(mapping, dict):
        sys.exit(f"error: {what} {path}: must be a JSON object mapping question id -> {value_kind}, "
                 f"not a {type(mapping).__name__}")
    for qid, value in mapping.items():
        if not value_ok(value):
            sys.exit(f"error: {what} {path}: question {qid}: {json.dumps(value)} is not {value_kind}")
    return mapping


def warn_unknown_ids(mapping, ids, what, path):
    """Ids the data file does not have are not scored; a mismatch of files should not pass unnoticed."""
    known = set(ids)
    unknown = [qid for qid in mapping if qid not in known]
    if unknown:
        warn(f"{what} {path}: ignored {len(unknown)} of its {len(mapping)} ids, which are not questions of the "
             f"data file (e.g. {unknown[0]})")


def build_parser():
    parser = argument_parser("SQuAD v1.1/v2.0 evaluation (EM and F1)")
    parser.add_argument("data_file", help="SQuAD JSON with gold answers")
    parser.add_argument("pred_file", help="predictions.json: {question id: answer text}")
    parser.add_argument("--na-prob-file", "-n", help="v2.0: {question id: no-answer probability}")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help="v2.0: predict no answer when the na-prob exceeds this")
    parser.add_argument("--out-file", "-o", help="also write the metrics JSON here")
    return parser


def main(argv=None):
    with interrupts.main_guard("squad_evaluate"):
        args = build_parser().parse_args(argv)
        dataset_json = _load_json(args.data_file, "data file")
        predictions = load_id_map(args.pred_file, "predictions file", "an answer string", _is_text)
        na_probs = None
        if args.na_prob_file:
            na_probs = load_id_map(args.na_prob_file, "na-prob file", "a number", _is_number)
        try:
            ids = question_ids(dataset_json)
            warn_unknown_ids(predictions, ids, "predictions file", args.pred_file)
            if na_probs is not None:
                warn_unknown_ids(na_probs, ids, "na-prob file", args.na_prob_file)
                if data_version(dataset_json) == 1:
                    warn(f"na-prob file {args.na_prob_file}: ignored, the data file is SQuAD v1.1")
            result = evaluate(dataset_json, predictions, na_probs, args.na_prob_thresh)
        except (KeyError, TypeError, AttributeError) as e:
            sys.exit(f"error: data file {args.data_file}: not a SQuAD JSON file with data / paragraphs / qas "
                     f"(id, answers) ({type(e).__name__}: {e})")
        except ValueError as e:
            sys.exit(f"error: data file {args.data_file}: {e}")
        print(json.dumps(result, indent=2))
        if args.out_file:
            try:
                write_json_atomic(args.out_file, result)
            except OSError as e:
                sys.exit(f"error: --out-file {args.out_file}: {e}")


if __name__ == "__main__":
    main()
