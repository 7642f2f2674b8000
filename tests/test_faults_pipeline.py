"""Faults of the pre-training data pipeline (utils/data): Ctrl-C and kill, garbage input, bad files and flags.

Every command runs as a user runs it, in a subprocess, on a synthetic corpus and vocab written to tmp_path, so
nothing here needs the shared data folder. Each case checks the exit status, that the one message names the
file or the flag, and that no traceback reaches stderr. Runs that must be interrupted at a known point wait
there on a gate (a patch run before the module) instead of relying on timing.
"""
import os
import random
import re
import signal
import string
import subprocess
import sys
import tempfile
import time

import pytest

import dataset
from utils.paths import REPO_ROOT

WORDS = ["river", "town", "mill", "water", "north", "summer", "walker", "bank", "field", "house", "road", "stone"]
SCHEMA = dataset.pretraining_schema(128, 20)
TIMEOUT = 120

# Runs the module as `python -m` does, after a gate patch; argv: READY_FILE MODULE ARGS...
GATED_MAIN = """
import runpy, sys
READY = sys.argv.pop(1)
{gate}
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
# Waits at the first record written to val/, when the training parts are complete and summary.json is not.
VAL_WRITE_GATE = """
import os, time, dataset
write_payload = dataset.PartWriter.write_payload
def wait_in_val(self, payload):
    if os.sep + "val" + os.sep in self.path:
        open(READY, "w").close()
        time.sleep(600)
    return write_payload(self, payload)
dataset.PartWriter.write_payload = wait_in_val
"""
# Waits while the tokenizers trainer reads the corpus, after 100 lines.
CORPUS_READ_GATE = """
import itertools, time
from utils.data import sentences
iter_lines = sentences.iter_lines
def wait_while_read(*args):
    yield from itertools.islice(iter_lines(*args), 100)
    open(READY, "w").close()
    time.sleep(600)
