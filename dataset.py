"""OFRecord files in the seed's format: framing, schemas, validation, writer and a restorable reader.

A data directory holds part-0, part-1, ... Each record is an int64 little-endian length followed by a
serialized oneflow.core.record.OFRecord. OneFlow's own nn.OFRecordReader aborts the whole process on bad
input (exit 134), so every part is validated here first and errors name the file and the field.

The reader (`RecordLoader`) is Python-side so that its position is part of a checkpoint:
- the order is a seeded permutation of all records, one per epoch (a true shuffle, not a buffer);
- each optimizer step consumes `step_size` consecutive records of that order (all ranks, all micro-batches),
  and a rank decodes only its own rows of them (`data_parallel_rows`), so ranks read disjoint records and
  a 2-rank run sees exactly the records of a 1-rank run with twice the batch;
- `state_dict()` is the number of steps consumed, and decoding runs in a background thread.
This module knows nothing about the model.
"""
import contextlib
import mmap
import os
import queue
import re
import struct
import threading
from collections import namedtuple

import numpy as np
from oneflow.core.record import record_pb2

from utils.errors import DataError  # noqa: F401  (dataset.DataError is part of this module's interface)

LENGTH_BYTES = 8
PART_PREFIX = "part-"
PART_RE = re.compile(r"^part-(\d+)$")
_TMP_PART_RE = re.compile(r"^part-\d+\.tmp")
# Present while a writer of this project fills a data directory; removed only when every file is complete.
INCOMPLETE_MARKER = ".incomplete"

# Values must lie in [low, high): `bound` names the high limit in messages (e.g. "vocab_size 30522").
# A None limit is not checked; float fields are always checked to be finite.
Field = namedtuple("Field", ["shape", "dtype", "low", "high", "bound"], defaults=(None, None, ""))


def _ids(length, vocab_size):
    return Field((length,), np.int32, 0, vocab_size, f"vocab_size {vocab_size}")


def _text_fields(seq_length, vocab_size, type_vocab_size):
    return {
        "input_ids": _ids(seq_length, vocab_size),
        "input_mask": Field((seq_length,), np.int32, 0, 2, "a 0/1 mask"),
        "segment_ids": Field((seq_length,), np.int32, 0, type_vocab_size, f"type_vocab_size {type_vocab_size}"),
    }


def _position(seq_length):
    return Field((1,), np.int32, 0, seq_length, f"seq_length {seq_length}")


def pretraining_schema(seq_length, max_predictions_per_seq, vocab_size=None, type_vocab_size=None):
    """Without vocab_size/type_vocab_size those two limits are unchecked (reading data without a model)."""
    return {
        **_text_fields(seq_length, vocab_size, type_vocab_size),
        "masked_lm_positions": Field((max_predictions_per_seq,), np.int32, 0, seq_length, f"seq_length {seq_length}"),
        "masked_lm_ids": _ids(max_predictions_per_seq, vocab_size),
        "masked_lm_weights": Field((max_predictions_per_seq,), np.float32),
        "next_sentence_labels": Field((1,), np.int32, 0, 2, "labels 0/1"),
    }


def squad_train_schema(seq_length, vocab_size=None, type_vocab_size=None):
    return {
        **_text_fields(seq_length, vocab_size, type_vocab_size),
        "start_positions": _position(seq_length),
        "end_positions": _position(seq_length),
    }


def squad_eval_schema(seq_length, vocab_size=None, type_vocab_size=None):
    return {
        **_text_fields(seq_length, vocab_size, type_vocab_size),
        "unique_ids": Field((1,), np.int32),
    }


# ---------------------------------------------------------------- encoding


def encode_record(features):
    """dict name -> array-like of ints or floats -> serialized OFRecord bytes (framing not included)."""
    record = record_pb2.OFRecord()
    for name, values in features.items():
        array = np.asarray(values).reshape(-1)
        feature = record.feature[name]
        if array.dtype.kind == "f":
            feature.float_list.value.extend(array.astype(np.float32).tolist())
        elif array.dtype == np.int64:
            feature.int64_list.value.extend(array.tolist())
        else:
            feature.int32_list.value.extend(array.astype(np.int32).tolist())
    # Deterministic: protobuf otherwise writes map entries in a per-process hash order.
    return record.SerializeToString(deterministic=True)


