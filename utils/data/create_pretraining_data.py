"""Masked-LM + next-sentence pre-training records, the algorithm of Google BERT's create_pretraining_data.py.

Follows Devlin et al. 2018 (BERT, section 3.1 and appendix A.2) and Google's reference script:
- each document is cut into chunks of consecutive sentences that fill a target length of seq_length - 3
  tokens, or, with probability short_seq_prob, a random length in [2, seq_length - 3];
- a chunk is split at a random sentence boundary into A and B; with probability 0.5 B is replaced by
  text from a random position of another document (next_sentence_labels = 1, Google's convention)
  and the unused sentences are put back;
- the longer of A and B loses tokens from a randomly chosen end until the pair fits;
- num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob))) positions,
  never [CLS] or [SEP], are masked: 80% [MASK], 10% unchanged, 10% a random vocab token; with
  --do_whole_word_mask all WordPieces of a word are chosen together;
- the whole corpus is masked dupe_factor times with different masks (static masking).

Deliberate differences from the reference script, for scale:
- streaming: documents are read in shards of about --shard_chars characters; the random "next"
  segment is drawn from another document of the same shard, so memory holds a few shards, not the corpus;
- shards run on --num_workers processes; shard k of each split uses a seed derived from
  (--random_seed, split, k), so the bytes written depend on the seed and the input only, not on the
  worker count;
- the short target length is redrawn for every instance, not once per document (once per document
  makes every instance of a long book short in 10% of the passes);
- a chunk of a single sentence (a long sentence, or the last one of a document) is cut inside the
  sentence when B is the actual next text; the reference script always pairs it with a random B,
  which pushes the random share several points above the 50% the paper describes;
- validation documents are masked once (dupe_factor 1);
- masking is vectorized with numpy over a whole shard.

Records are written in the seed's OFRecord format (dataset.pretraining_schema) with dataset.PartWriter,
dealt round-robin over --num_parts files and then shuffled within each part. Documents drawn with
probability --val_fraction are held out and written to OUT_DIR/val/part-*. OUT_DIR/summary.json is
written last.

    python -m utils.data.create_pretraining_data --input_file CORPUS --output_dir OUT --vocab_file VOCAB
"""
import bisect
import contextlib
import enum
import functools
import itertools
import os
import random
import shutil
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, NamedTuple, Optional

import numpy as np

import dataset
from utils import interrupts
from utils.cli import add_bool, argument_parser
from utils.data import tokenization
from utils.data.normalize import keep_unk_token, normalize_document
from utils.data.sentences import (CorpusError, ReadStats, add_skipped_fraction_argument, iter_text_documents,
                                  list_input_files, report_skipped, split_document)
from utils.data.workers import FilePool
from utils.errors import BertError
from utils.files import write_json_atomic
from utils.progress import progress_bar
from utils.tokenizer_settings import file_sha256

TRAIN, VAL = "train", "val"
SUMMARY_FILE = "summary.json"


class OptionError(BertError, ValueError):
    """A bad command-line value; the message names the flag."""


@dataclass(frozen=True)
class InstanceOptions:
    """How instances are made and masked: what the workers need (and what summary.json lists first)."""

    seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    do_whole_word_mask: bool = False
    random_seed: int = 12345
    do_lower_case: bool = True
    normalize_wikitext: bool = True

    def check(self):
        if self.seq_length < 5:
            raise OptionError(f"--max_seq_length {self.seq_length} is too short (needs [CLS] A [SEP] B [SEP])")
        if self.max_predictions_per_seq < 1 or self.max_predictions_per_seq > self.seq_length:
            raise OptionError(
                f"--max_predictions_per_seq {self.max_predictions_per_seq} must be in [1, --max_seq_length "
                f"{self.seq_length}]"
            )
        if not 0 < self.masked_lm_prob < 1:
            raise OptionError(f"--masked_lm_prob {self.masked_lm_prob} must be in (0, 1)")
        if not 0 <= self.short_seq_prob <= 1:
            raise OptionError(f"--short_seq_prob {self.short_seq_prob} must be in [0, 1]")
        if self.dupe_factor < 1:
            raise OptionError(f"--dupe_factor {self.dupe_factor} must be at least 1")


