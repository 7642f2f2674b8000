#!/usr/bin/env python
"""Writes tests/fixtures/squad_step_reference/: a tiny HF BertForQuestionAnswering, fixed batches, and what
PyTorch computes for them, the oracle of tests/test_step_parity.py (issue H).

The reference runs both of squad_reference.py's recipes (`bert` and `hf`, utils/optim.py's recipes of the same
names) with dropout 0, so the project's eager and graph steps must reproduce them: the gradient of every parameter
at the first step, and the loss and learning rate of every step. Run it in the PyTorch venv (see squad_reference.py):

    /tmp/torchref/bin/python examples/pytorch_reference/make_step_fixture.py tests/fixtures/squad_step_reference
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import BertConfig, BertForQuestionAnswering

from squad_reference import build_optimizer, lr_factor, train_step

CONFIG = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02)
STEPS, BATCH, SEQ, WARMUP = 50, 4, 32, 5
LEARNING_RATE, WEIGHT_DECAY, MAX_NORM = 2e-3, 0.01, 1.0


def make_batches(rng):
    """[STEPS, BATCH, ...] arrays: [CLS] question [SEP] context [SEP] with padding, answers inside the context."""
    lengths = rng.integers(SEQ // 2, SEQ + 1, size=(STEPS, BATCH))
    question = rng.integers(3, 8, size=(STEPS, BATCH))
    positions = np.arange(SEQ)
    input_mask = (positions < lengths[..., None]).astype(np.int32)
    segment_ids = ((positions > question[..., None]) & (input_mask == 1)).astype(np.int32)
    input_ids = rng.integers(5, CONFIG["vocab_size"], size=(STEPS, BATCH, SEQ)).astype(np.int32) * input_mask
    start = rng.integers(question + 2, lengths - 1)
    end = np.minimum(start + rng.integers(0, 4, size=start.shape), lengths - 2)
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
            "start_positions": start[..., None].astype(np.int32), "end_positions": end[..., None].astype(np.int32)}


def reference_model():
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(**CONFIG))
    # HF's word embedding never updates its [PAD] row (padding_idx); Google's BERT and ours train it like any row.
    model.bert.embeddings.word_embeddings.padding_idx = None
    # HF starts LayerNorm at (1, 0) and biases at 0; random ones make their gradients part of the check.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def step1_gradients(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["input_mask"], token_type_ids=batch["segment_ids"],
                start_positions=batch["start_positions"].reshape(-1), end_positions=batch["end_positions"].reshape(-1))
    out.loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad()
    return grads


def trajectory(recipe, batches, step1_grads):
    """Loss and learning rate of every step, and the step-1 gradient norm of every parameter group."""
    model = reference_model()
    model.train()
    optimizer = build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY, recipe)
    group_norms = [float(np.sqrt(sum((step1_grads[n] ** 2).sum() for n, p in model.named_parameters()
                                     if any(p is q for q in g["params"]))))
                   for g in optimizer.param_groups]
    losses, lrs = [], []
    for step in range(STEPS):
        batch = {k: torch.tensor(v[step], dtype=torch.long) for k, v in batches.items()}
        lrs.append(LEARNING_RATE * lr_factor(step, STEPS, WARMUP, recipe))
        losses.append(train_step(model, optimizer, batch, lrs[-1], MAX_NORM, recipe))
    return {"recipe": recipe, "losses": losses, "learning_rates": lrs, "step1_group_grad_norms": group_norms,
            "steps": STEPS, "warmup_steps": WARMUP, "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
            "max_norm": MAX_NORM, "torch": torch.__version__,
            "command": "examples/pytorch_reference/make_step_fixture.py tests/fixtures/squad_step_reference"}


def main():
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    model = reference_model()
    model.save_pretrained(os.path.join(out_dir, "model"))
    batches = make_batches(np.random.default_rng(0))
    np.savez_compressed(os.path.join(out_dir, "batches.npz"), **batches)
    first = {k: torch.tensor(v[0], dtype=torch.long) for k, v in batches.items()}
    grads = step1_gradients(model, first)
    np.savez_compressed(os.path.join(out_dir, "step1_gradients.npz"), **grads)
    for recipe in ("bert", "hf"):
        result = trajectory(recipe, batches, grads)
        with open(os.path.join(out_dir, f"trajectory_{recipe}.json"), "w") as f:
            json.dump(result, f, indent=1)
        print(f"{recipe}: losses {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}; "
              f"step-1 group gradient norms {result['step1_group_grad_norms']}")


if __name__ == "__main__":
    main()