def frame(payload):
    return struct.pack("<q", len(payload)) + payload


INT32_RANGE = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)


def decode_record(payload, schema, where):
    """Serialized OFRecord -> dict name -> np array of the schema's shape and dtype.

    Int fields must be stored as int lists (a float list would be truncated silently) within int32.
    """
    record = record_pb2.OFRecord()
    try:
        record.ParseFromString(payload)
    except Exception as e:
        raise DataError(f"{where}: record does not parse as an OFRecord ({e})") from None
    out = {}
    for name, field in schema.items():
        if name not in record.feature:
            raise DataError(f"{where}: field '{name}' is missing (has {sorted(record.feature)})")
        feature = record.feature[name]
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        expected = int(np.prod(field.shape))
        if len(values) != expected:
            raise DataError(f"{where}: field '{name}' has {len(values)} values, expected {expected}")
        if np.dtype(field.dtype).kind == "i":
            if kind not in ("int32_list", "int64_list"):
                raise DataError(f"{where}: field '{name}' is stored as {kind}, expected integers")
            wide = np.asarray(values, dtype=np.int64)
            if wide.size and (wide.min() < INT32_RANGE[0] or wide.max() > INT32_RANGE[1]):
                raise DataError(f"{where}: field '{name}' has a value outside int32")
            array = wide.astype(field.dtype)
        else:
            array = np.asarray(values, dtype=field.dtype)
        out[name] = array.reshape(field.shape)
    return out


def check_values(batch, schema, where_row):
    """Every field of a decoded batch within its schema limits; where_row(i) names row i's file and record.

    Vectorized, so it is cheap per batch. Values outside the embedding tables would abort OneFlow's gather
    (exit 134) or train silently on wrong rows, hence the check before any tensor is made.
    """
    for name, field in schema.items():
        values = batch[name].reshape(len(batch[name]), -1)
        if np.dtype(field.dtype).kind == "f":
            bad = ~np.isfinite(values)
            rule = "a non-finite value"
        else:
            low = -np.inf if field.low is None else field.low
            high = np.inf if field.high is None else field.high
            bad = (values < low) | (values >= high)
            rule = f"outside [{field.low}, {field.high}) ({field.bound})"
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise DataError(f"{where_row(int(row))}: field '{name}' has {values[row, column]}, {rule}")


class PartWriter:
    """Writes one part file atomically: records go to a temp name that is renamed on close()."""

    def __init__(self, path):
        self.path = path
        self.tmp_path = f"{path}.tmp{os.getpid()}"
        self.file = open(self.tmp_path, "wb")
        self.count = 0

    def write(self, features):
        self.file.write(frame(encode_record(features)))
        self.count += 1

    def write_payload(self, payload):
        self.file.write(frame(payload))
        self.count += 1

    def close(self):
        self.file.close()
        os.replace(self.tmp_path, self.path)

    def abort(self):
        self.file.close()
        os.remove(self.tmp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.abort() if exc_type else self.close()


@contextlib.contextmanager
def writing(directory):
    """Marks `directory` incomplete (INCOMPLETE_MARKER) while the body writes it; the marker goes when the body
    completes. A writer that is killed or fails leaves the marker, so readers refuse the directory."""
    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, INCOMPLETE_MARKER)
    with open(marker, "w") as f:
        f.write(f"written by process {os.getpid()}\n")
    yield
    os.remove(marker)


def check_complete(directory):
    """DataError when a writer did not finish `directory` (or its parent, for OUT_DIR/val): a leftover
    INCOMPLETE_MARKER or a temporary part file."""
    for folder in (directory, os.path.dirname(os.path.abspath(directory))):
        if os.path.exists(os.path.join(folder, INCOMPLETE_MARKER)):
            raise DataError(f"{folder}: incomplete data directory (its writer was interrupted or failed; "
                            f"{INCOMPLETE_MARKER} is still there): write it again")
    leftovers = sorted(name for name in os.listdir(directory) if _TMP_PART_RE.match(name))
    if leftovers:
        raise DataError(f"{directory}: incomplete data directory: temporary part file {leftovers[0]} was left "
                        "by an interrupted writer: write it again")