@dataclass(frozen=True)
class PipelineOptions:
    """Every flag of a run: where to write, with which vocab, how to make instances, how to split the work."""

    output_dir: str
    vocab_file: str
    instances: InstanceOptions = InstanceOptions()
    num_workers: int = 1
    num_parts: int = 1
    val_fraction: float = 0.0
    num_val_parts: int = 1
    shard_chars: int = 4_000_000
    overwrite: bool = False

    def check(self):
        self.instances.check()
        if self.num_parts < 1:
            raise OptionError(f"--num_parts {self.num_parts} must be at least 1")
        if self.num_val_parts < 1:
            raise OptionError(f"--num_val_parts {self.num_val_parts} must be at least 1")
        if not 0 <= self.val_fraction < 1:
            raise OptionError(f"--val_fraction {self.val_fraction} must be in [0, 1)")
        if self.num_workers < 1:
            raise OptionError(f"--num_workers {self.num_workers} must be at least 1")


@dataclass
class Corpus:
    """The input: a document stream and what the progress bar and summary.json say about it."""

    documents: Iterable
    name: str = "input"  # how error messages name the input
    preprocess: Optional[Callable] = None  # raw document -> sentences, run in the workers (must pickle)
    read_stats: ReadStats = field(default_factory=ReadStats)  # filled while the stream is read
    total_bytes: Optional[int] = None  # progress bar total, against read_stats.bytes_read
    summary_fields: dict = field(default_factory=dict)  # added at the end of summary.json


class SegmentPair(NamedTuple):
    """One instance before masking: token spans [start, end) of segments A and B in their documents."""

    a_doc: int
    a_start: int
    a_end: int
    b_doc: int
    b_start: int
    b_end: int
    is_random_next: bool  # B comes from another document: next_sentence_labels = 1
    forced_random_next: bool  # ... because A, one sentence of under 2 tokens, could not be cut in two


class Replacement(enum.IntEnum):
    """What a position chosen for prediction becomes (BERT: 80% [MASK], 10% unchanged, 10% a random token)."""

    MASK = 0
    KEEP = 1
    RANDOM = 2


@dataclass
class Vocab:
    """What masking needs from vocab.txt: special ids, size, and which ids are '##' continuations."""

    size: int
    cls_id: int
    sep_id: int
    mask_id: int
    is_continuation: np.ndarray

    @classmethod
    def load(cls, vocab_file):
        tokens = tokenization.load_vocab(vocab_file)
        index = {t: i for i, t in enumerate(tokens)}
        return cls(len(tokens), index["[CLS]"], index["[SEP]"], index["[MASK]"],
                   np.array([t.startswith("##") for t in tokens], dtype=bool))


@dataclass
class Document:
    """One tokenized document: all token ids in a flat array; sentence s is tokens[bounds[s]:bounds[s+1]]."""

    tokens: np.ndarray
    bounds: list

    @property
    def num_sentences(self):
        return len(self.bounds) - 1


# ---------------------------------------------------------------- per-shard work (runs in the workers)

_worker = {}


def init_worker(vocab_file, options, preprocess, limit_threads):
    """Pool initializer: every worker loads the tokenizer once."""
    if limit_threads:
        os.environ["RAYON_NUM_THREADS"] = "1"
    tokenizer = tokenization.load_wordpiece_tokenizer(vocab_file, options.do_lower_case)
    _worker["tokenizer"] = keep_unk_token(tokenizer) if options.normalize_wikitext else tokenizer
    _worker["vocab"] = Vocab.load(vocab_file)
    _worker["options"] = options
    _worker["preprocess"] = preprocess


def shard_rngs(random_seed, split, shard_index):
    """(random.Random for scalar draws, numpy Generator for vectorized draws) of one shard."""
    seq = np.random.SeedSequence([random_seed, 0 if split == TRAIN else 1, shard_index])
    scalar_seed, vector_seed = seq.spawn(2)
    return random.Random(int(scalar_seed.generate_state(1)[0])), np.random.default_rng(vector_seed)


def tokenize_documents(tokenizer, documents, batch_size=4096):
    """Lists of sentences -> Documents; empty sentences and documents are dropped. Sentences are encoded
    in batches because tokenizers' Encoding objects (strings, offsets) are large."""
    sentences = [s for doc in documents for s in doc]
    encoded = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer.encode_batch(sentences[start:start + batch_size], add_special_tokens=False)
        encoded += [e.ids for e in batch]
    out, position = [], 0
    for doc in documents:
        pieces = [ids for ids in encoded[position:position + len(doc)] if ids]
        position += len(doc)
        if pieces:
            lengths = [len(p) for p in pieces]
            flat = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32, count=sum(lengths))
            out.append(Document(flat, [0] + list(itertools.accumulate(lengths))))
    return out