sentences.iter_lines = wait_while_read
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 1.8 MB corpus of 3,000 documents, a vocab that covers it, and random bytes."""
    folder = tmp_path_factory.mktemp("faults")
    rng = random.Random(0)
    with open(folder / "corpus.txt", "w", encoding="utf-8") as f:
        for _ in range(3000):
            for _ in range(5):
                f.write(" ".join(rng.choice(WORDS) for _ in range(12)) + ". "
                        + " ".join(rng.choice(WORDS) for _ in range(9)) + ".\n")
            f.write("\n")
    letters = list(string.ascii_lowercase)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + letters + ["##" + c for c in letters] + WORDS
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (folder / "garbage.txt").write_bytes(rng.randbytes(200_000))
    return folder


class Command:
    """`python -m module args` in its own process group, so that killpg reaches its workers too, as Ctrl-C does.
    stderr goes to a file: a pipe nobody reads while the test polls could fill up and stall the run."""

    def __init__(self, module, *args, gate=None, ready=None):
        argv = ["-m", module] if gate is None else ["-c", GATED_MAIN.format(gate=gate), str(ready), module]
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, *argv, *map(str, args)], cwd=REPO_ROOT,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True)

    def err(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def wait_for(self, condition, what):
        """Polls until condition() holds; fails at once if the run ended first."""
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the run ended (status {self.proc.returncode}) before {what}: {self.err()[-2000:]}")
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                pytest.fail(f"no {what} after {TIMEOUT} s")
            time.sleep(0.02)

    def finish(self):
        """(status, stderr); the process group is killed if it hangs, so that no test leaves processes behind."""
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"still running after {TIMEOUT} s: {self.err()[-2000:]}")
        return self.proc.returncode, self.err()


def run(module, *args):
    return Command(module, *args).finish()


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, names in os.walk(folder) for name in dirs + names)


def assert_one_line(err, status, expected_status, line_start, *names):
    assert status == expected_status, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(line_start)]
    assert len(lines) == 1, err[-3000:]
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def assert_error(err, status, *names):
    return assert_one_line(err, status, 1, "error: ", *names)


def assert_interrupted(err, status, program, signal_name):
    assert_one_line(err, status, 130, f"{program}: interrupted by {signal_name}")
    assert len([line for line in err.splitlines() if "interrupted" in line]) == 1, err[-3000:]


def assert_no_temp_files(folder):
    assert not [name for name in files_under(folder) if ".tmp" in name], files_under(folder)


def prepare_args(data, out, *extra):
    return [data / "corpus.txt", out, "--vocab_file", data / "vocab.txt", "--num_parts", "2", *extra]


def test_ctrl_c_while_processing_stops_workers_and_leaves_nothing(data, tmp_path):
    out = tmp_path / "out"
    command = Command("utils.data.prepare", *prepare_args(data, out, "--num_workers", "2", "--dupe_factor", "40",
                                                          "--shard_chars", "100000"))

    def first_shard_done():  # records in the temp buckets: the workers run (the whole run takes minutes)
        return any(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(out) for n in names)

    command.wait_for(first_shard_done, "records in the temp folder")
    os.killpg(command.proc.pid, signal.SIGINT)  # as Ctrl-C: the main process and its workers
    status, err = command.finish()
    assert_interrupted(err, status, "prepare", "SIGINT")
    assert files_under(out) == []
    with pytest.raises(dataset.DataError, match="no part-N files"):
        dataset.RecordIndex(str(out), SCHEMA)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_interrupt_while_writing_leaves_an_incomplete_folder_that_is_refused(data, tmp_path, signal_name):
    out, ready = tmp_path / "out", tmp_path / "ready"
    args = prepare_args(data, out, "--num_workers", "1", "--dupe_factor", "1", "--val_fraction", "0.05")
    command = Command("utils.data.prepare", *args, gate=VAL_WRITE_GATE, ready=ready)
    command.wait_for(ready.exists, "writing val/")
    assert (out / "part-1").exists() and not (out / "summary.json").exists()
    command.proc.send_signal(getattr(signal, signal_name))
    status, err = command.finish()
    assert_interrupted(err, status, "prepare", signal_name)
    assert_no_temp_files(out)
    assert files_under(out) == [".incomplete", "val", os.path.join("val", ".incomplete")]
    for folder in (out, out / "val"):
        with pytest.raises(dataset.DataError, match="incomplete data directory"):
            dataset.RecordIndex(str(folder), SCHEMA)
    if signal_name == "SIGINT":  # the same command again completes the folder
        status, err = run("utils.data.prepare", *args)
        assert status == 0, err[-3000:]
        assert len(dataset.RecordIndex(str(out), SCHEMA)) > 0 and not (out / ".incomplete").exists()


def test_ctrl_c_while_training_a_vocab_acts_at_once(data, tmp_path):
    ready = tmp_path / "ready"
    command = Command("utils.data.train_vocab", data / "corpus.txt", tmp_path / "vocab.txt", "--vocab_size", "100",
                      gate=CORPUS_READ_GATE, ready=ready)
    command.wait_for(ready.exists, "reading the corpus")
    os.killpg(command.proc.pid, signal.SIGINT)
    status, err = command.finish()
    assert_interrupted(err, status, "train_vocab", "SIGINT")
    assert files_under(tmp_path) == ["ready"]


def test_garbage_input_fails_above_the_skipped_fraction(data, tmp_path):
    status, err = run("utils.data.prepare", data / "garbage.txt", tmp_path / "out", "--vocab_file",
                      data / "vocab.txt", "--num_workers", "1")
    line = assert_error(err, status, data / "garbage.txt", "--max_skipped_fraction 0.5", "not valid UTF-8")
    skipped, lines = map(int, re.search(r"(\d+) of (\d+) lines", line).groups())
    assert skipped > 0.95 * lines > 500
    assert files_under(tmp_path / "out") == []


def test_skipped_lines_below_the_fraction_are_reported(data, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes((data / "corpus.txt").read_bytes() + b"\nA Latin-1 caf\xe9 line.\nna\xefve\n")
    status, err = run("utils.data.create_pretraining_data", "--input_file", corpus, "--output_dir",
                      tmp_path / "out", "--vocab_file", data / "vocab.txt", "--num_workers", "1",
                      "--dupe_factor", "1", "--num_parts", "2")
    assert status == 0, err[-3000:]
    lines = len(corpus.read_bytes().splitlines())
    assert f"skipped 2 of {lines} input lines (not valid UTF-8)" in err.splitlines()
    assert len(dataset.RecordIndex(str(tmp_path / "out"), SCHEMA)) > 0


# (case, module, arguments, what the one error line must hold); {data} and {tmp} are filled in.
PIPELINE = "utils.data.create_pretraining_data"
BAD_INPUT_CASES = [
    ("vocab not UTF-8", PIPELINE, ["--vocab_file", "{tmp}/bad_vocab.txt"], ["{tmp}/bad_vocab.txt", "not UTF-8"]),
    ("vocab is a folder", PIPELINE, ["--vocab_file", "{tmp}"], ["{tmp}", "is a folder"]),
    ("output is a file", PIPELINE, ["--output_dir", "{data}/corpus.txt"],
     ["--output_dir {data}/corpus.txt", "is a file"]),
    ("output cannot be created", PIPELINE, ["--output_dir", "{data}/corpus.txt/out"],
     ["--output_dir {data}/corpus.txt/out", "cannot create"]),
    ("negative skip", PIPELINE, ["--skip_documents", "-1"], ["--skip_documents -1"]),
    ("no documents", PIPELINE, ["--max_documents", "0"], ["--max_documents 0"]),
    ("empty corpus", PIPELINE, ["--input_file", "{tmp}/empty.txt"], ["{tmp}/empty.txt", "corpus is empty"]),
    ("skip past the end", PIPELINE, ["--skip_documents", "5000"], ["{data}/corpus.txt", "corpus is empty"]),
    ("benchmark on an empty corpus", "utils.data.benchmark_create_pretraining_data",
     ["--input_file", "{tmp}/empty.txt", "--vocab_file", "{data}/vocab.txt", "--num_workers", "1"],
     ["{tmp}/empty.txt", "corpus is empty"]),
    ("vocab output folder missing", "utils.data.train_vocab", ["{data}/corpus.txt", "{tmp}/no/vocab.txt"],
     ["{tmp}/no/vocab.txt", "does not exist"]),
    ("vocab output is a folder", "utils.data.train_vocab", ["{data}/corpus.txt", "{tmp}"],
     ["{tmp}", "is a folder"]),
    ("negative min_frequency", "utils.data.train_vocab",
     ["{data}/corpus.txt", "{tmp}/v.txt", "--min_frequency", "-1"], ["--min_frequency -1"]),
    ("vocab from garbage", "utils.data.train_vocab", ["{data}/garbage.txt", "{tmp}/v.txt"],
     ["{data}/garbage.txt", "--max_skipped_fraction"]),
    ("sentences output folder missing", "utils.data.sentences", ["{data}/corpus.txt", "{tmp}/no/s.txt"],
     ["{tmp}/no/s.txt", "does not exist"]),
    ("wikipedia output folder missing", "utils.data.wikipedia", ["{data}/corpus.txt", "{tmp}/no/w.txt"],
     ["{tmp}/no/w.txt", "does not exist"]),
]


@pytest.mark.parametrize("case,module,args,names", BAD_INPUT_CASES, ids=[c[0] for c in BAD_INPUT_CASES])
def test_bad_input_is_one_error_line(data, tmp_path, case, module, args, names):
    (tmp_path / "bad_vocab.txt").write_bytes(b"\xff\xfe[PAD]\x00\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    fill = [a.format(data=data, tmp=tmp_path) for a in args]
    if module == PIPELINE:  # defaults of a working run; the case's flags come last and win
        fill = ["--input_file", data / "corpus.txt", "--output_dir", tmp_path / "out", "--vocab_file",
                data / "vocab.txt", "--num_workers", "1", "--dupe_factor", "1", "--num_parts", "1", *fill]
    status, err = run(module, *fill)
    assert_error(err, status, *[n.format(data=data, tmp=tmp_path) for n in names])
    assert_no_temp_files(tmp_path)


def test_out_of_range_skipped_fraction_names_the_flag(data, tmp_path):
    status, err = run("utils.data.train_vocab", data / "corpus.txt", tmp_path / "v.txt",
                      "--max_skipped_fraction", "2")
    assert status == 2 and "Traceback" not in err
    assert "error: argument --max_skipped_fraction: 2 is not in [0, 1]" in err
