"""Results that tell the truth: the report's statistics and report.json, groups and labels, epoch curves, run
figures, the console and train.log, and the default run."""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose_cfg, read_jsonl, run_cli
from teleport_runner.reporting.build import build_report
from teleport_runner.reporting.stats import describe, describe_ratios, fmt
from teleport_runner.runner import run


@pytest.fixture(scope="module")
def rosenbrock_sweep(tmp_path_factory) -> Path:
    """A sweep: 3 seeds x {gradient_ascent, none} of paper_rosenbrock (float64), 400 steps."""
    root = tmp_path_factory.mktemp("sweep") / "sweep"
    proc = run_cli("-m", "experiment=paper_rosenbrock", "seed=0,1,2", "teleport=gradient_ascent,none", "steps=400",
                   "logger=jsonl", "plots=false", "hydra.callbacks.report.figures=false", f"hydra.sweep.dir={root}")
    assert proc.returncode == 0, proc.stderr
    return root


def test_report_json_holds_the_runs_own_numbers(rosenbrock_sweep, capsys):
    build_report([rosenbrock_sweep], figures=True)
    report = json.loads((rosenbrock_sweep / "report.json").read_text())
    assert report["statistic"] == "median" and "median" in report["describes"]
    by_label = {g["label"]: g for g in report["groups"]}
    assert set(by_label) == {"teleport=none", "teleport=gradient_ascent"}  # only the keys that separate groups
    for group in report["groups"]:
        losses = [json.loads((Path(r["path"]) / "summary.json").read_text())["final_loss"] for r in group["runs"]]
        d = group["metrics"]["final_loss"]
        assert (d["median"], d["min"], d["max"], d["n"]) == (np.median(losses), min(losses), max(losses), 3)
    tp = by_label["teleport=gradient_ascent"]
    assert tp["accepted"] + tp["rejected"] == 12 and tp["rejected"] == 0
    per_teleport = tp["metrics"]["teleport_s"]["median"]
    events = [e["time_s"] for r in tp["runs"] for e in read_jsonl(Path(r["path"]) / "teleports.jsonl")]
    assert min(events) <= per_teleport <= max(events)  # seconds per teleport, not a run total
    assert tp["metrics"]["teleport_steps"]["n"] == 3
    (paired,) = report["paired"]
    assert paired["baseline"] == "teleport=none" and len(paired["seeds"]) == 3
    assert paired["comparisons"]["final_loss_ratio"]["geomean"] > 1
    text = (rosenbrock_sweep / "report.md").read_text()
    assert "median [min, max]" in text and "teleports acc/rej" in text
    assert (rosenbrock_sweep / "report_loss_vs_time.png").stat().st_size > 10_000


def test_mean_style_is_an_option(rosenbrock_sweep, tmp_path):
    build_report([rosenbrock_sweep], out=tmp_path, figures=False, style="mean")
    assert json.loads((tmp_path / "report.json").read_text())["statistic"] == "mean"
    assert " ± " in (tmp_path / "report.md").read_text()
    assert not (Path.cwd() / "report.md").exists()


def test_statistics_fit_orders_of_magnitude():
    d = describe([4e-10, 1.3e-12, 2e-15])
    assert d["median"] == 1.3e-12 and d["min"] == 2e-15 and d["q1"] is None
    assert fmt(d) == "1.3e-12 [2e-15, 4e-10]"
    r = describe_ratios([10.0, 1000.0, 100.0, float("inf")])
    assert r["geomean"] == pytest.approx(100.0) and r["n_extreme"] == 1
    assert describe(range(5))["q1"] == 1.0  # the interquartile range from 5 runs on


def test_aggregate_is_drawn_only_where_every_run_has_data():
    import matplotlib.pyplot as plt

    from teleport_runner.reporting.figures import _draw_group

    fig, ax = plt.subplots()
    long, short = np.linspace(0, 10, 50), np.linspace(0, 4, 20)
    _draw_group(ax, [long, short], [np.exp(-long), 5 * np.exp(-short)], "g", "tab:blue", "median")
    aggregate = [line for line in ax.lines if line.get_label().startswith("g (n=2)")]
    assert aggregate and aggregate[0].get_xdata().max() == pytest.approx(4.0)  # no jump where the short run ends
    plt.close(fig)


