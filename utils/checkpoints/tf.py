"""TensorFlow 1 checkpoints (Google's BERT releases, google-research/bert, NVIDIA's TF BERT), read
without TensorFlow.

`tf.compat.v1.train.Saver` writes a "tensor bundle": `PREFIX.index` plus the raw tensor bytes
in `PREFIX.data-00000-of-0000N`. Written from these format descriptions:

- LevelDB's doc/table_format.md: the `.index` file is a LevelDB table (SSTable). A 48-byte
  footer holds two varint block handles (metaindex, index) and the magic number; the index
  block maps keys to data block handles; every block is a run of prefix-compressed entries
  (shared, non-shared, value length as varints, then key delta and value) followed by uint32
  restart offsets and their count, and is trailed by a compression-type byte and a masked CRC32C.
- TensorFlow's tensorflow/core/protobuf/tensor_bundle.proto and util/tensor_bundle/tensor_bundle.cc:
  the empty key holds a BundleHeaderProto (num_shards, endianness); every other key is a
  variable name mapped to a BundleEntryProto (dtype, shape, shard_id, offset, size, masked
  CRC32C of the bytes, slices of a partitioned variable).

Supported: uncompressed blocks, little-endian bundles, float32/float16/bfloat16/float64/int32/
int64 tensors, any number of data shards. bfloat16 is widened to float32 (exactly). Every block
CRC and every tensor CRC is verified. Anything else is one CheckpointError naming the file.

Google's variable names map to the canonical names of utils/checkpoints/__init__.py; dense
`kernel`s are stored [in, out] and are transposed, `output_weights` are already [out, in].
"""
import functools
import json
import mmap
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from modeling import BertConfig
from utils.checkpoints import CanonicalState, CheckpointError

INDEX_SUFFIX = ".index"
CONFIG_FILE = "bert_config.json"
CHECKPOINT_STATE_FILE = "checkpoint"  # tf.train's text proto naming the newest prefix

# ------------------------------------------------------------------ CRC32C (Castagnoli)

CRC_POLY = 0x82F63B78  # reflected Castagnoli polynomial
CRC_MASK_DELTA = 0xA282EAD8
MAX_LANES = 65536  # measured fastest for 100 MB tensors: large enough to amortize numpy calls
MIN_LANE_WORDS = 8
WORD = np.dtype("<u4")


def crc_byte_table():
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(CRC_POLY), table >> 1).astype(np.uint32)
    return table


BYTE_TABLE = crc_byte_table()
IDENTITY = np.uint32(1) << np.arange(32, dtype=np.uint32)
# BITS_OF_BYTE[v, i] = bit i of v, to expand a linear map's columns into a byte lookup table.
BITS_OF_BYTE = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.uint32)


def byte_tables(columns):
    """A GF(2)-linear map on 32-bit registers, given by its 32 column images -> 4 byte lookup tables."""
    return [np.bitwise_xor.reduce(BITS_OF_BYTE * columns[None, 8 * j:8 * j + 8], axis=1) for j in range(4)]


def apply_linear(tables, values):
    values = np.asarray(values, dtype=np.uint32)
    low = tables[0][values & 0xFF] ^ tables[1][(values >> 8) & 0xFF]
    return low ^ tables[2][(values >> 16) & 0xFF] ^ tables[3][values >> 24]


@functools.lru_cache(maxsize=None)
def zero_shift_columns(log2_bytes):
    """Columns of the map "feed 2**log2_bytes zero bytes into the CRC register" (by repeated squaring)."""
    if log2_bytes == 0:
        return BYTE_TABLE[IDENTITY & 0xFF] ^ (IDENTITY >> 8)
    half = zero_shift_columns(log2_bytes - 1)
    return apply_linear(byte_tables(half), half)


@functools.lru_cache(maxsize=None)
def zero_shift_tables(log2_bytes):
    return byte_tables(zero_shift_columns(log2_bytes))


def word_tables():
    """Feeding a little-endian word w into register c gives shift4(c ^ w): two 16-bit lookups."""
    shift4 = zero_shift_tables(2)
    halves = np.arange(65536, dtype=np.uint32)
    return apply_linear(shift4, halves), apply_linear(shift4, halves << 16)


