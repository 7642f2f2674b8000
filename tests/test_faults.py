"""Bad data and faults in training end in one line naming the file, record, field or flag, never a traceback,
an abort or a silent exit 0; interrupted or failed saves leave nothing half-written (issue R)."""
import glob
import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest

import dataset
from runs import ROOT, TINY_MODEL, command, run
from synthetic import synthetic_records

SEQ, PREDICTIONS, VOCAB = 32, 5, 64


def write_dataset(directory, bad_record=None, field=None, value=None, records=64):
    """Synthetic pre-training parts (2 of them) with `field` of record `bad_record` set to `value`."""
    rows = list(synthetic_records(records))
    if bad_record is not None:
        rows[bad_record][field] = np.asarray(rows[bad_record][field]).copy()
        rows[bad_record][field].reshape(-1)[0] = value
    dataset.write_parts(directory, rows, 2)
    return directory


def train_args(data_dir, out_dir, steps=4, extra=()):
    return [*TINY_MODEL, "--ofrecord_path", data_dir, "--train-batch-size", "8", "--train_steps", str(steps),
            "--lr", "1e-3", "--loss_print_every_n_iters", "1", "--val_print_every_n_iters", "0",
            "--checkpoint_path", os.path.join(out_dir, "ckpt"), *extra]


def assert_one_line_error(result, *names):
    assert result.returncode not in (0, 134, 255), result.returncode
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------- value ranges


BAD_VALUES = [
    ("input_ids", -1), ("input_ids", VOCAB), ("segment_ids", 2), ("input_mask", 3),
    ("masked_lm_positions", SEQ), ("masked_lm_ids", VOCAB), ("next_sentence_labels", 2),
    ("masked_lm_weights", np.nan), ("masked_lm_weights", np.inf),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v}" for f, v in BAD_VALUES])
def test_out_of_range_values_are_named_with_file_record_and_field(tmp_path, field, value):
    directory = write_dataset(str(tmp_path), bad_record=37, field=field, value=value)
    index = dataset.RecordIndex(directory, dataset.pretraining_schema(SEQ, PREDICTIONS, VOCAB, 2))
    loader = dataset.RecordLoader(index, 64, shuffle=False)
    with pytest.raises(dataset.DataError) as error:
        loader.load_batch(0)
    # Round-robin over 2 parts: record 37 is the 18th record of part-1.
    assert f"{directory}/part-1 record 18: field '{field}'" in str(error.value)


def test_a_bad_first_record_is_refused_when_the_directory_is_opened(tmp_path):
    directory = write_dataset(str(tmp_path), bad_record=0, field="masked_lm_positions", value=SEQ + 5)
    expected = r"part-0 record 0: field 'masked_lm_positions' has 37, outside \[0, 32\)"
    with pytest.raises(dataset.DataError, match=expected):
        dataset.RecordIndex(directory, dataset.pretraining_schema(SEQ, PREDICTIONS))


def test_floats_in_an_int_field_are_refused(tmp_path):
    rows = list(synthetic_records(4))
    rows[0]["input_ids"] = rows[0]["input_ids"].astype(np.float32) + 0.5
    dataset.write_parts(str(tmp_path), rows, 1)
    with pytest.raises(dataset.DataError, match="field 'input_ids' is stored as float_list, expected integers"):
        dataset.RecordIndex(str(tmp_path), dataset.pretraining_schema(SEQ, PREDICTIONS))


@pytest.mark.parametrize("script", ["run_eager_pretraining.py", "run_pretraining.py"], ids=["eager", "graph"])
@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v}" for f, v in BAD_VALUES])
def test_training_on_out_of_range_data_stops_with_one_line(tmp_path, script, field, value):
    """Before: input_ids < 0 and positions >= seq_length aborted inside OneFlow's gather (exit 134); the other
    values trained without a word and exited 0."""
    data = write_dataset(str(tmp_path / "data"), bad_record=37, field=field, value=value)
    result = run(script, train_args(data, str(tmp_path), steps=8), check=False)
    assert_one_line_error(result, "part-1 record 18", f"field '{field}'")


# ---------------------------------------------------------------- non-finite loss


def test_a_diverging_run_stops_at_the_step_before_saving_a_nan_model(tmp_path):
    data = write_dataset(str(tmp_path / "data"))
    result = run("run_eager_pretraining.py", train_args(data, str(tmp_path), steps=20,
                                                         extra=["--lr", "1e30", "--save_every_n_iters", "1"]),
                 check=False)
    line = assert_one_line_error(result, "the training loss is")
    step = int(line.split(" at step ")[1].split(":")[0])
    saved = sorted(glob.glob(str(tmp_path / "ckpt" / "step_*")))
    assert saved and saved[-1].endswith(f"step_{step:08d}"), (saved, line)  # the last step saved is the one before
    assert f"--resume continues from step {step}" in line


# ---------------------------------------------------------------- interrupts and failed saves


