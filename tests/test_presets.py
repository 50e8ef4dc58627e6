"""Each published 2-D experiment reproduces, with and without teleport (docs/results.md)."""
import pytest

from conftest import read_jsonl


def test_paper_rosenbrock_float64(run_config):
    with_tp, run_dir = run_config("experiment=paper_rosenbrock", "dtype=float64")
    without, _ = run_config("experiment=paper_rosenbrock", "dtype=float64", "teleport=none")
    assert with_tp["status"] == "completed"
    assert with_tp["final_loss"] <= 1e-6          # official: 7.5e-9 median over 20 seeds
    assert without["final_loss"] >= 0.1           # official: 0.111
    assert with_tp["n_teleports"] == 10
    assert with_tp["max_rel_loss_drift"] <= 1e-10
    assert without["n_teleports"] == 0
    events = read_jsonl(run_dir / "teleports.jsonl")
    assert [e["step"] for e in events] == list(range(99, 1000, 100))


def test_paper_booth(run_config):
    with_tp, run_dir = run_config("experiment=paper_booth", "dtype=float64")
    without, _ = run_config("experiment=paper_booth", "dtype=float64", "teleport=none")
    assert with_tp["final_loss"] <= 1e-2          # official: 9.45e-4
    assert without["final_loss"] >= 1             # official: 2.20
    (event,) = read_jsonl(run_dir / "teleports.jsonl")
    assert event["accepted"] and event["step"] == 4
    assert event["grad_norm_sq_after"] > 5 * event["grad_norm_sq_before"]   # official: 75.0 -> 646.1
    assert with_tp["max_rel_loss_drift"] <= 1e-10


def test_ellipse(run_config):
    with_tp, _ = run_config("experiment=ellipse", "dtype=float64")
    without, _ = run_config("experiment=ellipse", "dtype=float64", "teleport=none")
    assert with_tp["final_loss"] * 100 <= without["final_loss"]
    assert with_tp["max_rel_loss_drift"] <= 1e-10


@pytest.mark.parametrize("preset", ["paper_rosenbrock", "paper_booth", "ellipse"])
def test_float32_guard_keeps_accepted_drift_small(run_config, preset):
    summary, run_dir = run_config(f"experiment={preset}", "dtype=float32")
    events = read_jsonl(run_dir / "teleports.jsonl")
    accepted = [e for e in events if e["accepted"]]
    assert accepted, "at least one teleport is accepted in float32"
    assert all(e["rel_loss_drift"] <= 1e-5 for e in accepted)
    assert summary["n_teleports_rejected"] == len(events) - len(accepted)


def test_random_search_and_reset_only_controls(run_config):
    rs, run_dir = run_config("experiment=paper_booth", "dtype=float64", "teleport=random_search",
                             "teleport.samples=1")
    (event,) = read_jsonl(run_dir / "teleports.jsonl")
    assert event["accepted"] and event["loss_after"] == pytest.approx(event["loss_before"], rel=1e-10)
    reset, run_dir = run_config("experiment=paper_booth", "dtype=float64", "teleport=reset_only")
    plain, _ = run_config("experiment=paper_booth", "dtype=float64", "teleport=none")
    (event,) = read_jsonl(run_dir / "teleports.jsonl")
    assert event["grad_norm_sq_after"] == event["grad_norm_sq_before"]  # parameters not moved
    assert reset["final_loss"] == plain["final_loss"]                   # SGD has no state to reset
