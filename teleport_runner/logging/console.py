"""Console output with rich: a live progress bar on a terminal, and a summary table at the end."""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .base import Sink


class ConsoleSink(Sink):
    """Progress bar (step, loss, ||grad L||^2, ETA) when stdout is a terminal; otherwise quiet until the
    summary, so logs of batch jobs stay short. ``progress=false`` turns the bar off everywhere."""

    def __init__(self, progress: bool = True, run_dir: str | None = None):
        self.console = Console()
        self.show_progress = progress and sys.stdout.isatty()
        self.run_dir = run_dir
        self.teleports: list[dict] = []
        self._progress = None

    def start(self, total_steps: int, start_step: int = 0) -> None:
        if start_step > 0 and self.run_dir:  # resumed: the summary covers the teleports before the stop too
            from .jsonl import read_jsonl

            self.teleports = [t for t in read_jsonl(Path(self.run_dir) / "teleports.jsonl")
                              if t.get("step", 0) < start_step]
        if not self.show_progress:
            return
        self._progress = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, status="")
        self._progress.start()

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if kind == "teleport":
            self.teleports.append(metrics)
        if self._progress is not None and kind == "train":
            self._progress.update(self._task, completed=step + 1,
                                  status=f"loss {metrics['loss']:.4g}  |grad|^2 {metrics['grad_norm_sq']:.3g}")

    def log_rows(self, rows: list[dict], kind: str = "train") -> None:
        if kind == "train":  # the progress bar only needs the latest row
            rows = rows[-1:]
        super().log_rows(rows, kind)

    def close(self, summary: dict) -> None:
        if self._progress is not None:
            self._progress.stop()
        table = Table(title=f"teleport_runner: {summary.get('status', '?')}", show_header=False)
        table.add_column("what", no_wrap=True)
        table.add_column("value", overflow="fold")  # wrap, never cut: the run directory is meant to be copied
        table.add_row("final loss", f"{summary.get('final_loss', float('nan')):.6g}")
        for key, value in (summary.get("final_metrics") or {}).items():
            table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
        done, steps = summary.get("steps_done"), summary.get("steps")
        table.add_row("steps", str(steps) if done in (None, steps) else f"{done} of {steps}")
        table.add_row("teleports (rejected)",
                      f"{summary.get('n_teleports', 0)} ({summary.get('n_teleports_rejected', 0)})")
        accepted = [t for t in self.teleports if t.get("accepted")]
        if accepted:
            gains = [t["grad_norm_sq_after"] / t["grad_norm_sq_before"] for t in accepted
                     if t["grad_norm_sq_before"] > 0]
            if gains:
                flat = sum(g <= 1 + 1e-6 for g in gains)  # e.g. the ascent kept its start: no larger gradient found
                table.add_row("||grad L||^2 gain", f"median x{sorted(gains)[len(gains) // 2]:.3g} "
                              f"(min x{min(gains):.3g}, max x{max(gains):.3g})"
                              + (f"; {flat} of {len(gains)} did not raise it" if flat else ""))
            table.add_row("max relative loss drift", f"{summary.get('max_rel_loss_drift', 0.0):.2e}")
        table.add_row("time (teleport / descent)", f"{summary.get('time_total_s', 0):.2f} s "
                      f"({summary.get('time_teleport_s', 0):.2f} / {summary.get('time_descent_s', 0):.2f})")
        for threshold, step in (summary.get("steps_to_loss") or {}).items():
            table.add_row(f"first step with loss < {threshold}", str(step))
        if summary.get("message"):
            table.add_row("message", summary["message"])
        if self.run_dir:
            table.add_row("files", str(self.run_dir))
        self.console.print(table)