def test_sigint_during_training_exits_130_and_leaves_no_partial_checkpoint(tmp_path):
    data = write_dataset(str(tmp_path / "data"))
    args = train_args(data, str(tmp_path), steps=100000, extra=["--save_every_n_iters", "1"])
    proc = subprocess.Popen(command("run_eager_pretraining.py", args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not glob.glob(str(tmp_path / "ckpt" / "step_00000003")):
            assert time.time() < deadline and proc.poll() is None, "no checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted by SIGINT" in err
    assert not glob.glob(str(tmp_path / "ckpt" / ".tmp-*"))


def limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_names_the_file_and_keeps_no_partial_checkpoint(tmp_path):
    data = write_dataset(str(tmp_path / "data"))
    args = train_args(data, str(tmp_path), steps=2, extra=["--save_every_n_iters", "1"])
    # Every tensor file of the tiny model is 8 KB or less, except the optimizer's: a 6 KB limit fails mid-save.
    proc = subprocess.run(command("run_eager_pretraining.py", args), cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit_file_size(6000), timeout=300)
    line = assert_one_line_error(proc, "saving the step 1 checkpoint failed: File too large (errno 27)")
    assert str(tmp_path / "ckpt") in line
    assert not glob.glob(str(tmp_path / "ckpt" / ".tmp-*"))


def test_an_uncreatable_checkpoint_path_fails_before_training(tmp_path):
    data = write_dataset(str(tmp_path / "data"))
    (tmp_path / "a_file").write_text("x")
    args = train_args(data, str(tmp_path), extra=["--checkpoint_path", str(tmp_path / "a_file" / "ckpt")])
    result = run("run_eager_pretraining.py", args, check=False)
    line = assert_one_line_error(result, "--checkpoint_path", "not writable")
    assert "step:" not in result.stdout, line


# ---------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("saved")
    data = write_dataset(str(out / "data"))
    run("run_eager_pretraining.py", train_args(data, str(out), steps=4, extra=["--save_every_n_iters", "2"]))
    return data, out


def copy_run(saved_run, tmp_path):
    import shutil

    data, out = saved_run
    shutil.copytree(out / "ckpt", tmp_path / "ckpt")
    return data


def test_a_corrupt_newest_checkpoint_is_refused_or_skipped_with_resume_auto(saved_run, tmp_path):
    data = copy_run(saved_run, tmp_path)
    newest = tmp_path / "ckpt" / "step_00000004" / "model"
    biggest = max(glob.glob(str(newest / "**" / "*"), recursive=True), key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(10)
    args = train_args(data, str(tmp_path), steps=6, extra=["--save_every_n_iters", "2"])
    refused = run("run_eager_pretraining.py", args + ["--resume"], check=False)
    assert_one_line_error(refused, str(newest), "corrupt checkpoint state", "--resume=auto")
    resumed = run("run_eager_pretraining.py", args + ["--resume=auto"])
    assert "skipping a damaged checkpoint" in resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and "step_00000002 at step 2" in resumed.stdout


def test_unreadable_checkpoint_metadata_is_named(saved_run, tmp_path):
    data = copy_run(saved_run, tmp_path)
    meta = tmp_path / "ckpt" / "step_00000004" / "meta.json"
    meta.write_text("{not json")
    result = run("run_eager_pretraining.py", train_args(data, str(tmp_path), steps=6) + ["--resume"], check=False)
    assert_one_line_error(result, str(meta), "unreadable checkpoint metadata")


def test_resume_with_another_batch_size_is_refused(saved_run, tmp_path):
    data = copy_run(saved_run, tmp_path)
    args = train_args(data, str(tmp_path), steps=6) + ["--train-batch-size", "4", "--resume"]
    result = run("run_eager_pretraining.py", args, check=False)
    assert_one_line_error(result, "--train-global-batch-size 8, cannot resume with 4")


# ---------------------------------------------------------------- a stopped rank


def test_a_stopped_rank_stops_the_run_with_a_message_naming_it(tmp_path):
    """Before: SIGSTOP on one DDP rank left the other waiting in its all-reduce for ever."""
    data = write_dataset(str(tmp_path / "data"))
    args = train_args(data, str(tmp_path), steps=100000, extra=["--train-batch-size", "4", "--use_ddp",
                                                                "--peer_timeout", "10"])
    # Files, not pipes: a pipe nobody reads would block the ranks on their own output.
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(command("run_eager_pretraining.py", args, 2), cwd=ROOT, stdout=stdout, stderr=stderr,
                                start_new_session=True)
    try:
        deadline = time.time() + 120
        while "step: 3," not in stdout_path.read_text():
            assert time.time() < deadline and proc.poll() is None, stderr_path.read_text()[-3000:]
            time.sleep(0.1)
        children = subprocess.run(["pgrep", "-f", "-s", str(proc.pid), "u .*run_eager_pretraining.py"],
                                  capture_output=True, text=True).stdout.split()
        workers = sorted(int(p) for p in children)
        assert len(workers) == 2, children
        stopped_at = time.time()
        os.kill(workers[1], signal.SIGSTOP)  # the launcher starts rank 0 first
        assert proc.wait(timeout=120) != 0
        assert time.time() - stopped_at < 60
        assert "error: rank 0: rank 1 (pid" in stderr_path.read_text()
        assert "has been stopped for" in stderr_path.read_text()
        deadline = time.time() + 10
        while subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).returncode == 0:  # none left
            assert time.time() < deadline, "processes of the run are left"
            time.sleep(0.2)
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])


def test_squad_features_are_range_checked_too(tmp_path):
    rows = [{"input_ids": np.full(SEQ, 5), "input_mask": np.ones(SEQ, np.int32), "segment_ids": np.zeros(SEQ, np.int32),
             "start_positions": [3], "end_positions": [4]} for _ in range(4)]
    rows[2]["end_positions"] = [SEQ]
    dataset.write_parts(str(tmp_path), rows, 1)
    index = dataset.RecordIndex(str(tmp_path), dataset.squad_train_schema(SEQ, VOCAB, 2))
    with pytest.raises(dataset.DataError, match=r"part-0 record 2: field 'end_positions' has 32, outside \[0, 32\)"):
        dataset.RecordLoader(index, 4, shuffle=False).load_batch(0)
