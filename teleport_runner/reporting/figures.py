"""The report's figures (the paper's figures 3-5), one colour per group.

- ``report_loss_vs_step.png`` and ``report_loss_vs_time.png``: each run as a thin line, and the group's median
  (or mean, ``style="mean"``) with its min-max (or ±std) band drawn only where every run of the group has data,
  so the aggregate never jumps when a shorter run ends.
- ``report_grad_vs_loss.png``: ||grad L||^2 against the loss, one line per run.
- ``report_trajectory.png`` (2-D problems): a teleport run's path beside the same seed's run without teleport on
  the loss contours, as the paper's figure 2.
- ``report_epochs.png`` (mini-batch problems): per epoch, the mean training loss (solid) and the validation loss
  (dashed), and the validation accuracy, as the follow-up paper's figures 4 and 5.
Only completed runs are drawn.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..logging.jsonl import read_jsonl  # noqa: E402
from .run_figures import plain_log_ticks  # noqa: E402


def _column(rows, key) -> np.ndarray:
    return np.array([float(r[key]) if isinstance(r.get(key), (int, float, str)) and key in r else np.nan
                     for r in rows], float)


def _curves(run_dir: Path) -> dict[str, np.ndarray] | None:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        return None
    return {k: _column(rows, k) for k in ("step", "loss", "grad_norm_sq", "time_s")}


def _aggregate(ys: np.ndarray, style: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if style == "mean":
            mean, std = np.nanmean(ys, 0), np.nanstd(ys, 0)
            return mean, mean - std, mean + std
        return np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def _draw_group(ax, xs: list[np.ndarray], ys: list[np.ndarray], label: str, color, style: str) -> None:
    """Each run thin; the aggregate on a common grid where all runs have data (interpolated in log space)."""
    for x, y in zip(xs, ys):
        ax.plot(x, y, color=color, alpha=0.25, lw=0.7)
    ends = [x[np.isfinite(x) & np.isfinite(y) & (y > 0)] for x, y in zip(xs, ys)]
    if any(len(e) < 2 for e in ends):
        return
    lo, hi = max(e[0] for e in ends), min(e[-1] for e in ends)
    if hi <= lo:
        return
    grid = np.linspace(lo, hi, 300)
    stack = np.stack([10 ** np.interp(grid, x[ok], np.log10(y[ok])) for x, y in zip(xs, ys)
                      for ok in [np.isfinite(x) & np.isfinite(y) & (y > 0)]])
    centre, low, high = _aggregate(stack, style)
    ax.plot(grid, centre, color=color, lw=1.8, label=f"{label} (n={len(xs)})")
    if len(xs) > 1:
        ax.fill_between(grid, low, high, color=color, alpha=0.18, lw=0)


def _save(fig, ax, path: Path) -> Path:
    ax.legend(fontsize=8, loc="best")
    plain_log_ticks(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_figures(groups, out: Path, style: str = "median") -> list[Path]:
    data = []
    for g in groups:
        curves = [c for c in (_curves(r.path) for r in g.ok_runs) if c is not None]
        if curves:
            data.append((g, curves))
    if not data:
        return []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    band = "mean ± std" if style == "mean" else "median, band min-max"
    paths = []
    for name, key, xlabel in (("loss_vs_step", "step", "step"), ("loss_vs_time", "time_s", "wall time (s)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (g, curves) in enumerate(data):
            _draw_group(ax, [c[key] for c in curves], [c["loss"] for c in curves], g.label,
                        colors[i % len(colors)], style)
        ax.set(xlabel=xlabel, ylabel="loss", yscale="log",
               title=f"loss vs {xlabel.split(' (')[0]}: {band}\n(where all runs have data); thin lines: each run")
        paths.append(_save(fig, ax, out / f"report_{name}.png"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (g, curves) in enumerate(data):
        for j, c in enumerate(curves):
            ax.plot(c["loss"], c["grad_norm_sq"], color=colors[i % len(colors)], alpha=0.6, lw=1,
                    label=g.label if j == 0 else None)
    ax.set(xlabel="loss", ylabel="||grad L||^2", xscale="log", yscale="log",
           title="||grad L||^2 vs loss (one line per run)")
    paths.append(_save(fig, ax, out / "report_grad_vs_loss.png"))
    epochs = _draw_epochs(groups, out, colors, style)
    return paths + epochs + _draw_trajectory(groups, out)


def _draw_trajectory(groups, out: Path) -> list[Path]:
    """The first teleport group's run and its baseline's run of the same seed, on one contour plot (2-D only)."""
    from .runs import baseline_for

    for g in groups:
        base = baseline_for(g, groups)
        if base is None:
            continue
        theirs = {r.seed: r for r in base.ok_runs}
        pair = next(((r, theirs[r.seed]) for r in g.ok_runs if r.seed in theirs), None)
        if pair is None or not any("params" in row for row in read_jsonl(pair[0].path / "metrics.jsonl")[:1]):
            continue
        import torch
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from .run_figures import plot_contour

        cfg = OmegaConf.load(pair[0].path / ".hydra" / "config.yaml")
        problem = instantiate(cfg.problem)
        problem.setup(torch.device("cpu"), torch.float64, int(cfg.seed))
        return plot_contour(pair[0].path, problem, compare=pair[1].path, out=out / "report_trajectory.png")
    return []


def _draw_epochs(groups, out: Path, colors, style: str) -> list[Path]:
    """Mini-batch problems: per-epoch training (solid) and validation (dashed) loss, and validation accuracy."""
    per_group = []
    for g in groups:
        runs = [read_jsonl(r.path / "val.jsonl") for r in g.ok_runs]
        runs = [rows for rows in runs if rows and "train_loss" in rows[0]]
        if runs:
            per_group.append((g, runs))
    if not per_group:
        return []
    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (g, runs) in enumerate(per_group):
        n = min(len(rows) for rows in runs)  # epochs every run has
        epoch = _column(runs[0][:n], "epoch")
        color = colors[i % len(colors)]
        for key, axis, line in (("train_loss", ax, "-"), ("val_loss", ax, "--"), ("val_acc", ax_acc, "-")):
            if not all(key in rows[0] for rows in runs):
                continue
            centre, low, high = _aggregate(np.stack([_column(rows[:n], key) for rows in runs]), style)
            label = f"{g.label} (n={len(runs)})" if key != "val_loss" else None
            axis.plot(epoch, centre, line, color=color, marker="o", ms=3, label=label)
            if len(runs) > 1:
                axis.fill_between(epoch, low, high, color=color, alpha=0.15, lw=0)
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss per epoch: training (solid), validation (dashed)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    ax_acc.legend(fontsize=8)
    return [_save(fig, ax, out / "report_epochs.png")]


def draw_correlation(points, correlations: list[dict], path: Path) -> Path:
    """``correlation.png``: sharpness phi and curvature psi (rows) against the generalization gap, the test loss and
    the training loss (columns), one point per run, Pearson r in each title (the study: ``correlation.py``)."""
    from .correlation import MEASURES, TARGETS

    fig, axes = plt.subplots(len(MEASURES), len(TARGETS), figsize=(4.5 * len(TARGETS), 7), squeeze=False)
    found = {(c["measure"], c["against"]): c for c in correlations}
    for row, (measure, name) in enumerate(MEASURES):
        for col, (target, label) in enumerate(TARGETS):
            ax, c = axes[row][col], found[(measure, target)]
            ax.scatter([getattr(p, measure) for p in points], [getattr(p, target) for p in points], s=14)
            r = "-" if c["r"] is None else f"{c['r']:+.3f}"
            p = "" if c["p"] is None else f", p = {c['p']:.2g}"
            ax.set(xlabel=name, ylabel=label, title=f"r = {r}{p} (n = {c['n']})")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
