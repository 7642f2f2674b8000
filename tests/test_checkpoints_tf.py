"""TF1 checkpoints read without TensorFlow, against fixtures TensorFlow itself wrote (tests/fixtures/tf_checkpoint)."""
import os
import shutil
import struct

import numpy as np
import oneflow as flow
import pytest
from safetensors.numpy import load_file

import run_squad
from modeling import BertForPreTraining, BertForQuestionAnswering
from test_run_squad import slice_squad
from utils.checkpoints import CheckpointError
from utils.checkpoints import tf as tfc
from utils.checkpoints.export_hf import main as export_main
from utils.checkpoints.lazy import read_lazy
from utils.checkpoints.loading import detect_format, load_pretrained, peek_config, read_checkpoint, resolve_format

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tf_checkpoint")
GOOGLE = os.path.join(FIXTURES, "google")
GOOGLE_PREFIX = os.path.join(GOOGLE, "bert_model.ckpt")
PREFIXES = {
    "google": GOOGLE_PREFIX,
    "dtypes": os.path.join(FIXTURES, "dtypes", "model.ckpt"),
    "sharded": os.path.join(FIXTURES, "sharded", "model.ckpt-7"),
}


def expected(fixture):
    with np.load(os.path.join(FIXTURES, fixture, "expected.npz")) as f:
        return {name: f[name] for name in f.files}


def reference_crc32c(data):
    """Bit-by-bit CRC32C, the textbook definition, to check the table-driven one."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    crc = reference_crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------ a LevelDB table writer, for hand-made indexes


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def encode_block(entries, restart_interval=16):
    body, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(body))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        body += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    return bytes(body) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def write_table(path, entries, block_size):
    """A LevelDB table of sorted (key, value) pairs, cutting a data block whenever it reaches block_size."""
    out, index = bytearray(), []

    def append_block(contents, compression=0):
        handle = varint(len(out)) + varint(len(contents))
        trailer = bytes([compression])
        out.extend(contents + trailer + struct.pack("<I", masked_crc(contents + trailer)))
        return handle

    pending = []
    for key, value in entries:
        pending.append((key, value))
        if len(encode_block(pending)) >= block_size:
            index.append((key, append_block(encode_block(pending))))
            pending = []
    if pending:
        index.append((pending[-1][0], append_block(encode_block(pending))))
    metaindex = append_block(encode_block([]))
    index_handle = append_block(encode_block(index, restart_interval=1))
    footer = (metaindex + index_handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    with open(path, "wb") as f:
        f.write(bytes(out) + footer)


def index_entries(prefix):
    with open(prefix + ".index", "rb") as f:
        return tfc.read_table(f.read())


def copy_fixture(name, tmp_path):
    shutil.copytree(os.path.dirname(PREFIXES[name]), tmp_path / name)
    return str(tmp_path / name / os.path.basename(PREFIXES[name]))


# ------------------------------------------------------------------ CRC32C and the reader


def test_crc32c_against_bitwise_definition():
    assert tfc.crc32c(b"123456789") == 0xE3069283  # the standard check value
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 20011, dtype=np.uint8).tobytes()
    for start, length in [(0, 0), (0, 1), (1, 3), (2, 4), (3, 63), (1, 64), (5, 1000), (0, 4096), (3, 20000)]:
        piece = data[start:start + length]
        assert tfc.crc32c(piece) == reference_crc32c(piece), (start, length)
    assert tfc.unmask_crc(masked_crc(data)) == reference_crc32c(data)


@pytest.mark.parametrize("fixture", sorted(PREFIXES))
def test_reader_returns_tensorflows_values(fixture):
    ours, theirs = tfc.read_bundle(PREFIXES[fixture]), expected(fixture)
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
        assert np.array_equal(ours[name], value), name


def test_fixture_dtypes_and_shards():
    ours = tfc.read_bundle(PREFIXES["dtypes"])
    assert {name: ours[name].dtype.name for name in ours} == {
        "bfloat16/kernel": "float32", "double/value": "float64", "empty/value": "float32", "half/kernel": "float16",
        "int32/value": "int32", "int64/value": "int64", "scalar/value": "float32"}
    num_shards, variables = tfc.read_bundle_index(PREFIXES["sharded"])
    assert num_shards == 2 and {entry.shard_id for entry in variables.values()} == {0, 1}


def data_block_handles(prefix):
    """[(offset, size)] of the index file's data blocks, from its index block."""
    with open(prefix + ".index", "rb") as f:
        table = f.read()
    footer = table[-tfc.FOOTER_SIZE:]
    _, pos = tfc.read_block_handle(footer)
    index_handle, _ = tfc.read_block_handle(footer, pos)
    return [tfc.read_block_handle(value)[0] for _, value in tfc.block_entries(tfc.read_block(table, index_handle))]


