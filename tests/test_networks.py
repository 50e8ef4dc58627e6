"""End-to-end checks of the network experiments through ``teleport_runner.train.run`` (docs/results.md)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from teleport_runner import CONFIG_DIR
from teleport_runner.logging.jsonl import read_jsonl
from teleport_runner.problems import data as idx
from teleport_runner.runner import run

from test_data import real_root  # tests/ is on sys.path (pytest rootdir import mode)

PAPER_SEEDS = range(5)


def run_cfg(tmp_path: Path, overrides: list[str], name: str = "run") -> tuple[dict, list[dict], list[dict]]:
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides + ["logger=jsonl", "plots=false", "device=cpu"])
    run_dir = tmp_path / name
    run_dir.mkdir()
    summary = run(cfg, run_dir)
    return summary, read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "teleports.jsonl")


def mean_steps_below(tmp_path, overrides, threshold=10.0):
    curves, events = [], []
    for seed in PAPER_SEEDS:
        summary, metrics, teleports = run_cfg(tmp_path, overrides + [f"seed={seed}"], f"{overrides[-1]}-{seed}")
        assert summary["status"] == "completed"
        curves.append([float(r["loss"]) for r in metrics])
        events += teleports
    below = np.nonzero(np.mean(curves, axis=0) < threshold)[0]
    return (int(below[0]) if len(below) else math.inf), events


# --- (a) the paper's regression network, 5 seeds ------------------------------------------------------------
def test_regression_rescale_and_gl_data_reach_loss_10_three_times_sooner(tmp_path):
    base = ["experiment=relu_rescale"]
    none, _ = mean_steps_below(tmp_path, base + ["teleport=none"])
    rescale, rescale_events = mean_steps_below(tmp_path, base + ["symmetry=rescale"])
    gl_data, gl_events = mean_steps_below(tmp_path, ["experiment=paper_regression", "symmetry=gl_data"])
    assert none < math.inf and rescale <= none / 3, (none, rescale)
    assert gl_data < none, (none, gl_data)
    for events in (rescale_events, gl_events):
        assert len(events) == len(PAPER_SEEDS) and all(e["accepted"] for e in events)
        assert max(e["rel_loss_drift"] for e in events) <= 1e-5
        assert all(e["grad_norm_sq_after"] > e["grad_norm_sq_before"] for e in events)


# --- (b) Fashion-MNIST with the paper's MNIST settings ------------------------------------------------------
@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> str:
    root = real_root()
    if root is not None:
        return str(root)
    return str(idx.write_synthetic(tmp_path_factory.mktemp("data"), "fashion_mnist", n_train=10600,
                                   n_test=200).parents[1])


def test_fashion_teleport_after_500_steps_is_exact_and_raises_grad_norm(tmp_path, fashion_root):
    summary, _, events = run_cfg(tmp_path, [
        "experiment=paper_mnist", "problem=fashion_mnist", f"problem.data.root={fashion_root}",
        "problem.n_train=10100", "problem.n_val=500", "epochs=1",  # 505 steps
        "schedule.epochs=[0]", "schedule.step_offset=500", "teleport.batches=1"])
    assert summary["status"] == "completed" and summary["n_teleports"] == 1
    accepted = [e for e in events if e["accepted"]]
    assert accepted and all(e["step"] == 500 for e in events)
    for e in accepted:
        assert e["rel_loss_drift"] < 1e-4
        assert e["grad_norm_sq_after"] > e["grad_norm_sq_before"]
        assert "holdout_rel_loss_change" in e
    assert {"val_loss", "val_acc", "test_loss", "test_acc"} <= set(summary["final_metrics"])


# --- (c) the runner adds nothing hidden -----------------------------------------------------------------------
def test_no_teleport_matches_a_plain_pytorch_loop(tmp_path, fashion_root):
    steps = 60
    summary, metrics, _ = run_cfg(tmp_path, [
        "experiment=paper_mnist", "problem=fashion_mnist", f"problem.data.root={fashion_root}",
        "problem.n_train=1200", "problem.n_val=200", "epochs=1", "log_every=1", "teleport=none", "seed=7"])
    runner_losses = [r["loss"] for r in metrics]
    assert len(runner_losses) == steps

    from teleport_runner.problems.classifier import FashionMNIST

    problem = FashionMNIST(n_train=1200, n_val=200, slope=0.01, data={"root": fashion_root})
    problem.setup("cpu", torch.float32, 7)
    init = problem.init_params()
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.LeakyReLU(0.01), torch.nn.Linear(512, 512),
                                torch.nn.LeakyReLU(0.01), torch.nn.Linear(512, 10))
    with torch.no_grad():
        for p, q in zip(model.parameters(), init):
            p.copy_(q)
    optimizer = torch.optim.SGD(model.parameters(), lr=2e-3)
    plain_losses = []
    for step in range(steps):
        x, y = problem.train_batch(step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        plain_losses.append(loss.item())
    np.testing.assert_allclose(runner_losses, plain_losses, rtol=1e-5, atol=1e-6)
    assert summary["final_loss"] == pytest.approx(float(problem.final_loss(list(model.parameters()))), rel=1e-5)


# --- refusals before training, and the CLI ----------------------------------------------------------------------
def test_refusals_happen_before_training(tmp_path):
    from teleport_runner.errors import ConfigError, SymmetryMismatch

    with pytest.raises(ConfigError, match="squared-gradient state"):
        run_cfg(tmp_path, ["problem=mlp_regression", "problem.activation=identity", "symmetry=gl_linear",
                           "optimizer=adam", "teleport.optimizer_state=transform"], "a")
    with pytest.raises(ConfigError, match="optimizer_state=transform"):
        run_cfg(tmp_path, ["experiment=paper_regression", "teleport.optimizer_state=transform"], "b")
    with pytest.raises(SymmetryMismatch, match="tanh"):
        run_cfg(tmp_path, ["experiment=relu_rescale", "problem.activation=tanh"], "c")
    # transform with rescale and Adagrad is supported and runs
    summary, _, events = run_cfg(tmp_path, ["experiment=relu_rescale", "optimizer=adagrad", "optimizer.lr=0.1",
                                            "teleport.optimizer_state=transform", "steps=20"], "d")
    assert summary["status"] == "completed" and events[0]["accepted"]


def test_cli_fails_fast_on_empty_data_root(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "teleport_runner.train", "problem=mnist", f"problem.data.root={tmp_path}",
         f"hydra.run.dir={tmp_path / 'run'}", "logger=jsonl", "symmetry=gl_data"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "mnist data not found" in result.stderr and str(tmp_path / "MNIST" / "raw") in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["paper_mnist", "followup_mnist", "fashion_random"])
def test_presets_run_a_short_epoch(tmp_path, fashion_root, preset):
    root = real_root()
    if root is None and preset != "fashion_random":
        pytest.skip("real MNIST files not present")
    summary, _, events = run_cfg(tmp_path, [
        f"experiment={preset}", f"problem.data.root={root or fashion_root}", "problem.n_train=2000",
        "problem.n_val=500", "epochs=2", "teleport.samples=50" if preset == "fashion_random" else "log_every=10",
        "schedule.epochs=[1]"])
    assert summary["status"] == "completed" and events and all(e["accepted"] for e in events)


@pytest.mark.parametrize("preset", ["paper_regression", "paper_regression_adagrad", "relu_rescale", "paper_mnist",
                                    "paper_mnist_schedules", "followup_mnist", "fashion_random"])
def test_network_presets_compose_and_bind(preset):
    from hydra.utils import instantiate

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    if preset == "paper_regression_adagrad":
        assert cfg.optimizer._target_ == "torch.optim.Adagrad" and cfg.optimizer.lr == 0.1 and cfg.teleport.steps == 2
    if preset == "paper_mnist_schedules":
        assert cfg.hydra.mode.name == "MULTIRUN" and "schedule.epochs" in cfg.hydra.sweeper.params
    instantiate(cfg.symmetry), instantiate(cfg.teleport), instantiate(cfg.schedule)
    if cfg.problem._target_.endswith("MLPRegression"):
        problem = instantiate(cfg.problem)
        problem.setup("cpu", torch.float32, 0)
        instantiate(cfg.symmetry).bind(problem)


@pytest.mark.parametrize("name", ["momentum", "adagrad", "rmsprop", "adam"])
def test_optimizers_run_on_regression(tmp_path, name):
    summary, _, _ = run_cfg(tmp_path, ["experiment=relu_rescale", f"optimizer={name}", "steps=10"])
    assert summary["status"] == "completed"
