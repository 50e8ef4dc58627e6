"""problem=module: symmetry discovery in a user's nn.Module, exactness of the discovered actions, the CLI paths."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO, compose_cfg, read_jsonl, run_cli
from teleport_runner.api import ModelLoss
from teleport_runner.errors import ConfigError, SymmetryMismatch
from teleport_runner.problems import cifar
from teleport_runner.symmetries.base import autograd_grad_norm_sq
from teleport_runner.symmetries.conv_rescale import ModuleRescale


def random_net(rng: random.Random) -> tuple[nn.Module, tuple[int, ...], int]:
    """A random ReLU/LeakyReLU conv net or MLP, its input shape and the number of pairs it has."""
    act = lambda: nn.ReLU() if rng.random() < 0.5 else nn.LeakyReLU(rng.choice([0.01, 0.2]))  # noqa: E731
    if rng.random() < 0.3:  # an MLP
        widths = [rng.randint(3, 9) for _ in range(rng.randint(3, 5))]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), act()]
        return nn.Sequential(*layers[:-1]), (widths[0],), len(widths) - 2
    c, side, layers = rng.choice([1, 3]), rng.choice([8, 12]), []
    shape, n_conv = (c, side, side), rng.randint(1, 3)
    for _ in range(n_conv):
        width, k = rng.randint(2, 6), rng.choice([1, 3])
        layers += [nn.Conv2d(c, width, k, padding=k // 2, bias=rng.random() < 0.8), act()]
        if side >= 4 and rng.random() < 0.6:
            layers.append(rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)]))
            side //= 2
        c = width
    hidden = rng.randint(3, 8)
    layers += [nn.Flatten(), nn.Linear(c * side * side, hidden), act(), nn.Linear(hidden, 4)]
    return nn.Sequential(*layers), shape, n_conv + 1


def bound(model: nn.Module, x: torch.Tensor, pairs=None) -> tuple[ModelLoss, ModuleRescale]:
    problem = ModelLoss(model)
    problem.loss_fn, problem.batch = F.cross_entropy, (x, torch.zeros(x.shape[0], dtype=torch.long))
    symmetry = ModuleRescale(pairs)
    symmetry.bind(problem)
    return problem, symmetry


@pytest.mark.parametrize("seed", range(12))
def test_every_discovered_action_keeps_the_function_on_unseen_inputs(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model, shape, n_pairs = random_net(rng)
    model = model.double().eval()
    x = torch.randn(2, *shape, dtype=torch.float64)
    problem, symmetry = bound(model, x)
    assert len(symmetry.sites) == n_pairs, symmetry.describe()
    params = [p.detach() for p in model.parameters()]
    unseen = torch.randn(32, *shape, dtype=torch.float64)
    for k in range(3):
        xi = symmetry.sample(params, None, torch.Generator().manual_seed(k), scale=1.0)
        moved = symmetry.act(xi, params, None)
        assert any((m - p).abs().max() > 1e-2 for m, p in zip(moved, params))
        before, after = problem.forward(params, unseen), problem.forward(moved, unseen)
        assert float((after - before).abs().max() / before.abs().max()) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_closed_form_objective_and_its_gradient_match_autograd(seed):
    rng = random.Random(100 + seed)
    torch.manual_seed(seed)
    model, shape, _ = random_net(rng)
    model = model.double().eval()
    x = torch.randn(16, *shape, dtype=torch.float64)
    problem, symmetry = bound(model, x)
    problem.batch = (x, torch.randint(0, 4, (16,)))
    params = [p.detach() for p in model.parameters()]
    ctx = symmetry.prepare(params, problem.batch)
    xi = [t.requires_grad_(True) for t in symmetry.sample(params, ctx, torch.Generator().manual_seed(seed), 0.5)]
    closed = symmetry.grad_norm_sq(xi, params, problem.batch, ctx)
    generic = autograd_grad_norm_sq(problem, symmetry, xi, params, problem.batch, ctx, True)
    torch.testing.assert_close(closed, generic, rtol=1e-10, atol=0)
    for a, b in zip(torch.autograd.grad(closed, xi), torch.autograd.grad(generic, xi)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-14)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(64, 3)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        return self.fc(torch.flatten(F.relu(self.conv2(h)) + h, 1))


def test_batchnorm_and_residuals_break_pairs_and_are_named():
    x = torch.randn(2, 1, 4, 4)
    with_bn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                            nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    with pytest.warns(UserWarning, match=r"0: 1 \(BatchNorm2d\) before the next layer breaks the pair"):
        _, symmetry = bound(with_bn, x)
    assert [(s.producer, s.consumer, s.repeat) for s in symmetry.sites] == [("3", "6", 16)]
    only_bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 2)).eval()
    with pytest.raises(SymmetryMismatch, match=r"no teleportable layer pair in Sequential: 0: 1 \(BatchNorm2d\)"):
        bound(only_bn, x)
    with pytest.raises(SymmetryMismatch, match=r"conv1: its output is used by 2 operations .*residual"):
        bound(Residual(), x)
    with pytest.raises(ConfigError, match=r"symmetry.pairs: \[5\]; Sequential has 1 teleportable pairs"):
        bound(with_bn, x, pairs=[5])


def test_view_with_batch_size_and_functional_ops_are_followed():
    class Classic(nn.Module):  # LeNet as often written: functional ops and x.view(x.size(0), -1)
        def __init__(self):
            super().__init__()
            self.conv, self.fc1, self.fc2 = nn.Conv2d(1, 3, 3), nn.Linear(3 * 3 * 3, 5), nn.Linear(5, 2)

        def forward(self, x):
            x = F.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc2(F.leaky_relu(self.fc1(x.view(x.size(0), -1)), 0.1))

    _, symmetry = bound(Classic(), torch.randn(2, 1, 8, 8))
    assert [s.describe() for s in symmetry.sites] == [
        "conv -> relu -> max_pool2d -> .view() -> fc1: 3 channels, 9 columns each",
        "fc1 -> leaky_relu -> fc2: 5 channels"]


MYMODELS = '''
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, width, 3, padding=1), nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * width * 7 * 7, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))
'''


def test_a_cnn_from_a_users_file_trains_and_every_teleport_is_exact(tmp_path, synthetic_mnist_root):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mymodels.py").write_text(MYMODELS)
    run_dir = tmp_path / "run"
    proc = run_cli("problem=module", "problem.model._target_=mymodels.SmallCNN", "+problem.model.width=3",
                   "problem.dataset=mnist", f"problem.data.root={synthetic_mnist_root}", "symmetry=rescale",
                   "problem.n_train=400", "problem.n_val=200", "steps=30", "schedule=steps", "schedule.steps=[5,20]",
                   "teleport.batches=2", "teleport.lr=10", "teleport.max_group_norm=1.0", "optimizer.lr=0.05",
                   "logger=jsonl", "plots=false", f"hydra.run.dir={run_dir}",
                   env={"PYTHONPATH": f"{tmp_path / 'pkg'}:{REPO}"})
    assert proc.returncode == 0, proc.stderr
    events = read_jsonl(run_dir / "teleports.jsonl")
    assert len(events) == 4 and all(e["accepted"] for e in events)
    assert all(e["holdout_rel_loss_change"] < 1e-5 and e["rel_loss_drift"] < 1e-5 for e in events)
    assert all(e["grad_norm_sq_after"] > e["grad_norm_sq_before"] for e in events)


def test_print_pairs_lists_and_stops(tmp_path, synthetic_mnist_root):
    proc = run_cli("experiment=lenet_mnist", f"problem.data.root={synthetic_mnist_root}", "print_pairs=true",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    assert "pair 1: features.3 -> features.4 (ReLU) -> features.5 (MaxPool2d) -> classifier.0 (Flatten) -> " \
           "classifier.1: 16 channels, 25 columns each" in proc.stdout
    assert not (tmp_path / "run" / "summary.json").exists()


def test_cifar10_pickles_and_tensor_files(run_config, tmp_path):
    with pytest.raises(Exception, match=r"cifar10 data not found.*cifar-10-python.tar.gz"):
        run_config("experiment=cnn_cifar10", f"problem.data.root={tmp_path / 'none'}")
    cifar.write_synthetic(tmp_path / "c", n_per_batch=40, n_test=20)
    summary, run_dir = run_config("experiment=cnn_cifar10", f"problem.data.root={tmp_path / 'c'}", "epochs=2",
                                  "problem.n_val=40", "problem.model.channels=[4,8]", "problem.model.hidden=8")
    assert summary["status"] == "completed" and summary["n_teleports"] == 4 and summary["n_teleports_rejected"] == 0
    assert set(summary["final_metrics"]) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    x, y = torch.randn(300, 6), torch.randn(300, 2)
    torch.save((x, y), tmp_path / "xy.pt")
    summary, _ = run_config("problem=module", "problem.dataset=tensors", f"problem.data.path={tmp_path / 'xy.pt'}",
                            "problem.loss=mse", "problem.model._target_=torch.nn.Sequential",
                            "+problem.model._args_=[{_target_: torch.nn.Linear, in_features: 6, out_features: 8},"
                            "{_target_: torch.nn.ReLU},{_target_: torch.nn.Linear, in_features: 8, out_features: 2}]",
                            "symmetry=rescale", "steps=20", "schedule=steps", "schedule.steps=[3]",
                            "teleport.max_group_norm=1", "dtype=float64")
    assert summary["status"] == "completed" and summary["n_teleports_rejected"] == 0
    assert set(summary["final_metrics"]) == {"val_loss"}


@pytest.mark.parametrize("overrides,message", [
    (["symmetry=gl_data"], r"no Linear -> Linear pair it can act on in LeNet5: classifier.1 -> classifier.2 \(ReLU\)"),
    (["problem.model._target_=builtins.dict"], "Invalid problem.model: it built dict"),
    (["problem.dataset=svhn"], "Invalid problem.dataset: 'svhn'. Valid values: mnist, fashion_mnist, cifar10, tensors"),
    (["problem.model._target_=teleport_runner.problems.models.small_cnn", "+problem.model.image_size=32"],
     r"does not fit problem.dataset=mnist .* inputs \(20, 1, 28, 28\)"),
])
def test_module_mistakes_are_refused_in_one_paragraph(run_config, synthetic_mnist_root, overrides, message):
    with pytest.raises((ConfigError, SymmetryMismatch), match=message):
        run_config("problem=module", f"problem.data.root={synthetic_mnist_root}", "symmetry=rescale",
                   "teleport.max_group_norm=1", *overrides)


def test_cfg_composes_for_every_module_preset():
    for preset in ("lenet_mnist", "cnn_fashion", "cnn_cifar10"):
        cfg = compose_cfg(f"experiment={preset}")
        assert cfg.problem._target_.endswith("ModuleProblem") and cfg.symmetry._target_.endswith("Rescale")

