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

from ..logging.jsonl import read_jsonl  # noqa: E402
from .stats import number  # noqa: E402


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


TELEPORT_COLOR = "tab:red"  # no other line of a run figure uses it


def _context(run_dir: Path) -> tuple[str, dict]:
    """(title: preset, seed, teleport setting; the run's summary) from summary.json and .hydra/."""
    import json

    from ..config_tree import read_yaml, select

    summary, choices = {}, {}
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        hydra = run_dir / ".hydra" / "hydra.yaml"
        if hydra.exists():
            choices = select(read_yaml(hydra), "hydra.runtime.choices") or {}
    except (OSError, ValueError):
        pass
    parts = [f"experiment={choices['experiment']}" if choices.get("experiment") else None,
             f"teleport={choices['teleport']}" if choices.get("teleport") else None,
             f"seed={summary['seed']}" if "seed" in summary else None,
             summary.get("dtype"), summary.get("status") if summary.get("status") != "completed" else None]
    return ", ".join(p for p in parts if p), summary


def _is_plain_gd(run_dir: Path, mini_batch: bool) -> bool:
    """SGD without momentum on the full batch: only then is ||grad L||^2 = -dL/dt of the gradient flow."""
    from ..config_tree import read_yaml

    cfg = run_dir / ".hydra" / "config.yaml"
    if mini_batch or not cfg.exists():
        return False
    opt = (read_yaml(cfg) or {}).get("optimizer") or {}
    return str(opt.get("_target_", "")).endswith("SGD") and not opt.get("momentum")


def _mark_teleports(axes_steps, ax_gn_loss, teleports: list[dict]) -> None:
    """Accepted teleports filled, rejected (rolled back) hollow, in a colour of their own, in the legend."""
    for kind, rows, face in (("accepted", [t for t in teleports if t.get("accepted")], TELEPORT_COLOR),
                             ("rejected", [t for t in teleports if not t.get("accepted")], "none")):
        for i, t in enumerate(rows):
            label = f"teleport ({kind})" if i == 0 else None
            for ax in axes_steps:
                ax.axvline(t["step"], color=TELEPORT_COLOR, alpha=0.35, lw=1, ls="-" if face != "none" else ":")
            before = (number(t["loss_before"]), number(t["grad_norm_sq_before"]))
            after = (number(t["loss_after"]), number(t["grad_norm_sq_after"]))
            ax_gn_loss.plot([before[0], after[0]], [before[1], after[1]], color=TELEPORT_COLOR, marker="o", ms=5,
                            mfc=face, lw=1 if face != "none" else 0, label=label)


