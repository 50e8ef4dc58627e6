"""``train.log``: a copy of everything the run prints (console lines, tables, warnings, messages), without the
terminal's colour and cursor codes. Installed by the runner once the run starts for real (a refused command
writes no log); the live progress bar draws on the terminal only and never reaches the file."""
from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_current = None  # the open log, while a run is copying its output


class _Tee:
    """A text stream that writes to ``stream`` and, stripped of control codes, to ``log``."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        log_only(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self.stream, name)


def log_only(text: str) -> None:
    """Write ``text`` to the run's train.log only (what went to the terminal another way, e.g. above a live bar)."""
    if _current is not None:
        try:
            _current.write(_ANSI.sub("", text))
            _current.flush()
        except (OSError, ValueError):  # a full disk stops the copy, never the run
            pass


@contextmanager
def copy_output(path: Path, append: bool = False):
    """Copy stdout and stderr into ``path`` while the block runs."""
    global _current
    try:
        handle = open(path, "a" if append else "w", encoding="utf-8")
    except OSError:
        yield
        return
    previous = (sys.stdout, sys.stderr, _current)
    _current = handle
    sys.stdout, sys.stderr = _Tee(sys.stdout, handle), _Tee(sys.stderr, handle)
    try:
        yield
    finally:
        sys.stdout, sys.stderr, _current = previous
        handle.close()
