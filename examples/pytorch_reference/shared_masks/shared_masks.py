"""Dropout masks that OneFlow and PyTorch draw identically, for the issue-H experiment (see run.sh).

The n-th dropout call of a run draws its keep mask from numpy's default generator seeded with (SEED, n), so both
frameworks apply the same masks in the same order; the QA head starts from the same numpy draw on both sides too.
"""
import numpy as np

SEED = 2024
calls = [0]


def scaled_mask(shape, p):
    rng = np.random.default_rng([SEED, calls[0]])
    calls[0] += 1
    return (rng.random(tuple(shape), dtype=np.float32) >= p).astype(np.float32) * np.float32(1.0 / (1.0 - p))


def qa_init(hidden):
    rng = np.random.default_rng(99)
    return (rng.standard_normal((2, hidden)) * 0.02).astype(np.float32), np.zeros(2, np.float32)
