"""OneFlow lazy-mode snapshots (OneFlow-Benchmark's LanguageModeling/BERT), read and write.

A snapshot is a directory with an empty `snapshot_done` and one folder per variable, named
with `-` separators (`bert-encoder-layer_3-attention-self-query-weight`), holding `out` (raw
C-order bytes) and `meta` (protobuf text of OneFlow's VariableMetaInfo:
`shape { dim: 30522 dim: 768 } data_type: kFloat`).

Layouts that differ from ours:
- dense/query/key/value `-weight` come from the lazy `_FullyConnected` (x @ W) and are [in, out];
- Google-style `output_weights` of the NSP/SQuAD heads are [out, in] (x @ W^T) like ours;
  the head weights are oriented by shape (their out dim is 2), so both spellings load;
- `position_embeddings` is [1, max_position, H];
- LayerNorm parameters are `gamma`/`beta`.
Optimizer slots (`-m`, `-v`) and `System-*` variables are skipped.
"""
import os

import numpy as np
from google.protobuf import text_format
from oneflow.core.common import data_type_pb2
from oneflow.core.framework import variable_meta_info_pb2

from utils.checkpoints import CheckpointError, state_dict_to_numpy, to_canonical

SNAPSHOT_DONE = "snapshot_done"
DATA_FILE = "out"
META_FILE = "meta"

NUMPY_DTYPES = {
    data_type_pb2.kFloat: np.float32,
    data_type_pb2.kDouble: np.float64,
    data_type_pb2.kFloat16: np.float16,
    data_type_pb2.kInt8: np.int8,
    data_type_pb2.kChar: np.int8,
    data_type_pb2.kUInt8: np.uint8,
    data_type_pb2.kInt32: np.int32,
    data_type_pb2.kInt64: np.int64,
    data_type_pb2.kBool: np.bool_,
}
PROTO_DTYPES = {np.dtype(dtype): proto for proto, dtype in NUMPY_DTYPES.items() if proto != data_type_pb2.kChar}

POSITION_EMBEDDINGS = "bert.embeddings.position_embeddings.weight"
# Variables whose lazy names do not follow the generic rule (canonical name -> lazy name).
SPECIAL_NAMES = {
    "bert.embeddings.word_embeddings.weight": "bert-embeddings-word_embeddings",
    "bert.embeddings.token_type_embeddings.weight": "bert-embeddings-token_type_embeddings",
    POSITION_EMBEDDINGS: "bert-embeddings-position_embeddings",
    "cls.predictions.bias": "cls-predictions-output_bias",
    "cls.seq_relationship.weight": "cls-seq_relationship-output_weights",
    "cls.seq_relationship.bias": "cls-seq_relationship-output_bias",
    "qa_outputs.weight": "cls-squad-output-weight",
    "qa_outputs.bias": "cls-squad-output-bias",
}
# Google-style SQuAD head names. (A modified branch's `cls-seq_relationship-weight`/`-bias`
# already map by the generic rule.)
EXTRA_LAZY_NAMES = {
    "cls-squad-output_weights": "qa_outputs.weight",
    "cls-squad-output_bias": "qa_outputs.bias",
}
LAZY_TO_CANONICAL = {**{lazy: ours for ours, lazy in SPECIAL_NAMES.items()}, **EXTRA_LAZY_NAMES}
HEAD_WEIGHTS = ("cls.seq_relationship.weight", "qa_outputs.weight")
HEAD_OUTPUTS = 2
TRANSPOSED_SUFFIXES = ("dense.weight", "query.weight", "key.weight", "value.weight")


def is_skipped(lazy_name):
    return lazy_name.endswith(("-m", "-v")) or lazy_name.startswith("System-")


def canonical_from_lazy(lazy_name):
    """`bert-encoder-layer_3-attention-output-LayerNorm-gamma` -> `bert.encoder.layer.3.attention.output.LayerNorm.weight`."""
    if lazy_name in LAZY_TO_CANONICAL:
        return LAZY_TO_CANONICAL[lazy_name]
    name = lazy_name.replace("-", ".").replace("layer_", "layer.")
    if ".LayerNorm." in name:
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return name


def lazy_from_canonical(name):
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    if ".LayerNorm." in name:
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    return name.replace("layer.", "layer_").replace(".", "-")


def orient_head(array):
    """A 2-way head weight stored [in, 2] or [2, in] -> [2, in]."""
    if array.ndim == 2 and array.shape[1] == HEAD_OUTPUTS and array.shape[0] != HEAD_OUTPUTS:
        return array.T
    return array


