"""The numpy-BLAS eager path (utils/numpy_blas.py) against OneFlow's own ops, forward and backward."""
import argparse
import os
import subprocess
import sys

import numpy as np
import oneflow as flow
import pytest

from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering, LayerNorm, linear, pretraining_loss
from modeling import BertSelfAttention, restart_dropout_streams, squad_loss
from utils import numpy_blas
from utils import config as cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def blas_switch():
    """Yields set_enabled and restores the module's setting afterwards."""
    before = numpy_blas.ENABLED
    yield numpy_blas.set_enabled
    numpy_blas.set_enabled(before)


def assert_close(actual, reference, rtol=1e-5):
    """Max abs difference within rtol of the reference's largest magnitude (plus float32 rounding at 0)."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    scale = np.abs(reference).max()
    assert np.abs(actual - reference).max() <= rtol * scale + 1e-9, (np.abs(actual - reference).max(), scale)


def forward_backward(fn, inputs, enabled, switch, seed=0):
    """fn(*tensors) -> output; returns the output and every input's gradient for a fixed random upstream grad."""
    switch(enabled)
    tensors = [flow.tensor(x, requires_grad=True) for x in inputs]
    out = fn(*tensors)
    upstream = np.random.RandomState(seed).randn(*out.shape).astype(np.float32)
    (out * flow.tensor(upstream)).sum().backward()
    return [out.numpy()] + [t.grad.numpy() for t in tensors]


def compare_paths(fn, inputs, switch):
    assert numpy_blas.usable(*(flow.tensor(x) for x in inputs))
    fast = forward_backward(fn, inputs, True, switch)
    reference = forward_backward(fn, inputs, False, switch)
    for a, b in zip(fast, reference):
        assert_close(a, b)


def test_linear_matches_flow(blas_switch):
    rng = np.random.RandomState(1)
    x, w, b = (rng.randn(*s).astype(np.float32) for s in [(3, 5, 16), (24, 16), (24,)])
    compare_paths(linear, [x, w, b], blas_switch)
    # An input that needs no gradient (no dx computed) still gives the weight gradients.
    grads = []
    for enabled in (True, False):
        blas_switch(enabled)
        weight = flow.tensor(w, requires_grad=True)
        linear(flow.tensor(x), weight, flow.tensor(b)).sum().backward()
        grads.append(weight.grad.numpy())
    assert_close(*grads)


def test_layer_norm_matches_flow_and_nn_layer_norm(blas_switch):
    rng = np.random.RandomState(2)
    x = (rng.randn(4, 7, 32) * 3 + 1).astype(np.float32)
    upstream = flow.tensor(rng.randn(4, 7, 32).astype(np.float32))
    ours, reference = LayerNorm(32, eps=1e-12), flow.nn.LayerNorm(32, eps=1e-12)
    with flow.no_grad():
        for module in (ours, reference):
            module.weight.copy_(flow.tensor(rng.randn(32).astype(np.float32)))
            module.bias.copy_(flow.tensor(rng.randn(32).astype(np.float32)))
        reference.weight.copy_(ours.weight)
        reference.bias.copy_(ours.bias)
    compare_paths(ours, [x], blas_switch)
    blas_switch(True)
    results = []
    for module in (ours, reference):
        module.zero_grad()
        x_t = flow.tensor(x, requires_grad=True)
        out = module(x_t)
        (out * upstream).sum().backward()
        results.append([out.numpy(), x_t.grad.numpy(), module.weight.grad.numpy(), module.bias.grad.numpy()])
    for a, b in zip(*results):
        assert_close(a, b)


def test_attention_with_padding_mask_matches_flow(blas_switch):
    config = BertConfig(hidden_size=32, num_attention_heads=4, attention_probs_dropout_prob=0.0)
    attention = BertSelfAttention(config)
    rng = np.random.RandomState(3)
    hidden = rng.randn(2, 9, 32).astype(np.float32)
    mask = np.ones((2, 9), np.float32)
    mask[1, 6:] = 0
    bias = ((mask - 1.0) * 10000.0)[:, None, None, :]
    compare_paths(lambda h: attention(h, flow.tensor(bias)), [hidden], blas_switch)
    blas_switch(True)
    out = attention(flow.tensor(hidden), flow.tensor(bias)).numpy()
    # Padded keys get no weight: changing the hidden state at padding leaves the other rows as they were.
    changed = hidden.copy()
    changed[1, 6:] += 5.0
    out_changed = attention(flow.tensor(changed), flow.tensor(bias)).numpy()
    np.testing.assert_allclose(out_changed[1, :6], out[1, :6], rtol=1e-5, atol=1e-6)


