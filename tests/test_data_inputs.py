"""Inputs and failures of the pipeline's commands: text files, folders, bad input with clear errors and
nothing half-written, the shell wrapper, and the committed demo set being what the pipeline makes."""
import gzip
import json
import os
import subprocess

import pytest

import dataset
from utils.data import create_pretraining_data as cpd
from utils.data import prepare
from utils.data.instances import InstanceOptions
from utils.paths import DEMO_DATA_DIR, REPO_ROOT, shared_data_path

VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")
CORPUS = shared_data_path("corpus", "pretrain_corpus_sentences.txt.gz")
DUMP = shared_data_path("wiki", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
PARAGRAPH = ("The river rises in the hills above the town. It flows north for many miles through farms and woods. "
             "Mills were built along its banks in the last century. Today the water is clean again and fish "
             "have returned. Walkers follow the old towpath in summer.")

pytestmark = pytest.mark.skipif(not os.path.isfile(VOCAB), reason="shared vocab not found (set BERT_SHARED_DATA)")


def write_text_corpus(path, documents=12, compress=False):
    text = "\n\n".join("\n".join(f"Document {d} paragraph {p}. {PARAGRAPH}" for p in range(6))
                       for d in range(documents)) + "\n"
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)


def outputs(directory):
    found = []
    for root, _, names in os.walk(directory):
        found += [os.path.join(root, n) for n in names]
    return found


def run_prepare(*args):
    prepare.main(["--vocab_file", VOCAB, "--num_workers", "1", "--dupe_factor", "2", "--num_parts", "2"]
                 + [str(a) for a in args])


def test_text_folder_mixed_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_text_corpus(folder / "a.txt", documents=5)
    write_text_corpus(folder / "b.txt.gz", documents=7, compress=True)
    (folder / "notes.md").write_text("ignored")
    run_prepare(folder, tmp_path / "out", "--val_fraction", "0")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reading"]["files"] == 2 and summary["train"]["documents"] == 12
    assert summary["train"]["sentences"] == 12 * 6 * 6  # every paragraph split into its 6 sentences
    index = dataset.RecordIndex(str(tmp_path / "out"), dataset.pretraining_schema(128, 20))
    assert len(index) == summary["train"]["instances"] > 0


def test_non_utf8_lines_are_skipped_and_counted(tmp_path):
    corpus = tmp_path / "c.txt"
    write_text_corpus(corpus)
    with open(corpus, "ab") as f:
        f.write(b"\n\nA Latin-1 line caf\xe9 here.\nA good line follows the bad one here.\n")
    run_prepare(corpus, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["non_utf8_lines_skipped"] == 1
    assert summary["train"]["documents"] + summary["val"]["documents"] == 13


@pytest.mark.parametrize("case", ["missing", "corrupt_bz2", "empty", "vocab", "max_predictions", "overwrite"])
def test_bad_input_names_the_problem_and_leaves_nothing(tmp_path, case):
    corpus = tmp_path / "c.txt"
    write_text_corpus(corpus)
    out = tmp_path / "out"
    args = [corpus, out]
    if case == "missing":
        args, expected = [tmp_path / "nope.xml.bz2", out], "nope.xml.bz2: input does not exist"
    elif case == "corrupt_bz2":
        bad = tmp_path / "bad.xml.bz2"
        bad.write_bytes(b"BZh91AY&SY" + bytes(range(256)) * 4)
        args, expected = [bad, out], "bad.xml.bz2: not a readable MediaWiki XML dump"
    elif case == "empty":
        corpus.write_text("\n\n  \n")
        expected = "corpus is empty"
    elif case == "vocab":
        vocab = tmp_path / "vocab.txt"
        vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
        args += ["--vocab_file", vocab]
        expected = "vocab.txt: vocab lacks required special tokens ['[MASK]']"
    elif case == "max_predictions":
        args += ["--max_seq_length", "16", "--max_predictions_per_seq", "20"]
        expected = "--max_predictions_per_seq 20 must be in [1, --max_seq_length 16]"
    else:
        run_prepare(corpus, out)
        before = {p: os.path.getmtime(p) for p in outputs(out)}
        with pytest.raises(SystemExit, match="pass --overwrite"):
            run_prepare(corpus, out)
        assert {p: os.path.getmtime(p) for p in outputs(out)} == before
        return
    with pytest.raises(SystemExit) as error:
        run_prepare(*args)
    assert expected in str(error.value)
    assert outputs(out) == []


def test_interrupted_run_leaves_no_parts(tmp_path):
    def documents():
        for d in range(50):
            yield [f"Sentence {d} {i} {PARAGRAPH}" for i in range(20)]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cpd.write_pretraining_data(cpd.Corpus(documents()), cpd.PipelineOptions(
            str(tmp_path / "out"), VOCAB, InstanceOptions(dupe_factor=1), num_parts=2, shard_chars=20_000))
    assert outputs(tmp_path / "out") == []


@pytest.mark.skipif(not os.path.isfile(DUMP), reason="wiki dump slice not found")
def test_shell_wrapper_end_to_end_on_a_wikipedia_dump(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, SEQ_LENGTH="64", MAX_PREDICTIONS_PER_SEQ="10", DUPE_FACTOR="1", NUM_PARTS="2",
               VAL_FRACTION="0.3", NUM_WORKERS="2")
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", "prepare_pretraining_data.sh"), DUMP,
                             str(out), VOCAB, "--max_documents", "12"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["seq_length"], summary["max_predictions_per_seq"], summary["dupe_factor"]) == (64, 10, 1)
    assert summary["reading"]["redirects"] > 0 and summary["train"]["documents"] + summary["val"]["documents"] <= 12
    schema = dataset.pretraining_schema(64, 10)
    assert len(dataset.RecordIndex(str(out), schema, expected_parts=2)) == summary["train"]["instances"]
    assert len(dataset.RecordIndex(str(out / "val"), schema)) == summary["val"]["instances"] > 0


@pytest.mark.skipif(not os.path.isfile(CORPUS), reason="shared corpus not found")
def test_committed_demo_set_is_what_the_pipeline_makes(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", "make_demo_data.sh"), str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ["part-0", "part-1", "part-2", "part-3", os.path.join("val", "part-0")]:
        with open(os.path.join(DEMO_DATA_DIR, name), "rb") as committed, open(out / name, "rb") as fresh:
            assert committed.read() == fresh.read(), name
    fresh = json.loads((out / "summary.json").read_text())
    with open(os.path.join(DEMO_DATA_DIR, "summary.json")) as f:
        committed = json.load(f)
    varying = ("seconds", "input", "vocab_file")  # paths follow BERT_SHARED_DATA
    assert {k: v for k, v in fresh.items() if k not in varying} == \
        {k: v for k, v in committed.items() if k not in varying}
    assert sum(os.path.getsize(p) for p in outputs(DEMO_DATA_DIR)) < 5_000_000
