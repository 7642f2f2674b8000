"""create_pretraining_data on a slice of the shared corpus: masking and NSP statistics, record
structure against the source text, determinism, the project's loader and OneFlow's reader."""
import argparse
import itertools
import os

import numpy as np
import pytest

import dataset
from utils.data import create_pretraining_data as cpd
from utils.data import tokenization
from utils.data.instances import TRAIN, InstanceOptions, Vocab, truncate_longer_at_random_end
from utils.data.normalize import keep_unk_token, normalize_document
from utils.data.sentences import ReadStats, iter_text_documents, split_document
from utils.paths import shared_data_path

CORPUS = shared_data_path("corpus", "pretrain_corpus_sentences.txt.gz")
VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")
SEQ, MAX_PRED = 128, 20
FIRST_ARTICLE = 113  # the corpus's WikiText articles start here; many short documents
NGRAM = 4

needs_data = pytest.mark.skipif(not (os.path.isfile(CORPUS) and os.path.isfile(VOCAB)),
                                reason="shared corpus/vocab not found (set BERT_SHARED_DATA)")


def corpus_documents(skip, count):
    stats = ReadStats()
    return list(itertools.islice(iter_text_documents([CORPUS], stats), skip, skip + count))


def load_all(directory):
    index = dataset.RecordIndex(directory, dataset.pretraining_schema(SEQ, MAX_PRED))
    loader = dataset.RecordLoader(index, step_size=len(index), shuffle=False, pad_last=True)
    batch = loader.load_batch(0)
    assert batch["row_valid"].all()
    return batch


def part_bytes(directory):
    names = sorted(n for n in os.listdir(directory) if n.startswith("part-"))
    return {n: open(os.path.join(directory, n), "rb").read() for n in names}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    if not (os.path.isfile(CORPUS) and os.path.isfile(VOCAB)):
        pytest.skip("shared corpus/vocab not found (set BERT_SHARED_DATA)")
    documents = corpus_documents(FIRST_ARTICLE, 60)
    out = str(tmp_path_factory.mktemp("generated"))
    instances = InstanceOptions(seq_length=SEQ, max_predictions_per_seq=MAX_PRED, dupe_factor=2, random_seed=7)
    options = cpd.PipelineOptions(out, VOCAB, instances, num_workers=1, num_parts=3, val_fraction=0.1,
                                  shard_chars=200_000)
    summary = cpd.write_pretraining_data(cpd.Corpus(iter(documents)), options)
    return documents, out, summary, load_all(out)


@pytest.fixture(scope="module")
def vocab():
    return Vocab.load(VOCAB)


