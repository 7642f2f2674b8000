"""Train a new WordPiece vocab.txt of a given size on a corpus (HF tokenizers' WordPieceTrainer).

Text is normalized and pre-tokenized exactly as utils.data.tokenization does when it loads the vocab
(BERT's clean-up, optional lower-casing and accent stripping, whitespace and punctuation splits), so the
trained vocab is used the same way as Google's. The file lists one token per line, the special tokens
[PAD] [UNK] [CLS] [SEP] [MASK] first, continuation pieces with the '##' prefix.

    python -m utils.data.train_vocab INPUT VOCAB_OUT --vocab_size 30522 [--no-do_lower_case]
INPUT is a .txt / .txt.gz file or a folder of them (one sentence or paragraph per line).
"""
import contextlib
import os
import sys

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from utils import interrupts
from utils.cli import add_bool, argument_parser
from utils.data.sentences import (CorpusError, ReadStats, add_skipped_fraction_argument, check_output_file,
                                  iter_lines, list_input_files)
from utils.data.normalize import normalize_wikitext
from utils.data.tokenization import SPECIAL_TOKENS, load_vocab
from utils.errors import BertError
from utils.files import atomic_output
from utils.progress import progress_bar

PARALLELISM = "TOKENIZERS_PARALLELISM"


def corpus_lines(paths, stats, max_skipped_fraction, normalize=True):
    """Non-blank lines; with normalize, WikiText's joiners joined and its <unk> dropped: an unknown word tells the
    vocab nothing, and [UNK] in the text would be learned as `[`, `unk`, `]` (the trainer ignores added tokens)."""
    for path in paths:
        for line in iter_lines(path, stats, max_skipped_fraction):
            if normalize:
                line = normalize_wikitext(line, unk="")
            if line.strip():
                yield line


@contextlib.contextmanager
def corpus_read_by_main_thread():
    """With parallelism on, tokenizers' rayon threads pull the corpus iterator, and Python runs the Ctrl-C handler
    only once training ends (minutes on a large corpus). Off, the main thread reads it and Ctrl-C acts at once;
    the Python reader is the bottleneck either way (the same wall time was measured)."""
    previous = os.environ.get(PARALLELISM)
    os.environ[PARALLELISM] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PARALLELISM]
        else:
            os.environ[PARALLELISM] = previous


def train_vocab(lines, vocab_size, do_lower_case=True, min_frequency=2, limit_alphabet=1000):
    """Iterator of text lines -> list of vocab tokens (index = id)."""
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case, lowercase=do_lower_case)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet,
                               special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
                               show_progress=False)
    with corpus_read_by_main_thread():
        tokenizer.train_from_iterator(lines, trainer=trainer)
    vocab = tokenizer.get_vocab()
    return sorted(vocab, key=vocab.get)


def write_vocab(tokens, path):
    """One token per line, written atomically, then checked with the loader that will read it."""
    with atomic_output(path) as f:
        f.writelines(t + "\n" for t in tokens)
    load_vocab(path)


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("input", help=".txt / .txt.gz file or folder of them")
    parser.add_argument("output", help="vocab.txt to write")
    parser.add_argument("--vocab_size", type=int, default=30522)
    add_bool(parser, "--do_lower_case", default=True)
    add_bool(parser, "--normalize_wikitext", default=True,
             help="drop WikiText's <unk> and join its ' @-@ ', ' @,@ ', ' @.@ ' (utils/data/normalize.py)")
    parser.add_argument("--min_frequency", type=int, default=2, help="rarest pair count that may be merged")
    parser.add_argument("--limit_alphabet", type=int, default=1000, help="most single characters kept")
    add_skipped_fraction_argument(parser)
    args = parser.parse_args(argv)
    if args.vocab_size <= len(SPECIAL_TOKENS):
        sys.exit(f"error: --vocab_size {args.vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens")
    for flag in ("min_frequency", "limit_alphabet"):  # the trainer takes unsigned numbers only
        if getattr(args, flag) < 0:
            sys.exit(f"error: --{flag} {getattr(args, flag)} must be at least 0")
    stats = ReadStats()
    with interrupts.main_guard("train_vocab"):
        try:
            check_output_file(args.output)
            paths = list_input_files(args.input)
            lines = progress_bar(corpus_lines(paths, stats, args.max_skipped_fraction, args.normalize_wikitext),
                                 unit="line", desc="train_vocab")
            tokens = train_vocab(lines, args.vocab_size, args.do_lower_case, args.min_frequency, args.limit_alphabet)
            if len(tokens) <= len(SPECIAL_TOKENS):
                raise CorpusError(f"{args.input}: the corpus has no text to train a vocab on")
            write_vocab(tokens, args.output)
        except (BertError, OSError) as e:
            sys.exit(f"error: {e}")
        print(f"wrote {len(tokens)} tokens to {args.output} (skipped {stats.non_utf8_lines} non-UTF-8 lines)")


if __name__ == "__main__":
    main()
