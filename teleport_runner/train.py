"""The Hydra entry point: compose the config, build the objects, run the loop, write the summary and plots.

``teleport-train`` and ``python -m teleport_runner.train`` both land in ``main``. Everything below
``run`` works on live objects, so ``loop.train`` can be called without Hydra.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, UserError, one_of
from .logging import JsonlSink, Sinks, write_summary
from .checkpoint import Checkpointer, checkpoint_every, should_resume
from .loop import RunStats, train
from .objective import check_metric, objective

#: conf/ at the repository root (the package is installed in editable mode by `make`).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Invalid device: {name!r}: this machine has no CUDA device. Use device=auto or "
                          "device=cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise one_of("device", name, ("auto", "cpu", "cuda", "cuda:N")) from None


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise one_of("dtype", name, DTYPES)
    return DTYPES[name]


def _positive_int(cfg: DictConfig, key: str, allow_none: bool = False) -> int | None:
    value = cfg.get(key)
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"Invalid {key}: {value!r}; it must be a positive integer.")
    return value


def _seed(cfg: DictConfig) -> int:
    value = cfg.get("seed")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"Invalid seed: {value!r}; it must be an integer (seed=0, or -m seed=0,1,2 for a sweep).")
    return value


def loss_thresholds(cfg: DictConfig) -> list[float]:
    """The thresholds of summary.steps_to_loss, as floats (a clear error for anything else)."""
    values = cfg.get("loss_thresholds")
    try:
        thresholds = [float(t) for t in values]
    except (TypeError, ValueError):
        thresholds = None
    if thresholds is None or isinstance(values, str) or not all(math.isfinite(t) for t in thresholds):
        raise ConfigError(f"Invalid loss_thresholds: {values!r}; it must be a list of numbers, e.g. "
                          "loss_thresholds=[0.1,1e-3] (or [] for none).")
    return thresholds


GROUPS = ("problem", "symmetry", "teleport", "optimizer", "schedule")


def _check_groups(cfg: DictConfig) -> None:
    """Every group a run needs is chosen (``~problem`` on the command line removes one)."""
    for group in GROUPS:
        if cfg.get(group) is None:
            options = sorted(f.stem for f in (Path(CONFIG_DIR) / group).glob("*.yaml"))
            raise ConfigError(f"No {group} chosen: the composed config has none. Choose one with {group}=<option> "
                              f"({', '.join(options)}).")


def build(cfg: DictConfig, device: torch.device, dtype: torch.dtype):
    """Instantiate problem, symmetry, teleport solver, schedule and optimizer from the config."""
    _check_groups(cfg)
    seed = _seed(cfg)
    torch.manual_seed(seed)
    problem = _instantiate(cfg.problem, "problem")
    problem.setup(device, dtype, seed)
    symmetry = _instantiate(cfg.symmetry, "symmetry")
    teleporter = _instantiate(cfg.teleport, "teleport")
    if teleporter.enabled:
        symmetry.bind(problem)
    schedule = _instantiate(cfg.schedule, "schedule")
    params = problem.init_params()
    try:
        optimizer = _instantiate(cfg.optimizer, "optimizer")(params)
    except (ValueError, TypeError) as exc:  # torch.optim checks its hyperparameters: "Invalid learning rate: -1"
        raise ConfigError(f"Invalid optimizer setting for {cfg.optimizer._target_} "
                          f"({OmegaConf.to_container(cfg.optimizer)}): {exc}.") from None
    if teleporter.enabled:  # refuse now what would fail at the first teleport (state policy, batch width)
        symmetry.check_run(problem, teleporter, optimizer)
    return problem, symmetry, teleporter, schedule, params, optimizer


def _instantiate(node: DictConfig, group: str):
    try:
        return instantiate(node)
    except UserError:
        raise
    except Exception as exc:  # InstantiationException wraps the constructor's error
        cause = exc.__cause__ or exc
        if isinstance(cause, UserError):
            raise cause from None
        raise ConfigError(f"Could not build the {group} from its config ({OmegaConf.to_container(node)}): "
                          f"{cause}") from None


def total_steps(cfg: DictConfig, steps_per_epoch: int) -> int:
    epochs = _positive_int(cfg, "epochs", allow_none=True)
    return epochs * steps_per_epoch if epochs is not None else _positive_int(cfg, "steps")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Build everything from ``cfg``, train, and return the summary (also written to summary.json)."""
    dtype, device = resolve_dtype(cfg.dtype), resolve_device(cfg.device)
    _positive_int(cfg, "log_every")
    problem, symmetry, teleporter, schedule, params, optimizer = build(cfg, device, dtype)
    steps = total_steps(cfg, problem.steps_per_epoch)
    teleport_steps = schedule.steps(steps, problem.steps_per_epoch)
    stats = RunStats(loss_thresholds=loss_thresholds(cfg))
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # group samples, on the device
    config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_cfg = cfg.get("checkpoint") or {}
    every = checkpoint_every(ckpt_cfg.get("every"))
    checkpointer = Checkpointer(run_dir / ckpt_cfg.get("path", "checkpoint.pt"), params=params,
                                optimizer=optimizer, generator=generator, stats=stats, config=config)
    resume = should_resume(cfg.get("resume", False), checkpointer.path)
    start_step = checkpointer.load(steps) if resume else 0  # params, optimizer, RNGs, stats
    sinks = [JsonlSink(run_dir, resume_step=start_step if resume else None)]
    sink = Sinks(sinks + [instantiate(node) for node in (cfg.logger or {}).values()])
    sink.log_config(config)
    summary = {"status": "failed", "seed": cfg.seed, "device": str(device), "dtype": cfg.dtype,
               "steps": steps, "run_dir": str(run_dir)}
    try:
        result = train(problem=problem, params=params, optimizer=optimizer, symmetry=symmetry,
                       teleporter=teleporter, teleport_steps=teleport_steps, total_steps=steps, sink=sink,
                       generator=generator, stats=stats, log_every=cfg.log_every,
                       log_params=getattr(problem, "dim", 0) == 2, start_step=start_step,
                       checkpoint_every=every, save_checkpoint=checkpointer.save)
        summary.update(result)
        summary.update(_stats_summary(stats))
        if result["status"] == "completed":
            summary["final_metrics"] = {**stats.last_val, **problem.test(params)}
        if cfg.plots:  # before close, so that sinks (W&B) can upload them
            from .plots import plot_run

            sink.log_files(plot_run(run_dir, problem))
    except BaseException as exc:
        summary.update(_stats_summary(stats))
        summary["message"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        sink.close(summary)
    return summary


def _stats_summary(stats: RunStats) -> dict:
    return {
        "n_teleports": stats.n_teleports, "n_teleports_rejected": stats.n_teleports_rejected,
        "max_rel_loss_drift": stats.max_rel_loss_drift, "time_total_s": stats.time_total_s,
        "time_teleport_s": stats.time_teleport_s, "time_eval_s": stats.time_eval_s,
        "time_descent_s": max(stats.time_total_s - stats.time_teleport_s - stats.time_eval_s, 0.0),
        "steps_to_loss": stats.steps_to_loss,
    }


def _short_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings meant for the user (UserWarning) print as one line, without a source location."""
    if issubclass(category, UserWarning) and category.__module__ == "builtins":
        return f"Warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


_default_formatwarning = warnings.formatwarning


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig):
    warnings.formatwarning = _short_warning
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun, started = hydra_cfg.mode == RunMode.MULTIRUN, time.time()
    try:
        check_metric(cfg.optimize_metric, loss_thresholds(cfg))
        summary = run(cfg, run_dir)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not multirun:
            sys.exit(2)
        summary = _failed_job(run_dir, cfg, exc, started)
    except Exception as exc:  # in a sweep, one failing job must not stop the others
        if not multirun:
            raise
        traceback.print_exc()
        summary = _failed_job(run_dir, cfg, exc, started)
    if multirun and summary.get("status") == "interrupted":  # Ctrl-C / SIGTERM stops the whole sweep
        print(f"Sweep stopped: job {hydra_cfg.job.num} was interrupted ({run_dir}).", file=sys.stderr)
        sys.exit(130)
    return objective(summary, cfg.optimize_metric, hydra_cfg.sweeper.get("direction", "minimize"))


def _failed_job(run_dir: Path, cfg: DictConfig, exc: BaseException, started: float) -> dict:
    """A sweep job that raised: keep (or write) summary.json with status failed, and go on."""
    path = run_dir / "summary.json"
    if path.exists() and path.stat().st_mtime >= started:  # written by this job's sinks
        summary = json.loads(path.read_text())
    else:
        summary = {"status": "failed", "seed": cfg.get("seed"), "run_dir": str(run_dir),
                   "message": f"{type(exc).__name__}: {exc}"}
        write_summary(run_dir, summary)
    print(f"Job failed ({type(exc).__name__}: {exc}); summary in {path}. The sweep goes on.", file=sys.stderr)
    return summary


def unwritable_output_dir(argv: list[str]) -> str | None:
    """The run/sweep folder named on the command line (or ./outputs) when it cannot be created or written.

    Hydra creates the run folder before the app starts and fails there with a traceback; checking first
    lets a wrong path fail with one line, before any work."""
    paths = [a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    for raw in paths or ["outputs"]:
        path = Path(raw.split("${", 1)[0] or ".")  # the fixed part before a ${now:...} interpolation
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
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
    """Console entry point (``teleport-train``, ``python -m teleport_runner.train``)."""
    keyless = [a for a in sys.argv[1:] if a.startswith("=")]
    if keyless:  # Hydra would fail on these with an internal traceback
        print(f"Error: {keyless[0]!r} is not an override: write key=value (teleport-train --help lists the keys).",
              file=sys.stderr)
        sys.exit(2)
    bad = unwritable_output_dir(sys.argv[1:])
    if bad is not None:
        print(f"Error: the output folder {bad!r} cannot be created or written (a file stands in its path or "
              "permissions forbid it). Choose another with hydra.run.dir=... (hydra.sweep.dir=... for -m).",
              file=sys.stderr)
        sys.exit(2)
    try:
        hydra_main()
    except ValueError as exc:  # Hydra's own command-line checks (a job's errors are reported inside hydra_main)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {exc}. See teleport-train --help.", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
