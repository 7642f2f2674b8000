#!/usr/bin/env python
"""Reference SQuAD fine-tune with PyTorch and HF transformers: the outside check of run_squad.py (issue H).

Not part of the project's environment: run it in a separate venv (torch, transformers, safetensors, numpy<2),
e.g. `python3.11 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch transformers safetensors "numpy<2"`.
It trains HF's BertForQuestionAnswering from the same initial weights (an HF model directory), in one of two
input modes:

  --input hf     HF's own pipeline: fast-tokenizer windows (overlap --doc_stride tokens), its own answer
                 labels, and HF-style post-processing (best start+end sum over the n-best of every window);
                 writes predictions.json (and null_odds.json for v2.0) for utils.squad_evaluate.
  --input ours   the project's training batches, in its loader's order, exported by export_training_batches.py;
                 saves the fine-tuned model as an HF directory, which `run_squad.py --do_train=False
                 --model_load_dir DIR` then predicts with the project's features and post-processing.
                 This isolates training numerics from data and post-processing.

--recipe picks the optimizer details, as utils/optim.py's recipes of the same names:
  bert  Google BERT's optimization.py: AdamW eps 1e-6, no weight decay on biases/LayerNorm, gradient clipping
        per parameter group (OneFlow's nn.Graph rule), linear warmup to the value the linear decay (from step 0)
        has reached at the end of warmup.
  hf    HF's usual loop: AdamW eps 1e-8, weight decay on every parameter, one global gradient norm, linear
        warmup to the full rate and linear decay to 0 after it (get_linear_schedule_with_warmup).
"""
import argparse
import collections
import json
import math
import os
import shutil
import time

import numpy as np
import torch
from transformers import BertForQuestionAnswering, BertTokenizerFast

THREADS = 2


# ---------------------------------------------------------------- the optimizer recipes


def is_no_decay(name):
    return name.endswith("bias") or "LayerNorm" in name


def parameter_groups(model, weight_decay, recipe):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if recipe == "hf":
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    return [{"params": [p for n, p in named if not is_no_decay(n)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if is_no_decay(n)], "weight_decay": 0.0}]


def build_optimizer(model, lr, weight_decay, recipe):
    eps = 1e-8 if recipe == "hf" else 1e-6
    return torch.optim.AdamW(parameter_groups(model, weight_decay, recipe), lr=lr, betas=(0.9, 0.999), eps=eps)


def lr_factor(step, total_steps, warmup_steps, recipe):
    """Multiplier of the base rate used by optimizer step `step` (0-based)."""
    if recipe == "hf":
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    if step < warmup_steps:
        return step / warmup_steps * (1.0 - warmup_steps / total_steps)
    return max(0.0, 1.0 - step / total_steps)


def clip_gradients(optimizer, max_norm, recipe):
    if recipe == "hf":
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm)
    else:
        for group in optimizer.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], max_norm)


