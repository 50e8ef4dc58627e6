"""The report of a sweep, at its end: a Hydra callback (``hydra.callbacks.report`` in conf/hydra/default.yaml).

After the last job of ``teleport-train -m ...`` (any launcher or sweeper: the basic one, joblib, submitit/SLURM,
Optuna) it does what ``teleport-report <sweep dir>`` does: prints the mean ± std and paired tables and writes
``report.md`` and the figures into the sweep folder. A report that fails prints one warning and leaves the sweep's
results as they are; ``hydra.callbacks.report.enabled=false`` turns it off.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    def __init__(self, enabled: bool = True, figures: bool = True):
        self.enabled, self.figures = bool(enabled), bool(figures)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from .report import build_report

            build_report([sweep_dir], sweep_dir, figures=self.figures)
        except Exception as exc:  # the jobs' own files are what matters; never fail a finished sweep here
            print(f"Warning: no report for the sweep ({type(exc).__name__}: {exc}). Run `teleport-report "
                  f"{sweep_dir}` to retry.", file=sys.stderr)
