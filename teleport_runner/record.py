"""The run record: who owns a run folder, when its record may change, and how summary.json is written.

The record of a run is its folder: ``.hydra/`` (the composed config, Hydra's config, the overrides),
``metrics.jsonl``, ``val.jsonl``, ``teleports.jsonl``, ``test.jsonl``, ``checkpoint.pt`` and ``summary.json``.
Its rules, one mechanism each:

- **One live run per folder.** ``RunRecord.lock`` takes an exclusive ``flock`` on ``<run>/.teleport.lock``
  and writes the holder (pid, host, start time, command) into it. A second run into the folder is refused with
  a message naming the holder. The kernel drops the lock when its process dies, so a stale lock (a killed run,
  a dead pid) never blocks.
- **Nothing changes before the run starts for real.** Every check (config values, the checkpoint's
  fingerprint, the folder's state) runs before ``begin``; a command refused by any of them writes nothing into
  the folder (a lock file it made is removed again, one it found is put back as it was, and the CLI removes a
  run folder Hydra made for it alone).
  ``begin`` then writes ``.hydra/`` (Hydra itself is told not to: ``hydra.output_subdir: null``).
- **A finished run's folder is not reused silently.** A new run (no ``resume``) into a folder that already
  holds results is refused: continue it with ``resume=true`` or choose another folder.
- **The summary is written first, atomically.** ``finish`` writes summary.json (temporary file and rename)
  before anything optional (figures, uploads) runs.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import ConfigError, RecordWriteError, describe_os_error
from .logging.jsonl import FILES, atomic_write_text, write_summary

LOCK_NAME = ".teleport.lock"
#: Files whose presence means a folder holds a run's results.
RESULT_FILES = ("summary.json", *FILES.values())


class RunFolderBusy(ConfigError):
    """Another live run holds the folder."""


class RunFolderTaken(ConfigError):
    """The folder holds a finished (or stopped) run's results, and this run does not resume it."""


def holds_results(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run's results (a summary or a non-empty metrics file)."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() and (run_dir / name).stat().st_size > 0 for name in RESULT_FILES)


class RunRecord:
    """The record of the run in ``run_dir`` (see the module docstring for the rules)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None
        self.began = False

    @contextmanager
    def lock(self):
        """Hold the folder for this process while the block runs; refuse if another live run holds it."""
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_NAME
        while True:
            try:  # O_EXCL: whether this command made the file (then a refusal removes it again)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    continue  # a refused command removed it between our two opens
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(path)
                os.close(fd)
                raise RunFolderBusy(f"The run folder {self.run_dir} is in use by another run ({holder}). A folder "
                                    "belongs to one live run: wait for it to end, or choose another folder "
                                    "(leave out hydra.run.dir for a new timestamped one).") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # a refused command removed the file between our open and our lock: take the new one
        self._fd, self.began = fd, False
        found = os.fstat(fd)  # a finished run's lock file says who ran it: a refusal puts it back as it was
        try:
            previous = os.pread(fd, found.st_size, 0) if found.st_size else b""
        except OSError:
            previous = b""
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # the lock itself is held; the holder's description is a courtesy
        try:
            yield self
        finally:
            self._fd = None
            if not self.began:  # refused before the run started: the folder is left as it was found
                with suppress(OSError):
                    if previous:
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, previous, 0)
                        os.utime(fd, ns=(found.st_atime_ns, found.st_mtime_ns))
                    else:
                        path.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def refuse_if_taken(self, checkpoint: Path | None = None) -> None:
        """A new run (not resuming) may not start in a folder that holds another run's results."""
        if not holds_results(self.run_dir):
            return
        if checkpoint is not None and not Path(checkpoint).exists():
            raise RunFolderTaken(f"The run folder {self.run_dir} already holds a run, without a checkpoint to resume "
                                 "from (it was killed before its first, or ran without checkpoint.every). A new run "
                                 "does not overwrite it: choose another folder (leave out hydra.run.dir for a new "
                                 "timestamped one), or move its files away to start over there.")
        status = "unknown status"
        try:
            summary = json.loads((self.run_dir / "summary.json").read_text())
            status = f"status {summary.get('status')}, {summary.get('steps_done', summary.get('steps'))} steps"
        except (OSError, ValueError):
            status = "no summary: stopped or still writing"
        raise RunFolderTaken(f"The run folder {self.run_dir} already holds a run ({status}). A new run does not "
                             "overwrite it: continue it with resume=true (from its checkpoint), or choose another "
                             "folder (leave out hydra.run.dir for a new timestamped one).")

    def begin(self, config_yaml: str, hydra_files: dict[str, str] | None = None) -> None:
        """The run starts for real: write ``.hydra/`` (config.yaml, and Hydra's hydra.yaml and overrides.yaml
        when given). Before this, the folder's record is untouched."""
        self.began = True
        folder = self.run_dir / ".hydra"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordWriteError(f"could not write {describe_os_error(exc, folder)}") from None
        atomic_write_text(folder / "config.yaml", config_yaml)
        for name, text in (hydra_files or {}).items():
            atomic_write_text(folder / name, text)

    def finish(self, summary: dict) -> None:
        """summary.json, atomically (``RecordWriteError`` when the disk refuses it)."""
        write_summary(self.run_dir, summary)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                f"{info.get('command')}")
    except (OSError, ValueError):
        return "its pid is not recorded yet"


# ---- folders Hydra made for a command that was refused --------------------------------------------------------
#: When the command started, and the output folders named on its command line that existed then (``begin_command``).
_COMMAND: dict = {"started": time.time(), "preexisting": set()}


def begin_command(named_folders) -> None:
    """Called by the CLI first thing: from now on, a folder made later and not among ``named_folders`` (the
    ``hydra.run.dir``/``hydra.sweep.dir`` values, as far as they exist now) was made for this command."""
    preexisting = set()
    for folder in named_folders:
        with suppress(OSError):  # a name the OS refuses (too long) is not a folder that exists
            if folder.is_dir():
                preexisting.add(folder.resolve())
    _COMMAND.update(started=time.time(), preexisting=preexisting)


def made_by_hydra_now(folder: Path, leftovers: tuple[str, ...] = ()) -> bool:
    """Whether Hydra created ``folder`` for this command (it makes the run folder before the job starts, and the
    sweep folder with its ``multirun.yaml`` before checking the batch): nothing in it but ``leftovers``, created
    after the command began, and not named on the command line while it existed. A folder the user made
    beforehand is never removed."""
    try:
        return (folder.resolve() not in _COMMAND["preexisting"] and {p.name for p in folder.iterdir()} <= set(leftovers)
                and folder.stat().st_ctime > _COMMAND["started"])
    except OSError:
        return False


def remove_if_made_now(folder: Path, leftovers: tuple[str, ...] = ()) -> None:
    """A refused command leaves no trace: remove ``folder`` (and the ``leftovers`` Hydra wrote into it) when
    ``made_by_hydra_now``; otherwise leave it as it is."""
    if not made_by_hydra_now(folder, leftovers):
        return
    try:
        for name in leftovers:
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        pass  # something else was written there after all: keep it
