"""Teleporter: the CLI's guard and solvers for a user's own model and loop."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO, compose_cfg, read_jsonl
from teleport_runner import Teleporter
from teleport_runner.errors import ConfigError
from teleport_runner.runner import build


def test_import_teleport_runner_does_not_import_torch():
    code = "import sys, teleport_runner; assert 'torch' not in sys.modules; print(teleport_runner.Teleporter.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "Teleporter", proc.stderr


def test_api_and_cli_teleport_the_same_model_identically(run_config, synthetic_mnist_root):
    overrides = ["problem=module", f"problem.data.root={synthetic_mnist_root}", "symmetry=rescale",
                 "problem.model._target_=teleport_runner.problems.models.small_cnn", "+problem.model.channels=[3,4]",
                 "+problem.model.hidden=8", "problem.n_train=200", "problem.n_val=100", "dtype=float64", "steps=2",
                 "schedule=steps", "schedule.steps=[0]", "teleport.lr=50", "teleport.max_group_norm=1.0",
                 "teleport.optimizer_state=transform", "optimizer=momentum"]
    _, run_dir = run_config(*overrides)
    (cli,) = read_jsonl(run_dir / "teleports.jsonl")
    problem, _, _, _, _, optimizer = build(compose_cfg(*overrides), torch.device("cpu"), torch.float64)
    model = problem.model  # built after torch.manual_seed(seed), as in the CLI run: the same initial point
    tp = Teleporter(model, symmetry="rescale", steps=10, lr=50.0, max_group_norm=1.0, optimizer_state="transform")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    api = tp.teleport(problem.teleport_batches(0, 1, None)[0], F.cross_entropy, optimizer=opt,
                      holdout=problem.holdout_batch(0), step=0)
    assert cli["accepted"] and cli["grad_norm_sq_after"] > 1.5 * cli["grad_norm_sq_before"]
    assert set(api) == set(cli)
    for key in set(cli) - {"time_s"}:  # the held-out change is rounding (~1e-16) in both: compared absolutely
        tolerance = 1e-14 if key == "holdout_rel_loss_change" else 1e-300
        if isinstance(cli[key], str):  # the objective's name and direction
            assert api[key] == cli[key], key
            continue
        assert api[key] == pytest.approx(cli[key], rel=1e-12, abs=tolerance), key


def test_rollback_leaves_the_model_untouched_and_state_policies_apply():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in opt.state[model[0].weight].items()}

    def noisy(out, target):  # not invariant: every evaluation differs by ~1e-3, far above the 1e-10 tolerance
        return F.cross_entropy(out, target) * (1 + 1e-3 * torch.rand((), dtype=torch.float64))

    event = Teleporter(model, lr=10.0, max_group_norm=2.0, optimizer_state="transform").teleport(
        (x, y), noisy, optimizer=opt)
    assert not event["accepted"] and event["rel_loss_drift"] > 1e-6
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(v, opt.state[model[0].weight][k]) for k, v in state.items())
    moved = Teleporter(model, lr=10.0, max_group_norm=2.0, optimizer_state="transform")
    assert moved.teleport((x, y), F.cross_entropy, optimizer=opt)["accepted"]
    assert not torch.equal(before[0], model[0].weight)
    assert not torch.equal(state["exp_avg"], opt.state[model[0].weight]["exp_avg"])  # transformed with the action
    reset = Teleporter(model, lr=10.0, max_group_norm=2.0, optimizer_state="reset")
    assert reset.teleport((x, y), F.cross_entropy, optimizer=opt)["accepted"] and not opt.state
    with pytest.raises(ConfigError, match="optimizer_state='reset' needs the optimizer"):
        reset.teleport((x, y), F.cross_entropy)
    with pytest.raises(ConfigError, match="Invalid symmetry: 'gl'. Valid values: rescale"):
        Teleporter(model, symmetry="gl")
    with pytest.raises(ConfigError, match="Invalid solver: 'slp'. Valid values: gradient_ascent, random_search"):
        Teleporter(model, solver="slp")


def test_the_documented_example_runs(capsys):
    text = (REPO / "docs" / "own_model.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "Teleporter(" in block]
    assert 15 <= len([line for line in code.splitlines() if line.strip()]) <= 40
    namespace = {"__name__": "example"}
    exec(compile(code, "docs/own_model.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.count("accepted True") == 4 and "pair 1: conv2 -> relu -> max_pool2d -> flatten -> fc1" in out
    assert namespace["event"]["grad_norm_sq_after"] > namespace["event"]["grad_norm_sq_before"]
    assert namespace["event"]["holdout_rel_loss_change"] < 1e-5
