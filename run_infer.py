"""BERT inference on real text: next-sentence probability, fill-mask, SQuAD answer spans, hidden states.

Inputs are WordPiece-tokenized with the vocab and packed as Google BERT does ([CLS] A [SEP] (B [SEP]),
segment 0 then 1, pairs truncated longest-first); the `features` task writes the last layer's hidden
states like Google's extract_features.py. QA reuses the SQuAD windows and post-processing of run_squad.py.
Load time, graph compile time and inference time are reported apart.

  python3 run_infer.py --model_load_dir CKPT --task nsp --input_text "A" --input_text_b "B"
  python3 run_infer.py --use_lazy_model --model_path SNAPSHOT          # the seed's command
"""
import utils  # noqa: F401  (first: it prepares numpy and OneFlow, see utils/__init__.py)
import argparse
import json
import os
import sys
import time

import numpy as np
import oneflow as flow

from modeling import BertForPreTraining, BertForQuestionAnswering, BertModel
from utils import config as cfg
from utils import interrupts, onnx_serving, task_flags
from utils.checkpoints import canonical_name
from utils.squad.features import (SquadExample, check_room_for_context, convert_examples_to_features,
                                       split_words)
from utils.data.tokenization import load_wordpiece_tokenizer
from utils.squad.postprocess import compute_predictions
from utils.runtime import Placement, Task, build_bert, build_runner

MASK = "[MASK]"
QA_SEQ_LENGTH = 384  # Google's SQuAD window, the QA default when --seq_length is not given
PACKED_FIELDS = ("input_ids", "input_mask", "segment_ids")
HEAD_FIELDS = PACKED_FIELDS + ("masked_lm_positions",)
# Parameters each task reads besides the encoder; if the checkpoint lacks them they are random.
TASK_HEADS = {
    "nsp": ("bert.pooler.", "cls.seq_relationship."),
    "fill_mask": ("cls.predictions.",),
    "qa": ("qa_outputs.",),
    "features": (),
}
EXAMPLE_INPUTS = {
    "nsp": ("The storm knocked out power across the town.", "Crews worked through the night to restore it."),
    "fill_mask": ("The river flows into the [MASK] near the old harbor.", None),
    "qa": ("Where does the river end?", "The river rises in the hills and ends in the sea near the old harbor."),
    "features": ("The river rises in the hills.", None),
}


def build_parser():
    parser = argparse.ArgumentParser(description="BERT inference on text (NSP, fill-mask, QA, hidden states)")
    cfg.add_model_args(parser)
    cfg.add_hardware_args(parser)
    task_flags.add_infer_args(parser)
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="Run a model exported by python -m utils.export_onnx on ONNX Runtime instead of OneFlow")
    parser.set_defaults(seq_length=None)
    return parser