def pick_target_length(rng, max_num_tokens, short_seq_prob):
    if rng.random() < short_seq_prob:
        return rng.randint(2, max_num_tokens)
    return max_num_tokens


def random_segment(documents, doc_index, target_length, rng):
    """(doc, start, end) token span of whole sentences from a random point of another document."""
    other = doc_index
    for _ in range(10):  # as in the reference script: 10 tries to avoid the same document
        other = rng.randint(0, len(documents) - 1)
        if other != doc_index:
            break
    doc = documents[other]
    first = rng.randint(0, doc.num_sentences - 1)
    bounds = doc.bounds
    last = bisect.bisect_left(bounds, bounds[first] + target_length, lo=first + 1)
    last = min(max(last, first + 1), doc.num_sentences)
    return other, bounds[first], bounds[last]


def truncate_longer_at_random_end(a, b, max_num_tokens, rng):
    """Shortens spans [lo, hi) of A and B, always the longer one, from a random end (reference script)."""
    a_lo, a_hi = a
    b_lo, b_hi = b
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return (a_lo, a_hi), (b_lo, b_hi)


def split_chunk(bounds, chunk_start, chunk_end, rng):
    """(A span, B span or None, sentence where an unused rest starts, forced) of sentences
    [chunk_start, chunk_end]. B is None when it must come from another document."""
    num_segments = chunk_end + 1 - chunk_start
    if num_segments >= 2:
        a_end = chunk_start + rng.randint(1, num_segments - 1)
        a_span = (bounds[chunk_start], bounds[a_end])
        if rng.random() < 0.5:
            return a_span, None, a_end, False
        return a_span, (bounds[a_end], bounds[chunk_end + 1]), chunk_end + 1, False
    lo, hi = bounds[chunk_start], bounds[chunk_end + 1]
    if hi - lo < 2:
        return (lo, hi), None, chunk_end + 1, True
    if rng.random() < 0.5:
        return (lo, hi), None, chunk_end + 1, False
    cut = lo + rng.randint(1, hi - lo - 1)
    return (lo, cut), (cut, hi), chunk_end + 1, False


def instances_from_document(documents, doc_index, options, rng, out):
    """Appends the SegmentPairs of one document to `out`."""
    doc = documents[doc_index]
    bounds, count = doc.bounds, doc.num_sentences
    max_num_tokens = options.seq_length - 3
    target = pick_target_length(rng, max_num_tokens, options.short_seq_prob)
    chunk_start, i = 0, 0
    while i < count:
        if i == count - 1 or bounds[i + 1] - bounds[chunk_start] >= target:
            a_span, b_span, next_start, forced = split_chunk(bounds, chunk_start, i, rng)
            if b_span is None:
                b_doc, b_lo, b_hi = random_segment(documents, doc_index, target - (a_span[1] - a_span[0]), rng)
            else:
                b_doc, (b_lo, b_hi) = doc_index, b_span
            (a_lo, a_hi), (b_lo, b_hi) = truncate_longer_at_random_end(a_span, (b_lo, b_hi), max_num_tokens, rng)
            out.append(SegmentPair(doc_index, a_lo, a_hi, b_doc, b_lo, b_hi, b_span is None, forced))
            chunk_start = i = next_start  # sentences not used after a random B start the next chunk
            target = pick_target_length(rng, max_num_tokens, options.short_seq_prob)
        else:
            i += 1


def assemble(documents, pairs, seq_length, vocab):
    """SegmentPairs -> input_ids [n, seq] with [CLS] A [SEP] B [SEP], plus lengths and the index where B starts."""
    n = len(pairs)
    input_ids = np.zeros((n, seq_length), dtype=np.int32)
    lengths = np.empty(n, dtype=np.int64)
    b_starts = np.empty(n, dtype=np.int64)
    for row, pair in enumerate(pairs):
        la, lb = pair.a_end - pair.a_start, pair.b_end - pair.b_start
        ids = input_ids[row]
        ids[0] = vocab.cls_id
        ids[1:1 + la] = documents[pair.a_doc].tokens[pair.a_start:pair.a_end]
        ids[1 + la] = vocab.sep_id
        ids[2 + la:2 + la + lb] = documents[pair.b_doc].tokens[pair.b_start:pair.b_end]
        ids[2 + la + lb] = vocab.sep_id
        lengths[row], b_starts[row] = 3 + la + lb, 2 + la
    return input_ids, lengths, b_starts


