"""Eager CPU matrix products on numpy's BLAS, with the dropout and clip work next to them (autograd Functions).

Why: OneFlow 0.9's CPU matmul runs its bundled OpenBLAS on one thread with a generic SSE
kernel (~30 GFLOP/s here); numpy's OpenBLAS reaches ~190-230 GFLOP/s on the same 2 cores.
Only eager, local, CPU float32 tensors take this path (`usable`); graph, global and CUDA
tensors keep OneFlow's ops, so their semantics are unchanged. Tensors cross as zero-copy
views (Tensor.to_numpy() after the tensor is ready, flow.from_numpy on a contiguous array).

Opt out with --numpy_blas=False (every script) or BERT_NUMPY_BLAS=0 in the environment.

The speed depends on numpy's OpenBLAS running the CPU's own kernel, which utils/openblas_kernel.py
arranges when the `utils` package is first imported (see utils/__init__.py).
"""
import math
import os

import numpy as np
import oneflow as flow


def numpy_openblas_kernel():
    """Name of the kernel numpy's bundled OpenBLAS runs (e.g. SkylakeX, Haswell, Prescott), or None."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "libopenblas*.so*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for symbol in ("openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, symbol):
                getter = getattr(lib, symbol)
                getter.restype = ctypes.c_char_p
                return getter().decode()
    return None


def enabled_in_environment():
    """The default of the path: on unless BERT_NUMPY_BLAS=0."""
    return os.environ.get("BERT_NUMPY_BLAS", "1") != "0"


ENABLED = enabled_in_environment()


def set_enabled(enabled):
    global ENABLED
    ENABLED = bool(enabled)


def usable(*tensors):
    """True when every tensor is an eager, local, CPU float32 tensor and the path is on."""
    return ENABLED and all(
        not t.is_lazy and t.is_local and t.device.type == "cpu" and t.dtype == flow.float32 for t in tensors
    )


def _to_flow(array):
    return flow.from_numpy(np.ascontiguousarray(array))


def _rows(array):
    return array.reshape(-1, array.shape[-1])


def _heads(tensor):
    """A [B, S, H, D] tensor as a [B, H, S, D] numpy view (strides only, no copy)."""
    return tensor.to_numpy().transpose(0, 2, 1, 3)


def clip_grad_norm_(parameters, max_norm):
    """Scales the gradients so that their joint L2 norm is at most max_norm; returns the norm before.

    The rule of oneflow.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), at most 1), with the
    squared norms from BLAS dot products (OneFlow runs one single-threaded norm kernel per parameter) and the
    rescale in place, skipped when the coefficient is 1. A NaN norm rescales by NaN, as OneFlow's clamp does.
    """
    grads = [p.grad.to_numpy().reshape(-1) for p in parameters if p.grad is not None]
    norm = math.sqrt(sum(float(np.dot(g, g)) for g in grads))
    coefficient = max_norm / (norm + 1e-6)
    if not coefficient >= 1.0:
        for g in grads:
            np.multiply(g, np.float32(coefficient), out=g)
    return norm


# Keep state in save_for_backward only: in OneFlow 0.9 an attribute set on the autograd ctx corrupts the heap
# (the process aborts with "munmap_chunk(): invalid pointer" at exit after a few hundred calls).


class Linear(flow.autograd.Function):
    """y = x W^T + b over the last dim of x; backward: dx = g W, dW = g^T x, db = sum of g."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        x_np, w_np = x.to_numpy(), weight.to_numpy()
        y = _rows(x_np) @ w_np.T
        y += bias.to_numpy()
        return _to_flow(y.reshape(*x_np.shape[:-1], w_np.shape[0]))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        x_np, w_np, g = x.to_numpy(), weight.to_numpy(), _rows(grad.to_numpy())
        dx = _to_flow((g @ w_np).reshape(x_np.shape)) if x.requires_grad else None
        return dx, _to_flow(g.T @ _rows(x_np)), _to_flow(g.sum(0))


class AttentionProbs(flow.autograd.Function):
    """softmax(scale * q k^T + bias) per head, the reference BERT attention weights.

    q, k: [B, S, H, D]; bias broadcasts to [B, H, S, S]; returns [B, H, S, S].
    Backward of softmax: dS = P * (dP - sum(dP * P) over the last dim).
    """

    @staticmethod
    def forward(ctx, q, k, bias, scale):
        scores = np.matmul(_heads(q), _heads(k).swapaxes(-1, -2))
        scores *= scale.to_numpy()
        scores += bias.to_numpy()
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        probs = _to_flow(scores)
        ctx.save_for_backward(q, k, probs, scale)
        return probs

    @staticmethod
    def backward(ctx, grad):
        q, k, probs, scale = ctx.saved_tensors
        p = probs.to_numpy()
        d_scores = grad.to_numpy() * p
        d_scores -= p * d_scores.sum(-1, keepdims=True)
        d_scores *= scale.to_numpy()
        dq, dk = np.empty(q.shape, np.float32), np.empty(k.shape, np.float32)
        np.matmul(d_scores, _heads(k), out=dq.transpose(0, 2, 1, 3))
        np.matmul(d_scores.swapaxes(-1, -2), _heads(q), out=dk.transpose(0, 2, 1, 3))
        return _to_flow(dq), _to_flow(dk), None, None


