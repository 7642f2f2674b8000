"""SQuAD v1.1/v2.0 JSON -> BERT features: OFRecords for the model and a side file for post-processing.

The algorithm follows Google BERT's reference run_squad.py (read_squad_examples,
convert_examples_to_features, _improve_answer_span, _check_is_max_context):
- the context is split into whitespace words, remembering which word every character belongs to;
- each word is WordPiece-tokenized on its own, keeping token<->word maps (batch-encoded here as
  pre-tokenized input, which gives the same tokens as one call per word);
- the question is cut to max_query_length tokens, and the document tokens are covered by windows of
  max_seq_length - len(query) - 3 tokens that start doc_stride tokens apart;
- a token's "max context" window is the one where it has the most context on its shorter side;
- the training answer is the first one, mapped to tokens and tightened to the tokenized answer text;
  impossible (v2.0) questions and answers outside a window point at [CLS] (start = end = 0).

Outputs in one directory: part-0 .. part-{N-1} OFRecords (dataset.squad_train_schema / squad_eval_schema,
features in order, unique_ids = 1000000000 + feature index), for eval `eval_features.json` (the side file),
and `features_meta.json`, written last, which lets build_features reuse a complete build. While they are
written the directory carries dataset's incomplete marker, so readers refuse an interrupted build.
Question ids must be unique: predictions, n-best lists and null odds are keyed by them.
"""
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

import dataset
from utils import interrupts
from utils.cli import add_bool, argument_parser
from utils.data.tokenization import load_wordpiece_tokenizer
from utils.errors import BertError
from utils.files import write_json_atomic
from utils.progress import progress_bar

UNIQUE_ID_BASE = 1000000000
SIDE_FILE = "eval_features.json"
META_FILE = "features_meta.json"
SIDE_FORMAT = "squad-eval-features/1"


class SquadDataError(BertError):
    """Bad SQuAD input or settings; the message names the file or flag."""


@dataclass
class SquadExample:
    """One question. doc_tokens are the context's whitespace words (shared by the paragraph's questions)."""
    qas_id: str
    question_text: str
    doc_tokens: list
    context_index: int
    orig_answer_text: str = ""
    start_position: int = -1  # word index of the answer's first word (training only)
    end_position: int = -1
    is_impossible: bool = False


@dataclass
class InputFeature:
    """One window of one question. Maps are keyed by position in `tokens` (document tokens only)."""
    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list
    token_to_orig_map: dict
    token_is_max_context: dict
    input_ids: np.ndarray = None
    input_mask: np.ndarray = None
    segment_ids: np.ndarray = None
    start_position: int = 0
    end_position: int = 0


@dataclass
class EvalSideData:
    """What post-processing needs: settings, examples (qas_id, doc words) and features (token maps)."""
    settings: dict
    examples: list
    features: list = field(default_factory=list)


@dataclass
class FeatureSet:
    """Result of build_features: where the records are and how many."""
    data_dir: str
    num_examples: int
    num_features: int
    side_file: str  # None for training features
    reused: bool


# ---------------------------------------------------------------- reading


def is_whitespace(c):
    # Google's run_squad splits words on exactly these characters.
    return c in " \t\r\n" or ord(c) == 0x202F


def split_words(text):
    """Context text -> (whitespace words, char_to_word_offset: word index of every character)."""
    words, char_to_word = [], []
    previous_is_space = True
    for c in text:
        if is_whitespace(c):
            previous_is_space = True
        else:
            if previous_is_space:
                words.append(c)
            else:
                words[-1] += c
            previous_is_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def _answer_words(qa, words, char_to_word):
    """First answer -> (text, start word, end word), or None when its text is not found at its offset."""
    answer = qa["answers"][0]
    text, offset = answer["text"], answer["answer_start"]
    if not 0 <= offset < len(char_to_word) or not text:
        return None
    start = char_to_word[offset]
    end = char_to_word[min(offset + len(text), len(char_to_word)) - 1]
    actual = " ".join(words[start:end + 1])
    if actual.find(" ".join(text.split())) == -1:
        return None
    return text, start, end


