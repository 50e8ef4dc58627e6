"""The number a sweep optimizes: ``optimize_metric`` names a field of summary.json, the app returns it.

Names: ``final_loss``; ``steps_to_loss/<threshold>`` (a threshold from ``loss_thresholds``, e.g.
``steps_to_loss/1e-3``); ``final_metrics/<name>`` (e.g. ``final_metrics/val_accuracy``); any other numeric
top-level field (``time_total_s``, ``time_teleport_s``, ...).

- A run that never gets below the threshold scores ``steps + 1``: worse than every run that does, finite,
  so Optuna's samplers still rank it (all such runs tie).
- A run that did not complete (failed, diverged) scores the worst value for the sweep's direction: ``+inf``
  when minimizing, ``-inf`` when maximizing. Optuna records that as a completed, worst trial; a NaN would
  make hydra-optuna-sweeper abort the whole study.
"""
from __future__ import annotations

import math

from .errors import ConfigError

TOP_LEVEL = ("final_loss", "time_total_s", "time_teleport_s", "time_descent_s", "time_eval_s", "n_teleports",
             "n_teleports_rejected", "max_rel_loss_drift")


def check_metric(name: str, loss_thresholds) -> None:
    """Fail before training on a name that can never be found in summary.json."""
    head, _, tail = str(name).partition("/")
    if head in TOP_LEVEL and not tail or head == "final_metrics" and tail:
        return
    if head == "steps_to_loss" and tail:
        thresholds = [float(t) for t in loss_thresholds]
        try:
            ok = float(tail) in thresholds
        except ValueError:
            ok = False
        if ok:
            return
        raise ConfigError(f"Invalid optimize_metric: {name!r}; {tail!r} is not one of loss_thresholds "
                          f"{thresholds}. Use steps_to_loss/<threshold> with a listed threshold, or add it to "
                          "loss_thresholds.")
    raise ConfigError(f"Invalid optimize_metric: {name!r}. Valid values: {', '.join(TOP_LEVEL)}, "
                      "steps_to_loss/<threshold from loss_thresholds>, final_metrics/<metric name>.")


def worst(direction: str = "minimize") -> float:
    """``direction``: 'minimize', 'maximize', an optuna sweeper's Direction enum, or a list (first used)."""
    if isinstance(direction, (list, tuple)) or type(direction).__name__ == "ListConfig":
        direction = direction[0] if len(direction) else "minimize"
    return -math.inf if "max" in str(direction).lower() else math.inf


def objective(summary: dict, name: str, direction: str = "minimize") -> float:
    """The value of ``name`` in ``summary`` (see the module docstring for missing and failed runs)."""
    if summary.get("status") != "completed":
        return worst(direction)
    head, _, tail = str(name).partition("/")
    if head == "steps_to_loss":
        from .reporting.stats import steps_to

        return steps_to(summary, tail)[0]
    value = (summary.get("final_metrics") or {}).get(tail) if head == "final_metrics" else summary.get(head)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return worst(direction)
    return value if math.isfinite(value) else worst(direction)
