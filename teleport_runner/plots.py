"""The figures people look at, drawn from a run's files (so they can be redrawn from disk at any time).

For 2-D problems: loss contours with the trajectory and the teleport jumps. For every run: loss and
||grad L||^2 against step, and loss against ||grad L||^2 (the paper's figure 2 panels); for mini-batch problems also
the validation loss and accuracy at each epoch end.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .logging.jsonl import read_jsonl  # noqa: E402


def _finite(rows, key):
    return np.array([r[key] if isinstance(r[key], (int, float)) else np.nan for r in rows], dtype=float)


def _points(values) -> np.ndarray:
    """Points as floats; the run files write non-finite numbers as the strings "nan" and "inf"."""
    return np.array([[float(v) for v in point] for point in values], dtype=float).reshape(len(values), -1)


def plain_log_ticks(ax) -> None:
    """Tick labels as plain numbers (2.28, 1000, 1e-06), not 2.28 x 10^0; on an axis spanning under two decades
    (a loss often does) the 2s and 5s between the powers of ten are labelled too, all of them under one decade."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        low, high = axis.get_view_interval()
        decades = np.log10(high / low) if low > 0 and high > 0 else np.inf

        def minor_label(value, _, decades=decades) -> str:
            leading_digit = round(value / 10 ** np.floor(np.log10(value)))
            return f"{value:g}" if decades < 1 or (decades < 2 and leading_digit in (2, 5)) else ""

        axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(ticker.FuncFormatter(minor_label))


def plot_curves(run_dir: Path) -> list[Path]:
    """Loss and ||grad L||^2 against step and ||grad L||^2 against loss, teleports marked; for mini-batch problems
    the validation loss on the loss panel and, when logged, the validation accuracy in a fourth panel."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    teleports = [t for t in read_jsonl(run_dir / "teleports.jsonl") if t.get("accepted")]
    val = [r for r in read_jsonl(run_dir / "val.jsonl") if "val_loss" in r]  # [] where there is no val.jsonl
    if not rows:
        return []
    step, loss, gn = np.array([r["step"] for r in rows]), _finite(rows, "loss"), _finite(rows, "grad_norm_sq")
    with_acc = any("val_acc" in r for r in val)
    fig, axes = plt.subplots(1, 4 if with_acc else 3, figsize=(20 if with_acc else 15, 4.2))
    axes[0].plot(step, loss, label="train (logged batches)" if val else None)
    if val:
        axes[0].plot([r["step"] for r in val], _finite(val, "val_loss"), "o-", ms=4, label="validation")
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    axes[1].plot(step, gn)
    axes[1].set(xlabel="step", ylabel="||grad L||^2", yscale="log", title="||grad L||^2 (dL/dt for GD)")
    axes[2].plot(loss, gn)
    axes[2].set(xlabel="loss", ylabel="||grad L||^2", xscale="log", yscale="log", title="||grad L||^2 vs loss")
    if with_acc:
        acc = [r for r in val if "val_acc" in r]
        axes[3].plot([r["step"] for r in acc], _finite(acc, "val_acc"), "o-", ms=4, color="tab:green")
        axes[3].set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    for t in teleports:
        for ax in [axes[0], axes[1]] + ([axes[3]] if with_acc else []):
            ax.axvline(t["step"], color="tab:orange", alpha=0.4, lw=1)
        axes[2].plot([t["loss_before"], t["loss_after"]], [t["grad_norm_sq_before"], t["grad_norm_sq_after"]],
                     color="tab:orange", marker="o", ms=4)
    for ax in axes[:3]:
        plain_log_ticks(ax)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_contour(run_dir: Path, problem) -> list[Path]:
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "params" in r]
    bounds = getattr(problem, "plot_bounds", None)
    if not rows or bounds is None:
        return []
    xy = _points([r["params"] for r in rows])  # a diverged run's last points are NaN/Inf: drawn up to there
    xy = xy[np.isfinite(xy).all(1)]
    teleports = [t for t in read_jsonl(run_dir / "teleports.jsonl") if t.get("accepted") and "params_after" in t
                 and np.isfinite(_points([t["params_before"], t["params_after"]])).all()]
    if not len(xy):
        return []
    pts = np.concatenate([xy] + [_points([t["params_before"], t["params_after"]]) for t in teleports])
    x0, x1 = min(bounds[0], pts[:, 0].min()), max(bounds[1], pts[:, 0].max())
    y0, y1 = min(bounds[2], pts[:, 1].min()), max(bounds[3], pts[:, 1].max())
    gx, gy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=problem.dtype, device=problem.device)
    with torch.no_grad():
        z = torch.func.vmap(lambda p: problem.loss([p], None))(grid).reshape(gx.shape).cpu().numpy()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    finite_z = z[np.isfinite(z)]
    low, high = max(finite_z.min(initial=np.inf), 1e-6), finite_z.max(initial=0.0)
    if high > low:  # a view far out (a diverging path) can overflow the loss everywhere: then no contours
        ax.contour(gx, gy, np.where(np.isfinite(z), z, high), levels=np.logspace(np.log10(low), np.log10(high), 18),
                   colors="gray", linewidths=0.6)
    ax.plot(xy[:, 0], xy[:, 1], ".-", ms=3, lw=1, label="descent")
    for i, t in enumerate(teleports):
        (a, b), (c, d) = t["params_before"], t["params_after"]
        ax.annotate("", xy=(c, d), xytext=(a, b), arrowprops=dict(arrowstyle="->", color="tab:orange", lw=1.5))
        ax.plot([a, c], [b, d], color="tab:orange", lw=0, marker="o", ms=4, label="teleport" if i == 0 else None)
    ax.plot(xy[0, 0], xy[0, 1], "ks", ms=6, label="start")
    ax.plot(xy[-1, 0], xy[-1, 1], "*", color="tab:blue", ms=12, label="end")
    ax.set(xlabel="x1", ylabel="x2", title=f"{problem.name}: trajectory on the loss contours")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = run_dir / "trajectory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_run(run_dir: str | Path, problem=None) -> list[Path]:
    """Draw every figure that fits the run; returns the files written."""
    run_dir = Path(run_dir)
    paths = plot_curves(run_dir)
    if problem is not None and getattr(problem, "dim", 0) == 2:
        paths += plot_contour(run_dir, problem)
    return paths
