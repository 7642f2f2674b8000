"""Checkpoint interop for the BERT models in modeling.py.

Modules:
- loading:   detect_format, read_checkpoint, resolve_config, load_pretrained (any format -> a model)
- hf:        Hugging Face directories (config.json + model.safetensors): read_hf, export_hf
- lazy:      OneFlow lazy-mode snapshots (one folder per variable + snapshot_done): read and write
- tf:        TensorFlow 1 checkpoints (Google's BERT releases: bert_model.ckpt.index/.data-*), read without TensorFlow
- export_hf: CLI, `python -m utils.checkpoints.export_hf --model_load_dir X --output_dir Y`

Every reader returns weights in one canonical naming, defined here: the BertForPreTraining
names of modeling.py (`bert.embeddings.*`, `bert.encoder.*`, `bert.pooler.*`,
`cls.predictions.transform.*`, `cls.predictions.bias`, `cls.seq_relationship.*`) plus the
SQuAD head `qa_outputs.*`, as numpy arrays in our layouts (Linear weights [out, in]).
The MLM decoder is tied to `bert.embeddings.word_embeddings.weight` and has no name of its own.
"""
import numpy as np
import oneflow as flow

from utils.errors import CheckpointError  # noqa: F401  (re-exported: callers import it from here)


class CanonicalState(dict):
    """Canonical {name: array}, plus the checkpoint variables a reader deliberately left unread:
    `skipped` (optimizer state such as Adam slots, counted in the load report) and `unmapped`
    (no canonical name; listed by their own names as unused)."""

    def __init__(self, *args, skipped=(), unmapped=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped = list(skipped)
        self.unmapped = list(unmapped)


WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
MLM_BIAS = "cls.predictions.bias"
# HF/seed names that are copies of a canonical tensor (weight tying), checked and dropped.
TIED_ALIASES = {
    "cls.predictions.decoder.weight": WORD_EMBEDDINGS,
    "cls.predictions.decoder.bias": MLM_BIAS,
}
# Index buffers that HF saves next to the weights; they are not parameters.
BUFFER_NAMES = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
ENCODER_ROOTS = ("embeddings.", "encoder.", "pooler.")


def canonical_name(name):
    """A BertModel/BertFor* (HF, seed or our) parameter name -> the canonical name."""
    if name.startswith(ENCODER_ROOTS):
        name = "bert." + name
    if ".LayerNorm." in name:  # TF-converted HF checkpoints call LayerNorm's parameters gamma/beta
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if name == "cls.predictions.output_bias":  # the seed's eager model
        name = MLM_BIAS
    return name


def to_canonical(tensors, source):
    """{name: array} in HF/seed/our module naming -> canonical {name: array}.

    Drops index buffers and folds tied copies of the word embeddings / MLM bias, checking
    that they really are copies. `source` (a path) is named in errors.
    """
    state = {}
    for name, array in tensors.items():
        key = canonical_name(name)
        if key in state:
            raise CheckpointError(f"{source}: both {key} and an alias of it are present")
        state[key] = array
    for name in BUFFER_NAMES:
        state.pop(name, None)
    for alias, target in TIED_ALIASES.items():
        if alias not in state:
            continue
        copy = state.pop(alias)
        if target not in state:
            state[target] = copy
        elif copy.shape != state[target].shape or not np.array_equal(copy, state[target]):
            raise CheckpointError(f"{source}: {alias} differs from {target}; BERT ties them, untied heads are not supported")
    return state


def tensor_to_numpy(tensor):
    """A local or global oneflow tensor (or a numpy array) -> numpy; collective for global tensors."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if tensor.is_global:
        tensor = tensor.to_global(sbp=flow.sbp.broadcast).to_local()
    return tensor.detach().numpy()


def state_dict_to_numpy(state_dict):
    return {name: tensor_to_numpy(tensor) for name, tensor in state_dict.items()}
