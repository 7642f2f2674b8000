"""The SQuAD training step against PyTorch (issue H): the guard that our step stays the reference's step.

tests/fixtures/squad_step_reference/ was written by examples/pytorch_reference/make_step_fixture.py (HF
BertForQuestionAnswering in PyTorch, dropout 0): a tiny model, 50 fixed batches, the gradient of every parameter
at step 1, and for each optimizer recipe of utils/optim.py the loss and learning rate of every step.
"""
import json
import os

import numpy as np
import oneflow as flow
import pytest

from modeling import BertForQuestionAnswering
from run_squad import CLIP_GRAD_MAX_NORM, OPTIMIZER, SQUAD
from utils import numpy_blas
from utils.checkpoints.hf import read_hf
from utils.checkpoints.loading import load_pretrained
from utils.optim import build_lr_scheduler, build_optimizer
from utils.runtime import EagerRunner, GraphRunner, Placement

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "squad_step_reference")


RECIPES = ["bert", "hf"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def batches():
    return dict(np.load(os.path.join(FIXTURE, "batches.npz")))


@pytest.fixture(scope="module", params=RECIPES)
def trajectory(request):
    return read_json(os.path.join(FIXTURE, f"trajectory_{request.param}.json"))


def reference_model():
    model_dir = os.path.join(FIXTURE, "model")
    config, _ = read_hf(model_dir)
    flow.manual_seed(0)
    model = BertForQuestionAnswering(config)
    report = load_pretrained(model, model_dir)
    assert not report.missing
    return model


def batch_at(batches, step):
    return {name: array[step] for name, array in batches.items()}


@pytest.fixture(params=[True, False], ids=["numpy_blas", "oneflow_ops"])
def blas(request):
    previous = numpy_blas.ENABLED
    numpy_blas.set_enabled(request.param)
    yield request.param
    numpy_blas.set_enabled(previous)


GRADIENT_RTOL = 1e-4
# Gradients that are zero in exact arithmetic (the biases right before a softmax) are float32 rounding noise of
# about 1e-6 on both sides; this floor (1.3e-5 of the largest gradient of the model) keeps them from failing.
GRADIENT_ATOL = 1e-5


def gradient_error(actual, expected):
    """Max error in units of the allowed error: <= 1 passes."""
    allowed = GRADIENT_RTOL * np.abs(expected).max() + GRADIENT_ATOL
    return float(np.abs(actual - expected).max() / allowed)


def test_fixture_exercises_clipping_and_the_recipes_differ():
    bert, hf = (read_json(os.path.join(FIXTURE, f"trajectory_{r}.json")) for r in RECIPES)
    decay_norm, no_decay_norm = bert["step1_group_grad_norms"]
    # "bert" clips one group and not the other, so a global-norm clip would give a different step.
    assert decay_norm > bert["max_norm"] > no_decay_norm
    assert hf["step1_group_grad_norms"][0] > hf["max_norm"]
    assert abs(bert["losses"][-1] - hf["losses"][-1]) > 0.01


def test_step1_gradients_match_pytorch(batches, blas):
    expected = dict(np.load(os.path.join(FIXTURE, "step1_gradients.npz")))
    model = reference_model()
    model.train()
    batch = batch_at(batches, 0)
    loss = SQUAD.train_outputs(model, [flow.tensor(batch[f]) for f in SQUAD.train_fields])[0]
    loss.backward()
    params = dict(model.named_parameters())
    assert set(params) == set(expected)
    errors = {name: gradient_error(params[name].grad.numpy(), expected[name]) for name in expected}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1, f"{worst}: gradient error {errors[worst]:.2f}x the tolerance"


def run_trajectory(mode, trajectory, batches):
    model = reference_model()
    recipe = trajectory["recipe"]
    optimizer = build_optimizer(model, OPTIMIZER, trajectory["learning_rate"], trajectory["weight_decay"],
                                CLIP_GRAD_MAX_NORM, recipe)
    scheduler = build_lr_scheduler(optimizer, trajectory["steps"], trajectory["warmup_steps"], recipe)
    placement = Placement("cpu", False)
    runner_class = GraphRunner if mode == "graph" else EagerRunner
    extra = (False,) if mode == "graph" else ()
    runner = runner_class(SQUAD, model, optimizer, scheduler, 1, placement, *extra)
    losses, lrs = [], []
    for step in range(trajectory["steps"]):
        lrs.append(optimizer.param_groups[0]["lr"])  # eager only: a graph applies the schedule inside
        losses.append(float(runner.train_step(batch_at(batches, step))[0].numpy()))
    return np.array(losses), np.array(lrs)


def test_eager_trajectory_matches_pytorch(trajectory, batches, blas):
    assert trajectory["max_norm"] == CLIP_GRAD_MAX_NORM
    losses, lrs = run_trajectory("eager", trajectory, batches)
    np.testing.assert_allclose(lrs, trajectory["learning_rates"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(losses, trajectory["losses"], rtol=1e-3)
    assert losses[-1] < losses[0] - 0.2  # the run trains, so the comparison covers real updates


def test_graph_trajectory_matches_pytorch(trajectory, batches):
    losses, _ = run_trajectory("graph", trajectory, batches)
    np.testing.assert_allclose(losses, trajectory["losses"], rtol=1e-3)
