"""Teleport objectives (grad_norm, sharpness, curvature; max and min) on every network symmetry."""
from __future__ import annotations

import math

import pytest
import torch

from teleport_runner.errors import ConfigError
from teleport_runner.teleport import GradientAscent, LevelSetSLP, RandomSearch
from teleport_runner.teleport.curvature import curve_curvature, derivatives

from test_network_symmetries import make

SYMMETRIES = ["gl_data", "gl_hidden", "gl_linear", "rescale"]
SETTINGS = {"sharpness": dict(radii=[0.05, 0.1], n_directions=3), "curvature": dict(n_directions=2),
            "grad_norm": {}}


def teleport_event(case, objective, direction, solver="ascent", seed=0, **settings):
    problem, symmetry, params, _ = make(case, seed=seed)
    common = dict(objective=objective, direction=direction, max_group_norm=1.0, **SETTINGS[objective], **settings)
    if solver == "ascent":
        teleporter = GradientAscent(steps=5, lr=settings.pop("lr", 0.05), **common)
    else:
        common.pop("max_group_norm")
        teleporter = RandomSearch(samples=8, scale=0.3, **common)
    opt = torch.optim.SGD(params, lr=0.0)
    (event,) = teleporter.teleport(0, problem, symmetry, params, opt, torch.Generator().manual_seed(seed))
    return event


@pytest.mark.parametrize("case", SYMMETRIES)
@pytest.mark.parametrize("objective", ["grad_norm", "sharpness", "curvature"])
@pytest.mark.parametrize("direction", ["max", "min"])
def test_ascent_moves_the_objective_its_way_on_the_level_set(case, objective, direction):
    event = teleport_event(case, objective, direction)
    assert event["objective"] == objective and event["objective_direction"] == direction
    assert event["accepted"], event
    before, after = event["objective_before"], event["objective_after"]
    assert (after > before) if direction == "max" else (after < before), event
    if objective == "grad_norm":
        assert (before, after) == (event["grad_norm_sq_before"], event["grad_norm_sq_after"])


@pytest.mark.parametrize("objective", ["sharpness", "curvature", "grad_norm"])
def test_random_search_keeps_the_best_sample_for_the_direction(objective):
    up = teleport_event("gl_data", objective, "max", solver="random")
    down = teleport_event("gl_data", objective, "min", solver="random")
    assert up["objective_before"] == pytest.approx(down["objective_before"])
    assert down["objective_after"] < up["objective_after"]


def test_sharpness_directions_are_fixed_within_a_teleport():
    problem, symmetry, params, batch = make("rescale")
    ctx = symmetry.prepare(params, batch)
    solver = GradientAscent(objective="sharpness", direction="min", radii=[0.1], n_directions=4,
                            directions="positive")
    target = solver.objective.bind(problem, symmetry, params, batch, ctx, torch.Generator().manual_seed(0))
    xi = symmetry.sample(params, ctx, torch.Generator().manual_seed(1), 0.3)
    assert float(target.score(xi)) == float(target.score(xi))
    flat = torch.cat([torch.cat([e.reshape(-1) for e in d]) for d in target.perturbations])
    assert (flat >= 0).all()  # positive: the follow-up's draw
    for d in target.perturbations:
        assert float(sum(e.square().sum() for e in d)) == pytest.approx(1.0)
    # phi is the mean of L(w + r d) over the drawn directions
    expected = sum(problem.loss([p + 0.1 * e for p, e in zip(params, d)], batch) for d in target.perturbations) / 4
    assert float(target.value(symmetry.identity(params, ctx))) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("rho", [0.5, 2.0, 7.0])
def test_curvature_of_a_circle_is_one_over_its_radius(rho):
    def circle(t):  # a circle of radius rho in the plane x + y + z = 1 of R^3, at speed 3 (speed does not matter)
        u = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / 2 ** 0.5
        v = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64) / 6 ** 0.5
        return 1 / 3 + rho * (torch.cos(3 * t + 0.4) * u + torch.sin(3 * t + 0.4) * v)

    assert float(curve_curvature(*derivatives(circle, torch.float64, "cpu"))) == pytest.approx(1 / rho, rel=1e-12)