def num_to_predict(lengths, options):
    wanted = np.round(lengths * options.masked_lm_prob).astype(np.int64)  # round half to even, as Python's round
    return np.minimum(options.max_predictions_per_seq, np.maximum(1, wanted))


def candidate_mask(lengths, b_starts, seq_length):
    """True where a token may be masked: inside the sequence and not [CLS] or either [SEP]."""
    position = np.arange(seq_length)
    return (position > 0) & (position < lengths[:, None] - 1) & (position != b_starts[:, None] - 1)


def choose_positions(candidates, counts, max_predictions, rng):
    """Per row, `counts` candidate positions chosen uniformly without replacement, ascending, 0-padded."""
    keys = rng.random(candidates.shape)
    keys[~candidates] = 2.0  # never chosen before a candidate
    chosen = np.argsort(keys, axis=1)[:, :max_predictions]
    valid = np.arange(max_predictions) < counts[:, None]
    positions = np.sort(np.where(valid, chosen, candidates.shape[1]), axis=1)
    return np.where(valid, positions, 0), valid


def choose_whole_word_positions(input_ids, candidates, counts, max_predictions, vocab, rng):
    """Whole-word masking: words (a piece plus its '##' pieces) are picked in random order; a word that
    would exceed the count is skipped, as in the reference script."""
    n = len(input_ids)
    positions = np.zeros((n, max_predictions), dtype=np.int64)
    valid = np.zeros((n, max_predictions), dtype=bool)
    continuation = vocab.is_continuation[input_ids] & candidates & np.roll(candidates, 1, axis=1)
    for row in range(n):
        words = []
        for p in np.flatnonzero(candidates[row]).tolist():
            if continuation[row, p] and words:
                words[-1].append(p)
            else:
                words.append([p])
        rng.shuffle(words)
        picked = []
        for word in words:
            if len(picked) >= counts[row]:
                break
            if len(picked) + len(word) <= counts[row]:
                picked += word
        picked.sort()
        positions[row, :len(picked)] = picked
        valid[row, :len(picked)] = True
    return positions, valid


def apply_masking(input_ids, positions, valid, vocab, rng):
    """80% [MASK], 10% unchanged, 10% random id, in place. Returns (original ids, Replacement per slot)."""
    original = np.where(valid, np.take_along_axis(input_ids, positions, axis=1), 0)
    draw = rng.random(valid.shape)
    replacement = np.where(draw < 0.8, Replacement.MASK, np.where(draw < 0.9, Replacement.KEEP, Replacement.RANDOM))
    random_ids = rng.integers(0, vocab.size, size=valid.shape, dtype=np.int64)
    new_ids = np.select([replacement == Replacement.MASK, replacement == Replacement.KEEP],
                        [vocab.mask_id, original], random_ids)
    rows, slots = np.nonzero(valid)
    input_ids[rows, positions[rows, slots]] = new_ids[rows, slots]
    return original, replacement


def encode_instances(input_ids, lengths, b_starts, positions, original, valid, next_labels, order):
    """Serialized OFRecords in the seed's pretraining schema, in the given row order."""
    seq_length = input_ids.shape[1]
    position = np.arange(seq_length)
    input_mask = (position < lengths[:, None]).astype(np.int32)
    segment_ids = ((position >= b_starts[:, None]) & (position < lengths[:, None])).astype(np.int32)
    positions = positions.astype(np.int32)
    original = original.astype(np.int32)
    weights = valid.astype(np.float32)
    return [
        dataset.encode_record({
            "input_ids": input_ids[i],
            "input_mask": input_mask[i],
            "segment_ids": segment_ids[i],
            "masked_lm_positions": positions[i],
            "masked_lm_ids": original[i],
            "masked_lm_weights": weights[i],
            "next_sentence_labels": next_labels[i:i + 1],
        })
        for i in order
    ]


def empty_stats():
    return {"documents": 0, "sentences": 0, "corpus_tokens": 0, "instances": 0, "tokens": 0,
            "masked": 0, "masked_mask": 0, "masked_kept": 0, "masked_random": 0,
            "nsp_random": 0, "nsp_forced_random": 0, "wikitext_normalized_documents": 0}


