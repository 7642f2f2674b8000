"""Optimizer and learning-rate schedule shared by eager and graph training.

AdamW (Loshchilov & Hutter 2019) or LAMB (You et al. 2020) with the BERT recipe: no weight decay on
biases and LayerNorm, gradient clipping at max norm 1.0, linear warmup then linear (power 1) decay to 0.

Clipping is per parameter group in both modes, because that is what nn.Graph's `clip_grad_max_norm`
does; eager mode applies the same group clip through `optimizer.clip_grad()` before `step()`.
The clip must be set on every group in graph mode anyway: without it OneFlow 0.9 computes wrong,
run-to-run varying gradients under gradient accumulation on CPU (tests/test_modes.py catches it).
"""
import oneflow as flow

BETAS = (0.9, 0.999)
EPS = 1e-6  # Google BERT's AdamWeightDecayOptimizer epsilon


def is_no_decay(name):
    return name.endswith("bias") or "LayerNorm" in name


def parameter_groups(model, weight_decay, clip_grad_max_norm):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if is_no_decay(name) else decay).append(param)
    clip = {"clip_grad_max_norm": clip_grad_max_norm, "clip_grad_norm_type": 2.0}
    return [
        {"params": decay, "weight_decay": weight_decay, **clip},
        {"params": no_decay, "weight_decay": 0.0, **clip},
    ]


def build_optimizer(model, optim_name, lr, weight_decay, clip_grad_max_norm):
    groups = parameter_groups(model, weight_decay, clip_grad_max_norm)
    if optim_name == "adamw":
        return flow.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS)
    if optim_name == "lamb":
        return flow.optim.LAMB(groups, lr=lr, betas=BETAS, eps=EPS)
    raise ValueError(f"--optim_name {optim_name!r}: expected adamw or lamb")


def build_lr_scheduler(optimizer, total_steps, warmup_steps):
    """Linear warmup from 0 over warmup_steps, then linear decay to 0 at total_steps (works in nn.Graph)."""
    decay = flow.optim.lr_scheduler.PolynomialLR(
        optimizer, decay_batch=max(total_steps, 1), end_learning_rate=0.0, power=1.0
    )
    if warmup_steps <= 0:
        return decay
    return flow.optim.lr_scheduler.WarmupLR(
        decay, warmup_factor=0.0, warmup_iters=warmup_steps, warmup_method="linear"
    )