def _make_example(qa, words, char_to_word, context_index, is_training, version_2_with_negative, path):
    """One question -> SquadExample; None for a training answer that is not where answer_start says."""
    example = SquadExample(qa["id"], qa["question"], words, context_index)
    if not is_training:
        return example
    example.is_impossible = bool(version_2_with_negative and qa.get("is_impossible", False))
    if example.is_impossible:
        return example
    if not qa.get("answers"):
        raise SquadDataError(
            f"{path}: question {qa['id']} has no answer; pass --version_2_with_negative for SQuAD v2.0 data")
    found = _answer_words(qa, words, char_to_word)
    if found is None:
        return None
    example.orig_answer_text, example.start_position, example.end_position = found
    return example


def _check_new_id(qid, seen, path):
    """Predictions are keyed by question id, so a repeated id would silently drop one question's answer."""
    if qid in seen:
        raise SquadDataError(f"{path}: question id {qid!r} appears more than once (ids must be unique)")
    seen.add(qid)


def read_squad_examples(path, is_training, version_2_with_negative=False):
    """SQuAD JSON -> list of SquadExample in file order.

    Training examples carry the first answer as word positions; v2.0 impossible questions get
    is_impossible=True. Training questions whose answer text is not found at its offset are
    skipped with a note on stderr, as Google's script does. A repeated question id is a SquadDataError.
    """
    try:
        with open(path, encoding="utf-8") as f:
            articles = json.load(f)["data"]
    except (OSError, ValueError, KeyError) as e:
        raise SquadDataError(f"{path}: not a readable SQuAD JSON file with a 'data' list ({e})") from None
    examples, skipped, seen = [], 0, set()
    try:
        paragraphs = [paragraph for article in articles for paragraph in article["paragraphs"]]
        for context_index, paragraph in enumerate(paragraphs):
            words, char_to_word = split_words(paragraph["context"])
            for qa in paragraph["qas"]:
                _check_new_id(qa["id"], seen, path)
                example = _make_example(qa, words, char_to_word, context_index, is_training,
                                        version_2_with_negative, path)
                if example is None:
                    skipped += 1
                else:
                    examples.append(example)
    except KeyError as e:
        raise SquadDataError(f"{path}: a SQuAD article, paragraph or question lacks the field {e}") from None
    if skipped:
        print(f"{path}: skipped {skipped} training questions whose answer text is not at its answer_start",
              file=sys.stderr)
    return examples


# ---------------------------------------------------------------- features


@dataclass
class _TokenizedDoc:
    tokens: list
    ids: list
    tok_to_orig: list  # word index of every WordPiece token
    orig_to_tok: list  # first token index of every word (index of the next word's token if it has none)


def tokenize_documents(tokenizer, word_lists):
    """WordPiece-tokenizes each document's words in one batch, with token<->word maps."""
    encodings = tokenizer.encode_batch([list(w) for w in word_lists], is_pretokenized=True)
    docs = []
    for words, encoding in zip(word_lists, encodings):
        tok_to_orig = list(encoding.word_ids)
        orig_to_tok, t = [], 0
        for i in range(len(words)):
            while t < len(tok_to_orig) and tok_to_orig[t] < i:
                t += 1
            orig_to_tok.append(t)
        docs.append(_TokenizedDoc(list(encoding.tokens), list(encoding.ids), tok_to_orig, orig_to_tok))
    return docs


def improve_answer_span(doc_tokens, start, end, answer_tokens):
    """Tightest sub-span of [start, end] whose tokens equal the tokenized answer (Google's
    _improve_answer_span), e.g. answer "1895" inside the word "(1895-1943)."; else (start, end)."""
    target = " ".join(answer_tokens)
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == target:
                return new_start, new_end
    return start, end


def doc_spans(num_tokens, max_tokens_for_doc, doc_stride):
    """(start, length) windows over the document tokens; starts are doc_stride apart and the last
    window ends at the last token. An empty document gets one empty window."""
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans or [(0, 0)]


def is_max_context(spans, span_index, position):
    """Whether `position` has its best context in window `span_index`: the score of a window is
    min(left context, right context) + 0.01 * window length, and the first best window wins."""
    best_score, best_index = None, None
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return best_index == span_index


def check_room_for_context(seq_length, max_query_length, seq_flag):
    """[CLS] question [SEP] context [SEP]: the question and 3 special tokens must leave room for the context."""
    if seq_length <= max_query_length + 3:
        raise SquadDataError(f"{seq_flag} {seq_length} must exceed --max_query_length {max_query_length} + 3 to leave "
                         "room for the context")


def check_settings(max_seq_length, doc_stride, max_query_length):
    check_room_for_context(max_seq_length, max_query_length, "--max_seq_length")
    if doc_stride <= 0:
        raise SquadDataError(f"--doc_stride {doc_stride} must be positive")


