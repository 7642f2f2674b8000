"""`--model_load_dir` for every script: detect a checkpoint's format, read it, load it into a model.

Formats:
- "oneflow": our native checkpoints. A root of `step_<N>/` directories (the newest is used), one
  `step_<N>/` (`config.json` + `model/` written by flow.save), or a bare flow.save'd state dict
  (a directory with `pickled_data`, no config);
- "hf": a Hugging Face directory with `config.json` + `model.safetensors`;
- "lazy": a OneFlow lazy-mode snapshot (`snapshot_done` + one folder per variable; no config);
- "tf": a TensorFlow 1 checkpoint in Google's BERT layout: a directory with `bert_config.json` +
  `bert_model.ckpt.index` / `.data-*` (+ `vocab.txt`), a tf.train output directory (its
  `checkpoint` file names the prefix), or the checkpoint prefix itself.

Typical use in a script (before `to_global`):

    fmt = resolve_format(args.model_load_dir, args.init_format)         # "oneflow" | "hf" | "lazy" | "tf"
    checkpoint = read_checkpoint(args.model_load_dir, fmt)               # (config or None, weights)
    config = resolve_config(checkpoint[0], explicit_shape_flags, defaults)
    model = BertForQuestionAnswering(config)
    report = load_into(model, checkpoint, args.model_load_dir, fmt)
    print(report.summary())

or, when the config is already known, just `load_pretrained(model, path, init_format)`.
"""
import os
import re
from dataclasses import dataclass, field, fields, replace

import numpy as np
import oneflow as flow

from modeling import BertConfig
from utils.checkpoints import CheckpointError, canonical_name, tensor_to_numpy, to_canonical
from utils.checkpoints.hf import CONFIG_FILE, VOCAB_FILE, is_hf_dir, read_hf, read_hf_config
from utils.checkpoints.lazy import SNAPSHOT_DONE, read_lazy
from utils.checkpoints.tf import find_tf_prefix, read_tf, read_tf_config

FORMATS = ("oneflow", "hf", "lazy", "tf")
INIT_FORMATS = ("auto",) + FORMATS
PICKLE_FILE = "pickled_data"
MODEL_SUBDIR = "model"
STEP_DIR = re.compile(r"^step_(\d+)$")

# Fields that fix the tensors' shapes, and the rest of the architecture (not visible in shapes).
SHAPE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
)
ARCHITECTURE_FIELDS = SHAPE_FIELDS + ("hidden_act", "layer_norm_eps")
# Canonical prefixes a model cannot work without; everything else (pooler, heads) is optional.
REQUIRED_PREFIXES = ("bert.embeddings.", "bert.encoder.")


def step_dirs(root):
    """{step: path} of the `step_<N>` directories directly under root."""
    found = {}
    for entry in os.listdir(root):
        match = STEP_DIR.match(entry)
        if match and os.path.isdir(os.path.join(root, entry)):
            found[int(match.group(1))] = os.path.join(root, entry)
    return found


def is_state_dict_dir(path):
    return os.path.isfile(os.path.join(path, PICKLE_FILE))


def is_step_dir(path):
    return is_state_dict_dir(os.path.join(path, MODEL_SUBDIR))


def is_oneflow_dir(path):
    return is_state_dict_dir(path) or is_step_dir(path) or bool(step_dirs(path))


def detect_format(path):
    """"oneflow" | "hf" | "lazy" | "tf" for a checkpoint directory or TF prefix; CheckpointError naming it otherwise."""
    if not os.path.isdir(path):
        if find_tf_prefix(path) is not None:
            return "tf"
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: checkpoint path does not exist")
        raise CheckpointError(f"{path}: a checkpoint is a directory (or a TF checkpoint prefix), not a file")
    if os.path.isfile(os.path.join(path, SNAPSHOT_DONE)):
        return "lazy"
    if is_hf_dir(path):
        return "hf"
    if is_oneflow_dir(path):
        return "oneflow"
    if find_tf_prefix(path) is not None:
        return "tf"
    hint = ""
    if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        hint = " (pytorch_model.bin is not supported: convert it to model.safetensors)"
    raise CheckpointError(
        f"{path}: not a checkpoint{hint}; expected an HF directory (config.json + model.safetensors), "
        f"a lazy snapshot (snapshot_done), a OneFlow checkpoint (pickled_data, step_*/model/) "
        f"or a TF checkpoint (bert_model.ckpt.index + .data-*)"
    )