def tiny_config(dropout=0.0):
    return BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def model_gradients(model, loss_fn, enabled, switch):
    """Both paths draw the same dropout masks: eager CPU masks come from each layer's numpy stream, restarted here."""
    switch(enabled)
    restart_dropout_streams(model, 0)
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return float(loss.numpy()), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("head", ["pretraining", "squad"])
def test_whole_model_gradients_match_flow(blas_switch, head, dropout):
    """With dropout on, the numpy path applies the masks inside its attention and LayerNorm kernels."""
    rng = np.random.RandomState(4)
    batch, seq = 3, 16
    ids = flow.tensor(rng.randint(0, 300, (batch, seq)), dtype=flow.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[2, 11:] = 0
    mask, segments = flow.tensor(mask), flow.tensor(rng.randint(0, 2, (batch, seq)), dtype=flow.int64)
    flow.manual_seed(0)
    if head == "pretraining":
        model = BertForPreTraining(tiny_config(dropout))
        positions = flow.tensor(rng.randint(1, 11, (batch, 4)), dtype=flow.int64)
        labels = flow.tensor(rng.randint(0, 300, (batch, 4)), dtype=flow.int64)
        nsp = flow.tensor(rng.randint(0, 2, (batch, 1)), dtype=flow.int64)

        def loss_fn():
            mlm, ns = model(ids, mask, segments, positions)
            return pretraining_loss(mlm, ns, labels, flow.ones(batch, 4), nsp)[0]
    else:
        model = BertForQuestionAnswering(tiny_config(dropout))
        starts, ends = (flow.tensor(rng.randint(0, 11, (batch,)), dtype=flow.int64) for _ in range(2))

        def loss_fn():
            return squad_loss(*model(ids, mask, segments), starts, ends)

    fast_loss, fast = model_gradients(model, loss_fn, True, blas_switch)
    ref_loss, reference = model_gradients(model, loss_fn, False, blas_switch)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
    largest = max(np.abs(g).max() for g in reference.values())
    vanishing = []
    for name in reference:
        if np.abs(reference[name]).max() < 1e-5 * largest:
            # 0 or nearly so in exact arithmetic, so only rounding is left: key biases (a key bias adds q.b to a whole
            # softmax row) and, for SQuAD, qa_outputs.bias and the last LayerNorm bias (logit grads sum to 0).
            vanishing.append(name)
            assert np.abs(fast[name]).max() < 1e-5 * largest
        else:
            assert_close(fast[name], reference[name])
    assert len(vanishing) < len(reference) // 4


def test_only_eager_local_cpu_float32_tensors_take_the_numpy_path(blas_switch):
    blas_switch(True)
    x = flow.randn(2, 3)
    assert numpy_blas.usable(x)
    assert not numpy_blas.usable(x.to(flow.float64))
    placement = flow.placement("cpu", ranks=[0])
    assert not numpy_blas.usable(x.to_global(placement=placement, sbp=flow.sbp.broadcast))

    decisions = []

    def recording_usable(*tensors):
        decisions.append(original(*tensors))
        return decisions[-1]

    layer = flow.nn.Linear(3, 4)
    original = numpy_blas.usable
    numpy_blas.usable = recording_usable
    try:
        eager = linear(x, layer.weight, layer.bias).numpy()

        class Forward(flow.nn.Graph):
            def __init__(self):
                super().__init__()
                self.layer = layer

            def build(self, x):
                return linear(x, self.layer.weight, self.layer.bias)

        graph = Forward()(x).numpy()
    finally:
        numpy_blas.usable = original
    assert decisions == [True, False]  # eager went through numpy; the graph kept OneFlow's matmul
    assert_close(graph, eager)
    blas_switch(False)
    assert not numpy_blas.usable(x)


def test_flag_and_environment_turn_it_off(blas_switch, monkeypatch):
    parser = argparse.ArgumentParser()
    cfg.add_hardware_args(parser)
    cfg.resolve_hardware(parser.parse_args(["--numpy_blas=False"]))
    assert numpy_blas.ENABLED is False
    cfg.resolve_hardware(parser.parse_args([]))
    assert numpy_blas.ENABLED is True
    monkeypatch.setenv("BERT_NUMPY_BLAS", "0")
    parser = argparse.ArgumentParser()
    cfg.add_hardware_args(parser)
    cfg.resolve_hardware(parser.parse_args([]))
    assert numpy_blas.ENABLED is False


def test_numpy_loads_an_optimized_kernel_and_oneflow_loads_without_the_override():
    probe = ("from utils import numpy_blas; import os; "
             "print(numpy_blas.numpy_openblas_kernel(), 'OPENBLAS_CORETYPE' in os.environ)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    kernel, leaked = out.stdout.split()[-2:]
    flags = open("/proc/cpuinfo").read()
    expected = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else kernel
    assert (kernel, leaked) == (expected, "False")


@pytest.mark.parametrize("gradient_scale", [1e-4, 1.0, float("nan")])
def test_adamw_clip_on_blas_matches_oneflow_clip(blas_switch, gradient_scale):
    """Per-group clip of utils.optim.AdamW: below the limit (no rescale), above it, and with a NaN gradient."""
    from utils.optim import build_optimizer

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    clipped = []
    for enabled in (True, False):
        blas_switch(enabled)
        flow.manual_seed(0)
        model = BertForPreTraining(config)
        rng = np.random.RandomState(3)
        for p in model.parameters():
            p.grad = flow.tensor(rng.randn(*p.shape).astype(np.float32) * gradient_scale)
        if np.isnan(gradient_scale):
            model.bert.pooler.dense.bias.grad = flow.full(model.bert.pooler.dense.bias.shape, float("nan"))
        optimizer = build_optimizer(model, "adamw", 1e-3, 0.01, 1.0, recipe="bert")
        optimizer.clip_grad()
        clipped.append([p.grad.numpy() for p in model.parameters()])
    total = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in clipped[1]))
    # The "bert" recipe's two groups are each clipped to norm 1 (or went NaN).
    assert total <= np.sqrt(2) * (1 + 1e-5) or np.isnan(total)
    for fast, reference in zip(*clipped):
        if np.isnan(gradient_scale):
            assert np.isnan(fast).all() and np.isnan(reference).all()
        else:
            assert_close(fast, reference, rtol=1e-6)
