"""Optimizer and learning-rate schedule shared by eager and graph training.

AdamW (Loshchilov & Hutter 2019) or LAMB (You et al. 2020) with gradient clipping and linear warmup then
linear decay to 0, in one of two recipes:

- "bert", Google BERT's optimization.py (pre-training): eps 1e-6, no weight decay on biases and LayerNorm, and
  the linear decay runs from step 0 underneath the warmup, so the rate peaks at (1 - warmup/total) x lr.
  Its two parameter groups are clipped each on its own.
- "hf", Hugging Face's usual fine-tuning loop: eps 1e-8, weight decay on every parameter, one gradient norm
  over all parameters, and the decay starts after the warmup, so the rate peaks at lr. On SQuAD v1.1 it scored
  3.1 F1 above "bert" on the same batches (docs/finetune_and_inference.md#parity-with-hugging-face), so
  run_squad.py uses it by default.

Clipping is per parameter group in both modes, because that is what nn.Graph's `clip_grad_max_norm` does
(a single group is a global norm); eager mode applies the same group clip through `optimizer.clip_grad()`
before `step()`. The clip must be set on every group in graph mode anyway: without it OneFlow 0.9 computes
wrong, run-to-run varying gradients under gradient accumulation on CPU (tests/test_pretraining.py catches it).
"""
from dataclasses import dataclass

import oneflow as flow

from utils import numpy_blas

BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class Recipe:
    eps: float
    decay_biases_and_layer_norm: bool
    decay_after_warmup: bool


RECIPES = {
    "bert": Recipe(eps=1e-6, decay_biases_and_layer_norm=False, decay_after_warmup=False),
    "hf": Recipe(eps=1e-8, decay_biases_and_layer_norm=True, decay_after_warmup=True),
}


def is_no_decay(name):
    return name.endswith("bias") or "LayerNorm" in name


def parameter_groups(model, weight_decay, clip_grad_max_norm, recipe):
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    clip = {"clip_grad_max_norm": clip_grad_max_norm, "clip_grad_norm_type": 2.0}
    if RECIPES[recipe].decay_biases_and_layer_norm:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay, **clip}]
    return [
        {"params": [p for name, p in params if not is_no_decay(name)], "weight_decay": weight_decay, **clip},
        {"params": [p for name, p in params if is_no_decay(name)], "weight_decay": 0.0, **clip},
    ]


class AdamW(flow.optim.AdamW):
    """OneFlow's AdamW whose eager CPU gradient clip runs on numpy's BLAS (numpy_blas.clip_grad_norm_).

    Same rule as OneFlow's clip_grad, 250 -> 90 ms per BERT-base step. Graph mode never calls clip_grad (nn.Graph
    clips with its own ops); global tensors, other norm types and --numpy_blas=False keep OneFlow's clip.
    """

    def clip_grad(self, error_if_nonfinite=False):
        params = [p for group in self.param_groups for p in group.parameters]
        fast = numpy_blas.usable(*params) and not error_if_nonfinite and all(
            group._enable_clip_grad and group["clip_grad_norm_type"] == 2.0 for group in self.param_groups)
        if not fast:
            return super().clip_grad(error_if_nonfinite)
        for group in self.param_groups:
            numpy_blas.clip_grad_norm_(group.parameters, group["clip_grad_max_norm"])


def build_optimizer(model, optim_name, lr, weight_decay, clip_grad_max_norm, recipe="bert"):
    groups = parameter_groups(model, weight_decay, clip_grad_max_norm, recipe)
    eps = RECIPES[recipe].eps
    if optim_name == "adamw":
        return AdamW(groups, lr=lr, betas=BETAS, eps=eps)
    if optim_name == "lamb":
        return flow.optim.LAMB(groups, lr=lr, betas=BETAS, eps=eps)
    raise ValueError(f"--optim_name {optim_name!r}: expected adamw or lamb")


def build_lr_scheduler(optimizer, total_steps, warmup_steps, recipe="bert"):
    """Linear warmup from 0 over warmup_steps, then linear decay to 0 at total_steps (works in nn.Graph)."""
    decay_after_warmup = RECIPES[recipe].decay_after_warmup and warmup_steps > 0
    decay_steps = total_steps - warmup_steps if decay_after_warmup else total_steps
    decay = flow.optim.lr_scheduler.PolynomialLR(
        optimizer, decay_batch=max(decay_steps, 1), end_learning_rate=0.0, power=1.0
    )
    if warmup_steps <= 0:
        return decay
    return flow.optim.lr_scheduler.WarmupLR(
        decay, warmup_factor=0.0, warmup_iters=warmup_steps, warmup_method="linear", warmup_prefix=decay_after_warmup
    )