def _answer_tokens(example, doc, answer_tokens):
    """Token (start, end) of a training example's answer in the whole document, or None if impossible."""
    if example.is_impossible:
        return None
    start = doc.orig_to_tok[example.start_position]
    if example.end_position < len(example.doc_tokens) - 1:
        end = doc.orig_to_tok[example.end_position + 1] - 1
    else:
        end = len(doc.tokens) - 1
    return improve_answer_span(doc.tokens, start, end, answer_tokens)


def convert_examples_to_features(examples, tokenizer, max_seq_length=384, doc_stride=128, max_query_length=64,
                                 is_training=False, progress=True):
    """SquadExamples -> InputFeatures (one per window), unique ids 1000000000, 1000000001, ... in order.

    input_ids = [CLS] query [SEP] window [SEP] + zero padding; segment 0 for the query part, 1 for the
    window. For training, start/end_position index the answer inside input_ids, or 0 ([CLS]) when the
    question is impossible or the answer is not wholly inside the window.
    """
    check_settings(max_seq_length, doc_stride, max_query_length)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    queries = tokenizer.encode_batch([e.question_text for e in examples])
    contexts = {}
    for e in examples:
        contexts.setdefault(e.context_index, e.doc_tokens)
    docs = dict(zip(contexts, tokenize_documents(tokenizer, list(contexts.values()))))
    answers = {}
    if is_training:
        answerable = [i for i, e in enumerate(examples) if not e.is_impossible]
        encoded = tokenizer.encode_batch([examples[i].orig_answer_text for i in answerable])
        answers = {i: enc.tokens for i, enc in zip(answerable, encoded)}

    features = []
    for example_index, example in enumerate(progress_bar(examples, desc="features", unit="q", disable=not progress)):
        query = queries[example_index]
        query_tokens, query_ids = query.tokens[:max_query_length], query.ids[:max_query_length]
        doc = docs[example.context_index]
        answer = _answer_tokens(example, doc, answers[example_index]) if example_index in answers else None
        spans = doc_spans(len(doc.tokens), max_seq_length - len(query_tokens) - 3, doc_stride)
        doc_offset = len(query_tokens) + 2
        for span_index, (span_start, span_length) in enumerate(spans):
            positions = range(span_start, span_start + span_length)
            tokens = ["[CLS]", *query_tokens, "[SEP]", *doc.tokens[span_start:span_start + span_length], "[SEP]"]
            ids = [cls_id, *query_ids, sep_id, *doc.ids[span_start:span_start + span_length], sep_id]
            token_to_orig_map = {doc_offset + i: doc.tok_to_orig[p] for i, p in enumerate(positions)}
            token_is_max_context = {doc_offset + i: is_max_context(spans, span_index, p)
                                    for i, p in enumerate(positions)}
            input_ids = np.zeros(max_seq_length, dtype=np.int32)
            input_ids[:len(ids)] = ids
            input_mask = (np.arange(max_seq_length) < len(ids)).astype(np.int32)
            segment_ids = np.zeros(max_seq_length, dtype=np.int32)
            segment_ids[doc_offset:len(ids)] = 1
            start_position = end_position = 0
            if answer is not None and span_start <= answer[0] and answer[1] <= span_start + span_length - 1:
                start_position = answer[0] - span_start + doc_offset
                end_position = answer[1] - span_start + doc_offset
            features.append(InputFeature(
                UNIQUE_ID_BASE + len(features), example_index, span_index, tokens, token_to_orig_map,
                token_is_max_context, input_ids, input_mask, segment_ids, start_position, end_position))
    return features


# ---------------------------------------------------------------- writing


def feature_record(feature, is_training):
    record = {"input_ids": feature.input_ids, "input_mask": feature.input_mask, "segment_ids": feature.segment_ids}
    if is_training:
        record["start_positions"] = np.array([feature.start_position], dtype=np.int32)
        record["end_positions"] = np.array([feature.end_position], dtype=np.int32)
    else:
        record["unique_ids"] = np.array([feature.unique_id], dtype=np.int32)
    return record


def _remove_parts(output_dir):
    for name in os.listdir(output_dir):
        if dataset.PART_RE.match(name):
            os.remove(os.path.join(output_dir, name))


def check_num_parts(num_parts, num_features):
    if not 1 <= num_parts <= max(num_features, 1):
        raise SquadDataError(f"--num_parts {num_parts} must be between 1 and the feature count {num_features}")