LOW_WORD_TABLE, HIGH_WORD_TABLE = word_tables()
# Python-int copies for the serial loops over short tails, where numpy calls cost more than they save.
LOW_WORD_LIST, HIGH_WORD_LIST, BYTE_LIST = LOW_WORD_TABLE.tolist(), HIGH_WORD_TABLE.tolist(), BYTE_TABLE.tolist()


def crc_words_serial(register, words):
    low, high = LOW_WORD_LIST, HIGH_WORD_LIST
    for word in words.tolist():
        register ^= word
        register = low[register & 0xFFFF] ^ high[register >> 16]
    return register


def crc_bytes_serial(register, data):
    table = BYTE_LIST
    for byte in data.tolist():
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc_words_in_lanes(register, lanes):
    """CRC register after feeding `lanes` ([n, 2**k] words, row-major) starting from `register`.

    The rows are run side by side, one numpy operation per column, each from a zero register
    (the first from `register`); as the CRC is linear, the rows' registers then combine
    pairwise: shift the left one by the right one's length and xor.
    """
    count, width = lanes.shape
    state = np.zeros(count, dtype=np.uint32)
    state[0] = register
    mixed = np.empty(count, dtype=np.uint32)
    low = np.empty(count, dtype=np.uint32)
    for column in range(width):
        np.bitwise_xor(state, lanes[:, column], out=mixed)
        np.bitwise_and(mixed, 0xFFFF, out=low)
        np.take(LOW_WORD_TABLE, low, out=state)
        np.right_shift(mixed, 16, out=mixed)
        state ^= np.take(HIGH_WORD_TABLE, mixed)
    log2_span = (4 * width).bit_length() - 1
    while len(state) > 1:
        if len(state) % 2:  # a leading all-zero row from a zero register changes nothing
            state = np.concatenate([np.zeros(1, dtype=np.uint32), state])
        state = apply_linear(zero_shift_tables(log2_span), state[0::2]) ^ state[1::2]
        log2_span += 1
    return int(state[0])


