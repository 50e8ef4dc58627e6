"""GL symmetries on a user's module (``module_gl``): exactness, agreement with the MLP versions, the CLI, refusals."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from teleport_runner.api import ModelLoss, Teleporter
from teleport_runner.errors import SymmetryMismatch
from teleport_runner.problems.mlp import NetworkProblem
from teleport_runner.symmetries.data_free import GLLinear
from teleport_runner.symmetries.gl_data import GLData, GLHidden
from teleport_runner.teleport import GradientAscent
from teleport_runner.teleport.base import loss_and_grad_norm_sq

SYMMETRIES = {"gl_linear": GLLinear, "gl_data": GLData, "gl_hidden": GLHidden}


def random_mlp(rng: random.Random, mixed_bias: bool = True) -> nn.Sequential:
    """Linear layers joined by LeakyReLU or by nothing, alternately; some without a bias when ``mixed_bias``."""
    widths = [rng.randint(6, 9) for _ in range(rng.randint(3, 5))]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers += [nn.LeakyReLU(rng.choice([0.05, 0.3]))] if i % 2 else []
        layers.append(nn.Linear(a, b, bias=rng.random() < 0.8 if i and mixed_bias else True))
    return nn.Sequential(*layers).double().eval()


def bound(model, symmetry, x, y, pairs=None):
    problem = ModelLoss(model)
    problem.loss_fn, problem.batch = F.mse_loss, (x, y)
    sym = SYMMETRIES[symmetry](pairs).for_problem(problem)
    sym.bind(problem)
    return problem, sym


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.filterwarnings("ignore:Symmetry")
@pytest.mark.parametrize("symmetry", ["gl_linear", "gl_data", "gl_hidden"])
def test_each_action_keeps_the_loss_on_its_batch_and_gl_linear_everywhere(seed, symmetry):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = random_mlp(rng, mixed_bias=symmetry != "gl_data")  # gl_data refuses mixed biases (a test below)
    x = torch.randn(4, model[0].in_features, dtype=torch.float64)
    y = torch.randn(4, model[-1].out_features, dtype=torch.float64)
    try:
        problem, sym = bound(model, symmetry, x, y)
    except SymmetryMismatch:
        assert symmetry == "gl_linear"  # a module with LeakyReLU between every pair
        return
    params = [p.detach() for p in model.parameters()]
    ctx = sym.prepare(params, (x, y))
    new = sym.act(sym.sample(params, ctx, torch.Generator().manual_seed(seed), 0.5), params, ctx)
    assert any(rel(a, b) > 1e-3 for a, b in zip(new, params))  # it moved
    assert rel(problem.loss(new, (x, y)), problem.loss(params, (x, y))) < 1e-10
    assert rel(problem.forward(new, x), problem.forward(params, x)) < 1e-10
    unseen = torch.randn(64, model[0].in_features, dtype=torch.float64)
    change = rel(problem.forward(new, unseen), problem.forward(params, unseen))
    assert change < 1e-10 if symmetry == "gl_linear" else change > 1e-6


class TinyMLP(NetworkProblem):
    name = "tiny"

    def __init__(self, sizes, slope):
        self._init_network(sizes, "leaky_relu", slope, True)

    def init_params(self):
        return []

    def output_loss(self, out, batch):
        return F.mse_loss(out, batch[1])


@pytest.mark.parametrize("symmetry", ["gl_data", "gl_hidden"])
def test_the_module_version_teleports_as_the_mlp_version(symmetry):
    torch.manual_seed(0)
    sizes, slope = [7, 8, 6, 3], 0.2
    model = nn.Sequential(nn.Linear(7, 8), nn.LeakyReLU(slope), nn.Linear(8, 6), nn.LeakyReLU(slope),
                          nn.Linear(6, 3)).double().eval()
    x, y = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    params = [p.detach().clone() for p in model.parameters()]
    mlp = TinyMLP(sizes, slope)
    mlp_sym = SYMMETRIES[symmetry]()
    mlp_sym.bind(mlp)
    module, module_sym = bound(model, symmetry, x, y)
    solver = GradientAscent(steps=5, lr=0.5, max_group_norm=1.0)
    results = []
    for problem, sym in ((mlp, mlp_sym), (module, module_sym)):
        proposal = solver.propose(problem, sym, params, (x, y), torch.Generator().manual_seed(0))
        results.append([*loss_and_grad_norm_sq(problem, params, (x, y)),
                        *loss_and_grad_norm_sq(problem, proposal.params, (x, y))])
    mlp_result, module_result = results
    assert module_result[3] > 1.01 * module_result[1]  # the ascent went somewhere
    for a, b in zip(mlp_result, module_result):
        assert abs(float(a - b)) <= 1e-10 * abs(float(a))


def test_gl_linear_on_a_linear_pair_matches_the_linear_mlp():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 4)).double().eval()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    params = [p.detach().clone() for p in model.parameters()]
    mlp = TinyMLP([5, 6, 4], 0.1)
    mlp._init_network([5, 6, 4], "identity", 0.1, True)
    mlp_sym = GLLinear()
    mlp_sym.bind(mlp)
    module, module_sym = bound(model, "gl_linear", x, y)
    solver = GradientAscent(steps=5, lr=0.05, max_group_norm=1.0)
    after = [loss_and_grad_norm_sq(p, solver.propose(p, s, params, (x, y), torch.Generator()).params, (x, y))
             for p, s in ((mlp, mlp_sym), (module, module_sym))]
    for a, b in zip(*after):
        assert abs(float(a - b)) <= 1e-10 * abs(float(a))


def test_a_relu_pair_is_refused_with_the_layer_named():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(SymmetryMismatch, match=r"0 -> 1 \(ReLU\) -> 2: relu .* is not a bijection"):
        bound(model, "gl_data", x, y)
    mixed = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.LeakyReLU(0.1), nn.Linear(6, 2)).double()
    with pytest.raises(SymmetryMismatch, match=r"chosen pairs .* 0 -> 1 \(ReLU\) -> 2"):
        bound(mixed, "gl_hidden", x, y, pairs=[0, 1])
    with pytest.warns(UserWarning, match=r"skips: 0 -> 1 \(ReLU\) -> 2"):
        _, sym = bound(mixed, "gl_data", x, y)
    assert sym.describe()[1] == "pair 1: 2 -> 3 (LeakyReLU) -> 4: 6 channels"
    with pytest.raises(SymmetryMismatch, match=r"gl_linear needs none"):
        bound(mixed, "gl_linear", x, y)
    no_bias = nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(), nn.Linear(5, 6, bias=False), nn.Linear(6, 2)).double()
    with pytest.raises(SymmetryMismatch, match=r"with a bias: 0; without: 2"):
        bound(no_bias, "gl_data", x, y)


def test_the_api_teleports_with_gl_data():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3)).double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    tp = Teleporter(model, symmetry="gl_data", steps=5, lr=0.1, max_group_norm=1.0)
    event = tp.teleport((x, y), F.cross_entropy)
    assert event["accepted"] and event["grad_norm_sq_after"] > event["grad_norm_sq_before"]


SEQUENTIAL = ("+problem.model._args_=[{_target_: torch.nn.Linear, in_features: 6, out_features: 8},"
              "{_target_: torch.nn.LeakyReLU, negative_slope: 0.2},"
              "{_target_: torch.nn.Linear, in_features: 8, out_features: 5},"
              "{_target_: torch.nn.Linear, in_features: 5, out_features: 2}]")


@pytest.mark.parametrize("symmetry", ["gl_data", "gl_hidden", "gl_linear"])
def test_the_cli_teleports_a_module_with_every_teleport_accepted(run_config, tmp_path, symmetry):
    torch.manual_seed(0)
    torch.save((torch.randn(300, 6), torch.randn(300, 2)), tmp_path / "xy.pt")
    summary, run_dir = run_config(
        "problem=module", "problem.dataset=tensors", f"problem.data.path={tmp_path / 'xy.pt'}", "problem.loss=mse",
        "problem.model._target_=torch.nn.Sequential", SEQUENTIAL, f"symmetry={symmetry}", "steps=20",
        "schedule=steps", "schedule.steps=[3,10]", "teleport.batch_size=5", "teleport.lr=0.05",
        "teleport.max_group_norm=0.5", "dtype=float64")
    assert summary["status"] == "completed"
    assert summary["n_teleports"] == 2 and summary["n_teleports_rejected"] == 0