def write_features(features, output_dir, is_training, num_parts=1, progress=True):
    """Writes the features as OFRecords part-0 .. part-{num_parts-1}, in contiguous chunks so that
    reading the parts in order gives the features in order. Removes older part files. Returns counts."""
    check_num_parts(num_parts, len(features))
    os.makedirs(output_dir, exist_ok=True)
    _remove_parts(output_dir)
    bounds = np.linspace(0, len(features), num_parts + 1).round().astype(int)
    counts = []
    with progress_bar(total=len(features), desc="records", unit="feat", disable=not progress) as bar:
        for part in range(num_parts):
            with dataset.PartWriter(os.path.join(output_dir, f"{dataset.PART_PREFIX}{part}")) as writer:
                for feature in features[bounds[part]:bounds[part + 1]]:
                    writer.write(feature_record(feature, is_training))
                    bar.update()
            counts.append(writer.count)
    return counts


def write_eval_side_file(path, examples, features, settings):
    """Side file: settings, the distinct contexts' words, per example (qas_id, question, context) and per
    feature its tokens and, for its document tokens from `doc_offset` on, word index and max-context flag."""
    contexts, context_of = [], {}
    for e in examples:
        if e.context_index not in context_of:
            context_of[e.context_index] = len(contexts)
            contexts.append(e.doc_tokens)
    side = {
        "format": SIDE_FORMAT,
        "settings": settings,
        "contexts": contexts,
        "examples": [{"qas_id": e.qas_id, "question": e.question_text, "context": context_of[e.context_index]}
                     for e in examples],
        "features": [],
    }
    for f in features:
        doc_positions = sorted(f.token_to_orig_map)
        side["features"].append({
            "unique_id": f.unique_id,
            "example_index": f.example_index,
            "doc_span_index": f.doc_span_index,
            "tokens": f.tokens,
            "doc_offset": doc_positions[0] if doc_positions else len(f.tokens) - 1,
            "token_to_orig": [f.token_to_orig_map[p] for p in doc_positions],
            "token_is_max_context": [int(f.token_is_max_context[p]) for p in doc_positions],
        })
    write_json_atomic(path, side, ensure_ascii=False, separators=(",", ":"))


def load_eval_side_file(path):
    """Side file -> EvalSideData with SquadExample / InputFeature objects (no input ids) whose
    token_to_orig_map and token_is_max_context are dicts keyed by token position, as at build time."""
    try:
        with open(path, encoding="utf-8") as f:
            side = json.load(f)
    except (OSError, ValueError) as e:
        raise SquadDataError(f"{path}: cannot read the SQuAD eval side file ({e})") from None
    if side.get("format") != SIDE_FORMAT:
        raise SquadDataError(f"{path}: not a SQuAD eval side file of format {SIDE_FORMAT}")
    examples = [SquadExample(e["qas_id"], e["question"], side["contexts"][e["context"]], e["context"])
                for e in side["examples"]]
    seen = set()
    for e in examples:  # a side file built before ids were checked at build time
        _check_new_id(e.qas_id, seen, path)
    features = []
    for f in side["features"]:
        positions = range(f["doc_offset"], f["doc_offset"] + len(f["token_to_orig"]))
        features.append(InputFeature(
            f["unique_id"], f["example_index"], f["doc_span_index"], f["tokens"],
            dict(zip(positions, f["token_to_orig"])),
            {p: bool(m) for p, m in zip(positions, f["token_is_max_context"])}))
    return EvalSideData(side["settings"], examples, features)