def plot_curves(run_dir: Path) -> list[Path]:
    """Loss and ||grad L||^2 against step and ||grad L||^2 against loss, teleports marked, the loss curve ending at
    the final iterate. Mini-batch problems are drawn per epoch (the epoch's mean training loss, solid; the
    validation loss, dashed; the epoch's mean ||grad L||^2) with the validation accuracy in a fourth panel."""
    title, summary = _context(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    teleports = read_jsonl(run_dir / "teleports.jsonl")
    epochs = [r for r in read_jsonl(run_dir / "val.jsonl") if "train_loss" in r]
    if not rows:
        return []
    if epochs:  # per epoch: one mini-batch every log_every steps is noise
        step, loss = np.array([r["step"] for r in epochs]), _finite(epochs, "train_loss")
        gn = _finite(epochs, "grad_norm_sq") if all("grad_norm_sq" in r for r in epochs) else None
    else:
        step, loss, gn = np.array([r["step"] for r in rows]), _finite(rows, "loss"), _finite(rows, "grad_norm_sq")
        final, done = number(summary.get("final_loss")), summary.get("steps_done")
        if np.isfinite(final) and isinstance(done, int) and done > step[-1]:  # the final iterate's loss
            step, loss = np.append(step, done), np.append(loss, final)
    with_acc = any("val_acc" in r for r in epochs)
    fig, axes = plt.subplots(1, 4 if with_acc else 3, figsize=(20 if with_acc else 15, 4.4))
    axes[0].plot(step, loss, "o-" if epochs else "-", ms=3, color="tab:blue",
                 label="train (epoch mean)" if epochs else "train")
    if epochs:
        axes[0].plot(step, _finite(epochs, "val_loss"), "o--", ms=3, color="tab:green", label="validation")
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    flow = _is_plain_gd(run_dir, bool(epochs))
    gn_title = "||grad L||^2" + (" (= -dL/dt of the gradient flow)" if flow else "") + (" (epoch mean)" if epochs
                                                                                         else "")
    if gn is not None:
        axes[1].plot(step[:len(gn)], gn, "o-" if epochs else "-", ms=3, color="tab:blue")
        axes[2].plot(loss[:len(gn)], gn, "o-" if epochs else "-", ms=3, color="tab:blue")
    axes[1].set(xlabel="step", ylabel="||grad L||^2", yscale="log", title=gn_title)
    axes[2].set(xlabel="loss", ylabel="||grad L||^2", xscale="log", yscale="log", title="||grad L||^2 vs loss")
    if with_acc:
        axes[3].plot(step, _finite(epochs, "val_acc"), "o-", ms=4, color="tab:green")
        axes[3].set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    _mark_teleports([axes[0], axes[1]] + ([axes[3]] if with_acc else []), axes[2], teleports)
    for ax in axes[:3]:
        plain_log_ticks(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_contour(run_dir: Path, problem, compare: Path | None = None, out: Path | None = None) -> list[Path]:
    """The path on the loss contours, each teleport an arrow (rejected ones hollow), the start, the end and the
    minimum; ``compare``: another run of the same problem (e.g. ``teleport=none``, same seed) drawn beside it."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "params" in r]
    bounds = getattr(problem, "plot_bounds", None)
    if not rows or bounds is None:
        return []
    xy = _points([r["params"] for r in rows])  # a diverged run's last points are NaN/Inf: drawn up to there
    xy = xy[np.isfinite(xy).all(1)]
    teleports = [t for t in read_jsonl(run_dir / "teleports.jsonl") if "params_after" in t
                 and np.isfinite(_points([t["params_before"], t["params_after"]])).all()]
    other = None
    if compare is not None:
        other = _points([r["params"] for r in read_jsonl(Path(compare) / "metrics.jsonl") if "params" in r])
        other = other[np.isfinite(other).all(1)] if len(other) else None
    if not len(xy):
        return []
    pts = np.concatenate([xy] + [_points([t["params_before"], t["params_after"]]) for t in teleports]
                         + ([other] if other is not None and len(other) else []))
    x0, x1 = min(bounds[0], pts[:, 0].min()), max(bounds[1], pts[:, 0].max())
    y0, y1 = min(bounds[2], pts[:, 1].min()), max(bounds[3], pts[:, 1].max())
    gx, gy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    import torch  # only the contour needs it (the report command does not import torch otherwise)

    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=problem.dtype, device=problem.device)
    with torch.no_grad():
        z = torch.func.vmap(lambda p: problem.loss([p], None))(grid).reshape(gx.shape).cpu().numpy()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    finite_z = z[np.isfinite(z)]
    low, high = max(finite_z.min(initial=np.inf), 1e-6), finite_z.max(initial=0.0)
    if high > low:  # a view far out (a diverging path) can overflow the loss everywhere: then no contours
        ax.contour(gx, gy, np.where(np.isfinite(z), z, high), levels=np.logspace(np.log10(low), np.log10(high), 18),
                   colors="gray", linewidths=0.6)
    if other is not None and len(other):
        ax.plot(other[:, 0], other[:, 1], ".-", ms=2, lw=1, color="tab:gray", label="without teleport")
    ax.plot(xy[:, 0], xy[:, 1], ".-", ms=3, lw=1, color="tab:blue", label="descent")
    for kind, face in (("accepted", TELEPORT_COLOR), ("rejected", "none")):
        for i, t in enumerate(t for t in teleports if bool(t.get("accepted")) == (kind == "accepted")):
            (a, b), (c, d) = _points([t["params_before"], t["params_after"]])
            ax.annotate("", xy=(c, d), xytext=(a, b), arrowprops=dict(arrowstyle="->", color=TELEPORT_COLOR, lw=1.5,
                                                                      ls="-" if face != "none" else ":"))
            ax.plot([c], [d], color=TELEPORT_COLOR, lw=0, marker="o", ms=5, mfc=face,
                    label=f"teleport ({kind})" if i == 0 else None)
    minimum = getattr(problem, "minimum", None)
    if minimum is not None:
        ax.plot(*minimum, marker="X", color="black", ms=9, lw=0, label="minimum")
    ax.plot(xy[0, 0], xy[0, 1], "ks", ms=6, label="start")
    ax.plot(xy[-1, 0], xy[-1, 1], "*", color="tab:blue", ms=12, label="end")
    title, _ = _context(run_dir)
    ax.set(xlabel="x1", ylabel="x2")
    ax.set_title(f"{problem.name}: trajectory on the loss contours\n{title}", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)  # beside, never on the path
    fig.tight_layout()
    path = out or run_dir / "trajectory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_run(run_dir: str | Path, problem=None, compare: str | Path | None = None) -> list[Path]:
    """Draw every figure that fits the run; returns the files written. ``compare``: another run's folder whose
    path is drawn beside this one's on the 2-D trajectory (the paper's figure 2: GD with and without teleport)."""
    run_dir = Path(run_dir)
    paths = plot_curves(run_dir)
    if problem is not None and getattr(problem, "dim", 0) == 2:
        paths += plot_contour(run_dir, problem, compare)
    return paths
