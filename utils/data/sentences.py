"""Plain-text corpora -> documents -> sentences, in the input format of Google BERT's create_pretraining_data.

Input: one sentence or paragraph per line and a blank line between documents (BookCorpus-style dumps,
Google's own format). A path may be a .txt file, a .txt.gz file or a folder of them. Lines that are not
valid UTF-8 are skipped and counted instead of aborting a long run. Sentences are split with BlingFire
(Microsoft's finite-state tokenizer, offline, no model download).

    python -m utils.data.sentences INPUT OUTPUT.txt[.gz]
writes one sentence per line with a blank line between documents.
"""
import argparse
import bz2
import functools
import gzip
import itertools
import os
import sys
import zlib
from collections import deque
from dataclasses import dataclass

import blingfire

from utils import interrupts
from utils.cli import argument_parser
from utils.data.workers import FilePool
from utils.errors import BertError
from utils.files import atomic_output
from utils.progress import progress_bar

TEXT_SUFFIXES = (".txt", ".txt.gz")
# A file with more non-UTF-8 lines than this is binary or in another encoding, not a corpus with a few bad lines.
MAX_SKIPPED_FRACTION = 0.5


class CorpusError(BertError):
    """Unreadable or empty input, or an output that cannot be written; the message names the file."""


@dataclass
class ReadStats:
    """Counters shared by the readers; `bytes_read` is compressed bytes, for progress bars; `lines` counts
    every line read, skipped ones included."""

    files: int = 0
    documents: int = 0
    non_utf8_lines: int = 0
    bytes_read: int = 0
    lines: int = 0


def skipped_fraction(text):
    """argparse type of --max_skipped_fraction: a number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def add_skipped_fraction_argument(parser):
    parser.add_argument("--max_skipped_fraction", type=skipped_fraction, default=MAX_SKIPPED_FRACTION,
                        help="fail when more than this share of an input file's lines are not valid UTF-8 and "
                             f"would be skipped (default {MAX_SKIPPED_FRACTION}; 1 never fails)")


def report_skipped(stats):
    """One line on stderr when lines were skipped, so that it is not only in summary.json."""
    if stats.non_utf8_lines:
        print(f"skipped {stats.non_utf8_lines} of {stats.lines} input lines (not valid UTF-8)", file=sys.stderr)


def check_output_file(path):
    """Fails before a long run when the output file cannot be written at the end."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CorpusError(f"{path}: the output is a folder, expected a file name")
    if not os.path.isdir(folder):
        raise CorpusError(f"{path}: the output's folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CorpusError(f"{path}: the output's folder {folder} is not writable")


def list_input_files(path, suffixes=TEXT_SUFFIXES):
    """A file, or the files under a folder whose names end with one of `suffixes`, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise CorpusError(f"{path}: input does not exist")
    found = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, n) for n in sorted(names) if n.endswith(suffixes)]
    if not found:
        raise CorpusError(f"{path}: folder holds no input files ending with {', '.join(suffixes)}")
    return found


def open_compressed(path):
    """(binary stream, underlying raw file) for plain, .gz or .bz2 files; raw.tell() gives progress."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise CorpusError(f"{path}: cannot open the input ({e.strerror})") from None
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if path.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb"), raw
    return raw, raw


def check_skipped(path, skipped, lines, max_skipped_fraction):
    if skipped > max_skipped_fraction * lines:
        raise CorpusError(
            f"{path}: {skipped} of {lines} lines ({skipped / lines:.0%}) are not valid UTF-8, more than "
            f"--max_skipped_fraction {max_skipped_fraction}: is it a binary file or in another encoding? "
            "(convert it to UTF-8, or raise --max_skipped_fraction to skip those lines)")


def iter_lines(path, stats, max_skipped_fraction=MAX_SKIPPED_FRACTION):
    """Decoded lines of one file without line ends; non-UTF-8 lines are skipped and counted, and a
    CorpusError at the end of the file when they are more than max_skipped_fraction of its lines."""
    stream, raw = open_compressed(path)
    stats.files += 1
    start = stats.bytes_read
    lines = skipped = 0
    try:
        for line in stream:
            lines += 1
            stats.lines += 1
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1
                stats.non_utf8_lines += 1
                continue
            stats.bytes_read = start + raw.tell()
            yield text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:
        raise CorpusError(f"{path}: cannot read the input ({e})") from None
    finally:
        stream.close()
        raw.close()
    check_skipped(path, skipped, lines, max_skipped_fraction)


def iter_text_documents(paths, stats, max_skipped_fraction=MAX_SKIPPED_FRACTION):
    """Documents as lists of non-blank lines; a blank line or the end of a file ends a document."""
    for path in paths:
        lines = []
        for line in iter_lines(path, stats, max_skipped_fraction):
            line = line.strip()
            if line:
                lines.append(line)
            elif lines:
                stats.documents += 1
                yield lines
                lines = []
        if lines:
            stats.documents += 1
            yield lines


def split_sentences(paragraph):
    """One paragraph -> its sentences (BlingFire's rule-based sentence breaker)."""
    if not paragraph.strip():
        return []
    return [s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip()]


def split_document(lines):
    """Paragraph (or sentence) lines of one document -> its sentences in order."""
    sentences = []
    for line in lines:
        sentences += split_sentences(line)
    return sentences


def _map_list(function, items):
    return [function(item) for item in items]


def parallel_map(function, items, num_workers, chunk_size=16):
    """map(function, items) in order on `num_workers` processes, reading at most a few chunks ahead so
    that memory stays bounded on an endless stream (Pool.imap would read all input at once)."""
    if num_workers <= 1:
        yield from map(function, items)
        return
    items = iter(items)
    with FilePool(num_workers) as pool:
        in_flight = deque()
        while True:
            chunk = list(itertools.islice(items, chunk_size))
            if chunk:
                in_flight.append(pool.submit(functools.partial(_map_list, function), chunk))
            if in_flight and (not chunk or len(in_flight) >= 2 * num_workers):
                yield from pool.result(in_flight.popleft())
            if not chunk and not in_flight:
                return


def write_sentence_file(documents, output):
    """Google's format (one sentence per line, blank line between documents), written atomically."""
    count = 0
    with atomic_output(output, gzip.open if output.endswith(".gz") else open, "wt") as f:
        for sentences in documents:
            if sentences:
                f.write("\n".join(sentences) + "\n\n")
                count += 1
        if count == 0:
            raise CorpusError(f"{output}: no documents with text were found in the input")
    return count


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("input", help="a .txt / .txt.gz file or a folder of them")
    parser.add_argument("output", help="output text file (.gz to compress)")
    parser.add_argument("--num_workers", type=int, default=1, help="processes that split sentences")
    add_skipped_fraction_argument(parser)
    args = parser.parse_args(argv)
    stats = ReadStats()
    with interrupts.main_guard("sentences"):
        try:
            check_output_file(args.output)
            paths = list_input_files(args.input)
            documents = parallel_map(split_document, iter_text_documents(paths, stats, args.max_skipped_fraction),
                                     args.num_workers)
            count = write_sentence_file(progress_bar(documents, unit="doc", desc="split"), args.output)
        except (BertError, OSError) as e:
            sys.exit(f"error: {e}")
        print(f"wrote {count} documents to {args.output} (skipped {stats.non_utf8_lines} non-UTF-8 lines)")


if __name__ == "__main__":
    main()
