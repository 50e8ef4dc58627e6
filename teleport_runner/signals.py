"""SIGINT and SIGTERM during a run: a request that the work in progress honours at its next safe point.

The CLI installs the handlers for the whole command (``handle_signals``); the loop and the teleport solvers
only read ``StopRequest.requested`` (a Python attribute: no host sync). What a signal does depends on the
phase the run is in:

- ``work`` (training, a teleport's ascent): the request is recorded; the loop stops after the current descent
  step, a teleport between two ascent steps (rolled back, never half applied). A second Ctrl-C stops at once.
- ``critical`` (writing the run record: checkpoint, summary.json): recorded only, so a write is never cut.
- ``optional`` (figures, the W&B upload, the console table): the optional work stops at once
  (``OptionalWorkInterrupted``); the record is already on disk, so the run's status stays what it was.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the work stopped at a safe point."""


class OptionalWorkInterrupted(BaseException):
    """A signal arrived while optional work (figures, uploads) ran after the record was written."""


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The signal that asked the run to stop (``None`` until one arrives), and the phase the run is in."""

    def __init__(self):
        self.signum: int | None = None
        self.phase = "work"

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"

    def check(self, where: str) -> None:
        """Raise ``Interrupted`` when a stop was requested (call at safe points only)."""
        if self.signum is not None:
            raise Interrupted(f"signal {self.name} {where}")

    def handler(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum if first else self.signum
        if self.phase == "optional":
            raise OptionalWorkInterrupted(signal.Signals(signum).name)
        if self.phase == "work" and not first and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step to end

    @contextmanager
    def during(self, phase: str):
        """Run a block in ``phase`` (``work``, ``critical`` or ``optional``), then return to the previous one."""
        previous, self.phase = self.phase, phase
        try:
            yield self
        finally:
            self.phase = previous


@contextmanager
def handle_signals(stop: StopRequest | None = None):
    """Install SIGINT/SIGTERM handlers feeding ``stop`` (main thread only), restore the old ones after."""
    stop = stop or StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handler) for sig in SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_code_for_signal(signum: int | None) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum or signal.SIGINT)