def original_ids(batch):
    """input_ids with the masked positions restored from masked_lm_ids."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_lm_weights"] > 0)
    ids[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][rows, slots]
    return ids


def test_summary_matches_records(generated):
    _, out, summary, batch = generated
    assert summary["train"]["instances"] == len(batch["input_ids"]) == sum(summary["train"]["parts"])
    assert len(summary["train"]["parts"]) == 3 and max(summary["train"]["parts"]) - min(summary["train"]["parts"]) <= 1
    assert summary["train"]["tokens"] == int(batch["input_mask"].sum())
    assert summary["val"]["instances"] == len(dataset.RecordIndex(os.path.join(out, "val"),
                                                                  dataset.pretraining_schema(SEQ, MAX_PRED)))
    assert summary["train"]["instances"] > 3000 and summary["val"]["instances"] > 50


def test_masked_fraction_replacements_and_nsp(generated, vocab):
    _, _, _, batch = generated
    weights = batch["masked_lm_weights"] > 0
    lengths = batch["input_mask"].sum(axis=1)
    assert abs(weights.sum() / lengths.sum() - 0.15) < 0.01
    expected = np.minimum(MAX_PRED, np.maximum(1, np.round(lengths * 0.15))).astype(int)
    assert np.array_equal(weights.sum(axis=1), expected)
    rows, slots = np.nonzero(weights)
    now = batch["input_ids"][rows, batch["masked_lm_positions"][rows, slots]]
    before = batch["masked_lm_ids"][rows, slots]
    masked = now == vocab.mask_id
    kept = ~masked & (now == before)
    replaced = ~masked & ~kept
    assert abs(masked.mean() - 0.8) < 0.02
    assert abs(kept.mean() - 0.1) < 0.02
    assert abs(replaced.mean() - 0.1) < 0.02
    assert abs(batch["next_sentence_labels"].mean() - 0.5) < 0.02


def test_masked_positions_and_segments(generated, vocab):
    _, _, _, batch = generated
    ids = original_ids(batch)
    lengths = batch["input_mask"].sum(axis=1)
    position = np.arange(SEQ)
    assert np.array_equal(batch["input_mask"], (position < lengths[:, None]).astype(np.int32))
    for row in range(len(ids)):
        length = lengths[row]
        seps = np.flatnonzero(ids[row] == vocab.sep_id)
        assert ids[row, 0] == vocab.cls_id and len(seps) == 2 and seps[1] == length - 1
        assert np.all(ids[row, length:] == 0)
        expected_segments = ((position > seps[0]) & (position < length)).astype(np.int32)
        assert np.array_equal(batch["segment_ids"][row], expected_segments)
        count = int(batch["masked_lm_weights"][row].sum())
        masked = batch["masked_lm_positions"][row, :count]
        assert np.all(np.diff(masked) > 0), "positions ascending and distinct"
        assert np.all((masked > 0) & (masked < length) & (masked != seps[0]) & (masked != seps[1]))
        assert np.all(batch["masked_lm_positions"][row, count:] == 0)
        assert np.all(batch["masked_lm_ids"][row, count:] == 0)
        assert np.all(ids[row, masked] != vocab.sep_id) and np.all(ids[row, masked] != vocab.cls_id)


class SourceIndex:
    """Where token sequences occur in the tokenized source documents: candidates come from a sorted array
    of every 4-gram (4 ids < 2**15 packed into one int64) and are checked against the concatenated text."""

    def __init__(self, documents):
        tokenizer = keep_unk_token(tokenization.load_wordpiece_tokenizer(VOCAB, True))
        documents = [normalize_document(doc)[0] for doc in documents]  # WikiText normalization is on by default
        docs = [np.array([i for e in tokenizer.encode_batch(doc, add_special_tokens=False) for i in e.ids],
                         dtype=np.int64) for doc in documents]
        self.starts = np.cumsum([0] + [len(d) + 1 for d in docs])  # one -1 between documents
        self.flat = np.concatenate([np.append(d, -1) for d in docs] + [np.full(SEQ, -1)])
        ends = len(self.flat) - SEQ - NGRAM + 1
        keys = self.key(np.stack([self.flat[k:ends + k] for k in range(NGRAM)]))
        valid = np.all(np.stack([self.flat[k:ends + k] for k in range(NGRAM)]) >= 0, axis=0)
        order = np.argsort(keys, kind="stable")
        order = order[valid[order]]
        self.keys, self.positions = keys[order], order

    @staticmethod
    def key(columns):
        return (columns[0] << 45) | (columns[1] << 30) | (columns[2] << 15) | columns[3]

    def find(self, tokens):
        """(document, start) pairs where `tokens` occurs contiguously."""
        k = self.key(np.asarray(tokens[:NGRAM], dtype=np.int64))
        candidates = self.positions[np.searchsorted(self.keys, k, "left"):np.searchsorted(self.keys, k, "right")]
        window = self.flat[candidates[:, None] + np.arange(len(tokens))]
        found = candidates[np.all(window == tokens, axis=1)]
        docs = np.searchsorted(self.starts, found, "right") - 1
        return list(zip(docs.tolist(), (found - self.starts[docs]).tolist()))


@pytest.fixture(scope="module")
def source(generated):
    return SourceIndex(generated[0])


def test_segments_are_source_text_and_nsp_follows_the_label(generated, source, vocab):
    _, _, _, batch = generated
    ids = original_ids(batch)
    lengths = batch["input_mask"].sum(axis=1)
    checked = 0
    for row in range(len(ids)):
        seps = np.flatnonzero(ids[row] == vocab.sep_id)
        a, b = ids[row, 1:seps[0]], ids[row, seps[0] + 1:lengths[row] - 1]
        if len(a) < NGRAM or len(b) < NGRAM:
            continue
        a_hits, b_hits = source.find(a), source.find(b)
        assert a_hits and b_hits, f"row {row}: segment is not contiguous source text (wrong masked_lm_ids?)"
        if batch["next_sentence_labels"][row, 0] == 0:
            assert any(da == db and pb >= pa + len(a) for da, pa in a_hits for db, pb in b_hits), \
                f"row {row}: label 0 but B does not follow A in the same document"
        else:
            assert any(da != db for da, _ in a_hits for db, _ in b_hits), \
                f"row {row}: label 1 but B comes from A's document"
        checked += 1
    assert checked > 0.9 * len(ids)


def test_validation_documents_are_held_out(generated, source, vocab):
    _, out, _, train = generated
    val = load_all(os.path.join(out, "val"))

    def used_documents(batch):
        ids = original_ids(batch)
        used = set()
        for row in range(len(ids)):
            seps = np.flatnonzero(ids[row] == vocab.sep_id)
            a = ids[row, 1:seps[0]]
            hits = source.find(a) if len(a) >= 12 else []
            if len({d for d, _ in hits}) == 1:
                used.add(hits[0][0])
        return used

    assert used_documents(train).isdisjoint(used_documents(val))


@needs_data  # before the vocab fixture loads the shared vocab
def test_whole_word_masking_masks_whole_words(tmp_path, vocab):
    instances = InstanceOptions(seq_length=SEQ, max_predictions_per_seq=MAX_PRED, dupe_factor=1,
                                do_whole_word_mask=True)
    summary = cpd.write_pretraining_data(cpd.Corpus(iter(corpus_documents(FIRST_ARTICLE, 15))),
                                         cpd.PipelineOptions(str(tmp_path), VOCAB, instances))
    batch = load_all(str(tmp_path))
    ids = original_ids(batch)
    partial_words = 0
    boundary = (vocab.cls_id, vocab.sep_id)  # a word cut by truncation starts right after one of these
    for row in range(len(ids)):
        count = int(batch["masked_lm_weights"][row].sum())
        masked = set(batch["masked_lm_positions"][row, :count].tolist())
        for p in masked:
            if vocab.is_continuation[ids[row, p]] and p - 1 not in masked and ids[row, p - 1] not in boundary:
                partial_words += 1
            if p + 1 < SEQ and vocab.is_continuation[ids[row, p + 1]] and p + 1 not in masked:
                partial_words += 1
    assert partial_words == 0
    assert abs(summary["train"]["masked_fraction"] - 0.15) < 0.01


def run_small(directory, num_workers, seed=3):
    instances = InstanceOptions(seq_length=SEQ, max_predictions_per_seq=MAX_PRED, dupe_factor=2, random_seed=seed)
    options = cpd.PipelineOptions(directory, VOCAB, instances, num_workers=num_workers, num_parts=2, val_fraction=0.2,
                                  shard_chars=30_000)
    return cpd.write_pretraining_data(cpd.Corpus(iter(corpus_documents(FIRST_ARTICLE, 20))), options)


@needs_data
def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    run_small(str(tmp_path / "a"), num_workers=1)
    run_small(str(tmp_path / "b"), num_workers=2)
    run_small(str(tmp_path / "c"), num_workers=1, seed=4)
    a, b, c = (part_bytes(str(tmp_path / x)) for x in "abc")
    assert a == b and part_bytes(str(tmp_path / "a" / "val")) == part_bytes(str(tmp_path / "b" / "val"))
    assert a.keys() == c.keys() and a != c


def test_oneflow_reader_reads_the_records(generated):
    import oneflow as flow

    _, out, summary, batch = generated
    reader = flow.nn.OFRecordReader(out, batch_size=16, data_part_num=len(summary["train"]["parts"]),
                                    part_name_prefix="part-", random_shuffle=False, shuffle_after_epoch=False)
    record = reader()
    index = dataset.RecordIndex(out, dataset.pretraining_schema(SEQ, MAX_PRED))
    expected = dataset.RecordLoader(index, step_size=16, shuffle=False).load_batch(0)
    for name, field in dataset.pretraining_schema(SEQ, MAX_PRED).items():
        dtype = flow.float32 if field.dtype == np.float32 else flow.int32
        values = flow.nn.OFRecordRawDecoder(name, list(field.shape), dtype)(record).numpy()
        assert np.array_equal(values, expected[name]), name


def test_flags_become_one_options_object():
    """add_bool spellings, and the --no-X ones this tool took before, give the same PipelineOptions."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir")
    cpd.add_options_arguments(parser, vocab_default=VOCAB)

    def options(*argv):
        return cpd.pipeline_options_from_args(parser.parse_args(["--output_dir", "out", *argv]))

    assert options("--no-normalize_wikitext", "--no-do_lower_case") == options("--normalize_wikitext=no",
                                                                                "--do_lower_case", "False")
    assert options("--do_whole_word_mask", "--overwrite=yes", "--max_seq_length", "64") == cpd.PipelineOptions(
        "out", VOCAB, InstanceOptions(seq_length=64, do_whole_word_mask=True), num_workers=os.cpu_count(),
        num_parts=8, overwrite=True)


