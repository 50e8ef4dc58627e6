"""Weights & Biases sink: a view of the same stream as the run files, never a requirement for training.

Logs the resolved config (with the preset's name, ``experiment``, and the command-line ``overrides``), per-step
metrics as ``train/<key>`` against ``train/step``, the epoch rows as ``val/loss``, ``val/acc``, ``val/train_loss``
against ``val/step``, one history row per teleport event as ``teleport/<key>`` against ``teleport/index`` (several
teleports at one step stay separate rows; all events also as the table ``teleport/events`` at the end), the
run's PNG plots as images, and the summary. Each namespace has its own step metric, so no call passes ``step=``
and W&B's own step never drops a row. ``mode: offline`` (the default, from ``$WANDB_MODE``) needs no
account and no network: the run lands in ``<dir>/wandb/offline-run-*`` and ``wandb sync <that dir>`` uploads it
later. Any W&B failure (import, init, log, finish) is a warning; the JSONL run files stay complete.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from .base import Sink

MODES = ("online", "offline", "disabled", "shared")


def _sweep_group() -> str | None:
    """The sweep directory's name for a job of a multirun (its jobs share the group); None for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    except Exception:  # not under Hydra (tests, notebooks)
        return None


def _scalars(prefix: str, metrics: dict) -> dict:
    """Numbers (and bools) only, namespaced; lists such as 2-D params stay in the JSONL files."""
    return {f"{prefix}/{k}": v for k, v in metrics.items()
            if isinstance(v, (int, float, bool)) and k != "step"}


class WandbSink(Sink):
    """Mirror a run to W&B. Arguments map to ``wandb.init``; ``group: auto`` is the sweep's name in a
    multirun and no group for a single run. ``init_timeout`` bounds how long an unreachable server can
    hold the run up (seconds)."""

    def __init__(self, project: str = "teleport_runner", entity: str | None = None, mode: str = "offline",
                 tags=(), group: str | None = "auto", name: str | None = None, dir: str | None = None,
                 job_type: str | None = None, notes: str | None = None, log_plots: bool = True,
                 init_timeout: float = 60.0):
        self.kwargs = dict(project=project, entity=entity, mode=mode, tags=list(tags or []), name=name,
                           job_type=job_type, notes=notes)
        self.group = _sweep_group() if group == "auto" else group
        self.dir = Path(dir) if dir else None
        self.log_plots, self.init_timeout = log_plots, float(init_timeout)
        self.config: dict = {}
        self.events: list[dict] = []
        self.run = None
        self.failed = False

    # A failure anywhere disables the sink with one warning, and still tries to finish the W&B run.
    def _fail(self, where: str, exc: BaseException) -> None:
        if not self.failed:
            warnings.warn(f"W&B logging failed in {where} ({type(exc).__name__}: {exc}); training goes on "
                          "without it, and the run files (metrics.jsonl, summary.json) are complete.",
                          stacklevel=3)
        self.failed = True

    def log_config(self, config: dict) -> None:
        self.config = dict(config)
        try:  # the preset and the command line, so that runs can be filtered by experiment
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get()
            self.config["experiment"] = hydra_cfg.runtime.choices.get("experiment")
            self.config["overrides"] = list(hydra_cfg.overrides.task)
        except Exception:  # not under Hydra
            pass

    def start(self, total_steps: int, start_step: int = 0, steps_per_epoch: int = 1) -> None:
        try:
            import wandb

            mode = self.kwargs["mode"]
            if mode not in MODES:
                raise ValueError(f"invalid mode {mode!r} (from WANDB_MODE or logger.wandb.mode); valid modes: "
                                 f"{', '.join(MODES)}")
            resume = {}
            id_file = self.dir / "wandb_run_id" if self.dir else None
            if start_step > 0 and id_file is not None and id_file.exists():  # resume=true: same W&B run
                resume = dict(id=id_file.read_text().strip(), resume="allow")
            if self.dir:
                self.dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(**self.kwargs, group=self.group, dir=str(self.dir) if self.dir else None,
                                  config=self.config, settings=wandb.Settings(init_timeout=self.init_timeout,
                                                                              console="off"),
                                  reinit="create_new", **resume)
            if id_file is not None:
                id_file.write_text(self.run.id + "\n")
            for namespace, step_key in (("train", "train/step"), ("val", "val/step"), ("teleport", "teleport/index")):
                self.run.define_metric(step_key)
                self.run.define_metric(f"{namespace}/*", step_metric=step_key)
        except Exception as exc:
            self._fail("init", exc)

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if self.run is None or self.failed:
            return
        try:
            if kind == "val":  # val/loss, val/acc: the namespace says it once
                metrics = {k[len("val_"):] if k.startswith("val_") else k: v for k, v in metrics.items()}
            data = _scalars(kind, metrics)
            if kind == "teleport":
                self.events.append(dict(metrics, step=step))
                data.update({"teleport/index": len(self.events) - 1, "teleport/step": step})
            else:
                data[f"{kind}/step"] = step
            if data:
                self.run.log(data)
        except Exception as exc:
            self._fail("log", exc)

    def log_files(self, paths: list) -> None:
        if self.run is None or self.failed or not self.log_plots:
            return
        try:
            import wandb

            images = {f"plots/{Path(p).stem}": wandb.Image(str(p)) for p in paths if str(p).endswith(".png")}
            if images:
                self.run.log(images)
        except Exception as exc:
            self._fail("log_files", exc)

    def close(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            if not self.failed:
                import wandb

                if self.events:
                    columns = sorted({k for e in self.events for k in e}, key=lambda k: (k != "step", k))
                    rows = [[_cell(e.get(c)) for c in columns] for e in self.events]
                    self.run.log({"teleport/events": wandb.Table(columns=columns, data=rows)})
                self.run.summary.update(_summary(summary))
                self.run.tags = tuple(self.run.tags or ()) + (summary.get("status", "unknown"),)
        except Exception as exc:
            self._fail("close", exc)
        try:
            self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        except Exception as exc:
            self._fail("finish", exc)
        self.run = None


def _cell(value):
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def _summary(summary: dict) -> dict:
    """summary.json flattened one level (steps_to_loss/0.001); None and non-finite values as strings."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return {k: (str(v) if v is None or isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()}
