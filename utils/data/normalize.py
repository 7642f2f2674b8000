"""WikiText's placeholders turned back into text before WordPiece.

WikiText (Merity et al. 2016), part of the shared corpus, replaces rare words by the literal `<unk>` and writes a
hyphen, a thousands separator or a decimal point between two words or numbers as ` @-@ `, ` @,@ `, ` @.@ `
("well @-@ known", "1 @,@ 000", "3 @.@ 5"). BERT's tokenizer reads `<unk>` as `<`, `un`, `##k`, `>`, so a model
trained on it learns to predict these pieces.

`normalize_document` maps `<unk>` to the vocab's `[UNK]` and each joiner to its character without the spaces
("well-known", "1,000", "3.5"), in the documents that hold one of these markers; other documents stay as they are.
The pipeline's tokenizer keeps `[UNK]` whole (`keep_unk_token`), so it becomes the single [UNK] id.
"""
import re

UNK_PLACEHOLDER = "<unk>"
UNK_TOKEN = "[UNK]"
JOINER = re.compile(r"\s*@([-,.])@\s*")
MARKER = re.compile(r"<unk>|@[-,.]@")


def has_wikitext_markers(sentences):
    return any(MARKER.search(sentence) for sentence in sentences)


def normalize_wikitext(sentence, unk=UNK_TOKEN):
    """`<unk>` -> unk, ` @-@ ` / ` @,@ ` / ` @.@ ` -> `-` / `,` / `.` joined to both neighbours."""
    return JOINER.sub(r"\1", sentence.replace(UNK_PLACEHOLDER, unk))


def normalize_document(sentences, unk=UNK_TOKEN):
    """(sentences, whether they were changed): normalized when the document holds a WikiText marker."""
    if not has_wikitext_markers(sentences):
        return sentences, False
    return [normalize_wikitext(sentence, unk) for sentence in sentences], True


def keep_unk_token(tokenizer):
    """`[UNK]` written in the text becomes the [UNK] id instead of `[`, `un`, `##k`, `]` (tokenizers' added tokens are
    matched before normalization and pre-tokenization)."""
    tokenizer.add_special_tokens([UNK_TOKEN])
    return tokenizer