def test_duplicate_seeds_are_reported_not_pooled_silently(rosenbrock_sweep, tmp_path):
    import shutil

    shutil.copytree(rosenbrock_sweep / "0", tmp_path / "a")
    shutil.copytree(rosenbrock_sweep / "0", tmp_path / "b")
    result = build_report([tmp_path], figures=False)
    assert any("seed 0 appears 2 times" in w for w in json.loads((tmp_path / "report.json").read_text())["warnings"])
    assert result["stats"][0]["duplicate_seeds"]


def test_epoch_rows_hold_the_mean_training_loss(tmp_path, synthetic_mnist_root):
    run(compose_cfg("problem=mnist", f"problem.data.root={synthetic_mnist_root}", "problem.n_train=200",
                    "problem.n_val=40", "problem.hidden=[16,10]", "epochs=2", "teleport=none"), tmp_path)
    steps = read_jsonl(tmp_path / "metrics.jsonl")  # log_every=1: every batch's loss
    epochs = read_jsonl(tmp_path / "val.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        batch = [r["loss"] for r in steps if e["step"] - 10 <= r["step"] < e["step"]]
        assert len(batch) == 10 and e["train_loss"] == pytest.approx(np.mean(batch), rel=1e-6)
        assert {"val_loss", "val_acc", "grad_norm_sq"} <= set(e)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_default_run_shows_accepted_teleports_that_raise_the_gradient(tmp_path, dtype):
    summary = run(compose_cfg("experiment=quickstart", f"dtype={dtype}"), tmp_path)  # what make train runs
    events = read_jsonl(tmp_path / "teleports.jsonl")
    raised = [e for e in events if e["accepted"] and e["grad_norm_sq_after"] > e["grad_norm_sq_before"] * (1 + 1e-6)]
    assert len(raised) >= 8 and summary["final_loss"] < 0.111 / 10


def test_train_log_holds_the_warnings_and_the_summary(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.train", "experiment=paper_booth",
                           "schedule.steps=[4,50]", "plots=false", f"hydra.run.dir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "train.log").read_text()
    assert "lie outside the run" in log and "teleport_runner: completed" in log and f"Run folder: {tmp_path}" in log
    assert "\x1b[" not in log and "None" not in log.split("first step with loss")[1]


def test_run_figures_end_at_the_final_iterate(tmp_path):
    import matplotlib

    run(compose_cfg("experiment=paper_booth", "plots=true"), tmp_path)
    image = matplotlib.image.imread(tmp_path / "trajectory.png")
    assert image.shape[1] > image.shape[0]  # the legend sits beside the path, not on it
    from teleport_runner.reporting import run_figures

    lines = []
    original = run_figures.plt.Axes.plot

    def record(ax, *args, **kwargs):
        lines.append((args, kwargs))
        return original(ax, *args, **kwargs)

    run_figures.plt.Axes.plot = record
    try:
        run_figures.plot_curves(tmp_path)
    finally:
        run_figures.plt.Axes.plot = original
    step, loss = lines[0][0][:2]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert step[-1] == summary["steps_done"] and loss[-1] == pytest.approx(summary["final_loss"])


def test_progress_moves_in_a_terminal(tmp_path):
    """In a pseudo-terminal the bar is redrawn at least twice a second, with the epoch and an ETA."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "teleport_runner.train", "teleport=none", "steps=3000000",
                             "plots=false", f"hydra.run.dir={tmp_path}"], cwd=REPO, stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(slave)
    screen, started, first = b"", time.monotonic(), None
    while time.monotonic() - started < 90 and (first is None or time.monotonic() - first < 6):
        if first is None and b"step " in screen:
            first = time.monotonic()  # 6 s of training from the first frame on (start-up aside)
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                screen += os.read(master, 65536)
            except OSError:
                break
    proc.terminate()
    proc.wait(timeout=60)
    os.close(master)
    frames = set(re.findall(rb"step (\d+)/3000000", screen))
    assert len(frames) >= 10, screen[-500:]
    assert b"ETA" in screen and re.search(rb"\d:\d\d:\d\d", screen)