def train_step(model, optimizer, batch, lr, max_norm, recipe):
    """One optimizer step on a dict of int64 tensors; returns the loss (mean of start and end CE)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    out = model(input_ids=batch["input_ids"], attention_mask=batch["input_mask"],
                token_type_ids=batch["segment_ids"], start_positions=batch["start_positions"].reshape(-1),
                end_positions=batch["end_positions"].reshape(-1))
    out.loss.backward()
    clip_gradients(optimizer, max_norm, recipe)
    optimizer.step()
    optimizer.zero_grad()
    return out.loss.item()


# ---------------------------------------------------------------- HF's own windows and labels


def hf_features(tokenizer, path, seq_length, doc_stride, is_training):
    """(examples, encodings) from a SQuAD JSON with HF fast-tokenizer windows over the context."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    examples = [{"id": qa["id"], "question": qa["question"].lstrip(), "context": p["context"],
                 "answers": qa.get("answers", []), "impossible": qa.get("is_impossible", False) or not qa.get("answers")}
                for article in data for p in article["paragraphs"] for qa in p["qas"]]
    enc = tokenizer([e["question"] for e in examples], [e["context"] for e in examples], truncation="only_second",
                    max_length=seq_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length")
    features = []
    for i, example_index in enumerate(enc["overflow_to_sample_mapping"]):
        sequence_ids = enc.sequence_ids(i)
        offsets = [o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
        feature = {"example_index": example_index, "offsets": offsets, "input_ids": enc["input_ids"][i],
                   "input_mask": enc["attention_mask"][i], "segment_ids": enc["token_type_ids"][i]}
        if is_training:
            feature["start_positions"], feature["end_positions"] = answer_tokens(examples[example_index], offsets)
        features.append(feature)
    return examples, features


def answer_tokens(example, offsets):
    """Token span of the first answer inside this window, or (0, 0) when it is impossible or not inside."""
    if example["impossible"]:
        return 0, 0
    answer = example["answers"][0]
    start_char = answer["answer_start"]
    end_char = start_char + len(answer["text"])
    context = [k for k, o in enumerate(offsets) if o is not None]
    if offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    start = next(k for k in context if offsets[k][1] > start_char)
    end = next(k for k in reversed(context) if offsets[k][0] < end_char)
    return start, end


def hf_postprocess(examples, features, logits, n_best_size, max_answer_length, v2, threshold=0.0):
    """(predictions, null_odds): best span by start+end logit over all windows of each question."""
    by_example = collections.defaultdict(list)
    for index, feature in enumerate(features):
        by_example[feature["example_index"]].append(index)
    predictions, null_odds = {}, {}
    for example_index, example in enumerate(examples):
        best_text, best_score, null_score = "", -math.inf, math.inf
        for index in by_example[example_index]:
            start_logits, end_logits = logits[index]
            offsets = features[index]["offsets"]
            null_score = min(null_score, float(start_logits[0] + end_logits[0]))
            for s in np.argsort(start_logits)[::-1][:n_best_size]:
                for e in np.argsort(end_logits)[::-1][:n_best_size]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(start_logits[s] + end_logits[e])
                    if score > best_score:
                        best_score = score
                        best_text = example["context"][offsets[s][0]:offsets[e][1]]
        if v2:
            null_odds[example["id"]] = null_score - best_score
            predictions[example["id"]] = "" if null_score > best_score + threshold else best_text
        else:
            predictions[example["id"]] = best_text
    return predictions, null_odds


# ---------------------------------------------------------------- runs


def tensors(features, rows, fields):
    return {f: torch.tensor(np.array([features[r][f] for r in rows]), dtype=torch.long) for f in fields}


TRAIN_FIELDS = ("input_ids", "input_mask", "segment_ids", "start_positions", "end_positions")


def training_batches(args, tokenizer):
    """(number of steps, iterator of batches): HF windows shuffled by a seeded permutation, or the exported ones."""
    if args.input == "ours":
        exported = np.load(args.features)
        steps = exported["input_ids"].shape[0]
        return steps, ({f: torch.tensor(exported[f][s], dtype=torch.long) for f in TRAIN_FIELDS} for s in range(steps))
    _, features = hf_features(tokenizer, args.train_file, args.seq_length, args.doc_stride, is_training=True)
    steps_per_epoch = len(features) // args.batch_size
    steps = max(1, round(args.num_epoch * steps_per_epoch))
    print(f"train: {len(features)} HF windows, {steps_per_epoch} steps/epoch, {steps} steps", flush=True)

    def batches():
        for step in range(steps):
            epoch, within = divmod(step, steps_per_epoch)
            order = np.random.RandomState(args.seed + epoch).permutation(len(features))
            yield tensors(features, order[within * args.batch_size:(within + 1) * args.batch_size], TRAIN_FIELDS)
    return steps, batches()


def train(args, model, tokenizer):
    steps, batches = training_batches(args, tokenizer)
    warmup = int(args.warmup_proportion * steps)
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, args.recipe)
    model.train()
    log, window, start = [], [], time.time()
    for step, batch in enumerate(batches):
        lr = args.learning_rate * lr_factor(step, steps, warmup, args.recipe)
        window.append(train_step(model, optimizer, batch, lr, 1.0, args.recipe))
        log.append({"step": step, "loss": window[-1], "lr": lr})
        if (step + 1) % 20 == 0 or step + 1 == steps:
            print(f"step {step}: loss {np.mean(window):.4f} lr {lr:.3g} ({time.time() - start:.0f} s)", flush=True)
            window = []
    with open(os.path.join(args.output_dir, "train_log.jsonl"), "w") as f:
        f.writelines(json.dumps(entry) + "\n" for entry in log)
    return time.time() - start


@torch.no_grad()
def predict(args, model, tokenizer):
    examples, features = hf_features(tokenizer, args.predict_file, args.seq_length, args.doc_stride, is_training=False)
    model.eval()
    logits = []
    for first in range(0, len(features), 64):
        batch = tensors(features, range(first, min(first + 64, len(features))), TRAIN_FIELDS[:3])
        out = model(input_ids=batch["input_ids"], attention_mask=batch["input_mask"], token_type_ids=batch["segment_ids"])
        logits.extend(zip(out.start_logits.numpy(), out.end_logits.numpy()))
    predictions, null_odds = hf_postprocess(examples, features, logits, args.n_best_size, args.max_answer_length,
                                            args.version_2_with_negative)
    with open(os.path.join(args.output_dir, "predictions.json"), "w") as f:
        json.dump(predictions, f)
    if args.version_2_with_negative:
        with open(os.path.join(args.output_dir, "null_odds.json"), "w") as f:
            json.dump(null_odds, f)
    print(f"predicted {len(features)} HF windows of {len(examples)} questions", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", choices=["hf", "ours"], required=True)
    ap.add_argument("--recipe", choices=["hf", "bert"], required=True)
    ap.add_argument("--model_dir", required=True, help="initial weights: an HF BERT directory with vocab.txt")
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--train_file", help="SQuAD JSON (--input hf)")
    ap.add_argument("--predict_file", help="SQuAD JSON (--input hf)")
    ap.add_argument("--features", help="npz from export_training_batches.py (--input ours)")
    ap.add_argument("--version_2_with_negative", action="store_true")
    ap.add_argument("--seq_length", type=int, default=256)
    ap.add_argument("--doc_stride", type=int, default=128)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--num_epoch", type=float, default=1.0)
    ap.add_argument("--learning_rate", type=float, default=5e-5)
    ap.add_argument("--warmup_proportion", type=float, default=0.1)
    ap.add_argument("--weight_decay", type=float, default=0.01)
    ap.add_argument("--hidden_dropout_prob", type=float, default=None)
    ap.add_argument("--attention_probs_dropout_prob", type=float, default=None)
    ap.add_argument("--n_best_size", type=int, default=20)
    ap.add_argument("--max_answer_length", type=int, default=30)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()

    torch.set_num_threads(THREADS)
    torch.manual_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    overrides = {k: getattr(args, k) for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")
                 if getattr(args, k) is not None}
    model = BertForQuestionAnswering.from_pretrained(args.model_dir, attn_implementation="eager", **overrides)
    tokenizer = BertTokenizerFast(os.path.join(args.model_dir, "vocab.txt"), do_lower_case=True)
    seconds = train(args, model, tokenizer)
    print(f"trained in {seconds:.0f} s", flush=True)
    if args.input == "ours":
        model.save_pretrained(os.path.join(args.output_dir, "model"))
        shutil.copyfile(os.path.join(args.model_dir, "vocab.txt"), os.path.join(args.output_dir, "model", "vocab.txt"))
    if args.predict_file:
        predict(args, model, tokenizer)


if __name__ == "__main__":
    main()