# ---------------------------------------------------------------- one call with caching


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_features(input_file, vocab_file, output_dir, is_training, version_2_with_negative=False,
                   max_seq_length=384, doc_stride=128, max_query_length=64, do_lower_case=True, num_parts=1,
                   force=False, progress=True):
    """SQuAD JSON -> feature directory, reusing a complete earlier build with the same inputs and settings.

    The directory gets part-N OFRecords, for eval (is_training=False) the side file `eval_features.json`,
    and `features_meta.json`. Returns a FeatureSet; prints the example and feature counts.
    """
    for flag, path in (("--input_file", input_file), ("--vocab_file", vocab_file)):
        if not os.path.isfile(path):
            raise SquadDataError(f"{flag} {path}: file does not exist")
    check_settings(max_seq_length, doc_stride, max_query_length)
    settings = {
        "is_training": bool(is_training), "version_2_with_negative": bool(version_2_with_negative),
        "max_seq_length": max_seq_length, "doc_stride": doc_stride, "max_query_length": max_query_length,
        "do_lower_case": bool(do_lower_case), "num_parts": num_parts,
        "input_sha256": _file_digest(input_file), "vocab_sha256": _file_digest(vocab_file),
    }
    meta_path = os.path.join(output_dir, META_FILE)
    side_file = None if is_training else os.path.join(output_dir, SIDE_FILE)
    cached = _read_meta(meta_path)
    if not force and cached and cached["settings"] == settings and _outputs_present(output_dir, num_parts, side_file):
        result = FeatureSet(output_dir, cached["num_examples"], cached["num_features"], side_file, True)
        print(f"{input_file}: reusing {result.num_features} features of {result.num_examples} examples "
              f"in {output_dir}")
        return result

    # Everything that can fail on bad input runs before the directory is touched: an earlier build stays usable.
    tokenizer = load_wordpiece_tokenizer(vocab_file, do_lower_case)
    examples = read_squad_examples(input_file, is_training, version_2_with_negative)
    features = convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length,
                                            is_training, progress)
    check_num_parts(num_parts, len(features))
    meta = {"settings": settings, "input_file": os.path.abspath(input_file),
            "num_examples": len(examples), "num_features": len(features)}
    with dataset.writing(output_dir):
        try:
            _write_outputs(output_dir, examples, features, settings, meta, side_file, num_parts, progress)
        except BaseException:
            _remove_outputs(output_dir, side_file)  # the marker stays: readers refuse what is left
            raise
    kind = "train" if is_training else "eval"
    print(f"{input_file}: {len(examples)} examples -> {len(features)} {kind} features in {output_dir}")
    return FeatureSet(output_dir, len(examples), len(features), side_file, False)


def _write_outputs(output_dir, examples, features, settings, meta, side_file, num_parts, progress):
    """Part files, the side file, then the meta file that lets a later build reuse them."""
    meta_path = os.path.join(output_dir, META_FILE)
    if os.path.exists(meta_path):
        os.remove(meta_path)
    write_features(features, output_dir, settings["is_training"], num_parts, progress)
    if side_file:
        write_eval_side_file(side_file, examples, features, settings)
    write_json_atomic(meta_path, meta, ensure_ascii=False, separators=(",", ":"))


def _remove_outputs(output_dir, side_file):
    """Undoes a failed build: its finished part files and side file (PartWriter removes the unfinished part)."""
    _remove_parts(output_dir)
    if side_file and os.path.exists(side_file):
        os.remove(side_file)


def _read_meta(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _outputs_present(output_dir, num_parts, side_file):
    if os.path.exists(os.path.join(output_dir, dataset.INCOMPLETE_MARKER)):
        return False  # an interrupted build, even if its meta file made it to disk
    parts = [n for n in os.listdir(output_dir) if dataset.PART_RE.match(n)]
    return len(parts) == num_parts and (side_file is None or os.path.isfile(side_file))


def build_parser():
    parser = argument_parser("SQuAD JSON -> BERT OFRecord features (Google run_squad algorithm)")
    parser.add_argument("--input_file", required=True, help="SQuAD v1.1/v2.0 JSON file")
    parser.add_argument("--vocab_file", required=True, help="WordPiece vocab.txt")
    parser.add_argument("--output_dir", required=True, help="directory for part-N files and the side file")
    add_bool(parser, "--is_training", help="write train features (answer positions)")
    add_bool(parser, "--version_2_with_negative", help="SQuAD v2.0 impossible questions")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128, help="step between windows, in tokens")
    parser.add_argument("--max_query_length", type=int, default=64)
    add_bool(parser, "--do_lower_case", default=True)
    parser.add_argument("--num_parts", type=int, default=1)
    add_bool(parser, "--force", help="rebuild even if a matching build exists")
    return parser


def main(argv=None):
    with interrupts.main_guard("squad_features"):
        args = build_parser().parse_args(argv)
        try:
            build_features(args.input_file, args.vocab_file, args.output_dir, args.is_training,
                           args.version_2_with_negative, args.max_seq_length, args.doc_stride,
                           args.max_query_length, args.do_lower_case, args.num_parts, args.force)
        except (BertError, OSError) as e:  # OSError: e.g. --output_dir not writable
            sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
