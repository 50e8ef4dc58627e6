"""The follow-up's correlation study (``teleport_runner/reporting/correlation.py``): it runs on a few tiny trained
runs and writes finite correlations; Pearson r and its p-value against hand computations; the sharpness it reports
is the teleport objective's value on the same point and batch."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from conftest import compose_cfg

from teleport_runner.errors import UserError
from teleport_runner.reporting import correlation as corr
from teleport_runner.reporting.stats import pearson
from teleport_runner.runner import run
from teleport_runner.teleport.objectives import unit_draws

TINY = ["experiment=followup_mnist", "teleport=none", "schedule=none", "problem.slope=0.1", "problem.n_train=600",
        "problem.n_val=200", "epochs=1", "checkpoint.every=10", "log_every=10"]
QUICK = corr.Settings(batches=2, batch_size=50)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synthetic_mnist_root):
    """Four runs on synthetic MNIST (30 steps each), a final checkpoint in each."""
    root = tmp_path_factory.mktemp("corr_sweep")
    for seed in range(4):
        summary = run(compose_cfg(*TINY, f"seed={seed}", f"problem.data.root={synthetic_mnist_root}"),
                      root / str(seed))
        assert summary["status"] == "completed"
    return root


def test_the_study_writes_finite_correlations(sweep, tmp_path):
    result = corr.study([sweep], tmp_path, QUICK)
    assert [r["seed"] for r in result["runs"]] == [0, 1, 2, 3]
    assert len(result["correlations"]) == 6
    for c in result["correlations"]:
        assert c["n"] == 4 and -1 <= c["r"] <= 1 and 0 <= c["p"] <= 1
    for point in result["runs"]:
        assert all(math.isfinite(point[k]) for k in ("phi", "psi", "gap", "test_loss")) and point["psi"] > 0
    written = json.loads((tmp_path / "correlation.json").read_text())
    assert written["correlations"] == result["correlations"]
    assert "sharpness φ" in (tmp_path / "correlation.md").read_text()
    assert (tmp_path / "correlation.png").stat().st_size > 0
    again = corr.study([sweep], tmp_path / "again", QUICK, figure=False)
    assert again["runs"] == result["runs"]  # deterministic


def test_folders_without_a_final_checkpoint_are_named_and_skipped(sweep, tmp_path, capsys):
    shutil.copytree(sweep, tmp_path / "runs")
    (tmp_path / "runs" / "2" / "checkpoint.pt").unlink()
    result = corr.study([tmp_path / "runs"], tmp_path, QUICK, figure=False)
    assert len(result["runs"]) == 3 and result["correlations"][0]["n"] == 3
    assert "runs/2 has no checkpoint" in capsys.readouterr().err
    (tmp_path / "runs" / "1" / "checkpoint.pt").unlink()
    with pytest.raises(UserError, match="at least 3 finished runs"):
        corr.study([tmp_path / "runs"], tmp_path, QUICK, figure=False)


def test_a_checkpoint_before_the_last_step_is_refused(sweep, tmp_path):
    shutil.copytree(sweep / "0", tmp_path / "0")
    state = torch.load(tmp_path / "0" / "checkpoint.pt", weights_only=True)
    state["step"] = 10
    torch.save(state, tmp_path / "0" / "checkpoint.pt")
    with pytest.raises(UserError, match="not at the run's last step 30"):
        corr.evaluate_run(tmp_path / "0", QUICK)


def test_pearson_against_a_hand_computation():
    # x - mean: -1.5 -.5 .5 1.5; y - mean: -1.75 .25 -.75 2.25; sxy 5.5, sxx 5, syy 8.75
    r = 5.5 / math.sqrt(5 * 8.75)
    got = pearson([1, 2, 3, 4], [1, 3, 2, 5])
    t = r * math.sqrt(2 / (1 - r * r))
    assert got["n"] == 4 and got["r"] == pytest.approx(r, rel=1e-12)
    assert got["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)  # Student's t, 2 degrees of freedom
    t3 = 0.5 * math.sqrt(1 / 0.75)
    assert pearson([1, 2, 3], [1, 3, 2])["p"] == pytest.approx(1 - 2 / math.pi * math.atan(t3), rel=1e-10)  # Cauchy
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8])["r"] == pytest.approx(1.0) and pearson([1, 2, 3], [2, 4, 6])["p"] == 0
    assert pearson([1, 2, 3], [5, 5, 5])["r"] is None and pearson([1, 2], [1, 2])["r"] is None
    assert pearson([1, 2, float("nan"), 4], [1, 2, 3, 5])["n"] == 3


def test_phi_is_the_sharpness_objective_on_the_same_point_and_batch(sweep, synthetic_mnist_root):
    """One batch, one direction: the study's phi is mean_r L(w + r d) with the teleport's own draw of d."""
    point = corr.evaluate_run(sweep / "1", corr.Settings(batches=1, batch_size=50, seed=7))
    cfg = compose_cfg(*TINY, "seed=1", f"problem.data.root={synthetic_mnist_root}")
    from teleport_runner.runner import build

    problem = build(cfg, torch.device("cpu"), torch.float32)[0]
    params = torch.load(sweep / "1" / "checkpoint.pt", weights_only=True)["params"]
    batch = problem.teleport_batches(0, 1, 50)[0]
    [d] = unit_draws([p.shape for p in params], 1, "positive", torch.Generator().manual_seed(7), params[0])
    hand = sum(float(problem.loss([p + r * e for p, e in zip(params, d)], batch)) for r in corr.RADII) / 20
    assert point.phi == pytest.approx(hand, rel=1e-5)
    assert len(corr.RADII) == 20 and corr.RADII[0] == 0.001 and corr.RADII[-1] == 0.191
