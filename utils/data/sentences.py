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
import gzip
import itertools
import multiprocessing
import os
import sys
import zlib
from collections import deque
from dataclasses import dataclass

import blingfire
from tqdm import tqdm

TEXT_SUFFIXES = (".txt", ".txt.gz")


class CorpusError(Exception):
    """Unreadable or empty input; the message names the file."""


@dataclass
class ReadStats:
    """Counters shared by the readers; `bytes_read` is compressed bytes, for progress bars."""

    files: int = 0
    documents: int = 0
    non_utf8_lines: int = 0
    bytes_read: int = 0


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
    raw = open(path, "rb")
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if path.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb"), raw
    return raw, raw


def iter_lines(path, stats):
    """Decoded lines of one file without line ends; non-UTF-8 lines are skipped and counted."""
    stream, raw = open_compressed(path)
    stats.files += 1
    start = stats.bytes_read
    try:
        for line in stream:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                stats.non_utf8_lines += 1
                continue
            stats.bytes_read = start + raw.tell()
            yield text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:
        raise CorpusError(f"{path}: cannot read compressed input ({e})") from None
    finally:
        stream.close()
        raw.close()


def iter_text_documents(paths, stats):
    """Documents as lists of non-blank lines; a blank line or the end of a file ends a document."""
    for path in paths:
        lines = []
        for line in iter_lines(path, stats):
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
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        in_flight = deque()
        while True:
            chunk = list(itertools.islice(items, chunk_size))
            if chunk:
                in_flight.append(pool.apply_async(_map_list, (function, chunk)))
            if in_flight and (not chunk or len(in_flight) >= 2 * num_workers):
                yield from in_flight.popleft().get()
            if not chunk and not in_flight:
                return


def write_sentence_file(documents, output):
    """Google's format (one sentence per line, blank line between documents), written atomically."""
    tmp = f"{output}.tmp{os.getpid()}"
    opener = gzip.open if output.endswith(".gz") else open
    count = 0
    try:
        with opener(tmp, "wt", encoding="utf-8") as f:
            for sentences in documents:
                if sentences:
                    f.write("\n".join(sentences) + "\n\n")
                    count += 1
    except BaseException:
        os.remove(tmp)
        raise
    if count == 0:
        os.remove(tmp)
        raise CorpusError(f"{output}: no documents with text were found in the input")
    os.replace(tmp, output)
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="a .txt / .txt.gz file or a folder of them")
    parser.add_argument("output", help="output text file (.gz to compress)")
    parser.add_argument("--num_workers", type=int, default=1, help="processes that split sentences")
    args = parser.parse_args(argv)
    stats = ReadStats()
    try:
        paths = list_input_files(args.input)
        documents = parallel_map(split_document, iter_text_documents(paths, stats), args.num_workers)
        count = write_sentence_file(tqdm(documents, unit="doc", desc="split"), args.output)
    except CorpusError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {count} documents to {args.output} (skipped {stats.non_utf8_lines} non-UTF-8 lines)")


if __name__ == "__main__":
    main()
