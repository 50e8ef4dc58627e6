"""The sink contract: ``log(step, metrics, kind)`` and ``close(summary)``; sinks are closed in ``finally``.

``kind`` is ``train`` (per logged step), ``val`` (per epoch), ``teleport`` (one event) or ``test``.
The JSONL files written by ``JsonlSink`` are the source of truth; other sinks are views of the same stream.
"""
from __future__ import annotations

import warnings


class Sink:
    #: True for sinks that show progress live (a progress bar): the loop then also flushes by time.
    live = False

    def start(self, total_steps: int, start_step: int = 0, steps_per_epoch: int = 1) -> None:
        """Called once before the first step (with the step a resumed run starts from)."""

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        raise NotImplementedError

    def log_rows(self, rows: list[dict], kind: str = "train") -> None:
        """Several rows at once, each with its ``step``; sinks that can write them in one go override this."""
        for row in rows:
            self.log(row["step"], {k: v for k, v in row.items() if k != "step"}, kind)

    def log_config(self, config: dict) -> None:
        """The run's resolved config (plain data), once, before ``start``. Optional."""

    def log_files(self, paths: list) -> None:
        """Files the run wrote (its plots), before ``close``. Optional."""

    def close(self, summary: dict) -> None:
        """Called once, with the run's summary, whatever the run's status."""


class Sinks(Sink):
    """Fan-out to several sinks. A sink that fails is warned about and dropped; training goes on
    (the JSONL sink is listed first, so the files on disk are complete whatever a remote service does)."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = list(sinks)

    def _each(self, method: str, *args) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # a metrics service must never stop training
                if getattr(sink, "critical", False):
                    raise
                warnings.warn(f"Logger {type(sink).__name__} failed in {method}() and is disabled for the rest "
                              f"of the run: {exc}", stacklevel=2)
                self.sinks.remove(sink)

    @property
    def live(self) -> bool:
        return any(getattr(s, "live", False) for s in self.sinks)

    def start(self, total_steps: int, start_step: int = 0, steps_per_epoch: int = 1) -> None:
        self._each("start", total_steps, start_step, steps_per_epoch)

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        self._each("log", step, metrics, kind)

    def log_rows(self, rows: list[dict], kind: str = "train") -> None:
        self._each("log_rows", rows, kind)

    def log_config(self, config: dict) -> None:
        self._each("log_config", config)

    def log_files(self, paths: list) -> None:
        self._each("log_files", paths)

    def close(self, summary: dict) -> None:
        self._each("close", summary)
