"""Corpus -> masked-LM + next-sentence pre-training records, as Google BERT's create_pretraining_data.py makes them.

The instances themselves (the algorithm of the reference script and where it differs) are made in
utils/data/instances.py. Around it, for scale:
- streaming: documents are read in shards of about --shard_chars characters; the random "next"
  segment is drawn from another document of the same shard, so memory holds a few shards, not the corpus;
- shards run on --num_workers processes; shard k of each split uses a seed derived from
  (--random_seed, split, k), so the bytes written depend on the seed and the input only, not on the
  worker count.

Records are written in the seed's OFRecord format (dataset.pretraining_schema) with dataset.PartWriter,
dealt round-robin over --num_parts files and then shuffled within each part. Documents drawn with
probability --val_fraction are held out and written to OUT_DIR/val/part-*. OUT_DIR/summary.json is
written last.

    python -m utils.data.create_pretraining_data --input_file CORPUS --output_dir OUT --vocab_file VOCAB
"""
import contextlib
import functools
import itertools
import os
import random
import shutil
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

import dataset
from utils import interrupts
from utils.cli import add_bool, argument_parser
from utils.data.instances import (TRAIN, VAL, InstanceOptions, OptionError, Vocab, empty_stats, init_worker,
                                  process_shard)
from utils.data.sentences import (CorpusError, ReadStats, add_skipped_fraction_argument, iter_text_documents,
                                  list_input_files, report_skipped, split_document)
from utils.data.workers import FilePool
from utils.errors import BertError
from utils.files import write_json_atomic
from utils.progress import progress_bar
from utils.tokenizer_settings import file_sha256

SUMMARY_FILE = "summary.json"


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