def to_our_layout(name, array):
    if name.endswith(TRANSPOSED_SUFFIXES):
        return array.T
    if name in HEAD_WEIGHTS:
        return orient_head(array)
    if name == POSITION_EMBEDDINGS and array.ndim == 3:
        return array.reshape(array.shape[-2:])
    return array


def to_lazy_layout(name, array):
    if name.endswith(TRANSPOSED_SUFFIXES) or name == "qa_outputs.weight":  # lazy's SQuAD head is a _FullyConnected
        return array.T
    if name == POSITION_EMBEDDINGS:
        return array[np.newaxis]
    return array


def read_variable(var_dir):
    """One variable folder -> numpy array, checked against its meta."""
    meta_path = os.path.join(var_dir, META_FILE)
    data_path = os.path.join(var_dir, DATA_FILE)
    meta = variable_meta_info_pb2.VariableMetaInfo()
    try:
        with open(meta_path) as f:
            text_format.Parse(f.read(), meta)
    except (OSError, text_format.ParseError) as e:
        raise CheckpointError(f"{meta_path}: cannot read variable meta: {e}") from e
    if meta.data_type not in NUMPY_DTYPES:
        raise CheckpointError(f"{meta_path}: unsupported data_type {data_type_pb2.DataType.Name(meta.data_type)}")
    dtype = np.dtype(NUMPY_DTYPES[meta.data_type])
    shape = tuple(meta.shape.dim)
    expected = int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(data_path) if os.path.isfile(data_path) else None
    if size != expected:
        raise CheckpointError(f"{data_path}: holds {size} bytes, meta says {shape} {dtype} = {expected} bytes")
    return np.fromfile(data_path, dtype=dtype).reshape(shape)


def read_lazy_snapshot(snapshot_dir):
    """A snapshot -> {lazy name: numpy array} (optimizer slots and System-* skipped)."""
    if not os.path.isdir(snapshot_dir):
        raise CheckpointError(f"{snapshot_dir}: lazy snapshot directory does not exist")
    names = sorted(
        entry
        for entry in os.listdir(snapshot_dir)
        if os.path.isdir(os.path.join(snapshot_dir, entry)) and not is_skipped(entry)
    )
    if not names:
        raise CheckpointError(f"{snapshot_dir}: lazy snapshot holds no variables")
    return {name: read_variable(os.path.join(snapshot_dir, name)) for name in names}


def read_lazy(snapshot_dir):
    """A snapshot -> canonical {name: array}. Names it cannot map keep a dotted form, so the
    loader reports them as unused."""
    state = {}
    for lazy_name, array in read_lazy_snapshot(snapshot_dir).items():
        name = canonical_from_lazy(lazy_name)
        if name in state:
            raise CheckpointError(f"{snapshot_dir}: {lazy_name} and another variable both map to {name}")
        state[name] = to_our_layout(name, array)
    return state


def write_variable(var_dir, array):
    os.makedirs(var_dir, exist_ok=True)
    if array.dtype not in PROTO_DTYPES:
        raise CheckpointError(f"{var_dir}: cannot store dtype {array.dtype} in a lazy snapshot")
    meta = variable_meta_info_pb2.VariableMetaInfo()
    meta.shape.dim[:] = array.shape
    meta.data_type = PROTO_DTYPES[array.dtype]
    with open(os.path.join(var_dir, DATA_FILE), "wb") as f:
        f.write(np.ascontiguousarray(array).tobytes())
    with open(os.path.join(var_dir, META_FILE), "w") as f:
        f.write(text_format.MessageToString(meta))


def write_lazy_snapshot(state_dict, snapshot_dir):
    """Writes a BertModel / BertForPreTraining / BertForQuestionAnswering state dict (oneflow
    tensors or numpy arrays, our or canonical names) as a lazy snapshot; `snapshot_done` last.

    Returns {lazy name: canonical name} for what was written.
    """
    state = to_canonical(state_dict_to_numpy(state_dict), snapshot_dir)
    os.makedirs(snapshot_dir, exist_ok=True)
    written = {}
    for name, array in state.items():
        lazy_name = lazy_from_canonical(name)
        if canonical_from_lazy(lazy_name) != name:
            raise CheckpointError(f"{snapshot_dir}: {name} has no lazy-snapshot name")
        write_variable(os.path.join(snapshot_dir, lazy_name), to_lazy_layout(name, array))
        written[lazy_name] = name
    open(os.path.join(snapshot_dir, SNAPSHOT_DONE), "w").close()
    return written
