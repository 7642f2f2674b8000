"""OFRecord framing, validation errors, the reference reader round trip and the restorable loader."""
import os
import struct

import numpy as np
import oneflow as flow
import pytest

import dataset
from synthetic import synthetic_records

SEQ, PRED = 16, 3


def schema():
    return dataset.pretraining_schema(SEQ, PRED)


def records(n, seed=0):
    return list(synthetic_records(n, seq_length=SEQ, max_predictions=PRED, seed=seed))


def reference_read(directory, num_parts, batch_size):
    """OneFlow's own reader and raw decoder, the format's reference implementation."""
    reader = flow.nn.OFRecordReader(directory, batch_size=batch_size, data_part_num=num_parts,
                                    part_name_prefix="part-", random_shuffle=False, shuffle_after_epoch=False)
    raw = reader()
    out = {}
    for name, field in schema().items():
        dtype = flow.float32 if field.dtype == np.float32 else flow.int32
        out[name] = flow.nn.OFRecordRawDecoder(name, list(field.shape), dtype)(raw).numpy()
    return out


def test_writer_reference_reader_and_our_reader_agree(tmp_path):
    written = records(12)
    dataset.write_parts(str(tmp_path), written, num_parts=1)
    ref = reference_read(str(tmp_path), 1, 12)
    ours = dataset.RecordLoader(dataset.RecordIndex(str(tmp_path), schema()), 12, shuffle=False).load_batch(0)
    for name in schema():
        expected = np.stack([r[name] for r in written])
        np.testing.assert_array_equal(ref[name], expected)
        np.testing.assert_array_equal(ours[name], expected)
        assert ours[name].dtype == schema()[name].dtype


def test_our_reader_reads_records_encoded_by_protobuf_directly(tmp_path):
    """Records built with record_pb2 by hand (as other tools write them) decode with the same values."""
    from oneflow.core.record import record_pb2 as pb

    rec = records(1)[0]
    features = {}
    for name, value in rec.items():
        if value.dtype == np.float32:
            features[name] = pb.Feature(float_list=pb.FloatList(value=value.tolist()))
        else:
            features[name] = pb.Feature(int64_list=pb.Int64List(value=value.tolist()))
    payload = pb.OFRecord(feature=features).SerializeToString()
    (tmp_path / "part-0").write_bytes(struct.pack("<q", len(payload)) + payload)
    batch = dataset.RecordLoader(dataset.RecordIndex(str(tmp_path), schema()), 1, shuffle=False).load_batch(0)
    for name in schema():
        np.testing.assert_array_equal(batch[name][0], rec[name])


def write_dir(tmp_path, n=8, parts=2):
    dataset.write_parts(str(tmp_path), records(n), parts)
    return str(tmp_path)


def expect_error(match, *args, **kwargs):
    with pytest.raises(dataset.DataError, match=match):
        dataset.RecordIndex(*args, **kwargs)


def test_missing_directory(tmp_path):
    expect_error("does not exist", str(tmp_path / "nope"), schema())


def test_directory_without_parts(tmp_path):
    expect_error("no part-N files", str(tmp_path), schema())


def test_gap_in_part_numbers(tmp_path):
    d = write_dir(tmp_path, parts=3)
    os.remove(os.path.join(d, "part-1"))
    expect_error("missing part-1", d, schema())


def test_part_count_flag_disagrees(tmp_path):
    d = write_dir(tmp_path, parts=2)
    expect_error("holds 2 part files but --train-data-part says 4", d, schema(), expected_parts=4)


def test_record_count_flag_disagrees(tmp_path):
    d = write_dir(tmp_path, n=8)
    expect_error("holds 8 records but --train-dataset-size says 9", d, schema(), expected_records=9)
    assert len(dataset.RecordIndex(d, schema(), expected_records=8)) == 8


def test_truncated_record(tmp_path):
    d = write_dir(tmp_path)
    path = os.path.join(d, "part-1")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-5])
    expect_error(r"part-1: record 3 at byte \d+ claims \d+ bytes .*\(truncated", d, schema())


def test_empty_part(tmp_path):
    d = write_dir(tmp_path)
    open(os.path.join(d, "part-0"), "wb").close()
    expect_error("part-0: file is empty", d, schema())


def test_field_of_wrong_length(tmp_path):
    d = write_dir(tmp_path)
    expect_error(r"part-0 record 0: field 'input_ids' has 16 values, expected 32", d,
                 dataset.pretraining_schema(32, PRED))


def test_missing_field(tmp_path):
    d = write_dir(tmp_path)
    bad_schema = dict(schema(), start_positions=dataset.Field((1,), np.int32))
    expect_error("field 'start_positions' is missing", d, bad_schema)


def test_corrupt_bytes(tmp_path):
    payload = b"\xff" * 40
    (tmp_path / "part-0").write_bytes(struct.pack("<q", len(payload)) + payload)
    expect_error("part-0 record 0: record does not parse", str(tmp_path), schema())


def test_ranks_read_disjoint_records_that_make_up_the_single_process_batch(tmp_path):
    d = write_dir(tmp_path, n=40, parts=2)
    index = dataset.RecordIndex(d, schema())
    single = dataset.RecordLoader(index, 8, seed=3)
    shards = [dataset.RecordLoader(index, 8, dataset.data_parallel_rows(4, 2, r), seed=3) for r in range(2)]
    for step in range(7):  # crosses the epoch boundary (5 steps per epoch)
        ids, _ = single.record_ids(step)
        shard_ids = [s.record_ids(step)[0] for s in shards]
        assert not set(shard_ids[0]) & set(shard_ids[1])
        np.testing.assert_array_equal(np.concatenate(shard_ids), ids)


def test_each_epoch_is_a_permutation_of_all_records(tmp_path):
    d = write_dir(tmp_path, n=40, parts=3)
    loader = dataset.RecordLoader(dataset.RecordIndex(d, schema()), 8, seed=1)
    epoch0 = np.concatenate([loader.record_ids(s)[0] for s in range(5)])
    epoch1 = np.concatenate([loader.record_ids(s)[0] for s in range(5, 10)])
    assert sorted(epoch0) == list(range(40)) == sorted(epoch1)
    assert list(epoch0) != list(epoch1)


def test_loader_position_restores(tmp_path):
    d = write_dir(tmp_path, n=40)
    index = dataset.RecordIndex(d, schema())
    loader = dataset.RecordLoader(index, 4, seed=5)
    it = iter(loader)
    [next(it) for _ in range(3)]
    state = loader.state_dict()
    expected = next(it)["input_ids"]
    loader.close()
    restored = dataset.RecordLoader(index, 4, seed=5)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(next(iter(restored))["input_ids"], expected)
    restored.close()


def test_evaluation_pass_pads_the_last_batch_and_marks_it(tmp_path):
    d = write_dir(tmp_path, n=10)
    loader = dataset.RecordLoader(dataset.RecordIndex(d, schema()), 4, shuffle=False, pad_last=True)
    batches = list(loader)
    assert [b["row_valid"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert len(list(loader)) == 3  # a second pass starts over
