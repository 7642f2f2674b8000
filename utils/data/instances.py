"""BERT pre-training instances of one shard: segment pairs, next-sentence labels and masked-LM masking.

Follows Devlin et al. 2018 (BERT, section 3.1 and appendix A.2) and Google's reference script,
google-research/bert create_pretraining_data.py:
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

Deliberate differences from the reference script (those of the streaming pipeline around it are in
utils/data/create_pretraining_data.py):
- the random "next" segment comes from another document of the same shard;
- the short target length is redrawn for every instance, not once per document (once per document
  makes every instance of a long book short in 10% of the passes);
- a chunk of a single sentence (a long sentence, or the last one of a document) is cut inside the
  sentence when B is the actual next text; the reference script always pairs it with a random B,
  which pushes the random share several points above the 50% the paper describes;
- validation documents are masked once (dupe_factor 1);
- masking is vectorized with numpy over a whole shard.

process_shard is what create_pretraining_data's worker processes run, after init_worker.
"""
import bisect
import enum
import itertools
import os
import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

import dataset
from utils.data import tokenization
from utils.data.normalize import keep_unk_token, normalize_document
from utils.errors import BertError

TRAIN, VAL = "train", "val"


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
