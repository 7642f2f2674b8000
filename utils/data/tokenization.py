"""WordPiece tokenization (Wu et al. 2016, as used by BERT) on a given vocab.txt, via HF `tokenizers`.

The pipeline matches Google BERT's BasicTokenizer + WordpieceTokenizer: clean control characters,
split CJK characters, optionally lower-case and strip accents, split on whitespace and punctuation,
then greedy longest-match-first WordPiece with '##' continuations and [UNK] for words over 100 chars.
"""
import os

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from utils.errors import BertError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class VocabError(BertError):
    pass


def load_vocab(vocab_file):
    """vocab.txt -> list of tokens (line i is id i); checks the special tokens BERT needs."""
    if os.path.isdir(vocab_file):
        raise VocabError(f"{vocab_file}: is a folder, expected the vocab.txt file")
    if not os.path.isfile(vocab_file):
        raise VocabError(f"{vocab_file}: vocab file does not exist")
    try:
        with open(vocab_file, encoding="utf-8") as f:
            tokens = [line.rstrip("\n") for line in f]
    except UnicodeDecodeError:
        raise VocabError(f"{vocab_file}: not a vocab.txt (not UTF-8 text)") from None
    except OSError as e:
        raise VocabError(f"{vocab_file}: cannot read the vocab ({e.strerror})") from None
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise VocabError(f"{vocab_file}: vocab lacks required special tokens {missing}")
    return tokens


def load_wordpiece_tokenizer(vocab_file, do_lower_case=True):
    """A `tokenizers.Tokenizer` that turns raw text into WordPiece tokens (no [CLS]/[SEP] added)."""
    tokens = load_vocab(vocab_file)
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case, lowercase=do_lower_case
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer
