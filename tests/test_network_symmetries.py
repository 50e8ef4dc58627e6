"""Properties every network symmetry must have: invariance, identity, differentiability, clear refusals."""
from __future__ import annotations

import math

import pytest
import torch

from teleport_runner.errors import ConfigError, SymmetryMismatch
from teleport_runner.problems.regression import MLPRegression
from teleport_runner.problems.test_functions import Booth
from teleport_runner.symmetries.data_free import GLLinear, Rescale
from teleport_runner.symmetries.gl_data import GLData, GLHidden
from teleport_runner.symmetries.gl_elements import FactoredElement, dense_coords, step_basis
from teleport_runner.teleport import GradientAscent

# (symmetry factory, activation, bias): each symmetry on activations it is exact for
CASES = {
    "gl_data": (lambda: GLData(), "leaky_relu", True),
    "gl_data_paper_form": (lambda: GLData(form="paper"), "leaky_relu", False),
    "gl_data_linear_param": (lambda: GLData(parametrization="linear"), "identity", True),
    "gl_data_batch_subgroup": (lambda: GLData(subgroup="batch"), "leaky_relu", True),
    "gl_data_batch_subgroup_linear": (lambda: GLData(subgroup="batch", parametrization="linear"), "identity", False),
    "gl_hidden": (lambda: GLHidden(), "tanh", True),
    "gl_hidden_batch_subgroup": (lambda: GLHidden(subgroup="batch"), "tanh", True),
    "gl_hidden_relu": (lambda: GLHidden(pairs=[1]), "leaky_relu", False),
    "gl_linear": (lambda: GLLinear(), "identity", True),
    "rescale": (lambda: Rescale(), "relu", True),
    "rescale_pair0": (lambda: Rescale(pairs=[0]), "leaky_relu", False),
}


def make(case: str, dtype=torch.float64, seed: int = 0, n_samples: int = 4):
    factory, activation, bias = CASES[case]
    # widths 5-9-8-3: every batch of 4 fits under each layer's input and hidden width
    problem = MLPRegression(dims=[5, 9, 8, 3], n_samples=n_samples, activation=activation, slope=0.1, bias=bias,
                            init="default")
    problem.setup("cpu", dtype, seed)
    symmetry = factory()
    symmetry.bind(problem)
    return problem, symmetry, problem.init_params(), problem.train_batch(0)


