"""The command line: ``teleport-train`` (and ``python -m teleport_runner``) land in ``main``.

This module is the thin edge: argv, Hydra, signals, messages and exit codes. Building and running a
config is ``runner.run``, imported only once a run starts, so ``--help`` and shell completion stay light.

Exit codes (one run): 0 completed; 1 failed during the run (summary.json says ``failed``; a disk that
refuses the record is one of these); 2 refused before any work (a bad value, missing data, a busy or taken
run folder: nothing written); 3 diverged; 128 + the signal when interrupted (130 SIGINT, 143 SIGTERM). A sweep
(``-m``) runs every job whatever happens to the others, reports them all, and exits 1 when any job did not
complete (130 when interrupted).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import CONFIG_DIR, version

if TYPE_CHECKING:
    from omegaconf import DictConfig

EXIT_CODES = {"completed": 0, "failed": 1, "refused": 2, "diverged": 3}
#: Statuses of the jobs of a sweep that ran in this process (the basic launcher); see ``reporting.sweep``.
JOB_STATUSES: list[str] = []
#: The command's stop request: SIGINT/SIGTERM handlers feed it from the start of ``main`` (so a signal during
#: imports or Hydra's composition is honoured too), every job and the sweep report read it.
STOP = None


def _short_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings meant for the user (UserWarning) print as one line, without a source location."""
    if issubclass(category, UserWarning) and category.__module__ == "builtins":
        return f"Warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


_default_formatwarning = warnings.formatwarning


