"""The time users wait, measured side by side in one process: start-up, a 20-job sweep, and torch's threads.

Sections (also merged into ``scripts/bench.py``'s JSON):
- ``startup``: wall time of ``teleport-train --help`` and ``--cfg job`` against ``python -c "import torch"``,
  alternated, median of 5 (``help_vs_torch_import``; target <= 0.3).
- ``sweep``: a 20-job ``paper_rosenbrock`` sweep with default settings; its wall time against the summed
  in-loop time of its jobs plus one process start-up (``wall_vs_work``; target <= 1.5).
- ``threads``: descent steps of each workload with 1 and 2 threads and with ``threads=auto``, alternated in one
  process; ``auto_vs_best`` = auto's time / the faster of 1 and 2 (target <= 1.05).

    python scripts/bench_wait.py --out wait.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "teleport_runner"]
THREAD_WORKLOADS = {
    "rosenbrock": ["experiment=paper_rosenbrock"],
    "regression_mlp": ["experiment=paper_regression"],
    "mnist_784_16": ["experiment=followup_mnist", "problem.n_train=2000", "problem.n_val=200"],
    "mnist_784_512": ["experiment=paper_mnist", "problem.n_train=2000", "problem.n_val=200"],
}


def wall(cmd: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True, timeout=600, **kwargs)
    return time.perf_counter() - start


def startup(repeats: int = 5) -> dict:
    rows = {"help": [], "cfg_job": [], "torch_import": []}
    for _ in range(repeats):  # alternated: a noisy machine slows all three alike
        rows["help"].append(wall(TRAIN + ["--help"]))
        rows["cfg_job"].append(wall(TRAIN + ["--cfg", "job"]))
        rows["torch_import"].append(wall([sys.executable, "-c", "import torch"]))
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"seconds": med, "spread": {k: [min(v), max(v)] for k, v in rows.items()},
            "help_vs_torch_import": med["help"] / med["torch_import"],
            "cfg_job_vs_torch_import": med["cfg_job"] / med["torch_import"]}


def sweep(jobs: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one"
        single = wall(TRAIN + ["experiment=paper_rosenbrock", "steps=1", "logger=jsonl", "plots=false",
                               f"hydra.run.dir={one}"])
        start_up = single - json.loads((one / "summary.json").read_text())["time_total_s"]
        folder = Path(tmp) / "sweep"
        seconds = wall(TRAIN + ["-m", "experiment=paper_rosenbrock", f"seed=range({jobs})", "logger=jsonl",
                                f"hydra.sweep.dir={folder}"])
        work = sum(json.loads(p.read_text())["time_total_s"] for p in folder.glob("*/summary.json"))
    return {"jobs": jobs, "wall_s": seconds, "in_loop_s": work, "start_up_s": start_up,
            "wall_vs_work": seconds / (work + start_up),
            "note": "default settings: plots=auto (no per-job figures in a sweep), the sweep report with figures"}


def _data_root() -> str:
    """The MNIST files where they are; small synthetic ones otherwise (timings need shapes, not content)."""
    from teleport_runner.problems import data as idx

    try:
        idx.locate("mnist", idx.default_root())
        return idx.default_root()
    except Exception:
        root = tempfile.mkdtemp(prefix="teleport_wait_")
        idx.write_synthetic(root, "mnist", n_train=2400, n_test=100)
        return root


def threads(steps: int = 200, repeats: int = 3) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_cfg

    from teleport_runner.loop import RunStats, train
    from teleport_runner.logging import Sinks
    from teleport_runner.runner import build
    from teleport_runner.threads import choose_threads

    out, root = {}, _data_root()
    for name, overrides in THREAD_WORKLOADS.items():
        cfg = compose_cfg(*overrides, "teleport=none", "device=cpu", f"problem.data.root={root}"
                          if "mnist" in name else "seed=0")
        problem, symmetry, teleporter, _, params, optimizer = build(cfg, torch.device("cpu"), torch.float32)
        auto, reason = choose_threads("auto", problem)

        def descent(n_threads: int) -> float:
            torch.set_num_threads(n_threads)
            stats = RunStats([])
            start = time.perf_counter()
            train(problem=problem, params=params, optimizer=optimizer, symmetry=symmetry, teleporter=teleporter,
                  teleport_steps=range(0), total_steps=steps, sink=Sinks([]), generator=torch.Generator(),
                  stats=stats)
            return (time.perf_counter() - start) / steps

        times = {1: [], 2: [], "auto": []}
        for _ in range(repeats):
            for key in times:
                times[key].append(descent(auto if key == "auto" else key))
        med = {str(k): statistics.median(v) for k, v in times.items()}
        out[name] = {"step_s": med, "auto": auto, "auto_reason": reason,
                     "auto_vs_best": med["auto"] / min(med["1"], med["2"])}
    torch.set_num_threads(1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="wait.json")
    parser.add_argument("--sections", nargs="*", default=["startup", "sweep", "threads"],
                        choices=["startup", "sweep", "threads"])
    args = parser.parse_args()
    result = {name: globals()[name]() for name in args.sections}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name, section in result.items():
        print(name, json.dumps(section, indent=1))


if __name__ == "__main__":
    main()
