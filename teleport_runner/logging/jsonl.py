"""The run files: metrics.jsonl, val.jsonl, teleports.jsonl and summary.json (the source of truth)."""
from __future__ import annotations

import json
import math
from pathlib import Path

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


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_jsonl(path: Path, before_step: int) -> None:
    """Drop rows with step >= ``before_step`` (a resumed run rewrites them)."""
    rows = [r for r in read_jsonl(path) if r.get("step", -1) < before_step]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))


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
        """One write and one flush for a whole buffer of rows (the loop flushes every ``flush_every`` steps)."""
        handle = self._handle(kind)
        handle.write("".join([_dumps(row) + "\n" for row in rows]))
        handle.flush()

    def close(self, summary: dict) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}
        write_summary(self.run_dir, summary)


def write_summary(run_dir: Path, summary: dict) -> None:
    tmp = Path(run_dir) / "summary.json.tmp"
    tmp.write_text(json.dumps(_clean(summary), indent=2) + "\n")
    tmp.replace(Path(run_dir) / "summary.json")  # atomic: never a half-written summary
