"""Draw the figures the README and docs/ show, from real runs (rerun it after changing the solver or a preset).

    python scripts/docs_figures.py                    # writes docs/img/rosenbrock.png

docs/img/rosenbrock.png: `teleport-train experiment=paper_rosenbrock dtype=float64` (seed 0) with and without
teleport: the descent paths on the loss contours with each teleport as an arrow, and the loss against step.
docs/img/report_rosenbrock.png: the report of the sweep
`teleport-train -m experiment=paper_rosenbrock 'seed=range(5)' teleport=gradient_ascent,none` (its
report_loss_vs_step.png), with the sweep's report.md printed for the README's table.
docs/img/scaling.png comes from the benchmark: `python scripts/bench.py --workloads --out docs/img/bench.json`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from teleport_runner import CONFIG_DIR  # noqa: E402
from teleport_runner.logging.jsonl import read_jsonl  # noqa: E402
from teleport_runner.runner import run  # noqa: E402

OVERRIDES = ["experiment=paper_rosenbrock", "dtype=float64", "seed=0", "logger=jsonl", "plots=false"]


def run_preset(run_dir: Path, teleport: str) -> tuple[dict, list[dict], list[dict]]:
    """One run of paper_rosenbrock into run_dir: (summary, metric rows, accepted teleports)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*OVERRIDES, f"teleport={teleport}"])
    summary = run(cfg, run_dir)
    teleports = [t for t in read_jsonl(run_dir / "teleports.jsonl") if t.get("accepted")]
    return summary, read_jsonl(run_dir / "metrics.jsonl"), teleports


def rosenbrock_figure(out: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="teleport_docs_"))
    runs = {name: run_preset(tmp / name, name) for name in ("gradient_ascent", "none")}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    gx, gy = np.meshgrid(np.linspace(-1.6, 1.8, 300), np.linspace(-1.2, 2.4, 300))
    z = 100 * (gx ** 2 - gy) ** 2 + (gx - 1) ** 2
    left.contour(gx, gy, z, levels=np.logspace(-2, 3, 16), colors="gray", linewidths=0.5)
    styles = {"none": ("tab:gray", "GD, no teleport"), "gradient_ascent": ("tab:blue", "GD with teleports")}
    for name, (summary, rows, teleports) in runs.items():
        color, label = styles[name]
        xy = np.array([[float(v) for v in r["params"]] for r in rows])
        left.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.4, label=label)
        right.plot([r["step"] for r in rows], [r["loss"] for r in rows], color=color,
                   label=f"{label}: final loss {summary['final_loss']:.2g}")
        for i, t in enumerate(teleports):
            (a, b), (c, d) = t["params_before"], t["params_after"]
            left.annotate("", xy=(c, d), xytext=(a, b),
                          arrowprops=dict(arrowstyle="->", color="tab:orange", lw=1.3))
            right.axvline(t["step"], color="tab:orange", alpha=0.35, lw=1, label="teleport" if i == 0 else None)
    left.plot(-1, -1, "ks", ms=6, label="start (-1, -1)")
    left.plot(1, 1, "k*", ms=11, label="minimum (1, 1)")
    left.plot([], [], color="tab:orange", label="teleport (loss unchanged)")
    left.set(xlabel="x1", ylabel="x2", title="Rosenbrock: descent paths on the loss contours")
    left.legend(fontsize=8, loc="lower right")
    right.set(xlabel="step", ylabel="loss", yscale="log", title="loss (float64, seed 0)")
    right.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return {name: {k: summary[k] for k in ("final_loss", "n_teleports", "n_teleports_rejected")}
            for name, (summary, _, _) in runs.items()}


def report_figure(out: Path) -> None:
    """A real 10-job sweep through the CLI; its report's loss-vs-step figure, and report.md printed."""
    import shutil
    import subprocess
    import sys

    sweep = Path(tempfile.mkdtemp(prefix="teleport_docs_")) / "sweep"
    subprocess.run([sys.executable, "-m", "teleport_runner", "-m", "experiment=paper_rosenbrock", "seed=range(5)",
                    "teleport=gradient_ascent,none", "logger=jsonl", f"hydra.sweep.dir={sweep}"], check=True,
                   capture_output=True)
    shutil.copy(sweep / "report_loss_vs_step.png", out)
    print((sweep / "report.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"),
                        help="the folder for the figures (default: docs/img of this checkout)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    numbers = rosenbrock_figure(Path(args.out) / "rosenbrock.png")
    print(json.dumps(numbers, indent=2))
    report_figure(Path(args.out) / "report_rosenbrock.png")


if __name__ == "__main__":
    main()