def rel_change(a, b) -> float:
    return float(((a - b).abs() / b.abs()).detach())


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_invariance_at_random_points_and_elements(case, dtype, tol):
    for seed in range(4):
        problem, symmetry, params, batch = make(case, dtype, seed)
        ctx = symmetry.prepare(params, batch)
        gen = torch.Generator().manual_seed(seed)
        xi = symmetry.sample(params, ctx, gen, scale=0.5)
        moved = symmetry.act(xi, params, ctx)
        assert any((m - p).abs().max() > 1e-3 for m, p in zip(moved, params)), "the action moved nothing"
        assert rel_change(problem.loss(moved, batch), problem.loss(params, batch)) < tol
        if not symmetry.data_dependent:  # data-free actions keep the function on every input
            x = torch.randn(16, 5, dtype=dtype, generator=gen)
            torch.testing.assert_close(problem.forward(moved, x), problem.forward(params, x),
                                       rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("case", sorted(set(CASES) - {"gl_data_paper_form"}))
def test_identity_acts_as_identity(case):
    problem, symmetry, params, batch = make(case)
    ctx = symmetry.prepare(params, batch)
    for moved, p in zip(symmetry.act(symmetry.identity(params, ctx), params, ctx), params):
        torch.testing.assert_close(moved, p, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradcheck_of_act_in_float64(case):
    problem, symmetry, params, batch = make(case)
    ctx = symmetry.prepare(params, batch)
    xi = [x.requires_grad_(True) for x in symmetry.sample(params, ctx, torch.Generator().manual_seed(1), 0.3)]

    def objective(*coords):  # the solver's objective: loss and ||grad L||^2 are both smooth in g here
        return problem.loss(symmetry.act(list(coords), params, ctx), batch)

    assert torch.autograd.gradcheck(objective, tuple(xi), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["gl_data", "gl_hidden", "rescale", "gl_data_batch_subgroup",
                                  "gl_hidden_batch_subgroup"])
def test_gradient_ascent_raises_grad_norm_on_the_level_set(case):
    problem, symmetry, params, batch = make(case)
    solver = GradientAscent(steps=5, lr=1e-3, max_group_norm=1.0)
    optimizer = torch.optim.SGD(params, lr=0.1)
    event = solver.teleport(0, problem, symmetry, params, optimizer, torch.Generator().manual_seed(0))[0]
    assert event["accepted"] and event["rel_loss_drift"] < 1e-10
    assert event["grad_norm_sq_after"] > event["grad_norm_sq_before"]
    if symmetry.data_dependent:
        assert "holdout_rel_loss_change" in event


def test_batch_subgroup_element_equals_the_dense_element_of_u_vt():
    """g = I + U V^T with its Woodbury inverse is exactly the dense I + U V^T and its inverse, and the coordinates
    are (d, r) with r the batch's rank, not d x d."""
    from teleport_runner.symmetries.gl_elements import BatchSubgroupElement, DenseElement, span_basis

    gen = torch.Generator().manual_seed(0)
    d, r = 12, 4
    V = span_basis(torch.randn(r, d, dtype=torch.float64, generator=gen))
    U = 0.4 * torch.randn(d, r, dtype=torch.float64, generator=gen)
    low, dense = BatchSubgroupElement(U, V), DenseElement(U @ V.T)
    M = torch.randn(d, 7, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(low.left(M), dense.left(M), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(low.rows(M.T), dense.rows(M.T), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(low.right(M.T), dense.right(M.T), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(low.right_inv(M.T), dense.right_inv(M.T), rtol=1e-12, atol=1e-12)
    eye = torch.eye(d, dtype=torch.float64)
    torch.testing.assert_close(low.left(low.right_inv(eye)), eye, rtol=1e-12, atol=1e-12)  # g g^-1 = I
    problem, symmetry, params, batch = make("gl_data_batch_subgroup")
    ctx = symmetry.prepare(params, batch)
    assert [tuple(x.shape) for x in symmetry.identity(params, ctx)] == [(8, 4), (9, 4)]  # pairs 1, 0; batch 4


def step(symmetry, xi, grads, lr, ctx):
    """One ascent step as the solver takes it."""
    return symmetry.retract(xi, [lr * d for d in symmetry.ascent_direction(xi, grads, ctx)], ctx)


def _dense(symmetry, ctx, T, m):
    """g of pair m as a d x d matrix (dense or batch subgroup coordinates)."""
    V = symmetry.basis(m, ctx)
    eye = torch.eye(T.shape[0], dtype=T.dtype)
    return eye + (T if V is None else T @ V.T)


@pytest.mark.parametrize("case", ["gl_data", "gl_data_batch_subgroup", "gl_hidden", "gl_hidden_batch_subgroup",
                                  "gl_linear"])
def test_exp_ascent_step_is_the_exponential_of_the_lie_algebra_gradient(case):
    """An ``exp`` step from g moves to exp(lr A) g, where A is the gradient of F(exp(X) g) in X at X = 0, computed
    here independently by autograd through torch's matrix_exp (for the batch subgroup X = Y V^T, gradient in Y).
    The solver's ``value_and_direction`` (a tangent element, no gradient through g) gives the same A and value."""
    problem, symmetry, params, batch = make(case)
    ctx = symmetry.prepare(params, batch)
    xi = symmetry.sample(params, ctx, torch.Generator().manual_seed(3), 0.3)
    lr = 0.05
    with torch.enable_grad():
        leaves = [x.clone().requires_grad_(True) for x in xi]
        objective = symmetry.grad_norm_sq(leaves, params, batch, ctx)
        grads = torch.autograd.grad(objective, leaves)
        X = [torch.zeros_like(x, requires_grad=True) for x in xi]  # algebra coordinates at the current point

        def coords_after(Xs):
            out = []
            for T, Y, m in zip(xi, Xs, symmetry.pairs):
                V = symmetry.basis(m, ctx)
                g_new = torch.linalg.matrix_exp(Y if V is None else Y @ V.T) @ _dense(symmetry, ctx, T, m)
                eye = torch.eye(T.shape[0], dtype=T.dtype)
                out.append(g_new - eye if V is None else (g_new - eye) @ V)  # V orthonormal: U = (g - I) V
            return out

        A = torch.autograd.grad(symmetry.grad_norm_sq(coords_after(X), params, batch, ctx), X)
    expected = coords_after([lr * a for a in A])
    # the generic path (dF/dT mapped into the algebra) and the solver's (dF/dE at (I + E) g, a zero leaf E)
    value, direction = symmetry.value_and_direction(xi, params, batch, ctx)
    torch.testing.assert_close(value, objective.detach(), rtol=1e-12, atol=0)
    for a, d in zip(A, direction):
        torch.testing.assert_close(d, a, rtol=1e-10, atol=1e-12)
    stepped = symmetry.retract(xi, [lr * d for d in direction], ctx)
    if symmetry.uses_inverse and symmetry.basis(symmetry.pairs[0], ctx) is None:  # dense: g^-1 kept by exp(-lr A)
        for T, m in zip(stepped, symmetry.pairs):
            assert ctx.inverses[m][0] is T
            inverse = torch.linalg.inv(torch.eye(T.shape[0], dtype=T.dtype) + T)
            torch.testing.assert_close(ctx.inverses[m][2], inverse, rtol=1e-10, atol=1e-12)
    for coords in (stepped, step(symmetry, xi, list(grads), lr, ctx)):
        for got, want in zip(coords, expected):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the objective rises along the step (a small one: first order)
    small = step(symmetry, xi, list(grads), 1e-6, ctx)
    assert symmetry.grad_norm_sq(small, params, batch, ctx) > symmetry.grad_norm_sq(xi, params, batch, ctx)


@pytest.mark.parametrize("case", ["gl_data", "gl_hidden", "gl_linear"])
def test_factored_exp_direction_takes_the_same_steps_as_the_dense_one(case):
    """Wide layers take the ``exp`` direction in factored form (probes, no d x d gradient, no exponential of a d x d
    matrix, the inverse kept by O(d^2 r) updates): forced here on the small network, three steps agree with the
    dense path, and the kept inverse is (I + T)^-1."""
    problem, _, params, batch = make(case)
    factory = {"gl_data": GLData, "gl_hidden": GLHidden, "gl_linear": GLLinear}[case]
    runs = []
    for min_width in (1, math.inf):  # every pair factored; none
        symmetry = factory()
        symmetry.factored_min_width_per_sample = min_width
        symmetry.bind(problem)
        ctx = symmetry.prepare(params, batch)
        assert bool(symmetry.factored_pairs(ctx)) == (min_width == 1)
        xi = symmetry.sample(params, ctx, torch.Generator().manual_seed(2), 0.3)
        trail = []
        for _ in range(3):
            value, direction = symmetry.value_and_direction(xi, params, batch, ctx)
            xi = symmetry.retract(xi, [0.005 * d for d in direction], ctx)
            trail.append((value, xi))
        runs.append((trail, ctx, symmetry))
    (factored, ctx, symmetry), (dense, _, _) = runs
    for (v1, xi1), (v2, xi2) in zip(factored, dense):
        torch.testing.assert_close(v1, v2, rtol=1e-11, atol=0)
        for a, b in zip(xi1, xi2):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for T, m in zip(factored[-1][1], symmetry.pairs):
        assert 0.1 < T.norm() < 10  # it moved, to a sane point
        if symmetry.uses_inverse:
            inverse = torch.linalg.inv(torch.eye(T.shape[0], dtype=T.dtype) + T)
            torch.testing.assert_close(ctx.inverses[m][2], inverse, rtol=1e-10, atol=1e-12)
        else:
            assert m not in ctx.inverses


def exp_ascent_from_identity(factory, problem, min_width, steps: int):
    """(the factored pairs, [(value, coordinates) per step]) of ``steps`` ``exp`` ascent steps of size 0.004 from
    the identity, with pairs factored from ``min_width`` x the batch (math.inf: none)."""
    params, batch = problem.init_params(), problem.train_batch(0)
    symmetry = factory()
    symmetry.factored_min_width_per_sample = min_width
    symmetry.bind(problem)
    ctx = symmetry.prepare(params, batch)
    xi, trail = symmetry.identity(params, ctx), []
    for _ in range(steps):
        value, direction = symmetry.value_and_direction(xi, params, batch, ctx)
        xi = symmetry.retract(xi, [0.004 * d for d in direction], ctx)
        trail.append((value, xi))
    return symmetry.factored_pairs(ctx), trail


@pytest.mark.parametrize("factory", [GLData, GLHidden, GLLinear])
def test_factored_iterates_from_the_identity_match_the_dense_path(factory):
    """From the identity a factored ascent keeps g as the product of its low-rank steps (``FactoredElement``, never
    d x d) until their total rank would pass the width, then goes on densely: six steps on 30-wide layers (rank up to
    12 per step) cross that point and take the same steps as the dense path; the factored inverse is (I + T)^-1."""
    activation = "identity" if factory is GLLinear else "leaky_relu"
    problem = MLPRegression(dims=[5, 30, 30, 3], n_samples=4, activation=activation, slope=0.1, init="default")
    problem.setup("cpu", torch.float64, 0)
    trails = [exp_ascent_from_identity(factory, problem, min_width, 6)[1] for min_width in (6, math.inf)]
    kinds = [[type(T).__name__ for T in xi] for _, xi in trails[0]]
    assert kinds[0] == ["FactoredElement"] * 2 and "Tensor" in kinds[-1], kinds
    # gl_hidden never divides by g: its factors never form their Woodbury inverse; gl_data's do
    inverses_formed = {"YK" in step.__dict__ for T in trails[0][0][1] for step in T.steps}
    assert inverses_formed == ({False} if factory is GLHidden else {True})
    # The dense path's step exp(X) - I (||X|| ~ 0.04) carries matrix_exp's ~1e-12 relative error on exp(X): ~1e-10
    # on T; the factored step's 2r x 2r exponential is exact to ~1e-17 here (both checked against scipy's expm).
    for (v1, xi1), (v2, xi2) in zip(*trails):
        torch.testing.assert_close(v1, v2, rtol=1e-9, atol=0)
        for a, b in zip(xi1, xi2):
            assert (dense_coords(a) - b).norm() < 1e-8 * b.norm()
    for (_, xi), kind in zip(trails[0], kinds):
        for T, name in zip(xi, kind):
            if name == "FactoredElement":
                inverse = torch.linalg.inv(torch.eye(T.width, dtype=T.dtype) + T.dense())
                torch.testing.assert_close(T.dense_inverse(), inverse, rtol=1e-10, atol=1e-12)
    assert trails[0][-1][0] > 1.2 * trails[0][0][0]  # the ascent went up


@pytest.mark.parametrize("factory", [GLData, GLHidden])
def test_a_wide_and_a_narrow_pair_take_their_gradients_in_one_backward(factory):
    """A 30-wide pair (factored: probes) next to a 6-wide one (a tangent element) in the same objective and backward:
    five ``exp`` steps agree with the path on which neither is factored."""
    problem = MLPRegression(dims=[5, 30, 6, 3], n_samples=4, activation="leaky_relu", slope=0.1, init="default")
    problem.setup("cpu", torch.float64, 0)
    trails = []
    for min_width in (6, math.inf):
        factored, trail = exp_ascent_from_identity(factory, problem, min_width, 5)
        assert factored == ([0] if min_width == 6 else [])
        trails.append(trail)
    for (v1, xi1), (v2, xi2) in zip(*trails):
        torch.testing.assert_close(v1, v2, rtol=1e-12, atol=0)
        for a, b in zip(xi1, xi2):
            assert (dense_coords(a) - b).norm() < 1e-10 * b.norm()
    assert trails[0][-1][0] > 1.2 * trails[0][0][0]  # the ascent went up


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["full_rank", "dependent_columns", "zero"])
def test_step_basis_gives_the_step_exactly_and_never_undercounts_its_norm(case, dtype):
    """X V^T = P Q^T (what the step moves along) and ||X|| >= ||P Q^T|| (what the path bound counts), also where Q
    has dependent columns or is zero (the Cholesky factor is regularized, never NaN)."""
    gen = torch.Generator().manual_seed(0)
    P = torch.randn(50, 6, generator=gen, dtype=dtype)
    Q = torch.randn(50, 6, generator=gen, dtype=dtype)
    if case == "dependent_columns":
        Q[:, 3:] = Q[:, :3] @ torch.randn(3, 3, generator=gen, dtype=dtype)
    elif case == "zero":
        Q.zero_()
    X, V = step_basis(P, Q)
    A = P @ Q.T
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.isfinite(X).all() and torch.isfinite(V).all()
    assert (X @ V.T - A).norm() <= tol * (P.norm() * Q.norm() + 1e-30)
    assert X.norm() >= A.norm() * (1 - tol)
    if case == "full_rank":
        torch.testing.assert_close(V.T @ V, torch.eye(6, dtype=dtype), rtol=0, atol=100 * tol)
        torch.testing.assert_close(X.norm(), A.norm(), rtol=tol, atol=0)


def test_factored_offset_products_and_branches():
    """g after steps I + Y V^T: equal to the dense product of the steps, its inverse to the dense inverse, its
    products to those with dense g, and a second step from an older iterate (a branch) leaves the first intact."""
    gen = torch.Generator().manual_seed(0)
    d, r = 12, 3
    steps = [(0.3 * torch.randn(d, r, generator=gen, dtype=torch.float64),
              torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))[0]) for _ in range(3)]
    eye = torch.eye(d, dtype=torch.float64)
    start = FactoredElement.identity(d, eye)
    chain, g = [start], eye
    for Y, V in steps:
        chain.append(chain[-1].times_exp(Y, V))
        g = (eye + Y @ V.T) @ g
        torch.testing.assert_close(eye + chain[-1].dense(), g, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(chain[-1].dense_inverse(), torch.linalg.inv(g), rtol=1e-10, atol=1e-12)
    before = chain[2].dense().clone(), chain[3].dense().clone()
    branch = chain[1].times_exp(*steps[0])  # from an older iterate
    torch.testing.assert_close(chain[2].dense(), before[0], rtol=0, atol=0)
    torch.testing.assert_close(chain[3].dense(), before[1], rtol=0, atol=0)
    Y, V = steps[0]
    torch.testing.assert_close(eye + branch.dense(), (eye + Y @ V.T) @ (eye + Y @ V.T), rtol=1e-12, atol=1e-12)
    M = torch.randn(5, d, generator=gen, dtype=torch.float64)
    g3 = eye + chain[3].dense()
    for got, want in ((chain[3].rows(M), M @ g3.T), (chain[3].right(M), M @ g3), (chain[3].left(M.T), g3 @ M.T),
                      (chain[3].right_inv(M), M @ torch.linalg.inv(g3))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("factory", [GLData, GLHidden])
def test_wide_layers_teleport_exactly_through_the_factored_path(factory):
    """Default settings on hidden layers 30 wide, batch 4: the factored path is the one taken, and a teleport is
    accepted on the level set with a larger gradient and the same result as the dense path."""
    problem = MLPRegression(dims=[5, 30, 30, 3], n_samples=4, activation="leaky_relu", slope=0.1, init="default")
    problem.setup("cpu", torch.float64, 0)
    results = []
    for min_width in (6, math.inf):
        symmetry = factory()
        symmetry.factored_min_width_per_sample = min_width
        symmetry.bind(problem)
        params = problem.init_params()
        ctx = symmetry.prepare(params, problem.train_batch(0))
        assert symmetry.factored_pairs(ctx) == (symmetry.pairs if min_width == 6 else [])
        event = GradientAscent(steps=5, lr=1e-2, max_group_norm=1.0).teleport(
            0, problem, symmetry, params, torch.optim.SGD(params, lr=0.1), torch.Generator().manual_seed(0))[0]
        assert event["accepted"] and event["rel_loss_drift"] < 1e-10
        assert event["grad_norm_sq_after"] > 1.5 * event["grad_norm_sq_before"], event
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_exp_steps_stay_invertible_where_linear_steps_go_singular():
    """From g = 0.1 I, a step of 0.1 along the direction -I: additive coordinates land on g = 0, the exponential
    step on exp(-0.1) g (every ``exp`` iterate is a product of exponentials: invertible, det > 0)."""
    problem, symmetry, params, batch = make("gl_linear")
    linear = GLLinear(parametrization="linear")
    linear.bind(problem)
    ctx = symmetry.prepare(params, batch)
    eyes = [torch.eye(x.shape[0], dtype=torch.float64) for x in symmetry.identity(params, ctx)]
    T = [-0.9 * eye for eye in eyes]
    # Euclidean gradients G whose algebra direction G g^T (exp) or G itself (linear) is -I
    to_linear = step(linear, T, [-eye for eye in eyes], 0.1, ctx)
    to_exp = step(symmetry, T, [-torch.linalg.inv(eye + t).T for eye, t in zip(eyes, T)], 0.1, ctx)
    for eye, a, b in zip(eyes, to_linear, to_exp):
        assert torch.linalg.svdvals(eye + a).min() < 1e-12
        torch.testing.assert_close(eye + b, 0.1 * torch.exp(torch.tensor(-0.1, dtype=torch.float64)) * eye)


@pytest.mark.parametrize("parametrization", ["exp", "linear"])
def test_max_group_norm_bounds_the_path_of_exp_steps_and_the_point_of_linear_ones(parametrization):
    """With a wild ascent rate the bound decides where the search ends: ``exp`` keeps every singular value of g within
    exp(+-bound) (its steps' norms sum to at most the bound), ``linear`` keeps ||g - I||_F <= bound."""
    problem, symmetry, params, batch = make("gl_linear")
    symmetry = GLLinear(parametrization=parametrization)
    symmetry.bind(problem)
    ctx = symmetry.prepare(params, batch)
    bound = 0.5
    xi = GradientAscent(steps=6, lr=1e3, max_group_norm=bound).search(problem, symmetry, params, batch, ctx,
                                                                     torch.Generator().manual_seed(0))
    offsets = torch.cat([T.flatten() for T in xi])
    assert offsets.norm() > 0.1  # it moved
    if parametrization == "linear":
        assert offsets.norm() <= bound * (1 + 1e-12)
    else:
        for T in xi:
            sv = torch.linalg.svdvals(torch.eye(T.shape[0], dtype=T.dtype) + T)
            assert sv.max() <= math.exp(bound) * (1 + 1e-12) and sv.min() >= math.exp(-bound) * (1 - 1e-12)


def test_unknown_subgroup_is_refused():
    with pytest.raises(ConfigError, match=r"symmetry.subgroup: 'rank'.*full, batch"):
        GLHidden(subgroup="rank")


def test_gl_data_refuses_batch_wider_than_layer_input():
    problem = MLPRegression(dims=[3, 9, 2], n_samples=6, init="default")
    problem.setup("cpu", torch.float64, 0)
    symmetry = GLData()
    symmetry.bind(problem)
    with pytest.raises(SymmetryMismatch, match=r"batch of 6 samples.*only 3 wide"):
        symmetry.check_batch(6)
    with pytest.raises(SymmetryMismatch, match="6 samples"):
        symmetry.prepare(problem.init_params(), problem.train_batch(0))


def test_gl_hidden_refuses_batch_wider_than_hidden_layer():
    problem = MLPRegression(dims=[20, 3, 2], n_samples=5, init="default")
    problem.setup("cpu", torch.float64, 0)
    symmetry = GLHidden()
    symmetry.bind(problem)
    with pytest.raises(SymmetryMismatch, match=r"5 samples.*only 3 wide"):
        symmetry.prepare(problem.init_params(), problem.train_batch(0))


@pytest.mark.parametrize("symmetry,activation,match", [
    (Rescale(), "tanh", "positive homogeneity"),
    (GLData(), "relu", "not invertible"),
    (GLData(), "tanh", "tanh only on"),
    (GLLinear(), "leaky_relu", "only the identity"),
])
def test_bind_refuses_activation_mismatch(symmetry, activation, match):
    problem = MLPRegression(activation=activation)
    problem.setup("cpu", torch.float64, 0)
    with pytest.raises(SymmetryMismatch, match=match):
        symmetry.bind(problem)


def test_network_symmetry_refuses_level_set_problem_and_bad_pairs():
    booth = Booth()
    booth.setup("cpu", torch.float64, 0)
    with pytest.raises(SymmetryMismatch, match="acts on the layers of a network"):
        Rescale().bind(booth)
    problem = MLPRegression()
    problem.setup("cpu", torch.float64, 0)
    with pytest.raises(ConfigError, match=r"pair indices 0..1"):
        Rescale(pairs=[2]).bind(problem)
    with pytest.raises(ConfigError, match="symmetry.pairs"):
        Rescale(pairs=[])


# --- optimizer state ------------------------------------------------------------------------------------
def _optimizer_with_state(opt_cls, params, problem, batch, **kw):
    optimizer = opt_cls(params, lr=1e-3, **kw)
    for _ in range(3):
        problem.loss(params, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_rescale_transforms_state_like_gradients_and_squares():
    problem, symmetry, params, batch = make("rescale")
    optimizer = _optimizer_with_state(torch.optim.Adam, params, problem, batch)
    symmetry.check_state_policy(optimizer)
    xi = symmetry.sample(params, None, torch.Generator().manual_seed(0), 0.5)
    states = [optimizer.state[p] for p in params]
    new = symmetry.transform_state(xi, params, None, states)
    # gradients at g·w: computed directly, compared with the transformed 'gradient-like' map
    moved = [m.detach().requires_grad_(True) for m in symmetry.act(xi, params, None)]
    grads_moved = torch.autograd.grad(problem.loss(moved, batch), moved)
    w = [p.detach().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(problem.loss(w, batch), w)
    maps = symmetry._grad_map(xi, params)
    for f, g, gm, s, n in zip(maps, grads, grads_moved, states, new):
        torch.testing.assert_close(f(g), gm)
        torch.testing.assert_close(n["exp_avg_sq"], s["exp_avg_sq"] * (f(torch.ones_like(g)) ** 2))
        assert n["step"] == s["step"]


def test_gl_linear_transforms_momentum_and_refuses_squared_state():
    problem, symmetry, params, batch = make("gl_linear")
    optimizer = _optimizer_with_state(torch.optim.SGD, params, problem, batch, momentum=0.9)
    symmetry.check_state_policy(optimizer)
    xi = symmetry.sample(params, None, torch.Generator().manual_seed(0), 0.5)
    moved = [m.detach().requires_grad_(True) for m in symmetry.act(xi, params, None)]
    grads_moved = torch.autograd.grad(problem.loss(moved, batch), moved)
    w = [p.detach().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(problem.loss(w, batch), w)
    for f, g, gm in zip(symmetry._grad_map(xi, params), grads, grads_moved):
        torch.testing.assert_close(f(g), gm)
    new = symmetry.transform_state(xi, params, None, [optimizer.state[p] for p in params])
    assert all("momentum_buffer" in s for s in new)
    with pytest.raises(ConfigError, match="squared-gradient state"):
        symmetry.check_state_policy(torch.optim.Adagrad(params, lr=0.1))


@pytest.mark.parametrize("case", ["gl_data", "gl_hidden"])
def test_data_dependent_actions_refuse_state_transform(case):
    problem, symmetry, params, batch = make(case)
    with pytest.raises(ConfigError, match="optimizer_state=transform"):
        symmetry.check_state_policy(torch.optim.SGD(params, lr=0.1))


def test_unbounded_ascent_on_a_non_compact_group_warns():
    problem, symmetry, params, _ = make("rescale")
    optimizer = torch.optim.SGD(params, lr=0.1)
    with pytest.warns(UserWarning, match="max_group_norm is null with symmetry 'rescale'"):
        symmetry.check_run(problem, GradientAscent(), optimizer)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        symmetry.check_run(problem, GradientAscent(max_group_norm=1.0), optimizer)
