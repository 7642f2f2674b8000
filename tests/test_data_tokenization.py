"""WordPiece via HF tokenizers against a plain re-implementation of Google BERT's tokenization.py
(BasicTokenizer + greedy longest-match-first WordpieceTokenizer), and the vocab-training command."""
import gzip
import itertools
import os
import unicodedata

import pytest

from utils.data import tokenization
from utils.data.train_vocab import main as train_vocab_main
from utils.paths import shared_data_path

CORPUS = shared_data_path("corpus", "pretrain_corpus_sentences.txt.gz")
VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
EDGE_CASES = [
    "Héllo, Wörld! Ça va? naïve café — “quoted” text…",
    "Tabs\tand\nnewlines\r\nand\u00a0no-break spaces\u3000here",
    "Control\u0000chars\u200band\ufffdreplacement",
    "中文字符 mixed with English 日本語",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 120 + " short",
    "numbers 3.14159 and 1,000,000 and e-mail@example.com #hashtag $100",
]


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def basic_tokenize(text, lower):
    cleaned = []
    for c in text:
        if ord(c) == 0 or ord(c) == 0xFFFD or is_control(c):
            continue
        cleaned.append(" " if is_whitespace(c) else c)
    spaced = "".join(f" {c} " if any(lo <= ord(c) <= hi for lo, hi in CJK_RANGES) else c for c in cleaned)
    words = []
    for token in spaced.split():
        if lower:
            token = "".join(c for c in unicodedata.normalize("NFD", token.lower()) if unicodedata.category(c) != "Mn")
        current = ""
        for c in token:
            if is_punctuation(c):
                words += [current, c] if current else [c]
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words


def wordpiece(word, vocab, max_chars=100):
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def reference_tokenize(text, vocab, lower=True):
    return [p for w in basic_tokenize(text, lower) for p in wordpiece(w, vocab)]


@pytest.fixture(scope="module")
def sentences():
    if not (os.path.isfile(CORPUS) and os.path.isfile(VOCAB)):
        pytest.skip("shared corpus/vocab not found (set BERT_SHARED_DATA)")
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 200_000) if line.strip()]
    return lines[:2000] + lines[-2000:] + lines[100_000:101_000] + EDGE_CASES


@pytest.mark.parametrize("lower", [True, False])
def test_hf_wordpiece_equals_google_reference(sentences, lower):
    tokenizer = tokenization.load_wordpiece_tokenizer(VOCAB, do_lower_case=lower)
    vocab = set(tokenization.load_vocab(VOCAB))
    encoded = tokenizer.encode_batch(sentences, add_special_tokens=False)
    mismatches = [(s, e.tokens) for s, e in zip(sentences, encoded) if e.tokens != reference_tokenize(s, vocab, lower)]
    assert not mismatches, f"{len(mismatches)} of {len(sentences)} differ, first: {mismatches[0]}"
    assert sum(len(e.tokens) for e in encoded) > 50_000


def test_train_vocab_command(tmp_path, sentences):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences[:3000]) + "\n", encoding="utf-8")
    out = tmp_path / "vocab.txt"
    train_vocab_main([str(corpus), str(out), "--vocab_size", "1500"])
    tokens = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(tokens) == 1500 and len(set(tokens)) == 1500
    assert tokens[:5] == list(tokenization.SPECIAL_TOKENS)
    assert any(t.startswith("##") for t in tokens)
    tokenizer = tokenization.load_wordpiece_tokenizer(str(out), do_lower_case=True)
    vocab = set(tokens)
    for sentence in sentences[:300]:
        pieces = tokenizer.encode(sentence, add_special_tokens=False).tokens
        assert pieces == reference_tokenize(sentence, vocab)
        words = basic_tokenize(sentence, lower=True)
        if "[UNK]" not in pieces:  # pieces glue back into the words
            assert "".join(p[2:] if p.startswith("##") else " " + p for p in pieces).split() == words


def test_train_vocab_rejects_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no text"):
        train_vocab_main([str(empty), str(tmp_path / "v.txt"), "--vocab_size", "100"])
    assert not (tmp_path / "v.txt").exists()