def resolve_oneflow_dir(path):
    """A native checkpoint path -> (state dict directory, config.json path or None)."""
    if is_state_dict_dir(path):
        return path, None
    if not is_step_dir(path):
        steps = step_dirs(path) if os.path.isdir(path) else {}
        if not steps:
            raise CheckpointError(f"{path}: not a OneFlow checkpoint (no pickled_data, model/ or step_* directories)")
        path = steps[max(steps)]
        if not is_step_dir(path):
            raise CheckpointError(f"{path}: newest checkpoint step has no {MODEL_SUBDIR}/{PICKLE_FILE}")
    config_path = os.path.join(path, CONFIG_FILE)
    return os.path.join(path, MODEL_SUBDIR), config_path if os.path.isfile(config_path) else None


def read_native_config(config_path):
    if config_path is None:
        return None
    try:
        return BertConfig.from_json_file(config_path)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{config_path}: cannot read BertConfig: {e}") from e


def read_oneflow(path):
    """A native checkpoint -> (BertConfig or None, canonical {name: array})."""
    model_dir, config_path = resolve_oneflow_dir(path)
    try:
        loaded = flow.load(model_dir)
    except Exception as e:  # flow.load raises assorted internal errors on broken directories
        raise CheckpointError(f"{model_dir}: cannot load OneFlow state dict: {e}") from e
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{model_dir}: holds a {type(loaded).__name__}, not a state dict")
    arrays = {name: tensor_to_numpy(t) for name, t in loaded.items() if isinstance(t, flow.Tensor)}
    return read_native_config(config_path), to_canonical(arrays, model_dir)


def vocab_file_beside(path):
    """The checkpoint's own vocab.txt: in the directory, or next to a TF checkpoint prefix; None if absent."""
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    vocab_file = os.path.join(directory, VOCAB_FILE)
    return vocab_file if os.path.isfile(vocab_file) else None


def resolve_format(path, init_format="auto"):
    """--init_format -> the format to read: detected for "auto", else checked and returned."""
    if init_format not in INIT_FORMATS:
        raise CheckpointError(f"--init_format {init_format!r} is not one of {INIT_FORMATS}")
    if init_format == "auto":
        return detect_format(path)
    if init_format == "tf" and not os.path.isdir(path):
        if find_tf_prefix(path) is None:
            raise CheckpointError(f"{path}: no TF checkpoint prefix (no {path}.index)")
    elif not os.path.isdir(path):
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    return init_format


def read_checkpoint(path, init_format="auto"):
    """Any checkpoint -> (BertConfig or None, canonical {name: numpy array}).

    The canonical naming is defined in utils/checkpoints/__init__.py (BertForPreTraining names
    with the `bert.` prefix, plus `qa_outputs.*`).
    """
    fmt = resolve_format(path, init_format)
    if fmt == "hf":
        return read_hf(path)
    if fmt == "lazy":
        return None, read_lazy(path)
    if fmt == "tf":
        return read_tf(path)
    return read_oneflow(path)


def read_checkpoint_and_config(path, init_format="auto", config_file=None):
    """(format, checkpoint, config) for tools that need a config: config_file if given, else the checkpoint's own."""
    fmt = resolve_format(path, init_format)
    checkpoint = read_checkpoint(path, fmt)
    config = read_native_config(config_file) if config_file else checkpoint[0]
    if config is None:
        raise CheckpointError(f"{path}: checkpoint has no config; pass --bert_config_file")
    return fmt, checkpoint, config


def peek_config(path, init_format="auto"):
    """The checkpoint's BertConfig (None for lazy snapshots and bare state dicts), without reading weights."""
    fmt = resolve_format(path, init_format)
    if fmt == "hf":
        return read_hf_config(path)
    if fmt == "lazy":
        return None
    if fmt == "tf":
        return read_tf_config(path)
    return read_native_config(resolve_oneflow_dir(path)[1])


def resolve_config(checkpoint_config, explicit_flags, defaults):
    """The BertConfig a run should build.

    - Architecture fields (shapes, hidden_act, layer_norm_eps) come from the checkpoint's config
      when it has one; an explicitly given flag that disagrees is an error naming both values.
    - Other fields (dropouts, initializer_range) come from explicit flags, else `defaults`.
    - Without a checkpoint config: `defaults` updated with the explicit flags.
    `explicit_flags` holds only the BertConfig fields the user actually passed.
    """
    known = {f.name for f in fields(BertConfig)}
    unknown = sorted(set(explicit_flags) - known)
    if unknown:
        raise ValueError(f"not BertConfig fields: {unknown}")
    if checkpoint_config is None:
        return replace(defaults, **explicit_flags)
    for name in ARCHITECTURE_FIELDS:
        if name in explicit_flags and explicit_flags[name] != getattr(checkpoint_config, name):
            raise CheckpointError(
                f"--{name} {explicit_flags[name]} disagrees with the checkpoint's {name} "
                f"{getattr(checkpoint_config, name)}: leave the flag out to use the checkpoint's value"
            )
    architecture = {name: getattr(checkpoint_config, name) for name in ARCHITECTURE_FIELDS}
    training = {name: value for name, value in explicit_flags.items() if name not in ARCHITECTURE_FIELDS}
    return replace(defaults, **architecture, **training)


@dataclass
class LoadReport:
    """What load_pretrained did. Names are the model's own parameter names, except `unused`,
    which lists checkpoint names the model has no parameter for (canonical, or the checkpoint's
    own when they map to nothing), and `skipped`, the optimizer variables left unread."""

    path: str
    format: str
    config: BertConfig = None
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # left as initialized (new heads, absent pooler)
    unused: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def summary(self):
        kind = f"{self.format} checkpoint" if self.format else "checkpoint"
        lines = [f"loaded {len(self.loaded)} tensors from {kind} {self.path}"]
        if self.missing:
            lines.append(f"newly initialized ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unused:
            lines.append(f"unused from checkpoint ({len(self.unused)}): {', '.join(self.unused)}")
        if self.skipped:
            kinds = sorted({name.rsplit("/", 1)[-1] for name in self.skipped})
            lines.append(f"skipped optimizer variables ({len(self.skipped)}): {', '.join(kinds)}")
        return "\n".join(lines)


def check_architecture(model_config, checkpoint_config, path):
    if checkpoint_config is None:
        return
    for name in ARCHITECTURE_FIELDS:
        ours, theirs = getattr(model_config, name), getattr(checkpoint_config, name)
        if ours != theirs:
            raise CheckpointError(f"{path}: checkpoint has {name} {theirs}, the model was built with {ours}")


def copy_into(tensor, array):
    """Copies a numpy array into a local or global parameter in place."""
    source = flow.tensor(np.ascontiguousarray(array, dtype=np.float32), dtype=tensor.dtype)
    if tensor.is_global:
        source = source.to_global(placement=tensor.placement, sbp=flow.sbp.broadcast).to_global(sbp=tensor.sbp)
    else:
        source = source.to(tensor.device)
    with flow.no_grad():
        tensor.copy_(source)


def load_state(params, state, path, fmt):
    """Copies canonical `state` into `params` ({model name: tensor}, e.g. model.state_dict())."""
    by_canonical = {canonical_name(name): name for name in params}
    report = LoadReport(path=path, format=fmt)
    absent = sorted(name for name in by_canonical if name not in state)
    required = [name for name in absent if name.startswith(REQUIRED_PREFIXES)]
    if required:
        raise CheckpointError(f"{path}: checkpoint lacks required encoder parameters: {', '.join(required)}")
    for key in sorted(state):
        if key not in by_canonical:
            report.unused.append(key)
            continue
        name = by_canonical[key]
        want, have = tuple(params[name].shape), tuple(state[key].shape)
        if want != have:
            raise CheckpointError(f"{path}: {key} has shape {list(have)}, the model expects {list(want)}")
        copy_into(params[name], state[key])
        report.loaded.append(name)
    report.missing = [by_canonical[name] for name in absent]
    report.unused += getattr(state, "unmapped", [])
    report.skipped = list(getattr(state, "skipped", []))
    return report


def load_into(model, checkpoint, source, fmt=None):
    """Loads an already read `checkpoint` = (config or None, canonical state) into `model`;
    see load_pretrained. `source` and `fmt` only label errors and the report."""
    checkpoint_config, state = checkpoint
    check_architecture(model.config, checkpoint_config, source)
    report = load_state(model.state_dict(), state, source, fmt)
    report.config = checkpoint_config
    return report


def load_pretrained(model, path, init_format="auto"):
    """Loads any checkpoint into a BertModel / BertForPreTraining / BertForQuestionAnswering.

    The encoder must be complete; heads and the pooler load when present and are reported in
    `missing` (kept as initialized) when not. Raises CheckpointError on a missing encoder
    parameter, a shape mismatch, or an architecture field (heads, activation, eps) that differs
    from the checkpoint's config. Works on local models and on global ones (every rank reads).
    """
    fmt = resolve_format(path, init_format)
    return load_into(model, read_checkpoint(path, fmt), path, fmt)