def make_instances(documents, options, vocab, split, shard_index, dupe_factor):
    """Tokenized documents of one shard -> (shuffled serialized records, stats)."""
    scalar_rng, vector_rng = shard_rngs(options.random_seed, split, shard_index)
    pairs = []
    order = list(range(len(documents)))
    scalar_rng.shuffle(order)
    for _ in range(dupe_factor):
        for doc_index in order:
            instances_from_document(documents, doc_index, options, scalar_rng, pairs)
    input_ids, lengths, b_starts = assemble(documents, pairs, options.seq_length, vocab)
    candidates = candidate_mask(lengths, b_starts, options.seq_length)
    counts = np.minimum(num_to_predict(lengths, options), candidates.sum(axis=1))
    if options.do_whole_word_mask:
        positions, valid = choose_whole_word_positions(
            input_ids, candidates, counts, options.max_predictions_per_seq, vocab, scalar_rng)
    else:
        positions, valid = choose_positions(candidates, counts, options.max_predictions_per_seq, vector_rng)
    original, replacement = apply_masking(input_ids, positions, valid, vocab, vector_rng)
    next_labels = np.array([p.is_random_next for p in pairs], dtype=np.int32)
    records = encode_instances(input_ids, lengths, b_starts, positions, original, valid, next_labels,
                               vector_rng.permutation(len(pairs)))
    stats = empty_stats()
    stats.update(
        instances=len(pairs), tokens=int(lengths.sum()), masked=int(valid.sum()),
        masked_mask=int((valid & (replacement == Replacement.MASK)).sum()),
        masked_kept=int((valid & (replacement == Replacement.KEEP)).sum()),
        masked_random=int((valid & (replacement == Replacement.RANDOM)).sum()), nsp_random=int(next_labels.sum()),
        nsp_forced_random=sum(1 for p in pairs if p.forced_random_next),
    )
    return records, stats


def process_shard(task):
    """Worker entry point: (split, shard_index, raw documents) -> (split, records, stats)."""
    split, shard_index, raw_documents = task
    options = _worker["options"]
    preprocess = _worker["preprocess"]
    sentences = [preprocess(d) for d in raw_documents] if preprocess else raw_documents
    sentences, normalized = normalize_wikitext_documents(sentences, options)
    documents = tokenize_documents(_worker["tokenizer"], sentences)
    dupe_factor = options.dupe_factor if split == TRAIN else 1
    if documents:
        records, stats = make_instances(documents, options, _worker["vocab"], split, shard_index, dupe_factor)
    else:
        records, stats = [], empty_stats()
    stats["documents"] = len(documents)
    stats["sentences"] = sum(d.num_sentences for d in documents)
    stats["corpus_tokens"] = sum(len(d.tokens) for d in documents)
    stats["wikitext_normalized_documents"] = normalized
    return split, records, stats


def normalize_wikitext_documents(documents, options):
    """(documents, how many were changed) after utils/data/normalize.py, unless --no-normalize_wikitext."""
    if not options.normalize_wikitext:
        return documents, 0
    results = [normalize_document(d) for d in documents]
    return [d for d, _ in results], sum(changed for _, changed in results)


# ---------------------------------------------------------------- orchestration (main process)


def document_size(document):
    return len(document) if isinstance(document, str) else sum(len(line) for line in document)


def shard_tasks(documents, random_seed, val_fraction, shard_chars):
    """Groups the document stream into (split, shard_index, documents) tasks; held-out documents are
    drawn with probability val_fraction from a stream seeded by random_seed."""
    chooser = random.Random(int(np.random.SeedSequence([random_seed, 2]).generate_state(1)[0]))
    pending = {TRAIN: [], VAL: []}
    sizes = {TRAIN: 0, VAL: 0}
    next_index = {TRAIN: 0, VAL: 0}
    for document in documents:
        split = VAL if chooser.random() < val_fraction else TRAIN
        pending[split].append(document)
        sizes[split] += document_size(document)
        if sizes[split] >= shard_chars:
            yield split, next_index[split], pending[split]
            pending[split], sizes[split] = [], 0
            next_index[split] += 1
    for split in (TRAIN, VAL):
        if pending[split]:
            yield split, next_index[split], pending[split]