def test_multiblock_index_from_tensorflow():
    prefix = os.path.join(FIXTURES, "multiblock", "model.ckpt")
    assert len(data_block_handles(prefix)) == 2
    ours = tfc.read_bundle(prefix)
    with np.load(os.path.join(FIXTURES, "multiblock", "expected.npz")) as f:
        names, values = list(f["names"]), f["values"]
    assert sorted(ours) == names == sorted(names) and len(names) == 2300
    assert np.array_equal(np.array([ours[name] for name in names]), values)


def test_many_small_blocks_from_our_writer(tmp_path):
    entries = index_entries(GOOGLE_PREFIX)
    prefix = copy_fixture("google", tmp_path)
    write_table(prefix + ".index", entries, block_size=200)
    assert len(data_block_handles(prefix)) > 20
    assert index_entries(prefix) == entries
    ours = tfc.read_bundle(prefix)
    assert all(np.array_equal(ours[name], value) for name, value in expected("google").items())


# ------------------------------------------------------------------ bad files: one line naming the file


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def rewrite_index(prefix, edit):
    """Rewrites PREFIX.index with edit(list of (key, value)) applied, CRCs recomputed."""
    entries = edit(index_entries(prefix))
    write_table(prefix + ".index", entries, block_size=1 << 18)


def corrupt_index_byte(prefix):
    flip_byte(prefix + ".index", 20)
    return prefix + ".index", "CRC mismatch in the block at offset 0"


def snappy_block(prefix):
    offset, size = data_block_handles(prefix)[0]
    with open(prefix + ".index", "r+b") as f:
        f.seek(offset)
        contents = f.read(size)
        f.write(bytes([1]) + struct.pack("<I", masked_crc(contents + bytes([1]))))
    return prefix + ".index", "block at offset 0 is snappy-compressed, which is not supported"


def truncated_index(prefix):
    truncate(prefix + ".index", os.path.getsize(prefix + ".index") - 30)
    return prefix + ".index", "no LevelDB table magic number"


def tiny_index(prefix):
    truncate(prefix + ".index", 20)
    return prefix + ".index", "truncated: 20 bytes, shorter than the 48-byte table footer"


def big_endian(prefix):
    rewrite_index(prefix, lambda entries: [(b"", entries[0][1] + b"\x10\x01")] + entries[1:])  # endianness = BIG
    return prefix + ".index", "the bundle was written big-endian, which is not supported"


def partitioned(prefix):
    def add_slice(entries):
        return [(key, value + b"\x3a\x00" if key == b"bert/pooler/dense/bias" else value) for key, value in entries]
    rewrite_index(prefix, add_slice)
    return prefix + ".index", "bert/pooler/dense/bias is a partitioned variable \\(1 slices\\)"


def string_dtype(prefix):
    rewrite_index(prefix, lambda entries: [(key, value + b"\x08\x07" if key == b"bert/pooler/dense/bias" else value)
                                           for key, value in entries])
    return prefix + ".index", "bert/pooler/dense/bias has dtype string, not supported"


