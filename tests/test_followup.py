"""The 2024 follow-up's presets (followup_sharpness, followup_curvature, MNIST and Fashion-MNIST): each composes and
runs a short form on synthetic data; its teleports are accepted and move the objective in their direction."""
from __future__ import annotations

import pytest

from conftest import read_jsonl

from teleport_runner.problems import data as idx

BASE = ["problem.n_train=600", "problem.n_val=200", "epochs=2", "schedule.epochs=[1]", "log_every=10"]
SHORT = [*BASE, "teleport.steps=4", "teleport.n_directions=2"]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("followup_data")
    for dataset in ("mnist", "fashion_mnist"):
        idx.write_synthetic(root, dataset, n_train=1200, n_test=40)
    return str(root)


@pytest.mark.parametrize("preset,direction,teleports", [
    ("followup_sharpness", "min", 10), ("followup_sharpness", "max", 2),
    ("followup_sharpness_fashion", "min", 10),
    ("followup_curvature", "max", 10), ("followup_curvature_fashion", "min", 5),
])
def test_followup_preset_short_form(run_config, synthetic_root, preset, direction, teleports):
    summary, run_dir = run_config(f"experiment={preset}", f"teleport.direction={direction}",
                                  f"problem.data.root={synthetic_root}", *SHORT)
    assert summary["status"] == "completed"
    events = read_jsonl(run_dir / "teleports.jsonl")
    assert len(events) == teleports and all(e["accepted"] for e in events)
    assert {e["objective"] for e in events} == {preset.split("_")[1]}
    moved = [e["objective_after"] - e["objective_before"] for e in events]
    if direction == "min":
        assert all(m <= 0 for m in moved) and sum(moved) < 0
    else:
        assert all(m >= 0 for m in moved) and sum(moved) > 0


def test_followup_controls_compose_on_the_same_seed(run_config, synthetic_root):
    """teleport=none and a random group element (random_search, one sample) keep the preset's other settings."""
    common = ["experiment=followup_sharpness", f"problem.data.root={synthetic_root}", *SHORT]
    none, _ = run_config(*common, "teleport=none")
    rand, run_dir = run_config(*common, "teleport=random_search", "teleport.samples=1")
    assert none["n_teleports"] == 0 and rand["n_teleports"] == 10
    assert all(e["accepted"] for e in read_jsonl(run_dir / "teleports.jsonl"))


@pytest.mark.parametrize("preset,optimizer", [
    ("followup_adagrad", "Adagrad"), ("followup_momentum", "SGD"), ("followup_rmsprop", "RMSprop"),
    ("followup_adam", "Adam"), ("paper_mnist_adagrad", "Adagrad"),
])
def test_optimizer_protocol_presets_run_beside_their_controls(run_config, synthetic_root, preset, optimizer):
    common = [f"experiment={preset}", f"problem.data.root={synthetic_root}", *BASE]
    summary, run_dir = run_config(*common)
    assert summary["status"] == "completed" and summary["n_teleports"] >= 4
    assert all(e["objective"] == "grad_norm" for e in read_jsonl(run_dir / "teleports.jsonl"))
    reset, _ = run_config(*common, "teleport=reset_only")
    assert reset["status"] == "completed" and reset["n_teleports"] == summary["n_teleports"]
    from conftest import compose_cfg

    cfg = compose_cfg(f"experiment={preset}")
    assert cfg.optimizer._target_ == f"torch.optim.{optimizer}"
    assert cfg.teleport.optimizer_state == ("keep" if preset.startswith("paper") else "reset")
