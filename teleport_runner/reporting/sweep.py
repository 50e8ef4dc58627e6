"""The report of a sweep, at its end: a Hydra callback (``hydra.callbacks.report`` in conf/hydra/default.yaml).

After the last job of ``teleport-train -m ...`` (any launcher or sweeper: the basic one, joblib, submitit/SLURM,
Optuna) it does what ``teleport-report <sweep dir>`` does: prints the mean ± std and paired tables and writes
``report.md`` and the figures into the sweep folder. A report that fails prints one warning and leaves the sweep's
results as they are; ``hydra.callbacks.report.enabled=false`` turns it off.

It also counts the jobs' statuses (from the summaries the sweep wrote), so that ``teleport-train -m`` exits
non-zero when any job did not complete, whichever launcher ran the jobs (``sweep_failures``).
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


#: The statuses of the last sweep's jobs, read from their summaries at its end (in the launching process).
SWEEP_STATUSES: Counter = Counter()


def sweep_failures(in_process: list[str]) -> str | None:
    """'2 failed, 1 diverged' for the jobs that did not complete (None when all did). ``in_process`` are the
    outcomes of jobs run in this process (they include refused jobs, which write no summary); jobs run
    elsewhere (joblib, SLURM) are counted from their summaries."""
    counts = Counter(in_process) if in_process else SWEEP_STATUSES
    bad = {status: n for status, n in counts.items() if status != "completed"}
    return ", ".join(f"{n} {status}" for status, n in sorted(bad.items())) or None


def _statuses(sweep_dir: Path, since: float) -> Counter:
    counts = Counter()
    for path in sweep_dir.rglob("summary.json"):
        try:
            if path.stat().st_mtime >= since and "wandb" not in path.parts:
                counts[json.loads(path.read_text()).get("status", "failed")] += 1
        except (OSError, ValueError):
            counts["failed"] += 1
    return counts


class SweepReport(Callback):
    def __init__(self, enabled: bool = True, figures: bool = True):
        self.enabled, self.figures = bool(enabled), bool(figures)
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()
        SWEEP_STATUSES.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        SWEEP_STATUSES.clear()
        SWEEP_STATUSES.update(_statuses(sweep_dir, self.started - 1.0))
        if not self.enabled:
            return
        from contextlib import nullcontext

        from .. import train
        from ..signals import OptionalWorkInterrupted

        try:  # optional work: a Ctrl-C stops it at once, in one line (the command then exits 130)
            from .build import build_report

            with train.STOP.during("optional") if train.STOP is not None else nullcontext():
                build_report([sweep_dir], sweep_dir, figures=self.figures)
        except OptionalWorkInterrupted as exc:
            print(f"Warning: the sweep report was interrupted ({exc}); the jobs' files are complete. Run "
                  f"`teleport-report {sweep_dir}` to make it.", file=sys.stderr)
        except Exception as exc:  # the jobs' own files are what matters; never fail a finished sweep here
            print(f"Warning: no report for the sweep ({type(exc).__name__}: {exc}). Run `teleport-report "
                  f"{sweep_dir}` to retry.", file=sys.stderr)