def truncated_data(prefix):
    data = prefix + ".data-00000-of-00001"
    truncate(data, os.path.getsize(data) // 2)
    return data, "truncated: .* needs bytes"


def corrupt_data(prefix):
    data = prefix + ".data-00000-of-00001"
    flip_byte(data, tfc.read_bundle_index(prefix)[1]["bert/pooler/dense/kernel"].offset + 5)
    return data, "CRC mismatch in bert/pooler/dense/kernel \\(corrupt file\\)$"


def missing_index(prefix):
    os.remove(prefix + ".index")
    return prefix + ".index", "cannot read checkpoint index"


BAD_GOOGLE_FILES = [corrupt_index_byte, snappy_block, truncated_index, tiny_index, big_endian, partitioned,
                    string_dtype, truncated_data, corrupt_data, missing_index]


@pytest.mark.parametrize("damage", BAD_GOOGLE_FILES, ids=lambda f: f.__name__)
def test_bad_file_gives_one_line_naming_it(damage, tmp_path):
    prefix = copy_fixture("google", tmp_path)
    path, reason = damage(prefix)
    with pytest.raises(CheckpointError, match=f"^{path}: {reason}") as error:
        tfc.read_bundle(prefix)
    assert "\n" not in str(error.value)


def test_missing_shard(tmp_path):
    prefix = copy_fixture("sharded", tmp_path)
    os.remove(prefix + ".data-00001-of-00002")
    with pytest.raises(CheckpointError, match=f"^{prefix}.data-00001-of-00002: missing data shard "
                                              r"\(the index lists 2\)$"):
        read_checkpoint(os.path.dirname(prefix))


# ------------------------------------------------------------------ Google's names, directories and loading


def test_google_names_map_to_canonical():
    assert tfc.canonical_from_google("bert/encoder/layer_11/attention/self/query/kernel") == \
        "bert.encoder.layer.11.attention.self.query.weight"
    assert tfc.canonical_from_google("bert/encoder/layer_0/output/LayerNorm/gamma") == \
        "bert.encoder.layer.0.output.LayerNorm.weight"
    assert tfc.canonical_from_google("cls/predictions/transform/LayerNorm/beta") == \
        "cls.predictions.transform.LayerNorm.bias"
    assert tfc.canonical_from_google("cls/squad/output_weights") == "qa_outputs.weight"
    assert tfc.canonical_from_google("cls/squad/output_bias") == "qa_outputs.bias"
    assert tfc.canonical_from_google("output_weights") is None  # run_classifier's head
    assert tfc.canonical_from_google("cls/predictions/other") is None


def test_read_tf_layouts_and_skipped_slots():
    config, state = tfc.read_tf(GOOGLE)
    theirs = expected("google")
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size, config.max_position_embeddings) == \
        (32, 2, 100, 64)
    assert len(state) == 46 and state.unmapped == []
    assert len(state.skipped) == 93 and "global_step" in state.skipped
    assert all(name.endswith(("/adam_m", "/adam_v")) for name in state.skipped if name != "global_step")
    query = "bert/encoder/layer_1/attention/self/query/kernel"
    assert np.array_equal(state["bert.encoder.layer.1.attention.self.query.weight"], theirs[query].T)
    assert np.array_equal(state["cls.seq_relationship.weight"], theirs["cls/seq_relationship/output_weights"])
    assert np.array_equal(state["cls.predictions.bias"], theirs["cls/predictions/output_bias"])


def test_unmapped_variables_are_reported_by_name():
    config, state = tfc.read_tf(PREFIXES["dtypes"])
    assert config is None and dict(state) == {}
    assert state.unmapped == sorted(expected("dtypes"))


def test_detection_and_paths(tmp_path):
    assert detect_format(GOOGLE) == detect_format(GOOGLE_PREFIX) == detect_format(GOOGLE_PREFIX + ".index") == "tf"
    assert resolve_format(GOOGLE_PREFIX, "tf") == "tf"
    assert peek_config(GOOGLE_PREFIX).hidden_size == 32
    assert tfc.find_tf_prefix(os.path.dirname(PREFIXES["sharded"])) == PREFIXES["sharded"]  # via its `checkpoint` file
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no TensorFlow checkpoint"):
        read_checkpoint(str(tmp_path / "empty"), "tf")
    with pytest.raises(CheckpointError, match="no TF checkpoint prefix"):
        resolve_format(str(tmp_path / "nope"), "tf")
    shutil.copytree(GOOGLE, tmp_path / "two")
    shutil.copyfile(GOOGLE_PREFIX + ".index", tmp_path / "two" / "other.ckpt.index")
    with pytest.raises(CheckpointError, match="holds several TF checkpoints \\(bert_model.ckpt, other.ckpt\\)"):
        detect_format(str(tmp_path / "two"))


