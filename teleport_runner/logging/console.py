"""Console output with rich: the run folder at the start, a live progress bar on a terminal, one line per epoch,
and a summary table at the end.

On a terminal the bar shows steps, loss, epoch and an ETA; the loop flushes by time as well as by count while a
bar is live (``live``), so it moves at least twice a second without a host sync per step. The bar is drawn on
the terminal itself and never reaches ``train.log``; the lines that stay (run folder, epochs, the summary) do.
Off a terminal there is no bar: the run folder, one line per epoch, and the summary.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .base import Sink


class ConsoleSink(Sink):
    """``progress=false`` turns the bar off everywhere (the lines stay)."""

    def __init__(self, progress: bool = True, run_dir: str | None = None):
        self.terminal = sys.stdout  # the bar goes here, around any copy of the output into train.log
        self.show_progress = bool(progress) and self.terminal.isatty()
        self.live = self.show_progress
        self.run_dir = run_dir
        self.teleports: list[dict] = []
        self._progress = None
        self.total_epochs, self.steps_per_epoch = None, 1

    @property
    def console(self) -> Console:
        """A console on the current ``sys.stdout`` (which may copy into train.log)."""
        if getattr(self, "_console", None) is None:
            return Console()
        return self._console

    @console.setter
    def console(self, value: Console) -> None:
        self._console = value

    def start(self, total_steps: int, start_step: int = 0, steps_per_epoch: int = 1) -> None:
        if start_step > 0 and self.run_dir:  # resumed: the summary covers the teleports before the stop too
            from .jsonl import read_jsonl

            self.teleports = [t for t in read_jsonl(Path(self.run_dir) / "teleports.jsonl")
                              if t.get("step", 0) < start_step]
        self.steps_per_epoch = steps_per_epoch
        self.total_epochs = total_steps // steps_per_epoch if steps_per_epoch > 1 else None
        if self.run_dir:
            self.console.print(f"Run folder: {self.run_dir}" + (f" (resumed at step {start_step})" if start_step
                                                                else ""), highlight=False, soft_wrap=True)
        if not self.show_progress:
            return
        self._progress = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=Console(file=self.terminal),
                                  transient=True, refresh_per_second=4)
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, status="")
        self._progress.start()

    def _epoch_text(self, step: int) -> str:
        return f"  epoch {step // self.steps_per_epoch + 1}/{self.total_epochs}" if self.total_epochs else ""

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if kind == "teleport":
            self.teleports.append(metrics)
        elif kind == "val":
            self._line(_epoch_line(metrics, self.total_epochs))
        elif self._progress is not None and kind == "train":
            self._progress.update(self._task, completed=step + 1,
                                  status=f"loss {metrics['loss']:.4g}{self._epoch_text(step)}")

    def _line(self, text: str) -> None:
        """A line that stays: above a live bar on the terminal (and into train.log), else printed."""
        if self._progress is not None:
            from .textlog import log_only

            self._progress.console.print(text, highlight=False, soft_wrap=True)
            log_only(text + "\n")
        else:
            self.console.print(text, highlight=False, soft_wrap=True)

    def log_rows(self, rows: list[dict], kind: str = "train") -> None:
        if kind == "train":  # the progress bar only needs the latest row
            rows = rows[-1:]
        super().log_rows(rows, kind)

    def close(self, summary: dict) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print(summary_table(summary, self.teleports, self.run_dir))


def _epoch_line(row: dict, total) -> str:
    parts = [f"epoch {row.get('epoch')}" + (f"/{total}" if total else "")]
    for key, name in (("train_loss", "train loss"), ("val_loss", "val loss"), ("val_acc", "val acc")):
        if isinstance(row.get(key), (int, float)):
            parts.append(f"{name} {row[key]:.4g}")
    return "  ".join(parts)


def summary_table(summary: dict, teleports: list[dict], run_dir=None) -> Table:
    table = Table(title=f"teleport_runner: {summary.get('status', '?')}", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")  # wrap, never cut: the run directory is meant to be copied
    table.add_row("final loss", f"{summary.get('final_loss', float('nan')):.6g}")
    for key, value in (summary.get("final_metrics") or {}).items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    done, steps = summary.get("steps_done"), summary.get("steps")
    table.add_row("steps", str(steps) if done in (None, steps) else f"{done} of {steps}")
    from ..reporting.stats import REJECTED_WARN, rejected_share

    table.add_row("teleports (rejected)", f"{summary.get('n_teleports', 0)} ({summary.get('n_teleports_rejected', 0)})"
                  + ("  more than a fifth rolled back: see the warning"
                     if rejected_share(summary) > REJECTED_WARN else ""))
    accepted = [t for t in teleports if t.get("accepted")]
    gains = [t["grad_norm_sq_after"] / t["grad_norm_sq_before"] for t in accepted
             if isinstance(t.get("grad_norm_sq_before"), (int, float)) and t["grad_norm_sq_before"] > 0]
    if gains:
        flat = sum(g <= 1 + 1e-6 for g in gains)  # e.g. the ascent kept its start: no larger gradient found
        table.add_row("||grad L||^2 gain", f"median x{sorted(gains)[len(gains) // 2]:.3g} "
                      f"(min x{min(gains):.3g}, max x{max(gains):.3g})"
                      + (f"; {flat} of {len(gains)} did not raise it" if flat else ""))
    if accepted:
        table.add_row("max relative loss drift", f"{summary.get('max_rel_loss_drift', 0.0):.2e}")
    table.add_row("time (teleport / descent)", f"{summary.get('time_total_s', 0):.2f} s "
                  f"({summary.get('time_teleport_s', 0):.2f} / {summary.get('time_descent_s', 0):.2f})")
    for threshold, step in (summary.get("steps_to_loss") or {}).items():
        table.add_row(f"first step with loss < {threshold}", "not reached" if step is None else str(step))
    if summary.get("message"):
        table.add_row("message", summary["message"])
    if run_dir:
        table.add_row("files", str(run_dir))
    return table
