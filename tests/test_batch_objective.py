"""The closed-form teleport objective (gl_data, gl_hidden, rescale, gl_linear) equals the generic double-backward one:
same value, same gradient in the group coordinates (float64), on regression and classification losses, for
every pair subset, with and without bias; and the ascent never rewrites the weights to evaluate it."""
from __future__ import annotations

import pytest
import torch

from teleport_runner.problems import data as idx
from teleport_runner.problems.classifier import MNIST
from teleport_runner.problems.regression import MLPRegression
from teleport_runner.symmetries.base import autograd_grad_norm_sq
from teleport_runner.symmetries.batch_objective import layer_grad_sq
from teleport_runner.symmetries.data_free import GLLinear, Rescale
from teleport_runner.symmetries.gl_data import GLData, GLHidden
from teleport_runner.teleport import GradientAscent, RandomSearch

SYMMETRIES = {
    "gl_data": lambda pairs: GLData(pairs=pairs),
    "gl_data_linear": lambda pairs: GLData(pairs=pairs, parametrization="linear"),
    "gl_data_batch": lambda pairs: GLData(pairs=pairs, subgroup="batch"),
    "gl_data_batch_linear": lambda pairs: GLData(pairs=pairs, subgroup="batch", parametrization="linear"),
    "gl_hidden": lambda pairs: GLHidden(pairs=pairs),
    "gl_hidden_linear": lambda pairs: GLHidden(pairs=pairs, parametrization="linear"),
    "gl_hidden_batch": lambda pairs: GLHidden(pairs=pairs, subgroup="batch"),
    "rescale": lambda pairs: Rescale(pairs=pairs),
    "gl_linear": lambda pairs: GLLinear(pairs=pairs),
}


def regression(activation: str, bias: bool, seed: int = 0):
    # 5 layers, widths chosen so a batch of 4 is exact for both actions on every pair
    problem = MLPRegression(dims=[6, 9, 7, 8, 5, 3], n_samples=4, activation=activation, slope=0.1, bias=bias,
                            init="default")
    problem.setup("cpu", torch.float64, seed)
    return problem, problem.train_batch(0)


def compare(problem, symmetry, batch, seed: int, scale: float = 0.5):
    params = problem.init_params()
    symmetry.bind(problem)
    ctx = symmetry.prepare(params, batch)
    xi = [x.requires_grad_(True) for x in symmetry.sample(params, ctx, torch.Generator().manual_seed(seed), scale)]
    closed = symmetry.grad_norm_sq(xi, params, batch, ctx, True)
    generic = autograd_grad_norm_sq(problem, symmetry, xi, params, batch, ctx, True)
    torch.testing.assert_close(closed, generic, rtol=1e-11, atol=0)
    for a, b in zip(torch.autograd.grad(closed, xi), torch.autograd.grad(generic, xi)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()))


@pytest.mark.parametrize("name", sorted(SYMMETRIES))
@pytest.mark.parametrize("pairs", [None, [0], [2], [1, 3], [3]])
def test_closed_form_equals_double_backward_on_regression(name, pairs):
    # an activation each action is exact for (gl_hidden: any; gl_linear: identity only)
    activation = "tanh" if name.startswith("gl_hidden") else "identity" if name == "gl_linear" else "leaky_relu"
    for seed, bias in ((0, False), (1, True)):
        problem, batch = regression(activation, bias, seed)
        compare(problem, SYMMETRIES[name](pairs), batch, seed)


# ReLU: only on the widest hidden layer, where sigma(g z) keeps full rank on the batch (the action is exact)
@pytest.mark.parametrize("name,activation,pairs", [("gl_hidden", "relu", [0]), ("gl_hidden", "leaky_relu", None),
                                                   ("gl_data", "identity", None),
                                                   ("gl_hidden_batch", "identity", None),
                                                   ("rescale", "relu", None), ("rescale", "identity", [1, 2]),
                                                   ("gl_linear", "identity", None),
                                                   ("gl_linear", "identity", [0, 3])])
def test_closed_form_for_other_activations(name, activation, pairs):
    problem, batch = regression(activation, True)
    compare(problem, SYMMETRIES[name](pairs), batch, 3)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = idx.write_synthetic(tmp_path_factory.mktemp("data"), "mnist", n_train=200, n_test=20)
    problem = MNIST(hidden=[24, 16], batch_size=12, n_train=150, n_val=50, data={"root": str(root)})
    problem.setup("cpu", torch.float64, 0)
    return problem


@pytest.mark.parametrize("name", ["gl_data", "gl_data_batch", "gl_hidden", "gl_hidden_batch_linear", "rescale"])
def test_closed_form_equals_double_backward_on_cross_entropy(classifier, name):
    factory = SYMMETRIES.get(name) or (lambda pairs: GLHidden(pairs=pairs, subgroup="batch",
                                                              parametrization="linear"))
    compare(classifier, factory(None), classifier.train_batch(3), 0, scale=0.3)


def test_paper_form_uses_the_generic_objective():
    problem, batch = regression("leaky_relu", False)
    compare(problem, GLData(form="paper"), batch, 0)


@pytest.mark.parametrize("bias", [False, True])
def test_layer_norm_by_gram_matrices_equals_the_explicit_gradient(bias):
    gen = torch.Generator().manual_seed(0)
    delta, h = (torch.randn(5, n, dtype=torch.float64, generator=gen) for n in (40, 30))
    weight_grad, bias_grad = delta.T @ h, delta.sum(0)
    expected = weight_grad.square().sum() + (bias_grad.square().sum() if bias else 0)
    gram = h @ h.T + (1 if bias else 0)
    torch.testing.assert_close(layer_grad_sq(delta, h, bias), expected)  # batch 5 << widths: Gram path
    torch.testing.assert_close(layer_grad_sq(delta, h, bias, gram), expected)
    wide_batch = torch.randn(50, 3, dtype=torch.float64, generator=gen), torch.randn(50, 2, dtype=torch.float64)
    d, x = wide_batch
    torch.testing.assert_close(layer_grad_sq(d, x, bias),  # batch 50 >> widths: explicit path
                               (d.T @ x).square().sum() + (d.sum(0).square().sum() if bias else 0))


@pytest.mark.parametrize("solver", [GradientAscent(steps=4, lr=1e-3, max_group_norm=1.0), RandomSearch(samples=3)])
def test_the_search_never_rewrites_weights(monkeypatch, solver):
    """Only the guard's final candidate calls ``act``: the ascent steps use the closed form."""
    problem, batch = regression("leaky_relu", True)
    symmetry = GLData()
    symmetry.bind(problem)
    calls = []
    original = GLData.act
    monkeypatch.setattr(GLData, "act", lambda self, *a: calls.append(1) or original(self, *a))
    params = problem.init_params()
    event = solver.teleport(0, problem, symmetry, params, torch.optim.SGD(params, lr=0.1),
                            torch.Generator().manual_seed(0))[0]
    assert len(calls) == 1
    assert event["accepted"] and event["rel_loss_drift"] < 1e-10
    assert event["grad_norm_sq_after"] > event["grad_norm_sq_before"]