def test_load_report_for_squad_from_google_checkpoint(tmp_path):
    """run_classifier's `output_weights` maps to nothing: it is reported under its own name, and never read."""
    prefix = copy_fixture("google", tmp_path)
    rewrite_index(prefix, lambda entries: sorted(entries + [(b"output_weights", b"\x08\x07")]))  # dtype string
    config, _ = tfc.read_tf(GOOGLE)
    report = load_pretrained(BertForQuestionAnswering(config), os.path.dirname(prefix))
    assert report.format == "tf" and report.missing == ["qa_outputs.bias", "qa_outputs.weight"]
    assert report.unused == ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "cls.predictions.bias",
                             "cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight",
                             "cls.predictions.transform.dense.bias", "cls.predictions.transform.dense.weight",
                             "cls.seq_relationship.bias", "cls.seq_relationship.weight", "output_weights"]
    assert "skipped optimizer variables (93): adam_m, adam_v, global_step" in report.summary()


def test_same_outputs_as_through_hf_export(tmp_path, capsys):
    export_main(["--model_load_dir", GOOGLE, "--output_dir", str(tmp_path / "hf")])
    assert "wrote BertForPreTraining" in capsys.readouterr().out
    assert open(tmp_path / "hf" / "vocab.txt").read() == open(os.path.join(GOOGLE, "vocab.txt")).read()
    exported, theirs = load_file(str(tmp_path / "hf" / "model.safetensors")), expected("google")
    for name, value in theirs.items():  # every weight bit for bit, heads included
        canonical = tfc.canonical_from_google(name)
        if canonical:
            assert np.array_equal(exported[canonical], value.T if name.endswith("/kernel") else value), name

    config, _ = tfc.read_tf(GOOGLE)
    models = []
    for path in (GOOGLE, str(tmp_path / "hf")):
        model = BertForPreTraining(config)
        assert load_pretrained(model, path).missing == []
        models.append(model.eval())
    rng = np.random.default_rng(1)
    inputs = [flow.tensor(rng.integers(0, 100, (2, 12)), dtype=flow.int64),
              flow.tensor(np.array([[1] * 12, [1] * 8 + [0] * 4]), dtype=flow.int64),
              flow.tensor(np.array([[0] * 6 + [1] * 6] * 2), dtype=flow.int64),
              flow.tensor(np.array([[1, 3], [2, 5]]), dtype=flow.int64)]
    with flow.no_grad():
        (mlm_a, nsp_a), (mlm_b, nsp_b) = (model(*inputs) for model in models)
    assert np.array_equal(mlm_a.numpy(), mlm_b.numpy()) and np.array_equal(nsp_a.numpy(), nsp_b.numpy())


def test_export_lazy_snapshot(tmp_path, capsys):
    """TF -> OneFlow lazy snapshot, the seed's snapshot_tf_for_graph_snapshot, without TensorFlow."""
    export_main(["--model_load_dir", GOOGLE_PREFIX, "--output_dir", str(tmp_path / "lazy"), "--output_format", "lazy"])
    assert "wrote BertForPreTraining" in capsys.readouterr().out
    _, ours = tfc.read_tf(GOOGLE)
    snapshot = read_lazy(str(tmp_path / "lazy"))
    assert sorted(snapshot) == sorted(ours) and all(np.array_equal(snapshot[name], ours[name]) for name in ours)


def test_run_squad_from_google_directory(tmp_path, capsys):
    """The Google directory as --model_load_dir: config from bert_config.json, vocab.txt picked up, QA head new."""
    path, question_ids = slice_squad("v1.1", str(tmp_path / "v1.1.json"), articles=1, paragraphs=1)
    summary = run_squad.main(["--do_train=True", "--do_eval=True", "--mode=eager", f"--model_load_dir={GOOGLE}",
                              "--seq_length=64", "--doc_stride=32", "--max_query_length=16",
                              f"--train_file={path}", f"--predict_file={path}", "--batch_size_per_device=8",
                              "--eval_batch_size_per_device=8", "--train_steps=2", f"--output_dir={tmp_path / 'out'}"])
    out = capsys.readouterr().out
    assert f"from tf checkpoint {GOOGLE}" in out and "newly initialized (2): qa_outputs.bias, qa_outputs.weight" in out
    assert summary["train_steps"] == 2 and summary["scores"]["exact_match"] >= 0
    assert len(question_ids) > 0 and os.path.isfile(tmp_path / "out" / "predictions.json")
