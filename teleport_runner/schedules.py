"""When to teleport: a schedule is a pure function of the run's length (and epoch size) to a set of steps.

A teleport scheduled at step t happens before the descent step t, as in Algorithm 1: w_t <- g*·w_t, then
w_{t+1} = w_t - lr grad L(w_t). Steps outside the run are dropped with a warning that names them.
"""
from __future__ import annotations

import warnings
from typing import Sequence

from .errors import ConfigError


#: Settings of any schedule. A preset sets the schedule it names (``schedule.epochs=[1]``); when the user then
#: swaps the schedule (``schedule=none``) those keys stay in the merged config, so every schedule tolerates
#: the others' settings. Anything else is a typo and is rejected.
SCHEDULE_SETTINGS = {"steps", "every", "offset", "until", "epochs", "step_offset"}


class Schedule:
    """Base class: ``steps(total_steps, steps_per_epoch)`` gives the teleport steps as a sorted, lazy sequence
    (a ``range`` for periodic schedules): the loop asks ``step in steps``, so a run of 10^12 steps never
    builds a list of its teleports."""

    def __init__(self, **other_schedule_settings):
        unknown = sorted(set(other_schedule_settings) - SCHEDULE_SETTINGS)
        if unknown:
            raise ConfigError(f"Unknown schedule setting(s) {unknown} for {type(self).__name__}. Valid settings: "
                              f"{sorted(SCHEDULE_SETTINGS)}.")

    def requested(self, total_steps: int, steps_per_epoch: int) -> Sequence[int]:
        return []

    def steps(self, total_steps: int, steps_per_epoch: int = 1) -> Sequence[int]:
        requested = self.requested(total_steps, steps_per_epoch)
        if isinstance(requested, range):  # periodic: inside the run by construction, O(1) membership
            return requested
        requested = sorted(set(requested))
        outside = [s for s in requested if not 0 <= s < total_steps]
        if outside:
            warnings.warn(f"Schedule steps {outside} lie outside the run (steps 0..{total_steps - 1}) and are "
                          "skipped.", stacklevel=2)
        return [s for s in requested if 0 <= s < total_steps]


def _non_negative_ints(name: str, values) -> list[int]:
    bad = ConfigError(f"Invalid schedule.{name}: {values!r}; it must be a list of integers >= 0, e.g. "
                      f"schedule.{name}=[1,5].")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise bad
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 0:
            raise bad
        out.append(int(v))
    return out


class NoSchedule(Schedule):
    """Never teleport."""


class AtSteps(Schedule):
    """Teleport before each descent step in ``steps`` (0-based)."""

    def __init__(self, steps: Sequence[int] = (), **others):
        super().__init__(**others)
        self.at = _non_negative_ints("steps", steps)

    def requested(self, total_steps, steps_per_epoch):
        return self.at


class Every(Schedule):
    """Teleport at steps offset, offset + every, offset + 2 every, ... (until ``until``, exclusive).

    ``offset`` defaults to ``every``: the first teleport comes after ``every`` descent steps, never before the first
    one (a teleport at step 0 from the start point of a test function jumps to where its gradient is largest, and
    the default GD step then diverges on Rosenbrock). ``offset=0`` teleports first; the paper's Rosenbrock preset
    uses 99, as the official code."""

    def __init__(self, every: int = 100, offset: int | None = None, until: int | None = None, **others):
        super().__init__(**others)
        if int(every) < 1:
            raise ConfigError(f"Invalid schedule.every: {every!r}; it must be a positive integer.")
        if until is not None and int(until) < 0:
            raise ConfigError(f"Invalid schedule.until: {until!r}; it must be >= 0 (or null: the end of the run).")
        if offset is not None and int(offset) < 0:
            raise ConfigError(f"Invalid schedule.offset: {offset!r}; it must be >= 0 (or null: the value of every).")
        self.every, self.until = int(every), until
        self.offset = self.every if offset is None else int(offset)

    def requested(self, total_steps, steps_per_epoch):
        end = total_steps if self.until is None else min(total_steps, int(self.until))
        return range(self.offset, max(end, self.offset), self.every)


class AtEpochs(Schedule):
    """Teleport at the start of each epoch in ``epochs`` (epoch 1 = right after the first epoch), plus an
    optional ``step_offset`` inside that epoch (``epochs=[0], step_offset=500`` = after 500 steps)."""

    def __init__(self, epochs: Sequence[int] = (1,), step_offset: int = 0, **others):
        super().__init__(**others)
        self.epochs = _non_negative_ints("epochs", epochs)
        self.step_offset = int(step_offset)

    def requested(self, total_steps, steps_per_epoch):
        return [e * steps_per_epoch + self.step_offset for e in self.epochs]
