"""The level-set action keeps the loss, at random points and group elements (property-based)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from teleport_runner.errors import SymmetryMismatch
from teleport_runner.problems import Booth, Quadratic, Rosenbrock
from teleport_runner.problems.base import Problem
from teleport_runner.symmetries import LevelSetRotation

coord = st.floats(-3, 3, allow_nan=False)
angle = st.floats(-2 * math.pi, 2 * math.pi, allow_nan=False)


def bound(problem, dtype=torch.float64):
    problem.setup("cpu", dtype, 0)
    symmetry = LevelSetRotation()
    symmetry.bind(problem)
    return symmetry


def rel_change(problem, symmetry, x, xi):
    with torch.no_grad():
        before = problem.loss([x])
        after = problem.loss(symmetry.act(xi, [x], None))
    return float((after - before).abs() / before.abs().clamp_min(1e-300)), float(before)


@settings(max_examples=60, deadline=None)
@given(x1=coord, x2=coord, theta=angle, name=st.sampled_from(["rosenbrock", "booth", "ellipse"]))
def test_so2_action_keeps_loss_float64(x1, x2, theta, name):
    problem = {"rosenbrock": Rosenbrock(), "booth": Booth(), "ellipse": Quadratic()}[name]
    symmetry = bound(problem)
    x = torch.tensor([x1, x2], dtype=torch.float64)
    drift, loss = rel_change(problem, symmetry, x, [torch.tensor(theta, dtype=torch.float64)])
    if loss > 1e-6:  # relative error of a difference is meaningless at the minimum itself
        assert drift < 1e-10


@settings(max_examples=40, deadline=None)
@given(x1=coord, x2=coord, theta=angle)
def test_so2_action_keeps_loss_float32(x1, x2, theta):
    problem = Booth()
    symmetry = bound(problem, torch.float32)
    x = torch.tensor([x1, x2], dtype=torch.float32)
    drift, loss = rel_change(problem, symmetry, x, [torch.tensor(theta)])
    if loss > 1e-2:
        # float32 rounds x and Booth's residuals (x1 + 2 x2 - 7, ...) to ~eps |x|: the loss moves by
        # ~eps |grad L| |x| ~ eps sqrt(L), a relative drift ~eps / sqrt(L) that grows near the minimum (1.05e-5 at
        # x = (1.0652, 2.9041), theta = -1.9577, L = 0.0172). The bound: 1e-5, plus that rounding term.
        eps = torch.finfo(torch.float32).eps
        assert drift < 1e-5 + 64 * eps / math.sqrt(loss), (drift, loss)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_on_action_on_random_quadratics(n, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(n, dtype=torch.float64)
    problem = Quadratic(A=A.tolist(), start=[1.0] * n)
    symmetry = bound(problem)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    xi = symmetry.sample([x], None, g, scale=2.0)
    drift, _ = rel_change(problem, symmetry, x, xi)
    assert drift < 1e-10
    moved = symmetry.act(xi, [x], None)[0]
    assert not torch.allclose(moved, x)  # a real move, not the identity


@pytest.mark.parametrize("problem", [Rosenbrock(), Booth(), Quadratic()])
def test_identity_is_identity_and_h_is_a_bijection(problem):
    symmetry = bound(problem)
    x = torch.tensor([0.3, -1.7], dtype=torch.float64)
    assert torch.allclose(symmetry.act(symmetry.identity([x], None), [x], None)[0], x, atol=1e-13)
    assert torch.allclose(problem.h_inv(problem.h(x)), x, atol=1e-13)


def test_known_minima_and_loss_formulas():
    rosen, booth = Rosenbrock(), Booth()
    for p in (rosen, booth):
        p.setup("cpu", torch.float64, 0)
    x = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    assert float(rosen.loss([x])) == pytest.approx(100 * (1 + 1) ** 2 + 4)
    assert float(rosen.loss([torch.tensor([1.0, 1.0], dtype=torch.float64)])) == 0.0
    assert float(booth.loss([torch.tensor([1.0, 3.0], dtype=torch.float64)])) == 0.0


def test_level_set_refuses_a_problem_without_h():
    class NotLevelSet(Problem):
        name = "mlp_like"

        def init_params(self):
            return []

        def loss(self, params, batch):
            return torch.zeros(())

    with pytest.raises(SymmetryMismatch, match="mlp_like"):
        LevelSetRotation().bind(NotLevelSet())


@pytest.mark.parametrize("name", ["rosenbrock", "booth", "ellipse", "quadratic3"])
def test_closed_form_objective_equals_the_generic_double_backward(name):
    """2 J_h(x')^T R h(x) gives ||grad L(g·x)||^2 and its gradient in the group coordinates as autograd does."""
    from teleport_runner.symmetries.base import Symmetry

    problem = {"rosenbrock": Rosenbrock(), "booth": Booth(), "ellipse": Quadratic(),
               "quadratic3": Quadratic(A=[[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]],
                                       start=[1.0, -2.0, 0.5])}[name]
    symmetry = bound(problem)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(problem.dim, dtype=torch.float64, generator=gen)
        xi = [t.requires_grad_(True) for t in symmetry.sample([x], None, gen, 0.5)]
        ctx = symmetry.prepare([x], None)
        closed = symmetry.grad_norm_sq(xi, [x], None, ctx)
        generic = Symmetry.grad_norm_sq(symmetry, xi, [x], None, ctx)
        torch.testing.assert_close(closed, generic, rtol=1e-11, atol=1e-300)
        torch.testing.assert_close(torch.autograd.grad(closed, xi)[0], torch.autograd.grad(generic, xi)[0],
                                   rtol=1e-9, atol=1e-12)