class AttentionContext(flow.autograd.Function):
    """dropout(probs) @ v, with v and the result in [B, S, H, D]: no head permute copies.

    keep is the dropout layer's scaled keep mask (keep / (1 - p)) shaped like probs, or a 1-element tensor when
    nothing is dropped; applying it here spares OneFlow's elementwise multiply and its backward.
    """

    @staticmethod
    def forward(ctx, probs, v, keep):
        if keep.numel() > 1:
            dropped = probs.to_numpy() * keep.to_numpy()
            saved = _to_flow(dropped)
        else:
            dropped, saved = probs.to_numpy(), probs
        context = np.empty(v.shape, np.float32)
        np.matmul(dropped, _heads(v), out=context.transpose(0, 2, 1, 3))
        ctx.save_for_backward(saved, v, keep)
        return _to_flow(context)

    @staticmethod
    def backward(ctx, grad):
        dropped, v, keep = ctx.saved_tensors
        p, g = dropped.to_numpy(), _heads(grad)
        dv = np.empty(v.shape, np.float32)
        np.matmul(p.swapaxes(-1, -2), g, out=dv.transpose(0, 2, 1, 3))
        d_dropped = np.matmul(g, _heads(v).swapaxes(-1, -2))
        if keep.numel() > 1:
            d_dropped *= keep.to_numpy()
        return _to_flow(d_dropped), _to_flow(dv), None


def _layer_norm_forward(rows, weight, bias, eps):
    """Returns y, xhat and rstd of rows [N, H]."""
    xhat = rows - rows.mean(-1, keepdims=True)
    variance = np.einsum("ij,ij->i", xhat, xhat)[:, None] / rows.shape[1]
    rstd = 1.0 / np.sqrt(variance + eps)
    xhat *= rstd
    y = xhat * weight
    y += bias
    return y, xhat, rstd


def _layer_norm_backward(g, xhat, rstd, weight):
    """Returns dx, dweight, dbias for the upstream gradient rows g [N, H]."""
    gw = g * weight
    width = xhat.shape[1]
    mean_gw = gw.sum(-1, keepdims=True) / width
    mean_gw_xhat = np.einsum("ij,ij->i", gw, xhat)[:, None] / width
    gw -= mean_gw
    gw -= xhat * mean_gw_xhat
    gw *= rstd
    return gw, np.einsum("ij,ij->j", g, xhat), g.sum(0)


class LayerNorm(flow.autograd.Function):
    """LayerNorm over the last dim (Ba et al. 2016) with its closed-form backward:
    dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w * xhat)), dw = sum(g * xhat), db = sum(g).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x_np = x.to_numpy()
        y, xhat, rstd = _layer_norm_forward(_rows(x_np), weight.to_numpy(), bias.to_numpy(), eps.to_numpy())
        ctx.save_for_backward(_to_flow(xhat), _to_flow(rstd), weight)
        return _to_flow(y.reshape(x_np.shape))

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = (t.to_numpy() for t in ctx.saved_tensors)
        dx, dw, db = _layer_norm_backward(_rows(grad.to_numpy()), xhat, rstd, weight)
        return _to_flow(dx.reshape(grad.shape)), _to_flow(dw), _to_flow(db), None


class DropoutResidualLayerNorm(flow.autograd.Function):
    """LayerNorm(dropout(y) + residual), the end of every BERT sublayer, in one pass.

    keep is the dropout layer's scaled keep mask (keep / (1 - p)) shaped like y. Backward: with ds the
    LayerNorm input gradient, dy = ds * keep and dresidual = ds.
    """

    @staticmethod
    def forward(ctx, y, keep, residual, weight, bias, eps):
        summed = y.to_numpy() * keep.to_numpy()
        summed += residual.to_numpy()
        out, xhat, rstd = _layer_norm_forward(_rows(summed), weight.to_numpy(), bias.to_numpy(), eps.to_numpy())
        ctx.save_for_backward(keep, _to_flow(xhat), _to_flow(rstd), weight)
        return _to_flow(out.reshape(summed.shape))

    @staticmethod
    def backward(ctx, grad):
        keep, xhat, rstd, weight = (t.to_numpy() for t in ctx.saved_tensors)
        d_summed, dw, db = _layer_norm_backward(_rows(grad.to_numpy()), xhat, rstd, weight)
        d_summed = d_summed.reshape(grad.shape)
        return _to_flow(d_summed * keep), None, _to_flow(d_summed), _to_flow(dw), _to_flow(db), None