@pytest.mark.parametrize("case", SYMMETRIES)
def test_orbit_curvature_matches_finite_differences(case):
    problem, symmetry, params, batch = make(case)
    ctx = symmetry.prepare(params, batch)
    solver = GradientAscent(objective="curvature", direction="max", n_directions=1)
    target = solver.objective.bind(problem, symmetry, params, batch, ctx, torch.Generator().manual_seed(0))
    xi = symmetry.sample(params, ctx, torch.Generator().manual_seed(1), 0.3)
    (M,) = target.directions

    def gamma(t):  # the true orbit curve exp(tM)·g·w, the matrix exponential itself
        coords = symmetry.orbit_curve(xi, M, torch.tensor(t, dtype=torch.float64), ctx)
        return torch.cat([p.reshape(-1) for p in symmetry.act(coords, params, ctx)])

    h = 1e-4
    d1 = (gamma(h) - gamma(-h)) / (2 * h)
    d2 = (gamma(h) - 2 * gamma(0.0) + gamma(-h)) / h ** 2
    assert float(target.value(xi)) == pytest.approx(float(curve_curvature(d1, d2)), rel=1e-5)
    # the ascent differentiates psi in g: its gradient matches a finite difference along a random direction
    leaves = [x.clone().requires_grad_(True) for x in xi]
    grads = torch.autograd.grad(target.value(leaves), leaves)
    V = symmetry.sample(params, ctx, torch.Generator().manual_seed(2), 1.0)
    shift = lambda s: [x + s * v for x, v in zip(xi, V)]  # noqa: E731
    fd = (target.value(shift(1e-5)) - target.value(shift(-1e-5))) / 2e-5
    assert float(sum((g * v).sum() for g, v in zip(grads, V))) == pytest.approx(float(fd), rel=1e-5)


def test_curvature_on_the_level_set_of_booth_uses_the_angle():
    """SO(2) on a test function: the orbit is the level curve itself, a circle in h-space."""
    from teleport_runner.problems.test_functions import Booth
    from teleport_runner.symmetries.level_set import LevelSetRotation as LevelSet

    problem, symmetry = Booth(), LevelSet()
    problem.setup("cpu", torch.float64, 0)
    symmetry.bind(problem)
    event = teleport_event_level(problem, symmetry)
    assert event["accepted"] and event["objective_after"] > event["objective_before"]


def teleport_event_level(problem, symmetry):
    params = problem.init_params()
    solver = GradientAscent(objective="curvature", direction="max", n_directions=1, steps=5, lr=0.5)
    (event,) = solver.teleport(0, problem, symmetry, params, torch.optim.SGD(params, lr=0.1),
                               torch.Generator().manual_seed(0))
    return event


@pytest.mark.parametrize("settings,needle", [
    (dict(objective="sharpness"), "teleport.direction is required"),
    (dict(objective="flatness", direction="min"), "Valid values: grad_norm, sharpness, curvature"),
    (dict(objective="sharpness", direction="down"), "Valid values: max, min"),
    (dict(objective="sharpness", direction="min", radii=[]), "teleport.radii"),
    (dict(objective="curvature", direction="min", directions="gaussian"), "isotropic, positive"),
    (dict(objective="curvature", direction="min", n_directions=0), "teleport.n_directions"),
])
def test_bad_objective_settings_are_refused_with_what_is_valid(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        GradientAscent(**settings)


def test_slp_refuses_objectives_it_cannot_optimize():
    with pytest.raises(ConfigError, match="level-set SLP only maximizes"):
        LevelSetSLP(objective="grad_norm", direction="min")


def test_curvature_refuses_the_batch_subgroup():
    from teleport_runner.symmetries.gl_data import GLData

    with pytest.raises(ConfigError, match="subgroup=full"):
        GradientAscent(objective="curvature", direction="max").objective.check(GLData(subgroup="batch"))
    assert math.isfinite(teleport_event("gl_data", "curvature", "min", seed=3)["objective_after"])


def test_first_order_inverse_is_refused_unless_the_guard_is_opened(run_config, tmp_path):
    """The official 2022 action W (I - T) leaves the level set: refused before training, or run and logged."""
    from teleport_runner.runner import build
    from conftest import compose_cfg, read_jsonl

    with pytest.raises(ConfigError, match="teleport.max_rel_drift=inf"):
        build(compose_cfg("experiment=paper_regression", "symmetry.inverse=first_order"), torch.device("cpu"),
              torch.float32)
    summary, run_dir = run_config("experiment=paper_regression", "symmetry.inverse=first_order",
                                  "teleport.max_rel_drift=inf", "seed=0", "steps=20")
    (event,) = read_jsonl(run_dir / "teleports.jsonl")
    assert event["exact_action"] is False and event["accepted"] and event["rel_loss_drift"] > 0.3
    exact, run_dir = run_config("experiment=paper_regression", "seed=0", "steps=20")
    (event,) = read_jsonl(run_dir / "teleports.jsonl")
    assert "exact_action" not in event and event["rel_loss_drift"] < 1e-5
