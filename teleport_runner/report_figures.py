"""The report's figures (the paper's figures 3-5): per group, the mean over seeds with a min-max band of the
loss against step and against wall time, and ||grad L||^2 against the loss (one line per run)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .logging.jsonl import read_jsonl  # noqa: E402
from .plots import plain_log_ticks  # noqa: E402


def _curves(run_dir: Path) -> dict[str, np.ndarray] | None:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        return None

    def col(key):
        return np.array([r.get(key) if isinstance(r.get(key), (int, float)) else np.nan for r in rows], float)

    return {"step": col("step"), "loss": col("loss"), "grad_norm_sq": col("grad_norm_sq"), "time_s": col("time_s")}


def _band(ax, x, ys: np.ndarray, label: str, color) -> None:
    """Mean line and min-max band over runs (rows of ``ys``; NaN where a run has no value)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
    ax.plot(x, mean, color=color, label=f"{label} (n={ys.shape[0]})", lw=1.5)
    if ys.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def _by_step(curves: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.unique(np.concatenate([c["step"] for c in curves]))
    ys = np.full((len(curves), len(steps)), np.nan)
    for i, c in enumerate(curves):
        ys[i, np.searchsorted(steps, c["step"])] = c["loss"]
    return steps, ys


def _by_time(curves: list[dict], n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    end = max(np.nanmax(c["time_s"]) for c in curves)
    grid = np.linspace(0.0, end, n)
    ys = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        ok = np.isfinite(c["time_s"]) & np.isfinite(c["loss"]) & (c["loss"] > 0)
        if ok.sum() >= 2:  # interpolate log-loss on the grid; NaN outside the run's own time range
            ys[i] = 10 ** np.interp(grid, c["time_s"][ok], np.log10(c["loss"][ok]), left=np.nan, right=np.nan)
    return grid, ys


def draw_figures(groups, out: Path) -> list[Path]:
    """Write report_loss_vs_step.png, report_loss_vs_time.png and report_grad_vs_loss.png."""
    data = []
    for g in groups:
        curves = [c for c in (_curves(r.path) for r in g.runs) if c is not None]
        if curves:
            data.append((g.label, curves))
    if not data:
        return []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = []
    for name, xlabel, prepare in (("loss_vs_step", "step", _by_step), ("loss_vs_time", "wall time (s)", _by_time)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (label, curves) in enumerate(data):
            x, ys = prepare(curves)
            _band(ax, x, ys, label, colors[i % len(colors)])
        ax.set(xlabel=xlabel, ylabel="loss", yscale="log", title=f"loss vs {xlabel.split(' (')[0]}: "
                                                                  "mean over seeds, band min-max")
        ax.legend(fontsize=8)
        plain_log_ticks(ax)
        fig.tight_layout()
        paths.append(out / f"report_{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, curves) in enumerate(data):
        for j, c in enumerate(curves):
            ax.plot(c["loss"], c["grad_norm_sq"], color=colors[i % len(colors)], alpha=0.6, lw=1,
                    label=label if j == 0 else None)
    ax.set(xlabel="loss", ylabel="||grad L||^2", xscale="log", yscale="log",
           title="||grad L||^2 vs loss (one line per run)")
    ax.legend(fontsize=8)
    plain_log_ticks(ax)
    fig.tight_layout()
    paths.append(out / "report_grad_vs_loss.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