class PartBuckets:
    """Records of one split dealt round-robin into temp files, then shuffled into part-0 .. part-{n-1}."""

    def __init__(self, tmp_dir, split, num_parts, rng):
        self.num_parts = num_parts
        self.rng = rng
        self.paths = [os.path.join(tmp_dir, f"{split}-{i}") for i in range(num_parts)]
        self.files = [open(p, "wb") for p in self.paths]
        self.count = 0

    def add(self, records):
        for record in records:
            self.files[self.count % self.num_parts].write(dataset.frame(record))
            self.count += 1

    def write_parts(self, directory, written):
        """Each bucket -> a shuffled part file (PartWriter: temp name, then rename). Returns counts."""
        for f in self.files:
            f.close()
        os.makedirs(directory, exist_ok=True)
        counts = []
        for i, path in enumerate(self.paths):
            offsets, lengths = dataset.scan_offsets(path)
            part = os.path.join(directory, f"{dataset.PART_PREFIX}{i}")
            written.append(part)  # before the rename, so that an interruption right after it is cleaned up too
            with open(path, "rb") as src, dataset.PartWriter(part) as writer:
                for j in self.rng.permutation(len(offsets)):
                    src.seek(offsets[j])
                    writer.write_payload(src.read(int(lengths[j])))
            counts.append(len(offsets))
            os.remove(path)
        return counts

    def close(self):
        for f in self.files:
            f.close()


def existing_outputs(output_dir):
    names = [os.path.join(output_dir, n) for n in sorted(os.listdir(output_dir))] if os.path.isdir(output_dir) else []
    val_dir = os.path.join(output_dir, "val")
    if os.path.isdir(val_dir):
        names += [os.path.join(val_dir, n) for n in sorted(os.listdir(val_dir))]
    return [p for p in names if os.path.basename(p).startswith(dataset.PART_PREFIX) or p.endswith(SUMMARY_FILE)]


def run_shards(tasks, vocab_file, options, preprocess, num_workers, consume, tmp_dir):
    """Runs process_shard over the tasks, in order, with at most 2 shards per worker in flight (their
    documents and records pass through files in tmp_dir)."""
    if num_workers <= 1:
        init_worker(vocab_file, options, preprocess, limit_threads=False)
        for task in tasks:
            consume(process_shard(task))
        return
    with FilePool(num_workers, tmp_dir, initializer=init_worker,
                  initargs=(vocab_file, options, preprocess, True)) as pool:
        in_flight = deque()
        for task in tasks:
            in_flight.append(pool.submit(process_shard, task))
            while len(in_flight) >= 2 * num_workers or (in_flight and in_flight[0].ready()):
                consume(pool.result(in_flight.popleft()))
        while in_flight:
            consume(pool.result(in_flight.popleft()))


def fraction(numerator, denominator):
    return round(numerator / denominator, 6) if denominator else 0.0


def split_summary(stats, counts):
    return {
        "documents": stats["documents"], "sentences": stats["sentences"], "corpus_tokens": stats["corpus_tokens"],
        "instances": stats["instances"], "tokens": stats["tokens"], "parts": counts,
        "masked_fraction": fraction(stats["masked"], stats["tokens"]),
        "masked_replacement": {
            "mask": fraction(stats["masked_mask"], stats["masked"]),
            "kept": fraction(stats["masked_kept"], stats["masked"]),
            "random": fraction(stats["masked_random"], stats["masked"]),
        },
        "nsp_random_fraction": fraction(stats["nsp_random"], stats["instances"]),
        "nsp_forced_random_fraction": fraction(stats["nsp_forced_random"], stats["instances"]),
        "wikitext_normalized_documents": stats["wikitext_normalized_documents"],
    }


def make_work_dir(output_dir):
    """Creates --output_dir and this run's temp folder in it, before any work, so that a file in the way or
    a folder without write permission fails at once with the flag's name."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OptionError(f"--output_dir {output_dir} is a file, not a folder")
    tmp_dir = os.path.join(output_dir, f".tmp-create-{os.getpid()}")
    try:
        os.makedirs(tmp_dir)
    except OSError as e:
        raise OptionError(f"--output_dir {output_dir}: cannot create a folder there ({e.strerror})") from None
    return tmp_dir


def remove_old_outputs(output_dir, overwrite):
    old = existing_outputs(output_dir)
    if old and not overwrite:
        raise OptionError(f"--output_dir {output_dir} already holds {old[0]}; remove it or pass --overwrite")
    for path in old:
        os.remove(path)


def remove_files(paths):
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def collect_shard(result, buckets, totals, bar, read_stats):
    """Deals one shard's records into its split's buckets, adds its stats to the split's totals, moves the bar."""
    split, records, stats = result
    buckets[split].add(records)
    for key, value in stats.items():
        totals[split][key] += value
    bar.update(read_stats.bytes_read - bar.n)
    bar.set_postfix(docs=totals[TRAIN]["documents"] + totals[VAL]["documents"],
                    instances=buckets[TRAIN].count + buckets[VAL].count)