def report(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- what each task computes


def features_outputs(model, inputs):
    return (model(*inputs)[0],)


def nsp_outputs(model, inputs):
    _, nsp_logits = model(*inputs)
    return (flow.softmax(nsp_logits, dim=-1),)


def fill_mask_outputs(model, inputs):
    mlm_logits, _ = model(*inputs)
    return (flow.softmax(mlm_logits, dim=-1),)


def qa_outputs(model, inputs):
    return model(*inputs)


TASKS = {
    "features": (BertModel, Task(PACKED_FIELDS, features_outputs)),
    "nsp": (BertForPreTraining, Task(HEAD_FIELDS, nsp_outputs)),
    "fill_mask": (BertForPreTraining, Task(HEAD_FIELDS, fill_mask_outputs)),
    "qa": (BertForQuestionAnswering, Task(PACKED_FIELDS, qa_outputs)),
}


# ---------------------------------------------------------------- flags


def resolve_task(args):
    if args.output_hidden_states:
        if args.task not in (None, "features"):
            raise cfg.UsageError(f"--output_hidden_states writes features, but --task is {args.task}")
        return "features"
    return args.task or "nsp"


def checkpoint_source(args):
    """(path, init_format) of the one checkpoint flag given, or (None, None)."""
    given = [(flag, path) for flag, path in (("--model_path", args.model_path), ("--hf_model_dir", args.hf_model_dir),
                                             ("--model_load_dir", args.model_load_dir)) if path]
    if len(given) > 1:
        raise cfg.UsageError(f"{' and '.join(flag for flag, _ in given)} both name a checkpoint: pass one")
    if args.use_lazy_model and not args.model_path:
        raise cfg.UsageError("--use_lazy_model needs --model_path SNAPSHOT_DIR")
    if not given:
        return None, None
    flag, path = given[0]
    if flag == "--hf_model_dir":
        return path, "hf"
    if flag == "--model_path" and args.use_lazy_model:
        return path, "lazy"
    return path, args.init_format


def check_not_blank(args):
    """A flag given as "" would otherwise read as absent and score the built-in example (or pack an empty text)."""
    for flag in ("input_text", "input_text_b", "input_path"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            raise cfg.UsageError(f"--{flag} is given but empty: pass a non-blank value, or leave the flag out")


def read_input_file(path):
    """Non-blank lines of --input_path as (A, B or None); a tab with nothing on one side is an error."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    except OSError as e:
        raise cfg.UsageError(f"--input_path {path}: {e.strerror}") from None
    inputs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        a, b = line.split("\t", 1) if "\t" in line else (line, None)
        if not a.strip() or (b is not None and not b.strip()):
            raise cfg.UsageError(f"--input_path {path}: line {number} has an empty text on one side of its tab")
        inputs.append((a, b))
    if not inputs:
        raise cfg.UsageError(f"--input_path {path}: no non-empty lines")
    return inputs


def read_inputs(args, task):
    """[(text_a, text_b or None)] from --input_text/--input_text_b or --input_path (tab separates A and B)."""
    check_not_blank(args)
    if args.input_path and args.input_text:
        raise cfg.UsageError("--input_text and --input_path both given: pass one")
    if args.input_text_b and not args.input_text:
        raise cfg.UsageError("--input_text_b needs --input_text")
    if args.input_path:
        inputs = read_input_file(args.input_path)
    elif args.input_text:
        inputs = [(args.input_text, args.input_text_b)]
    else:
        inputs = [EXAMPLE_INPUTS[task]]
        report(f"no --input_text or --input_path: using a built-in {task} example")
    needs_b = {"nsp": "a second sentence", "qa": "a context"}
    for i, (a, b) in enumerate(inputs):
        if task in needs_b and not b:
            raise cfg.UsageError(f"--task {task} needs {needs_b[task]} for input {i}: --input_text_b, or "
                                 "'A<TAB>B' lines in --input_path")
        if task == "fill_mask" and MASK not in a + (b or ""):
            raise cfg.UsageError(f"--task fill_mask: input {i} has no {MASK} token")
    return inputs


# ---------------------------------------------------------------- model


def load_model(args, model_class, path, init_format):
    """(model, missing parameter names) built from the checkpoint's config, or from the flags without one."""
    if path is None:
        cfg.warn("no checkpoint given (--model_load_dir, --hf_model_dir or --model_path): every weight is random")
    _, model, load = build_bert(args, model_class, path, init_format)
    if load is None:
        return model, [name for name, _ in model.named_parameters()]
    report(load.summary())
    return model, load.missing


def warn_random_heads(task, missing):
    """Outputs of a head that the checkpoint did not have are noise: say so loudly."""
    heads = [name for name in missing if canonical_name(name).startswith(TASK_HEADS[task])]
    if heads:
        cfg.warn(f"--task {task}: the checkpoint has no {', '.join(heads)}; these are newly initialized (random), "
                 f"so the {task} outputs below are NOT meaningful. Load a checkpoint that has this head.")


# ---------------------------------------------------------------- packing


def truncate_longer_from_end(a, b, max_tokens):
    """Google's _truncate_seq_pair: drop tokens from the end of the longer side until both fit."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


def pack(tokenizer, text_a, text_b, max_length):
    """[CLS] A [SEP] (B [SEP]) -> (tokens, ids, segment ids), truncated to max_length."""
    enc_a = tokenizer.encode(text_a)
    enc_b = tokenizer.encode(text_b) if text_b is not None else None
    pairs_a = list(zip(enc_a.tokens, enc_a.ids))
    pairs_b = list(zip(enc_b.tokens, enc_b.ids)) if enc_b is not None else []
    budget = max_length - (3 if enc_b is not None else 2)
    kept_a, kept_b = truncate_longer_from_end(pairs_a, pairs_b, budget)
    if len(kept_a) + len(kept_b) < len(pairs_a) + len(pairs_b):
        cfg.warn(f"input truncated to {max_length} tokens (--seq_length)")
    cls, sep = ("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))
    packed = [cls, *kept_a, sep] + ([*kept_b, sep] if enc_b is not None else [])
    segments = [0] * (len(kept_a) + 2) + [1] * (len(packed) - len(kept_a) - 2)
    return [t for t, _ in packed], [i for _, i in packed], segments


def padded_rows(rows, length):
    """Lists of ids -> int32 [N, length] with zero padding."""
    out = np.zeros((len(rows), length), dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def packed_batch(packed, length):
    ids, segments = [p[1] for p in packed], [p[2] for p in packed]
    return {"input_ids": padded_rows(ids, length),
            "input_mask": padded_rows([[1] * len(r) for r in ids], length),
            "segment_ids": padded_rows(segments, length)}


def mask_positions(packed):
    """[N, P] positions of [MASK] tokens (P = the most in one input; rows padded with 0) and their counts."""
    positions = [[i for i, t in enumerate(p[0]) if t == MASK] for p in packed]
    return padded_rows([p or [0] for p in positions], max(len(p) for p in positions) or 1), positions


# ---------------------------------------------------------------- running


class Timer:
    """Graph compile apart from inference: the first graph call compiles, later calls only run."""

    def __init__(self, runner, mode):
        self.runner, self.mode = runner, mode
        self.first_call = None
        self.calls, self.seconds = 0, 0.0

    def __call__(self, batch):
        if self.mode == "graph" and self.first_call is None:
            start = time.time()
            self.runner.eval_step(batch)[0].numpy()
            self.first_call = time.time() - start
        start = time.time()
        outputs = [t.numpy() for t in self.runner.eval_step(batch)]
        self.seconds += time.time() - start
        self.calls += 1
        return outputs

    def summary(self):
        lines = []
        if self.first_call is not None:
            compile_seconds = max(self.first_call - self.seconds / max(self.calls, 1), 0.0)
            lines.append(f"graph compile time: {compile_seconds:.3f} s")
        lines.append(f"inference time: {self.seconds:.3f} s ({self.calls} batch{'es' if self.calls != 1 else ''})")
        return lines


def run_batches(timer, batch, batch_size):
    """Runs a dict of [N, ...] arrays in batches of batch_size (the last padded with copies of row 0, so a
    graph sees one shape); returns the outputs' real rows concatenated."""
    total = len(next(iter(batch.values())))
    outputs = []
    for start in range(0, total, batch_size):
        rows = np.arange(start, min(start + batch_size, total))
        rows_padded = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
        result = timer({name: array[rows_padded] for name, array in batch.items()})
        outputs.append([r[:len(rows)] for r in result])
    return [np.concatenate(parts) for parts in zip(*outputs)]


def infer_packed(task, timer, tokenizer, inputs, args, max_length):
    packed = [pack(tokenizer, a, b, max_length) for a, b in inputs]
    batch = packed_batch(packed, max(len(p[1]) for p in packed))
    positions = None
    if task in ("nsp", "fill_mask"):
        batch["masked_lm_positions"], positions = mask_positions(packed)
    (output,) = run_batches(timer, batch, args.batch_size)
    results = []
    for i, ((a, b), (tokens, _, _)) in enumerate(zip(inputs, packed)):
        record = {"input": i, "text_a": a, **({"text_b": b} if b is not None else {})}
        if task == "nsp":
            record["is_next_probability"] = float(output[i, 0])  # label 0 = IsNext (Google convention)
        elif task == "fill_mask":
            record["masks"] = [top_k(output[i, j], tokenizer, args.top_k) for j in range(len(positions[i]))]
        else:
            record.update(features_record(output[i, :len(tokens)], tokens, i, len(inputs), args.output_hidden_states))
        results.append(record)
    return results


def top_k(probabilities, tokenizer, k):
    best = np.argsort(-probabilities, kind="stable")[:k]
    return [{"token": tokenizer.id_to_token(int(t)), "probability": float(probabilities[t])} for t in best]


def hidden_states_path(path, index, count):
    if count == 1:
        return path
    stem = path[:-4] if path.endswith(".npy") else path
    return f"{stem}_{index}.npy"


def features_record(states, tokens, index, count, output_path):
    record = {"tokens": tokens, "shape": list(states.shape)}
    if output_path:
        path = hidden_states_path(output_path, index, count)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        np.save(path, states.astype(np.float32))
        record["file"] = path
    else:
        record["cls_vector_head"] = [round(float(v), 6) for v in states[0, :8]]
    return record


def infer_qa(timer, tokenizer, inputs, args, max_length):
    """Question + context through SQuAD windows and post-processing (utils/squad/features.py and postprocess.py)."""
    examples = []
    for i, (question, context) in enumerate(inputs):
        words, _ = split_words(context)
        examples.append(SquadExample(str(i), question, words, i))
    features = convert_examples_to_features(examples, tokenizer, max_length, args.doc_stride, args.max_query_length,
                                            is_training=False, progress=False)
    length = max(int(f.input_mask.sum()) for f in features)
    batch = {"input_ids": np.stack([f.input_ids[:length] for f in features]),
             "input_mask": np.stack([f.input_mask[:length] for f in features]),
             "segment_ids": np.stack([f.segment_ids[:length] for f in features])}
    start_logits, end_logits = run_batches(timer, batch, args.batch_size)
    logits = {f.unique_id: (start_logits[i], end_logits[i]) for i, f in enumerate(features)}
    result = compute_predictions(examples, features, logits, args.n_best_size, args.max_answer_length,
                                 args.do_lower_case, False)
    records = []
    for i, (question, context) in enumerate(inputs):
        best = result.nbest[str(i)][0]
        records.append({"input": i, "question": question, "context": context, "answer": result.predictions[str(i)],
                        "probability": best["probability"], "start_logit": best["start_logit"],
                        "end_logit": best["end_logit"]})
    return records


def run(args):
    cfg.check_flags(args)
    cfg.resolve_hardware(args)
    served = onnx_serving.open_model(args) if args.onnx else None
    task = resolve_task(args)
    path, init_format = checkpoint_source(args)
    inputs = read_inputs(args, task)
    vocab_file = task_flags.resolve_tokenizer(args, path)
    if vocab_file is None:
        raise cfg.UsageError("--vocab_file is required (the checkpoint has no vocab.txt)")
    tokenizer = load_wordpiece_tokenizer(vocab_file, args.do_lower_case)
    tokenizer.add_special_tokens([MASK])  # "[MASK]" in the text is the mask token, not "[", "mask", "]"
    if served is not None:
        max_length = max_length_for(args, task, served.max_position_embeddings, served.vocab_size, tokenizer,
                                    vocab_file)
        return answer(task, served.timer(), tokenizer, inputs, args, max_length)

    start = time.time()
    model_class, task_def = TASKS[task]
    model, missing = load_model(args, model_class, path, init_format)
    model.to(args.device)
    model.eval()
    report(f"load time: {time.time() - start:.3f} s")
    warn_random_heads(task, missing)
    max_length = max_length_for(args, task, model.config.max_position_embeddings, model.config.vocab_size,
                                tokenizer, vocab_file)
    runner = build_runner(args.mode, task_def, model, Placement(args.device, False), use_fp16=args.use_fp16)
    return answer(task, Timer(runner, args.mode), tokenizer, inputs, args, max_length)


def max_length_for(args, task, positions, vocab_size, tokenizer, vocab_file):
    """The packing length (--seq_length, else the model's positions, 384 for qa), checked against the model."""
    max_length = args.seq_length or (min(QA_SEQ_LENGTH, positions) if task == "qa" else positions)
    if max_length > positions:
        raise cfg.UsageError(f"--seq_length {max_length} exceeds the model's max_position_embeddings {positions}")
    if tokenizer.get_vocab_size() > vocab_size:
        raise cfg.UsageError(f"--vocab_file {vocab_file} has {tokenizer.get_vocab_size()} tokens but the model's "
                             f"vocab_size is {vocab_size}")
    if task == "qa":
        check_room_for_context(max_length, args.max_query_length, "--seq_length")
    return max_length


def answer(task, timer, tokenizer, inputs, args, max_length):
    """Runs the inputs through timer (a OneFlow runner or an ONNX Runtime session) and prints the records."""
    if task == "qa":
        records = infer_qa(timer, tokenizer, inputs, args, max_length)
    else:
        records = infer_packed(task, timer, tokenizer, inputs, args, max_length)
    for line in timer.summary():
        report(line)
    for record in records:
        print(json.dumps(dict(record, task=task), ensure_ascii=False), flush=True)
    return records


def main(argv=None):
    args = cfg.parse_args(build_parser(), argv)
    with interrupts.main_guard("run_infer.py", errors_exit_with=2):
        return run(args)


if __name__ == "__main__":
    main()
