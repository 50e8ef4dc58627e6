"""The official 2022 teleport (gl_data form=official, teleport.compound=true): the move as its code makes it,
compounding across ascent steps, the guard's refusal, and the published regression numbers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teleport_runner.errors import ConfigError
from teleport_runner.problems.regression import MLPRegression
from teleport_runner.symmetries.gl_data import GLData
from teleport_runner.teleport import GradientAscent

OFFICIAL_SEEDS = "seed=0,12345,49380,111105,197520"  # the official script's n*n*12345, n = 0..4


def tiny(seed=0):
    problem = MLPRegression(dims=[3, 4, 5, 2], n_samples=3, init="official")
    problem.setup(torch.device("cpu"), torch.float64, seed)
    return problem


def bound(symmetry, problem):
    symmetry.bind(problem)
    return symmetry


def official(problem):
    return bound(GLData(form="official", inverse="first_order", parametrization="linear"), problem)


def hand_computed(problem, lr, steps):
    """The official ascent written out in its own layout (features x samples, W (out, in)), independently of
    gl_official.py: per step, T = lr d||grad L||^2/dT at T = 0 through the objective pass, then the update pass."""
    sig, sig_inv = (lambda u: F.leaky_relu(u, 0.1)), (lambda u: F.leaky_relu(u, 10.0))
    X, Y = problem.x.T, problem.y.T
    W = [p.detach().clone() for p in problem.init_params()]

    def loss(Ws):
        h = X
        for w in Ws[:-1]:
            h = sig(w @ h)
        return 0.5 * (Y - Ws[-1] @ h).square().sum()

    for _ in range(steps):
        T = [torch.zeros(w.shape[0], w.shape[0], dtype=torch.float64, requires_grad=True) for w in W[:-1]]
        g, h = list(W), X
        for m in range(len(W) - 1):  # objective pass: activations and pseudo-inverses of the moved weights
            g[m + 1] = g[m + 1] @ (torch.eye(len(T[m]), dtype=torch.float64) - T[m])
            g[m] = sig_inv((torch.eye(len(T[m]), dtype=torch.float64) + T[m]) @ sig(g[m] @ h)) @ torch.linalg.pinv(h)
            h = sig(g[m] @ h)
        grads = torch.autograd.grad(loss(g), g, create_graph=True)
        dT = torch.autograd.grad(sum(d.square().sum() for d in grads), T)
        T = [lr * d for d in dT]
        old = [X]  # update pass: the activations of the weights before the step
        for w in W[:-2]:
            old.append(sig(w @ old[-1]))
        for m in range(len(W) - 1):
            W[m + 1] = W[m + 1] @ (torch.eye(len(T[m]), dtype=torch.float64) - T[m])
            W[m] = sig_inv((torch.eye(len(T[m]), dtype=torch.float64) + T[m]) @ sig(W[m] @ old[m])) @ \
                torch.linalg.pinv(old[m])
    return W


def propose(problem, symmetry, steps, lr, compound):
    solver = GradientAscent(steps=steps, lr=lr, compound=compound, max_rel_drift=float("inf"))
    params = [p.detach() for p in problem.init_params()]
    return solver.propose(problem, symmetry, params, problem.train_batch(0), torch.Generator().manual_seed(0))


def test_official_compounding_matches_the_move_written_out():
    problem = tiny()
    proposal = propose(problem, official(problem), steps=2, lr=1e-3, compound=True)
    expected = hand_computed(problem, 1e-3, 2)
    for got, want in zip(proposal.params, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert len(proposal.info["path_loss"]) == 2
    # not the one accumulated element applied to the start: the second step starts from the moved weights
    single = hand_computed(problem, 1e-3, 1)
    assert max((a - b).abs().max() for a, b in zip(single, expected)) > 1e-6


def test_exact_compounding_is_an_exact_teleport_and_not_the_accumulated_element():
    problem = tiny(seed=3)
    batch = problem.train_batch(0)
    start = problem.loss(problem.init_params(), batch).item()
    symmetry = bound(GLData(parametrization="linear"), problem)
    compound = propose(problem, symmetry, steps=3, lr=1e-3, compound=True)
    accumulated = propose(problem, symmetry, steps=3, lr=1e-3, compound=False)
    for proposal in (compound, accumulated):
        assert abs(problem.loss(proposal.params, batch).item() - start) <= 1e-10 * start
    assert max((a - b).abs().max() for a, b in zip(compound.params, accumulated.params)) > 1e-6


def test_the_official_move_is_refused_unless_run_as_the_official_code_does(run_config):
    from conftest import compose_cfg
    from teleport_runner.runner import build

    with pytest.raises(ConfigError, match="symmetry.inverse=first_order"):
        GLData(form="official")
    with pytest.raises(ConfigError, match="teleport.init=identity"):
        GradientAscent(compound=True, init="random")
    preset = "experiment=paper_regression_official"
    for overrides, message in [(("teleport.max_rel_drift=null",), "teleport.max_rel_drift=inf"),
                               (("teleport.compound=false",), "teleport.compound=true")]:
        with pytest.raises(ConfigError, match=message):
            build(compose_cfg(preset, *overrides), torch.device("cpu"), torch.float32)


def test_the_official_preset_reproduces_the_published_gd_numbers(run_config):
    """Published (reference.md section 4, the official code run unchanged): GD with teleport, mean final loss 1.58
    over its 5 seeds and the mean curve below 10 at step 16. The official numbers are float32 and rounded to 2
    digits; ours differ from the official code's per seed by float32 rounding only (< 0.003), so 0.01 holds."""
    from conftest import read_jsonl

    seeds = [int(s) for s in OFFICIAL_SEEDS.split("=")[1].split(",")]
    finals, curves = [], []
    for seed in seeds:
        summary, run_dir = run_config("experiment=paper_regression_official", f"seed={seed}")
        (event,) = read_jsonl(run_dir / "teleports.jsonl")
        # the loss moves inside the official "teleport" (it falls 39-91% on these seeds) and the run keeps it
        assert event["exact_action"] is False and event["accepted"] and event["rel_loss_drift"] > 0.3
        assert event["loss_after"] < event["loss_before"]
        assert event["path_loss"][-1] == pytest.approx(event["loss_after"], rel=1e-5)
        rows = read_jsonl(run_dir / "metrics.jsonl")
        curves.append(torch.tensor([r["loss"] for r in rows]))
        finals.append(curves[-1][-1].item())
    mean_curve = torch.stack(curves).mean(0)
    assert sum(finals) / len(finals) == pytest.approx(1.58, abs=0.01)
    assert int((mean_curve < 10).nonzero()[0]) == 16
