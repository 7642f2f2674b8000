"""SQuAD edge cases end in one clear line (an `error:` naming the file, id or flag, or a WARNING), never a
traceback or a silent loss: duplicate question ids, malformed predictions, empty inference inputs, and feature
directories left by an interrupted build."""
import json
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

import dataset
from runs import ROOT
from test_squad_evaluate import q, squad
from test_squad_features import QUERY, SEQ, STRIDE, TINY_VOCAB, qa, squad_json
from utils.squad import evaluate as ev
from utils.squad import postprocess as pp
from utils.squad import features as sf


def run_module(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_one_error(result, *names, status=1):
    """Exit `status`, no traceback, and an `error:` line naming each of `names`."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for name in names:
        assert name in line, line


def write_json(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n")
    return str(path)


@pytest.fixture
def restore_signals():
    """main_guard installs SIGINT/SIGTERM handlers; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


# ---------------------------------------------------------------- 1. duplicate ids in a SQuAD file


def test_feature_build_refuses_duplicate_question_id_and_keeps_the_earlier_build(vocab, tmp_path):
    out = str(tmp_path / "features")
    good = write_json(tmp_path / "good.json", squad_json([qa("a", "w1"), qa("b", "w2")]))
    sf.build_features(good, vocab, out, False, False, SEQ, STRIDE, QUERY, progress=False)
    duplicated = write_json(tmp_path / "dup.json", squad_json([qa("a", "w1"), qa("dup", "w2"), qa("dup", "w3")]))
    result = run_module("-m", "utils.data.squad_features", "--input_file", duplicated, "--vocab_file", vocab,
                        "--output_dir", out, "--max_seq_length", str(SEQ), "--doc_stride", str(STRIDE),
                        "--max_query_length", str(QUERY))
    assert_one_error(result, duplicated, "'dup'")
    # The bad input was refused before the directory was touched: the earlier build is still readable.
    assert len(dataset.RecordIndex(out, dataset.squad_eval_schema(SEQ))) > 0


# ---------------------------------------------------------------- 2. the evaluator's inputs

V1 = squad([q("q1", "red fox"), q("q2", "blue sky")], "1.1")
V2 = squad([q("q1", "red fox"), q("q2")], "v2.0")


@pytest.mark.parametrize("data,predictions,na_probs,names", [
    (V1, ["red fox", "blue sky"], None, ["predictions file", "must be a JSON object", "not a list"]),
    (V1, {"q1": "red fox", "q2": 7}, None, ["predictions file", "question q2", "not an answer string"]),
    (V1, '{"q1": "red fox", "q1": "blue sky"}', None, ["predictions file", "'q1' appears more than once"]),
    (V2, {"q1": "red fox", "q2": ""}, {"q1": 0.1, "q2": "high"}, ["na-prob file", "question q2", "not a number"]),
    (V2, {"q1": "red fox", "q2": ""}, [0.1, 0.2], ["na-prob file", "must be a JSON object"]),
    (squad([q("q1", "a"), q("q1", "b")], "1.1"), {"q1": "a"}, None, ["data file", "'q1' appears more than once"]),
])
def test_evaluator_refuses_malformed_inputs(tmp_path, data, predictions, na_probs, names):
    paths = [write_json(tmp_path / "data.json", data), write_json(tmp_path / "pred.json", predictions)]
    if na_probs is not None:
        paths += ["--na-prob-file", write_json(tmp_path / "na.json", na_probs)]
    result = run_module("-m", "utils.squad_evaluate", *paths)
    culprit = {"predictions file": paths[1], "na-prob file": paths[-1], "data file": paths[0]}[names[0]]
    assert_one_error(result, culprit, *names)


def test_evaluator_states_extra_and_missing_ids(tmp_path):
    data = write_json(tmp_path / "data.json", V1)
    extra = write_json(tmp_path / "extra.json", {"q1": "red fox", "zz1": "x", "zz2": "y"})
    result = run_module("-m", "utils.squad_evaluate", data, extra)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]
    # Extra ids are ignored and the score stays over the data file's 2 questions; the missing q2 scores 0.
    assert len(warnings) == 2
    assert extra in warnings[0] and "ignored 2 of its 3 ids" in warnings[0] and "zz1" in warnings[0]
    assert "1 of 2 questions have no prediction (e.g. q2): they score 0" in warnings[1]
    assert json.loads(result.stdout) == {"exact_match": 50.0, "f1": 50.0}


# ---------------------------------------------------------------- 3. empty inference inputs


def test_run_infer_refuses_blank_input_text():
    result = run_module(os.path.join(ROOT, "run_infer.py"), "--input_text", "  ")
    assert_one_error(result, "--input_text is given but empty", status=2)


