"""The run files: metrics.jsonl, val.jsonl, teleports.jsonl and summary.json (the source of truth)."""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from ..errors import DataError, RecordWriteError, describe_os_error
from .base import Sink

FILES = {"train": "metrics.jsonl", "val": "val.jsonl", "teleport": "teleports.jsonl", "test": "test.jsonl"}


def _clean(value):
    """JSON has no NaN/Inf: write them as strings so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


_STRICT = json.JSONEncoder(allow_nan=False)


def _dumps(row: dict) -> str:
    """The common case (all finite) in one C-encoder call; only a row with a NaN/Inf pays for ``_clean``."""
    try:
        return _STRICT.encode(row)
    except ValueError:
        return json.dumps(_clean(row))


def read_jsonl(path: Path, warn: bool = True) -> list[dict]:
    """The rows of a JSONL run file. A torn last line (what a kill or a full disk leaves) is skipped with one
    warning; an unreadable line before it is damage, reported as a ``DataError`` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if number < len(lines):
                raise DataError(f"{path} is damaged: line {number} is not a JSON object. Restore the file, "
                                "or leave the run out.") from None
            if warn:
                warnings.warn(f"{path}: skipped a torn last line (line {number}, {len(line)} bytes: what a "
                              "kill or a full disk leaves).", stacklevel=2)
            break
        rows.append(row)
    return rows


def check_run_files(run_dir: Path) -> None:
    """Read every JSONL run file of ``run_dir``: a damaged row raises ``DataError`` (a torn last line is fine)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torn last line is reported once, when the resume cuts it
        for name in FILES.values():
            read_jsonl(Path(run_dir) / name)


#: Rows a resumed run keeps, by file: a validation row is logged at the epoch's end step, before the checkpoint
#: of that step is taken, so it belongs to the state a checkpoint at that step holds.
KEEP_AT_RESUME_STEP = {"val.jsonl"}


def truncate_jsonl(path: Path, before_step: int) -> None:
    """Keep the rows that belong to the state after ``before_step`` descent steps (a resumed run rewrites the
    rest): rows with step < ``before_step`` (<= for the validation rows). A torn last line is dropped. The file
    is replaced atomically, so a kill here never loses the rows kept."""
    path = Path(path)
    keep_equal = path.name in KEEP_AT_RESUME_STEP
    rows = [r for r in read_jsonl(path) if r.get("step", -1) < before_step
            or keep_equal and r.get("step", -1) == before_step]
    atomic_write_text(path, "".join(_dumps(r) + "\n" for r in rows))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new file,
    never half of one. A write that fails (disk full) leaves the old file and raises ``RecordWriteError``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise RecordWriteError(f"could not write {describe_os_error(exc, path)}") from None


class JsonlSink(Sink):
    """Appends one JSON object per line; flushes each write so a killed run keeps what it logged."""

    critical = True  # the files are the contract: a failure here is a real error, not a warning

    def __init__(self, run_dir: str | Path, resume_step: int | None = None):
        """A fresh run starts the files anew; a resumed one keeps the rows before ``resume_step``."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._handles = {}
        for name in FILES.values():
            path = self.run_dir / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                truncate_jsonl(path, resume_step)

    def _handle(self, kind: str):
        if kind not in self._handles:
            self._handles[kind] = open(self.run_dir / FILES[kind], "a")
        return self._handles[kind]

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        self.log_rows([{"step": step, **metrics}], kind)

    def log_rows(self, rows: list[dict], kind: str = "train") -> None:
        """One write and one flush for a whole buffer of rows (the loop flushes every ``flush_every`` steps).

        A write that fails (disk full) is cut back to the last whole row and raised as ``RecordWriteError``
        naming the file: the file never ends in half a row written by this process."""
        handle = self._handle(kind)
        text = "".join([_dumps(row) + "\n" for row in rows])
        start = handle.tell()
        try:
            handle.write(text)
            handle.flush()
        except OSError as exc:
            self._cut(kind, start)
            raise RecordWriteError(f"could not write {describe_os_error(exc, self.run_dir / FILES[kind])}; "
                                   f"the rows before step {rows[0].get('step')} are kept") from None

    def _cut(self, kind: str, length: int) -> None:
        """Drop what a failed write left after ``length`` bytes (the buffer is discarded, not flushed)."""
        handle = self._handles.pop(kind)
        try:
            os.truncate(self.run_dir / FILES[kind], length)
        except OSError:
            pass
        try:
            handle.close()
        except OSError:  # close flushes the failed buffer again; the file is cut already
            pass
        try:
            os.truncate(self.run_dir / FILES[kind], length)
        except OSError:
            pass

    def close(self, summary: dict | None = None) -> None:
        """Close the files (the run record, ``RunRecord``, writes summary.json)."""
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            try:
                handle.close()
            except OSError:
                pass


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, atomically: never a half-written summary."""
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(_clean(summary), indent=2) + "\n")
