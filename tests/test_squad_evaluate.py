"""SQuAD evaluator on crafted cases whose EM / F1 are worked out by hand in the comments."""
import json
import os
import subprocess
import sys

import pytest

from utils.squad import evaluate as ev

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def squad(qas, version):
    return {"version": version, "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}


def q(qid, *answers):
    return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


V1 = squad([q("q1", "The Eiffel Tower", "Eiffel Tower"), q("q2", "cat sat on the mat"),
            q("q3", "Paris", "in Paris, France"), q("q4", "x")], "1.1")
V1_PRED = {"q1": "eiffel tower!", "q2": "the cat sat down", "q3": "Paris France"}

V2 = squad([q("a1", "Denver Broncos"), q("a2", "Super Bowl 50"), q("a3", "1995"), q("n1"), q("n2")], "v2.0")
V2_PRED = {"a1": "Denver Broncos", "a2": "Super Bowl", "a3": "", "n1": "", "n2": "Levi's Stadium"}
NA_PROBS = {"a1": 0.1, "a2": 0.6, "a3": 0.9, "n1": 0.8, "n2": 0.7}


def test_normalize():
    # lower -> "the  cat, a hat!"; no punctuation -> "the  cat a hat"; no articles; one space.
    assert ev.normalize_answer("The  Cat, a hat!") == "cat hat"
    assert ev.normalize_answer("the-end") == "theend"  # punctuation goes before articles are matched
    assert ev.normalize_answer("Anthem ANd an apple") == "anthem and apple"


def test_token_f1():
    # "cat sat down" vs "cat sat on mat": 2 common, precision 2/3, recall 2/4, F1 = 2 * (1/3) / (7/6) = 4/7.
    assert ev.f1_score("the cat sat down", "cat sat on the mat") == pytest.approx(4 / 7)
    # Repeated tokens count as a bag: "a a b" vs "a b b" -> tokens [b] vs [b, b] after dropping "a":
    # 1 common, precision 1, recall 1/2, F1 2/3.
    assert ev.f1_score("a a b", "a b b") == pytest.approx(2 / 3)
    assert ev.f1_score("", "paris") == 0.0
    assert ev.f1_score("", "", empty_matches_empty=True) == 1.0
    assert ev.f1_score("the", "", empty_matches_empty=True) == 1.0  # "the" normalizes to nothing
    assert ev.f1_score("", "", empty_matches_empty=False) == 0.0   # v1.1: no common token


def test_v1_scores():
    # q1: "eiffel tower" equals the second gold -> EM 1, F1 1.
    # q2: EM 0, F1 4/7 (test_token_f1).
    # q3: vs "paris": 1 common, P 1/2, R 1 -> 2/3; vs "in paris france": 2 common, P 1, R 2/3 -> 0.8; max 0.8.
    # q4: no prediction -> 0.
    # EM = 100 * 1/4 = 25; F1 = 100 * (1 + 4/7 + 0.8) / 4 = 59.2857...
    result = ev.evaluate(V1, V1_PRED)
    assert list(result) == ["exact_match", "f1"]
    assert result["exact_match"] == pytest.approx(25.0)
    assert result["f1"] == pytest.approx(100 * (1 + 4 / 7 + 0.8) / 4)


def test_v2_scores():
    # a1 EM 1 F1 1; a2 "super bowl" vs "super bowl 50": EM 0, F1 2*1*(2/3)/(5/3) = 0.8; a3 empty vs "1995": 0, 0;
    # n1 empty vs no answer: 1, 1; n2 an answer to an unanswerable question: 0, 0.
    result = ev.evaluate(V2, V2_PRED)
    assert list(result) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                            "NoAns_exact", "NoAns_f1", "NoAns_total"]
    assert result["exact"] == pytest.approx(100 * 2 / 5)
    assert result["f1"] == pytest.approx(100 * 2.8 / 5)
    assert (result["HasAns_exact"], result["HasAns_f1"]) == pytest.approx((100 / 3, 100 * 1.8 / 3))
    assert (result["NoAns_exact"], result["NoAns_f1"]) == pytest.approx((50.0, 50.0))
    assert (result["total"], result["HasAns_total"], result["NoAns_total"]) == (5, 3, 2)


def test_v2_na_probs_and_best_threshold():
    # Threshold 1.0: no probability exceeds it, scores as in test_v2_scores.
    result = ev.evaluate(V2, V2_PRED, NA_PROBS)
    assert result["exact"] == pytest.approx(40.0)
    # Best threshold, walking questions in na_prob order a1 .1, a2 .6, n2 .7, n1 .8, a3 .9 from the
    # all-"no answer" total 2 (n1, n2):
    #   EM: a1 +1 -> 3 (best, thresh .1), a2 +0, n2 -1 (it has an answer text), n1 0, a3 +0 -> 60, .1
    #   F1: a1 +1 -> 3 (.1), a2 +0.8 -> 3.8 (best, .6), n2 -1, n1 0, a3 0 -> 76, .6
    assert result["best_exact"] == pytest.approx(60.0) and result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(76.0) and result["best_f1_thresh"] == 0.6
    # Threshold 0.65: a3 (.9), n1 (.8), n2 (.7) count as "no answer": a3 stays 0, n1 stays 1, n2 becomes 1.
    # EM = (1 + 0 + 0 + 1 + 1) / 5 = 60; F1 = (1 + 0.8 + 0 + 1 + 1) / 5 = 76.
    result = ev.evaluate(V2, V2_PRED, NA_PROBS, na_prob_thresh=0.65)
    assert (result["exact"], result["f1"]) == pytest.approx((60.0, 76.0))
    with pytest.raises(ValueError, match="no entry"):
        ev.evaluate(V2, V2_PRED, {"a1": 0.0})


def test_version_detection():
    assert ev.data_version({"version": "1.1", "data": []}) == 1
    assert ev.data_version({"version": "v2.0", "data": []}) == 2
    assert ev.data_version({"version": "2.0", "data": []}) == 2
    no_version = {"data": V2["data"]}
    assert ev.data_version(no_version) == 1  # no is_impossible field anywhere
    no_version["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = False
    assert ev.data_version(no_version) == 2
    with pytest.raises(ValueError, match="3.0"):
        ev.data_version({"version": "3.0", "data": []})


def run_cli(*args):
    out = subprocess.run([sys.executable, "-m", "utils.squad_evaluate", *args], cwd=REPO, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_cli_like_official_scripts(tmp_path):
    paths = {}
    for name, obj in [("v1", V1), ("v1_pred", V1_PRED), ("v2", V2), ("v2_pred", V2_PRED), ("na", NA_PROBS)]:
        paths[name] = str(tmp_path / f"{name}.json")
        with open(paths[name], "w") as f:
            json.dump(obj, f)
    assert run_cli(paths["v1"], paths["v1_pred"])["exact_match"] == pytest.approx(25.0)
    out_file = str(tmp_path / "eval.json")
    result = run_cli(paths["v2"], paths["v2_pred"], "--na-prob-file", paths["na"], "--na-prob-thresh", "0.65",
                     "--out-file", out_file)
    assert list(result)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    assert result["f1"] == pytest.approx(76.0)
    with open(out_file) as f:
        assert json.load(f) == result