@pytest.mark.parametrize("argv,message", [
    (["--input_text", "q1", "--input_text_b", ""], "--input_text_b is given but empty"),
    (["--input_path", ""], "--input_path is given but empty"),
    (["--task", "qa", "--input_path", "{pairs}"], "--input_path {pairs}: line 2 has an empty text on one side"),
])
def test_run_infer_refuses_other_blank_inputs(tmp_path, capsys, argv, message):
    import run_infer  # oneflow: imported only here

    pairs = write_json(tmp_path / "pairs.txt", "where?\tthe sea\nwhen?\t \n")
    with pytest.raises(SystemExit) as exit_info:
        run_infer.main([arg.format(pairs=pairs) for arg in argv])
    assert exit_info.value.code == 2
    assert f"error: {message.format(pairs=pairs)}" in capsys.readouterr().err


# ---------------------------------------------------------------- 4. duplicate ids in post-processing


def test_postprocess_refuses_duplicate_ids(vocab, tmp_path):
    example = SimpleNamespace(qas_id="q", doc_tokens=["w0"])
    window = SimpleNamespace(unique_id=1000000000, example_index=0, tokens=["[CLS]", "w0", "[SEP]"],
                             token_to_orig_map={1: 0}, token_is_max_context={1: True})
    results = {1000000000: ([0.0, 1.0, 0.0], [0.0, 1.0, 0.0])}
    with pytest.raises(ValueError, match="question id 'q' appears more than once"):
        pp.compute_predictions([example, example], [window], results)
    with pytest.raises(ValueError, match="unique_id 1000000000 appears more than once"):
        pp.compute_predictions([example], [window, window], results)
    # A side file of an earlier build whose input repeated an id is refused when loaded, naming the file.
    built = sf.build_features(write_json(tmp_path / "d.json", squad_json([qa("a"), qa("b")])), vocab,
                              str(tmp_path / "eval"), False, progress=False, max_seq_length=SEQ,
                              doc_stride=STRIDE, max_query_length=QUERY)
    with open(built.side_file) as f:
        side = json.load(f)
    side["examples"][1]["qas_id"] = "a"
    write_json(tmp_path / "eval" / sf.SIDE_FILE, side)
    message = f"{built.side_file}: question id 'a' appears more than once"
    with pytest.raises(sf.SquadDataError, match=re.escape(message)):
        sf.load_eval_side_file(built.side_file)


# ---------------------------------------------------------------- 5, 6. interrupted builds and entry points


def fail_at_record(monkeypatch, number, fail):
    """feature_record calls `fail` when asked for record `number` (0-based), after the earlier ones were written."""
    calls = []
    real = sf.feature_record

    def feature_record(feature, is_training):
        calls.append(feature)
        if len(calls) == number + 1:
            fail()
        return real(feature, is_training)

    monkeypatch.setattr(sf, "feature_record", feature_record)


def assert_refused_and_cleaned(out):
    left = sorted(os.listdir(out))
    assert left == [dataset.INCOMPLETE_MARKER], left  # no part, temp part, side or meta file
    with pytest.raises(dataset.DataError, match=re.escape(f"{out}: incomplete data directory")):
        dataset.RecordIndex(out, dataset.squad_eval_schema(SEQ))


def test_failed_feature_build_is_removed_and_refused(vocab, tmp_path, monkeypatch):
    data = write_json(tmp_path / "d.json", squad_json([qa("a"), qa("b"), qa("c")]))  # 9 windows
    out = str(tmp_path / "eval")

    def fail():
        raise RuntimeError("disk full")

    fail_at_record(monkeypatch, 5, fail)  # part-0 (records 0-2) is complete, part-1 half written
    with pytest.raises(RuntimeError, match="disk full"):
        sf.build_features(data, vocab, out, False, num_parts=3, progress=False, max_seq_length=SEQ,
                          doc_stride=STRIDE, max_query_length=QUERY)
    assert_refused_and_cleaned(out)
    monkeypatch.undo()
    rebuilt = sf.build_features(data, vocab, out, False, num_parts=3, progress=False, max_seq_length=SEQ,
                                doc_stride=STRIDE, max_query_length=QUERY)
    assert not rebuilt.reused and len(dataset.RecordIndex(out, dataset.squad_eval_schema(SEQ))) == 9


def test_sigint_during_feature_build_exits_130_and_cleans_up(vocab, tmp_path, monkeypatch, capsys, restore_signals):
    data = write_json(tmp_path / "d.json", squad_json([qa("a"), qa("b"), qa("c")]))
    out = str(tmp_path / "eval")
    fail_at_record(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(SystemExit) as exit_info:
        sf.main(["--input_file", data, "--vocab_file", vocab, "--output_dir", out, "--num_parts", "3",
                 "--max_seq_length", str(SEQ), "--doc_stride", str(STRIDE), "--max_query_length", str(QUERY)])
    assert exit_info.value.code == 130
    assert "squad_features: interrupted by SIGINT" in capsys.readouterr().err
    assert_refused_and_cleaned(out)


def test_sigint_during_evaluation_exits_130_without_output(tmp_path, monkeypatch, capsys, restore_signals):
    data, pred = write_json(tmp_path / "data.json", V1), write_json(tmp_path / "p.json", {"q1": "red fox"})

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ev, "evaluate", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        ev.main([data, pred, "--out-file", str(tmp_path / "scores.json")])
    assert exit_info.value.code == 130
    assert "squad_evaluate: interrupted by SIGINT" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "scores.json")