def test_shards_are_read_lazily():
    endless = itertools.repeat(["one short sentence here ."])
    split, index, documents = next(cpd.shard_tasks(endless, random_seed=1, val_fraction=0.0, shard_chars=1000))
    assert (split, index) == (TRAIN, 0) and 30 <= len(documents) <= 45


def test_truncation_shortens_the_longer_segment_to_fit():
    import random

    rng = random.Random(0)
    for la, lb in [(200, 3), (3, 200), (70, 70), (10, 10)]:
        (a_lo, a_hi), (b_lo, b_hi) = truncate_longer_at_random_end((0, la), (1000, 1000 + lb), 125, rng)
        assert (a_hi - a_lo) + (b_hi - b_lo) == min(la + lb, 125)
        assert 0 <= a_lo <= a_hi <= la and 1000 <= b_lo <= b_hi <= 1000 + lb
        if la == 200:
            assert (b_lo, b_hi) == (1000, 1003), "only the longer side is cut"
    (a_lo, a_hi), _ = truncate_longer_at_random_end((0, 1000), (0, 1), 125, random.Random(1))
    assert 0 < a_lo and a_hi < 1000, "both ends of a long segment get cut"


def test_sentence_splitter():
    text = "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday! Did he stay?"
    assert split_document([text, "One more."]) == [
        "Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday!", "Did he stay?", "One more."]