def check_instance_counts(buckets, options, input_name):
    """Fails before any part file is written when a split has too few instances for its parts."""
    if buckets[TRAIN].count == 0:
        raise CorpusError(f"{input_name}: the corpus is empty: no training document with text was found")
    if buckets[TRAIN].count < options.num_parts:
        raise OptionError(f"--num_parts {options.num_parts} is more than the {buckets[TRAIN].count} training instances")
    if 0 < buckets[VAL].count < options.num_val_parts:
        raise OptionError(f"--num_val_parts {options.num_val_parts} is more than the {buckets[VAL].count} "
                          f"validation instances")


def write_part_files(buckets, output_dir, written):
    """Training parts into output_dir, validation parts (if any) into output_dir/val. Returns both counts."""
    train_counts = buckets[TRAIN].write_parts(output_dir, written)
    if not buckets[VAL].count:
        return train_counts, []
    val_dir = os.path.join(output_dir, "val")
    with dataset.writing(val_dir):
        return train_counts, buckets[VAL].write_parts(val_dir, written)


def build_summary(options, corpus, totals, train_counts, val_counts, started):
    return {
        "format": "OFRecord part-N files, dataset.pretraining_schema(seq_length, max_predictions_per_seq)",
        **asdict(options.instances),
        "vocab_file": options.vocab_file,
        "vocab_sha256": file_sha256(options.vocab_file),  # how checkpoints find this vocab again
        "num_workers": options.num_workers,
        "val_fraction": options.val_fraction,
        "non_utf8_lines_skipped": corpus.read_stats.non_utf8_lines,
        # bytes_read is progress, lines is for the stderr report: the keys stay those of the demo set's
        "reading": {k: v for k, v in asdict(corpus.read_stats).items() if k not in ("bytes_read", "lines")},
        "train": split_summary(totals[TRAIN], train_counts),
        "val": split_summary(totals[VAL], val_counts),
        "seconds": round(time.time() - started, 2),
        **corpus.summary_fields,
    }


def write_pretraining_data(corpus, options):
    """Corpus -> OUT_DIR/part-*, OUT_DIR/val/part-*, OUT_DIR/summary.json. Returns the summary.

    While the parts and the summary are written, OUT_DIR (and OUT_DIR/val) hold dataset.INCOMPLETE_MARKER; a
    failure or an interruption removes this run's part and temp files but leaves the marker, so readers refuse
    the folder.
    """
    started = time.time()
    options.check()
    Vocab.load(options.vocab_file)  # fails early on a vocab without [CLS]/[SEP]/[MASK]
    remove_old_outputs(options.output_dir, options.overwrite)
    tmp_dir = make_work_dir(options.output_dir)
    seed = options.instances.random_seed
    order_rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    buckets = {}
    totals = {TRAIN: empty_stats(), VAL: empty_stats()}
    bar = progress_bar(total=corpus.total_bytes, unit="B", unit_scale=True, desc="create_pretraining_data")
    written = []
    try:
        buckets[TRAIN] = PartBuckets(tmp_dir, TRAIN, options.num_parts, order_rng)
        buckets[VAL] = PartBuckets(tmp_dir, VAL, options.num_val_parts, order_rng)
        tasks = shard_tasks(corpus.documents, seed, options.val_fraction, options.shard_chars)
        collect = functools.partial(collect_shard, buckets=buckets, totals=totals, bar=bar,
                                    read_stats=corpus.read_stats)
        run_shards(tasks, options.vocab_file, options.instances, corpus.preprocess, options.num_workers, collect,
                   tmp_dir)
        bar.close()
        check_instance_counts(buckets, options, corpus.name)
        with dataset.writing(options.output_dir):  # the marker goes only once summary.json, written last, is in place
            train_counts, val_counts = write_part_files(buckets, options.output_dir, written)
            summary = build_summary(options, corpus, totals, train_counts, val_counts, started)
            write_json_atomic(os.path.join(options.output_dir, SUMMARY_FILE), summary, indent=2)
    except BaseException:
        bar.close()
        remove_files(written)
        raise
    finally:
        for b in buckets.values():
            b.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return summary


def slice_documents(documents, skip, limit):
    """Documents [skip, skip + limit) of a stream; limit None means to the end."""
    if skip < 0:
        raise OptionError(f"--skip_documents {skip} must be at least 0")
    if limit is not None and limit < 1:
        raise OptionError(f"--max_documents {limit} must be at least 1")
    return itertools.islice(documents, skip, None if limit is None else skip + limit)


