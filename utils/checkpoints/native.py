"""Training checkpoints: everything needed to continue a run exactly.

Layout under the run's --checkpoint_path root:
  step_00000100/config.json    BertConfig of the model
  step_00000100/model/         flow.save(model.state_dict()): weights only, what --model_load_dir reads
  step_00000100/train_state/   flow.save of the optimizer + LR schedule state (a graph's state_dict in graph mode)
  step_00000100/meta.json      step, data position, mode, world size, optimizer, and the do_lower_case used
  step_00000100/vocab.txt      the WordPiece vocab the model was trained with (when the run knows it)
So a step directory is self-contained: run_infer.py and run_squad.py find the vocab and lower-casing in it
(utils/tokenizer_settings.py).
A checkpoint is written to .tmp-step_N and renamed when complete, so a step_* directory is never partial,
and only the newest `keep` are kept. A save that fails (disk full, permissions) removes its temp directory
and keeps the older checkpoints. Global tensors are gathered to rank 0 (global_dst_rank=0).
"""
import json
import os
import shutil

import oneflow as flow

from utils.errors import CheckpointError

STEP_PREFIX = "step_"
VOCAB_FILE = "vocab.txt"


def step_dir_name(step):
    return f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(root):
    """Complete checkpoints under root as [(step, path)] sorted by step."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit() and os.path.isfile(
            os.path.join(path, "meta.json")
        ):
            found.append((int(name[len(STEP_PREFIX):]), path))
    return sorted(found)


def latest_checkpoint(root):
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def _barrier():
    if flow.env.get_world_size() > 1:
        flow.comm.barrier()


def save_checkpoint(root, step, config, model_state, train_state, meta, keep=3, is_global=False, tokenizer=None):
    """Called on every rank; rank 0 writes (global tensors are gathered to it by flow.save).

    keep > 0 keeps the newest `keep` checkpoints, keep=0 keeps all. tokenizer (utils.tokenizer_settings.
    TokenizerSettings) puts a copy of its vocab_file and its do_lower_case into the checkpoint.
    """
    is_writer = flow.env.get_rank() == 0
    final = os.path.join(root, step_dir_name(step))
    tmp = os.path.join(root, ".tmp-" + step_dir_name(step))
    try:
        if is_writer:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        _barrier()
        save_kwargs = {"global_dst_rank": 0} if is_global else {}
        if is_global or is_writer:
            flow.save(model_state, os.path.join(tmp, "model"), **save_kwargs)
            flow.save(train_state, os.path.join(tmp, "train_state"), **save_kwargs)
        if is_writer:
            config.to_json_file(os.path.join(tmp, "config.json"))
            if tokenizer is not None:
                meta = dict(meta, do_lower_case=tokenizer.do_lower_case)
                if tokenizer.vocab_file:
                    shutil.copyfile(tokenizer.vocab_file, os.path.join(tmp, VOCAB_FILE))
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(dict(meta, step=step), f, indent=2)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{e.filename or tmp}: saving the step {step} checkpoint failed: {e.strerror} "
                              f"(errno {e.errno}); the older checkpoints under {root} are kept") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_writer:
        for _, old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def check_writable(root, flag):
    """Proves at start-up that root can be written (or created), so a bad destination doesn't lose a run.

    Nothing is created: an existing directory gets a probe file, a missing one needs a writable nearest ancestor.
    """
    if os.path.isdir(root):
        probe = os.path.join(root, f".write-test-{os.getpid()}")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise CheckpointError(f"{flag} {root}: not writable: {e.strerror} (errno {e.errno})") from None
        return
    ancestor = os.path.dirname(os.path.abspath(root))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if os.path.exists(root) or not os.path.isdir(ancestor):
        blocker = root if os.path.exists(root) else ancestor
        raise CheckpointError(f"{flag} {root}: not writable: {blocker} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CheckpointError(f"{flag} {root}: not writable: cannot create it inside {ancestor}")


def read_meta(path):
    meta_file = os.path.join(path, "meta.json")
    try:
        with open(meta_file) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a complete checkpoint (no meta.json)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_file}: unreadable checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{meta_file}: checkpoint metadata without an integer 'step'")
    return meta


def _load_part(path, part, load_kwargs):
    """flow.load of one saved state; OneFlow 0.9 raises a bare AssertionError on a truncated or missing file."""
    directory = os.path.join(path, part)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: missing from the checkpoint")
    try:
        return flow.load(directory, **load_kwargs)
    except Exception as e:
        raise CheckpointError(f"{directory}: corrupt checkpoint state ({type(e).__name__}: {e})") from None


def load_checkpoint(path, is_global=False):
    """A step_* directory -> (meta dict, model state, train state); tensors global when is_global."""
    meta = read_meta(path)
    load_kwargs = {"global_src_rank": 0} if is_global else {}
    return meta, _load_part(path, "model", load_kwargs), _load_part(path, "train_state", load_kwargs)