def write_parts(directory, records, num_parts):
    """Writes records round-robin into part-0 .. part-{num_parts-1}; returns the count per part."""
    with writing(directory):
        writers = [PartWriter(os.path.join(directory, f"{PART_PREFIX}{i}")) for i in range(num_parts)]
        try:
            for i, features in enumerate(records):
                writers[i % num_parts].write(features)
        except BaseException:
            for w in writers:
                w.abort()
            raise
        for w in writers:
            w.close()
    return [w.count for w in writers]


# ---------------------------------------------------------------- validation


def list_parts(directory):
    """Part files of a directory in numeric order; a DataError if there are none or numbers are missing."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: data directory does not exist")
    check_complete(directory)
    numbers = sorted(int(m.group(1)) for m in map(PART_RE.match, os.listdir(directory)) if m)
    if not numbers:
        raise DataError(f"{directory}: no {PART_PREFIX}N files")
    if numbers != list(range(len(numbers))):
        missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        raise DataError(f"{directory}: part files are not numbered contiguously from 0 (missing part-{missing[0]})")
    return [os.path.join(directory, f"{PART_PREFIX}{n}") for n in numbers]


def scan_offsets(path):
    """Byte offsets of each record's payload in a part file, checking the length framing end to end."""
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{path}: file is empty")
    offsets, lengths = [], []
    with open(path, "rb") as f:
        position = 0
        while position < size:
            header = f.read(LENGTH_BYTES)
            if len(header) < LENGTH_BYTES:
                raise DataError(f"{path}: truncated length header at byte {position}")
            (length,) = struct.unpack("<q", header)
            if length <= 0 or position + LENGTH_BYTES + length > size:
                raise DataError(
                    f"{path}: record {len(offsets)} at byte {position} claims {length} bytes but the file "
                    f"has {size - position - LENGTH_BYTES} left (truncated or not an OFRecord file)"
                )
            offsets.append(position + LENGTH_BYTES)
            lengths.append(length)
            position += LENGTH_BYTES + length
            f.seek(position)
    return np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64)


class RecordIndex:
    """The validated contents of a data directory: where every record is."""

    def __init__(self, directory, schema, expected_parts=None, expected_records=None):
        self.directory = directory
        self.schema = schema
        self.parts = list_parts(directory)
        if expected_parts is not None and expected_parts != len(self.parts):
            raise DataError(
                f"{directory}: holds {len(self.parts)} part files but --train-data-part says {expected_parts}"
            )
        self.offsets, self.lengths, self.part_of = [], [], []
        for part_id, path in enumerate(self.parts):
            offsets, lengths = scan_offsets(path)
            with open(path, "rb") as f:
                f.seek(offsets[0])
                first = decode_record(f.read(int(lengths[0])), schema, f"{path} record 0")
            check_values({name: value[None] for name, value in first.items()}, schema, lambda _: f"{path} record 0")
            self.offsets.append(offsets)
            self.lengths.append(lengths)
            self.part_of.append(np.full(len(offsets), part_id, dtype=np.int32))
        self.record_in_part = np.concatenate([np.arange(len(o)) for o in self.offsets])
        self.part_of = np.concatenate(self.part_of)
        if expected_records is not None and expected_records != len(self):
            raise DataError(
                f"{directory}: holds {len(self)} records but --train-dataset-size says {expected_records}"
            )

    def __len__(self):
        return len(self.part_of)

    def locate(self, i):
        part, j = int(self.part_of[i]), int(self.record_in_part[i])
        return part, int(self.offsets[part][j]), int(self.lengths[part][j])

    def describe(self, i):
        """Record i as `FILE record J` (J counted within its part file)."""
        return f"{self.parts[int(self.part_of[i])]} record {int(self.record_in_part[i])}"


# ---------------------------------------------------------------- reading