def crc32c(data):
    """CRC32C of a bytes-like object or a numpy array's bytes."""
    data = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    word_count = len(data) // 4
    words = data[:4 * word_count].view(WORD)
    register, done = 0xFFFFFFFF, 0
    if word_count >= 2 * MIN_LANE_WORDS:
        # At most MAX_LANES rows of a power-of-two width, so that the combining shifts are cached across tensors.
        width = max(MIN_LANE_WORDS, 1 << (-(-word_count // MAX_LANES) - 1).bit_length())
        done = word_count // width * width
        register = crc_words_in_lanes(register, words[:done].reshape(-1, width))
    register = crc_words_serial(register, words[done:])
    return crc_bytes_serial(register, data[4 * word_count:]) ^ 0xFFFFFFFF


def unmask_crc(masked):
    """LevelDB/TF store rotate_right(crc, 15) + delta, so that CRCs of CRC-bearing data stay distinct."""
    rotated = (masked - CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------ varints and protobuf fields


class FormatError(Exception):
    """Malformed bytes; read_bundle_index adds the file name."""


def read_varint(buf, pos):
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise FormatError("malformed varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def proto_fields(buf):
    """A serialized protobuf message -> [(field number, value)]: ints for varint/fixed, bytes for length-delimited."""
    pos, found = 0, []
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if pos + width > len(buf):
                raise FormatError("truncated protobuf field")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise FormatError("truncated protobuf field")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise FormatError(f"unsupported protobuf wire type {wire_type}")
        found.append((number, value))
    return found


# ------------------------------------------------------------------ LevelDB table (the .index file)

FOOTER_SIZE = 48
TABLE_MAGIC = 0xDB4775248B80FB57
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC32C
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1


def read_block_handle(buf, pos=0):
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def read_block(table, handle):
    """The checked, uncompressed contents of one block of `table` (the file's bytes)."""
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table) - FOOTER_SIZE:
        raise FormatError(f"truncated: block at offset {offset} runs past the end of the file")
    compression = table[end]
    stored_crc = int.from_bytes(table[end + 1:end + BLOCK_TRAILER_SIZE], "little")
    if crc32c(table[offset:end + 1]) != unmask_crc(stored_crc):  # the CRC covers the type byte too
        raise FormatError(f"CRC mismatch in the block at offset {offset} (corrupt file)")
    if compression == SNAPPY_COMPRESSION:
        raise FormatError(f"block at offset {offset} is snappy-compressed, which is not supported")
    if compression != NO_COMPRESSION:
        raise FormatError(f"block at offset {offset} has unknown compression type {compression}")
    return table[offset:end]


def block_entries(block):
    """[(key, value)] of a block, undoing the prefix compression of keys."""
    if len(block) < 4:
        raise FormatError("block too short for its restart count")
    restart_count = int.from_bytes(block[-4:], "little")
    entries_end = len(block) - 4 * (restart_count + 1)
    if entries_end < 0:
        raise FormatError("block restart array larger than the block")
    pos, key, entries = 0, b"", []
    while pos < entries_end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_length, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_length > entries_end:
            raise FormatError("block entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_length]))
        pos += value_length
    return entries


def read_table(table):
    """All (key, value) pairs of a LevelDB table, in key order, from every data block."""
    if len(table) < FOOTER_SIZE:
        raise FormatError(f"truncated: {len(table)} bytes, shorter than the {FOOTER_SIZE}-byte table footer")
    footer = table[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise FormatError("no LevelDB table magic number at the end (truncated, or not a checkpoint index)")
    _, pos = read_block_handle(footer)  # the metaindex block: TF writes no filters, nothing to read
    index_handle, _ = read_block_handle(footer, pos)
    entries = []
    for _, handle_bytes in block_entries(read_block(table, index_handle)):
        entries.extend(block_entries(read_block(table, read_block_handle(handle_bytes)[0])))
    keys = [key for key, _ in entries]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise FormatError("keys are not in strictly increasing order (corrupt file)")
    return entries


# ------------------------------------------------------------------ tensor bundle

# TF DataType enum (types.proto) -> numpy dtype as stored; bfloat16 is read as uint16 and widened.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_BFLOAT16, DT_HALF = 1, 2, 3, 9, 14, 19
STORED_DTYPES = {
    DT_FLOAT: np.dtype("<f4"),
    DT_DOUBLE: np.dtype("<f8"),
    DT_INT32: np.dtype("<i4"),
    DT_INT64: np.dtype("<i8"),
    DT_BFLOAT16: np.dtype("<u2"),
    DT_HALF: np.dtype("<f2"),
}
DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
    9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16", 20: "resource",
    21: "variant", 22: "uint32", 23: "uint64",
}
BIG_ENDIAN = 1


@dataclass
class BundleEntry:
    name: str
    dtype: int
    shape: tuple
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    slice_count: int


def parse_shape(buf):
    """TensorShapeProto: repeated Dim dim = 2 (Dim: int64 size = 1); unknown_rank = 3."""
    dims = []
    for number, value in proto_fields(buf):
        if number == 2:
            size = dict(proto_fields(value)).get(1, 0)
            dims.append(size - (1 << 64) if size >= 1 << 63 else size)
        elif number == 3 and value:
            raise FormatError("a tensor of unknown rank")
    return tuple(dims)


def parse_entry(name, buf):
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6 (fixed32), slices 7."""
    found = proto_fields(buf)
    scalars = {number: value for number, value in found if number != 7}
    return BundleEntry(
        name=name,
        dtype=scalars.get(1, 0),
        shape=parse_shape(scalars.get(2, b"")),
        shard_id=scalars.get(3, 0),
        offset=scalars.get(4, 0),
        size=scalars.get(5, 0),
        crc32c=scalars.get(6, 0),
        slice_count=sum(1 for number, _ in found if number == 7),
    )


def read_bundle_index(prefix):
    """PREFIX.index -> (num_shards, {variable name: BundleEntry})."""
    path = prefix + INDEX_SUFFIX
    try:
        with open(path, "rb") as f:
            table = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint index: {e.strerror}") from e
    try:
        entries = read_table(table)
        if not entries or entries[0][0] != b"":
            raise FormatError("no bundle header (the empty key); not a TensorFlow checkpoint index")
        header = dict(proto_fields(entries[0][1]))  # BundleHeaderProto: num_shards 1, endianness 2
        if header.get(2, 0) == BIG_ENDIAN:
            raise FormatError("the bundle was written big-endian, which is not supported")
        variables = {}
        for key, value in entries[1:]:
            entry = parse_entry(key.decode("utf-8", errors="replace"), value)
            if entry.slice_count:
                raise FormatError(f"{entry.name} is a partitioned variable ({entry.slice_count} slices), "
                                  "which is not supported")
            variables[entry.name] = entry
    except FormatError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return header.get(1, 1), variables


def shard_path(prefix, shard_id, num_shards):
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def widen_bfloat16(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def check_entry(index_path, entry, num_shards):
    """The index's own promises about one variable: a dtype we read, a size that fits its shape, a listed shard."""
    if entry.dtype not in STORED_DTYPES:
        raise CheckpointError(f"{index_path}: {entry.name} has dtype {DTYPE_NAMES.get(entry.dtype, entry.dtype)}, "
                              f"not supported")
    expected = int(np.prod(entry.shape, dtype=np.int64)) * STORED_DTYPES[entry.dtype].itemsize
    if entry.size != expected:
        raise CheckpointError(f"{index_path}: {entry.name} holds {entry.size} bytes, its shape {list(entry.shape)} "
                              f"needs {expected}")
    if entry.shard_id >= num_shards:
        raise CheckpointError(f"{index_path}: {entry.name} is in shard {entry.shard_id}, the header lists {num_shards}")


def read_tensor(shard, path, entry):
    """One checked entry's array from its mapped data shard, CRC-verified."""
    dtype = STORED_DTYPES[entry.dtype]
    if entry.offset + entry.size > len(shard):
        raise CheckpointError(f"{path}: truncated: {entry.name} needs bytes {entry.offset}..{entry.offset + entry.size}"
                              f", the file has {len(shard)}")
    array = np.frombuffer(shard, dtype=dtype, count=entry.size // dtype.itemsize, offset=entry.offset).copy()
    if crc32c(array) != unmask_crc(entry.crc32c):
        raise CheckpointError(f"{path}: CRC mismatch in {entry.name} (corrupt file)")
    array = array.reshape(entry.shape)
    return widen_bfloat16(array) if entry.dtype == DT_BFLOAT16 else array


def map_shard(stack, path):
    """The data file as a read-only buffer (empty bytes for an empty file, which mmap refuses)."""
    try:
        f = stack.enter_context(open(path, "rb"))
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint data: {e.strerror}") from e


def read_bundle(prefix, names=None):
    """{variable name: numpy array} of a TF1 checkpoint; only `names` (an iterable) if given."""
    num_shards, variables = read_bundle_index(prefix)
    wanted = sorted(variables if names is None else names)
    for name in wanted:
        check_entry(prefix + INDEX_SUFFIX, variables[name], num_shards)
    paths = [shard_path(prefix, shard, num_shards) for shard in range(num_shards)]
    for path in paths:
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: missing data shard (the index lists {num_shards})")
    arrays = {}
    with ExitStack() as stack:
        shards = {}
        for name in wanted:
            entry = variables[name]
            path = paths[entry.shard_id]
            if path not in shards:
                shards[path] = map_shard(stack, path)
            arrays[name] = read_tensor(shards[path], path, entry)
    return arrays


# ------------------------------------------------------------------ Google's BERT names

OPTIMIZER_SLOTS = ("adam_m", "adam_v", "Adam", "Adam_1", "Momentum", "LAMB", "LAMB_1")
OPTIMIZER_VARIABLES = ("global_step", "beta1_power", "beta2_power", "current_loss_scale", "good_steps")
# Variables named off the generic rule (Google name -> canonical name).
SPECIAL_NAMES = {
    "bert/embeddings/word_embeddings": "bert.embeddings.word_embeddings.weight",
    "bert/embeddings/position_embeddings": "bert.embeddings.position_embeddings.weight",
    "bert/embeddings/token_type_embeddings": "bert.embeddings.token_type_embeddings.weight",
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    "cls/squad/output_weights": "qa_outputs.weight",
    "cls/squad/output_bias": "qa_outputs.bias",
}
GENERIC_ROOTS = ("bert/", "cls/predictions/transform/")
LEAF_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}


def is_optimizer_variable(name):
    return name in OPTIMIZER_VARIABLES or name.rsplit("/", 1)[-1] in OPTIMIZER_SLOTS


def canonical_from_google(name):
    """`bert/encoder/layer_3/attention/self/query/kernel` -> `bert.encoder.layer.3.attention.self.query.weight`;
    None for a name outside Google's BERT layout."""
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    scope, _, leaf = name.rpartition("/")
    if not name.startswith(GENERIC_ROOTS) or leaf not in LEAF_NAMES:
        return None
    return re.sub(r"\blayer_(\d+)\b", r"layer.\1", scope).replace("/", ".") + "." + LEAF_NAMES[leaf]


def to_our_layout(google_name, array):
    return array.T if google_name.endswith("/kernel") else array


# ------------------------------------------------------------------ checkpoint paths and config


def read_checkpoint_state(directory):
    """The prefix named by tf.train's `checkpoint` file (model_checkpoint_path), or None."""
    path = os.path.join(directory, CHECKPOINT_STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"', f.read(), re.MULTILINE)
    if not match:
        return None
    return os.path.join(directory, match.group(1))  # join keeps an absolute path as is


def find_tf_prefix(path):
    """A Google model directory, a tf.train output directory, a checkpoint prefix or its .index
    -> the checkpoint prefix; None when path holds no TF checkpoint."""
    if path.endswith(INDEX_SUFFIX) and os.path.isfile(path):
        return path[:-len(INDEX_SUFFIX)]
    if os.path.isfile(path + INDEX_SUFFIX):
        return path
    if not os.path.isdir(path):
        return None
    named = read_checkpoint_state(path)
    if named and os.path.isfile(named + INDEX_SUFFIX):
        return named
    prefixes = sorted(entry[:-len(INDEX_SUFFIX)] for entry in os.listdir(path) if entry.endswith(INDEX_SUFFIX))
    if len(prefixes) > 1:
        raise CheckpointError(f"{path}: holds several TF checkpoints ({', '.join(prefixes)}): "
                              f"pass one prefix, e.g. {os.path.join(path, prefixes[-1])}")
    return os.path.join(path, prefixes[0]) if prefixes else None


def resolve_tf_prefix(path):
    prefix = find_tf_prefix(path)
    if prefix is None:
        raise CheckpointError(f"{path}: no TensorFlow checkpoint (no *.index file, or no PREFIX.index for a prefix)")
    return prefix


def read_tf_config(path):
    """bert_config.json next to the checkpoint -> BertConfig; None when there is none."""
    config_path = os.path.join(os.path.dirname(resolve_tf_prefix(path)), CONFIG_FILE)
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path) as f:
            return BertConfig.from_dict(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{config_path}: cannot read BertConfig: {e}") from e


def read_tf(path):
    """A TF1 BERT checkpoint -> (BertConfig or None, CanonicalState).

    Optimizer variables are not read and are listed in `skipped`; variables outside Google's
    BERT layout are not read and are listed, by their TF names, in `unmapped`.
    """
    prefix = resolve_tf_prefix(path)
    _, variables = read_bundle_index(prefix)
    skipped = sorted(name for name in variables if is_optimizer_variable(name))
    mapped = {name: canonical_from_google(name) for name in variables if name not in skipped}
    unmapped = sorted(name for name, canonical in mapped.items() if canonical is None)
    arrays = read_bundle(prefix, [name for name, canonical in mapped.items() if canonical])
    state = CanonicalState(skipped=skipped, unmapped=unmapped)
    for name, array in arrays.items():
        state[mapped[name]] = to_our_layout(name, array)
    return read_tf_config(path), state