def _hydra_files(hydra_cfg) -> dict[str, str]:
    """What Hydra writes to ``.hydra/`` (told not to: ``hydra.output_subdir: null``), for ``RunRecord.begin``."""
    from omegaconf import OmegaConf

    return {"hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task)}


def hydra_main() -> None:
    """Hydra's entry, imported only when a command needs Hydra (``--help`` alone does not: ``cli_help``)."""
    import hydra

    if os.environ.get("TELEPORT_HYDRA_PLAIN") != "1":  # the benchmark's baseline: Hydra unchanged
        from .hydra_patches import install

        install()
    hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(_task)()


def _task(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from contextlib import nullcontext

    from .record import made_by_hydra_now, remove_if_made_now
    from .signals import exit_code_for_signal, handle_signals

    warnings.formatwarning = _short_warning
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun, started = hydra_cfg.mode == RunMode.MULTIRUN, time.time()
    made_for_this_job = made_by_hydra_now(run_dir)  # before the job touches it
    JOB_STATUSES.append("started")  # replaced by the job's outcome below
    with nullcontext(STOP) if STOP is not None else handle_signals() as stop:  # main() installed the handlers
        summary, outcome = _run_job(cfg, run_dir, stop, _hydra_files(hydra_cfg), multirun, started)
    JOB_STATUSES[-1] = outcome
    if outcome in ("refused", "interrupted") and made_for_this_job:  # no empty outputs/runs/<time>/ left behind
        remove_if_made_now(run_dir)
    # A signal at any point of the job (start-up, training, figures) stops the command: 128 + the signal.
    if not multirun:
        code = exit_code_for_signal(stop.signum) if stop.requested else EXIT_CODES.get(outcome, 1)
        if code:
            sys.exit(code)
        return None
    if stop.requested:  # Ctrl-C / SIGTERM stops the whole sweep
        print(f"Sweep stopped: job {hydra_cfg.job.num} was interrupted ({run_dir}).", file=sys.stderr)
        sys.exit(exit_code_for_signal(stop.signum))
    from .objective import objective

    return objective(summary, cfg.optimize_metric, hydra_cfg.sweeper.get("direction", "minimize"))


def _run_job(cfg, run_dir: Path, stop, hydra_files, multirun: bool, started: float) -> tuple[dict, str]:
    """Run one job; return (summary, outcome), outcome a status or ``refused``. Errors print as one line
    (``HYDRA_FULL_ERROR=1`` re-raises them with their traceback)."""
    from .errors import RecordWriteError, UserError, first_line
    from .runner import run
    from .signals import Interrupted

    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        summary = run(cfg, run_dir, stop=stop, hydra_files=hydra_files, multirun=multirun)
        if summary.get("status") != "completed" and summary.get("message"):
            print(summary["message"], file=sys.stderr)
        return summary, summary.get("status", "failed")
    except (Interrupted, KeyboardInterrupt) as exc:  # before the run started: nothing was written
        print(f"Interrupted before the run started ({exc or 'SIGINT'}); nothing was written.", file=sys.stderr)
        return {"status": "interrupted"}, "interrupted"
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if full_error:
            raise
        outcome, error = "refused", exc
    except RecordWriteError as exc:
        print(f"Error: {exc}. What was written before is kept.", file=sys.stderr)
        if full_error:
            raise
        outcome, error = "failed", exc
    except Exception as exc:
        if full_error:
            raise
        if multirun:
            traceback.print_exc()
        print(f"Error: the run failed ({type(exc).__name__}: {first_line(exc)})."
              + (" Its summary.json says so;" if _summary_written(run_dir, started) else "")
              + " Set HYDRA_FULL_ERROR=1 to see the traceback.",
              file=sys.stderr)
        outcome, error = "failed", exc
    summary = {"status": "failed"}
    if multirun:
        summary = _failed_job(run_dir, cfg, error, started)
    return summary, outcome


def _summary_written(run_dir: Path, started: float) -> bool:
    """Whether this job's run wrote run_dir/summary.json (not an older run's)."""
    path = run_dir / "summary.json"
    return path.exists() and path.stat().st_mtime >= started


def _failed_job(run_dir: Path, cfg: DictConfig, exc: BaseException, started: float) -> dict:
    """A sweep job that raised: keep its summary.json (status failed), or write one where the folder holds no
    other run's record, so the sweep report lists the job; then go on."""
    from omegaconf import OmegaConf

    from .logging import write_summary
    from .errors import first_line
    from .record import RunFolderBusy, RunRecord, holds_results

    path = run_dir / "summary.json"
    ours = _summary_written(run_dir, started)
    if ours:
        summary = json.loads(path.read_text())
    else:
        summary = {"status": "failed", "seed": cfg.get("seed"), "run_dir": str(run_dir),
                   "message": f"{type(exc).__name__}: {exc}"}
        if not holds_results(run_dir) and not isinstance(exc, RunFolderBusy):
            try:
                RunRecord(run_dir).begin(OmegaConf.to_yaml(cfg))
                write_summary(run_dir, summary)
                ours = True
            except Exception as write_exc:
                print(f"Warning: no summary for the failed job ({write_exc}).", file=sys.stderr)
    where = f"summary in {path}" if ours else f"its folder {run_dir} is unchanged"
    print(f"Job failed ({type(exc).__name__}: {first_line(exc)}); {where}. The sweep goes on.",
          file=sys.stderr)
    return summary


def named_output_dirs(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]


def unwritable_output_dir(argv: list[str]) -> str | None:
    """The run/sweep folder named on the command line (or ./outputs) when it cannot be created or written.

    Hydra creates the run folder before the app starts and fails there with a traceback; checking first
    lets a wrong path fail with one line, before any work."""
    for raw in named_output_dirs(argv) or ["outputs"]:
        path = Path(raw.split("${", 1)[0] or ".")  # the fixed part before a ${now:...} interpolation
        existing = path
        try:
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
        except OSError:  # a name the OS refuses (too long)
            return raw
        if not can_create_folder_in(existing):  # also false where a file stands in the path
            return raw
    return None


def can_create_folder_in(folder: Path) -> bool:
    """Whether a folder can be made inside ``folder``, by making (and removing) one: ``os.access`` says yes to
    root everywhere, also on read-only mounts and in /proc."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".teleport_write_check_", dir=folder))
    except OSError:
        return False
    return True


def main() -> None:
    """Console entry point (``teleport-train``, ``python -m teleport_runner``)."""
    if "--version" in sys.argv[1:]:
        print(f"teleport-train {version()}")
        return
    if sys.argv[1:] in (["--help"], ["-h"]):  # without Hydra, torch or a config composed: instant
        from .cli_help import fast_help

        print(fast_help())
        return
    keyless = [a for a in sys.argv[1:] if a.startswith("=")]
    if keyless:  # Hydra would fail on these with an internal traceback
        print(f"Error: {keyless[0]!r} is not an override: write key=value (teleport-train --help lists the keys).",
              file=sys.stderr)
        sys.exit(2)
    from .record import begin_command

    begin_command([Path(p) for p in named_output_dirs(sys.argv[1:])])
    bad = unwritable_output_dir(sys.argv[1:])
    if bad is not None:
        print(f"Error: the output folder {bad!r} cannot be created or written (a file stands in its path or "
              "permissions forbid it). Choose another with hydra.run.dir=... (hydra.sweep.dir=... for -m).",
              file=sys.stderr)
        sys.exit(2)
    del JOB_STATUSES[:]
    global STOP
    from .signals import StopRequest, exit_code_for_signal, handle_signals

    with handle_signals(StopRequest()) as STOP:
        try:
            hydra_main()
        except ValueError as exc:  # Hydra's own command-line checks (a job's errors are reported inside hydra_main)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"Error: {exc}. See teleport-train --help.", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # a second Ctrl-C outside a job's loop
            print("Interrupted.", file=sys.stderr)
            sys.exit(exit_code_for_signal(STOP.signum))
        except SystemExit as exc:  # Hydra reports a bad override or config (unknown key or option) with exit 1
            if exc.code == 1 and not JOB_STATUSES:  # no job started: a refused command, as documented
                sys.exit(2)
            raise
    if STOP.requested:  # a signal after the last job (e.g. during the sweep report)
        sys.exit(exit_code_for_signal(STOP.signum))
    from .reporting.sweep import sweep_failures

    failures = sweep_failures(JOB_STATUSES)
    if failures:
        print(f"Sweep finished with {failures}; exit code 1.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    # python -m teleport_runner.train: run the imported module, whose state (STOP, the job statuses) the rest of
    # the package reads, not this __main__ copy of it.
    from teleport_runner.train import main as package_main

    package_main()