def data_parallel_rows(batch_size, world_size, rank, micro_batches=1, contiguous=False):
    """Positions within a step's records that `rank` reads.

    A step is `micro_batches` micro-batches of `world_size * batch_size` records. Eager and DDP runs read
    rank r's slice of each micro-batch in turn (contiguous=False). A global graph is fed one split(0) tensor
    that it cuts into micro-batches itself, so rank r feeds the contiguous block r of the step (contiguous=True).
    """
    if contiguous:
        start = rank * batch_size * micro_batches
        return np.arange(start, start + batch_size * micro_batches)
    micro = world_size * batch_size
    return np.concatenate([np.arange(m * micro + rank * batch_size, m * micro + (rank + 1) * batch_size)
                           for m in range(micro_batches)])


class RecordLoader:
    """Seeded, restorable, rank-sharded batches of decoded records as numpy arrays.

    Yields dict name -> [len(rows), *shape] for this rank. The stream is endless across epochs;
    `steps_per_epoch` counts the steps of one epoch (a last partial step is dropped). With pad_last=True
    (evaluation) each iteration is one pass, the last step padded by repeating a record, and each batch
    carries "row_valid", a float32 [len(rows)] mask of real rows.
    """

    def __init__(self, index, step_size, rows=None, shuffle=True, seed=0, pad_last=False, prefetch=4):
        self.index = index
        self.step_size = step_size
        self.rows = np.arange(step_size) if rows is None else np.asarray(rows)
        self.shuffle = shuffle
        self.seed = seed
        self.pad_last = pad_last
        self.prefetch = prefetch
        if pad_last:
            self.steps_per_epoch = -(-len(index) // step_size)
        else:
            self.steps_per_epoch = len(index) // step_size
        if self.steps_per_epoch == 0:
            raise DataError(f"{index.directory}: {len(index)} records are fewer than one step of {step_size}")
        self.steps_consumed = 0
        self._maps = {}
        self._order_epoch, self._order = None, None
        self._queue, self._thread, self._stop = None, None, None

    def order(self, epoch):
        if self._order_epoch != epoch:
            n = len(self.index)
            self._order = np.random.RandomState(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)
            self._order_epoch = epoch
        return self._order

    def _mapped(self, part):
        if part not in self._maps:
            with open(self.index.parts[part], "rb") as f:
                self._maps[part] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[part]

    def record_ids(self, step):
        """Record ids of this rank's rows of `step`, and which of them are real (not padding)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        positions = within * self.step_size + self.rows
        valid = positions < len(order)
        return order[np.minimum(positions, len(order) - 1)], valid

    def load_batch(self, step):
        ids, valid = self.record_ids(step)
        rows = []
        for i in ids:
            part, offset, length = self.index.locate(int(i))
            payload = self._mapped(part)[offset:offset + length]
            rows.append(decode_record(payload, self.index.schema, self.index.describe(i)))
        batch = {name: np.stack([r[name] for r in rows]) for name in self.index.schema}
        check_values(batch, self.index.schema, lambda row: self.index.describe(ids[row]))
        if self.pad_last:
            batch["row_valid"] = valid.astype(np.float32)
        return batch

    def _produce(self, start):
        number = start
        end = self.steps_per_epoch if self.pad_last else None
        while not self._stop.is_set() and (end is None or number < end):
            try:
                item = self.load_batch(number)
            except Exception as e:  # handed to the consumer, which re-raises it
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            number += 1
        self._queue.put(None)

    def __iter__(self):
        self.close()
        if self.pad_last:  # evaluation: each iteration is one full pass
            self.steps_consumed = 0
        self._queue, self._stop = queue.Queue(maxsize=self.prefetch), threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self.steps_consumed,), daemon=True)
        self._thread.start()
        return self

    def __next__(self):
        item = self._queue.get()
        if item is None:
            raise StopIteration
        if isinstance(item, Exception):
            raise item
        self.steps_consumed += 1
        return item

    def close(self):
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.1)
                except queue.Empty:
                    pass
            self._thread = None

    def state_dict(self):
        return {"steps_consumed": self.steps_consumed, "seed": self.seed}

    def load_state_dict(self, state):
        if state["seed"] != self.seed:
            raise DataError(f"checkpoint data seed {state['seed']} differs from --seed {self.seed}")
        self.close()
        self.steps_consumed = int(state["steps_consumed"])