def add_options_arguments(parser, vocab_default=None):
    """The flags of Google's script (same names and defaults) plus the pipeline's own."""
    parser.add_argument("--vocab_file", required=vocab_default is None, default=vocab_default,
                        help="WordPiece vocab.txt" + (f" (default {vocab_default})" if vocab_default else ""))
    add_bool(parser, "--do_lower_case", default=True)
    add_bool(parser, "--normalize_wikitext", default=True,
             help="in documents with WikiText markers: <unk> -> [UNK], ' @-@ ' -> '-', ' @,@ ' -> ',', "
                  "' @.@ ' -> '.' (see utils/data/normalize.py)")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--random_seed", type=int, default=12345)
    parser.add_argument("--dupe_factor", type=int, default=10, help="masked copies of each training document")
    parser.add_argument("--masked_lm_prob", type=float, default=0.15)
    parser.add_argument("--short_seq_prob", type=float, default=0.1)
    add_bool(parser, "--do_whole_word_mask", default=False)
    parser.add_argument("--num_workers", type=int, default=os.cpu_count())
    parser.add_argument("--num_parts", type=int, default=8, help="training part files")
    parser.add_argument("--val_fraction", type=float, default=0.0, help="share of documents held out for val/")
    parser.add_argument("--num_val_parts", type=int, default=1)
    parser.add_argument("--shard_chars", type=int, default=4_000_000,
                        help="characters of text per shard (the window the random next sentence comes from)")
    parser.add_argument("--skip_documents", type=int, default=0, help="start at this document of the input")
    parser.add_argument("--max_documents", type=int, default=None, help="use at most this many documents")
    add_bool(parser, "--overwrite", default=False, help="replace part files already in --output_dir")
    add_skipped_fraction_argument(parser)


def pipeline_options_from_args(args):
    """The flags of add_options_arguments (and the parser's output_dir) as one PipelineOptions."""
    instances = InstanceOptions(
        seq_length=args.max_seq_length, max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob, short_seq_prob=args.short_seq_prob, dupe_factor=args.dupe_factor,
        do_whole_word_mask=args.do_whole_word_mask, random_seed=args.random_seed, do_lower_case=args.do_lower_case,
        normalize_wikitext=args.normalize_wikitext)
    return PipelineOptions(
        output_dir=args.output_dir, vocab_file=args.vocab_file, instances=instances, num_workers=args.num_workers,
        num_parts=args.num_parts, val_fraction=args.val_fraction, num_val_parts=args.num_val_parts,
        shard_chars=args.shard_chars, overwrite=args.overwrite)


# What bad input or a bad environment raises; each message names the file or the flag. OSError covers
# what no check can foresee, such as a full disk, and its text names the file.
PIPELINE_ERRORS = (BertError, OSError)


def print_summary(summary, output_dir):
    train, val = summary["train"], summary["val"]
    print(f"wrote {train['instances']} training instances in {len(train['parts'])} parts and "
          f"{val['instances']} validation instances to {output_dir} in {summary['seconds']} s "
          f"(masked {train['masked_fraction']:.4f}, NSP random {train['nsp_random_fraction']:.4f})")


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--input_file", required=True,
                        help="Google's format (one sentence per line, blank line between documents): "
                             ".txt, .txt.gz or a folder of them")
    parser.add_argument("--output_dir", required=True)
    add_bool(parser, "--split_sentences", default=False,
             help="input lines are paragraphs: split them into sentences first")
    add_options_arguments(parser)
    args = parser.parse_args(argv)
    stats = ReadStats()
    with interrupts.main_guard("create_pretraining_data"):
        try:
            paths = list_input_files(args.input_file)
            documents = slice_documents(iter_text_documents(paths, stats, args.max_skipped_fraction),
                                        args.skip_documents, args.max_documents)
            corpus = Corpus(documents, name=args.input_file, read_stats=stats,
                            preprocess=split_document if args.split_sentences else None,
                            total_bytes=sum(os.path.getsize(p) for p in paths),
                            summary_fields={"input": args.input_file, "skip_documents": args.skip_documents,
                                            "max_documents": args.max_documents})
            summary = write_pretraining_data(corpus, pipeline_options_from_args(args))
        except PIPELINE_ERRORS as e:
            sys.exit(f"error: {e}")
        report_skipped(stats)
        print_summary(summary, args.output_dir)


if __name__ == "__main__":
    main()
