"""Build a run from a composed config and carry it out: validate, claim the folder, train, write the record.

``run(cfg, run_dir)`` works without Hydra (tests and notebooks call it). The order is the record's contract
(``record.py``): every check and every object is built before the folder is touched, the summary is written
before anything optional, and optional work (figures, the console table, W&B) never changes a result.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import CONFIG_DIR
from .config_types import check_types
from .checkpoint import Checkpointer, checkpoint_every, should_resume
from .errors import ConfigError, RecordWriteError, UserError, first_line, one_of
from .logging import JsonlSink, Sinks
from .logging.jsonl import check_run_files
from .logging.textlog import copy_output
from .loop import RunStats, train
from .objective import check_metric
from .record import RunRecord
from .reporting.stats import REJECTED_WARN, rejected_share
from .resources import check_memory
from .signals import OptionalWorkInterrupted, StopRequest
from .threads import apply_threads

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    if not isinstance(name, str):
        raise one_of("device", name, ("auto", "cpu", "cuda", "cuda:N"))
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


def seeded_problem(cfg: DictConfig):
    """The problem, instantiated right after seeding torch (a user's module draws its weights here)."""
    _check_groups(cfg)
    torch.manual_seed(_seed(cfg))
    return _instantiate(cfg.problem, "problem")


def build(cfg: DictConfig, device: torch.device, dtype: torch.dtype, problem=None):
    """Instantiate problem (unless given, from ``seeded_problem``), symmetry, teleport solver, schedule and
    optimizer from the config."""
    problem = problem if problem is not None else seeded_problem(cfg)
    seed = _seed(cfg)
    symmetry = _instantiate(cfg.symmetry, "symmetry")
    teleporter = _instantiate(cfg.teleport, "teleport")
    check_memory(problem, teleporter, dtype, device)  # before anything large is allocated
    problem.setup(device, dtype, seed)
    # Solvers without a group (slp, reset_only) accept any symmetry: it is neither bound nor checked.
    uses_group = teleporter.enabled and getattr(teleporter, "needs_group", True)
    if uses_group or cfg.get("print_pairs", False):
        symmetry = symmetry.for_problem(problem)  # e.g. rescale on a user's module: its discovered pairs
        symmetry.bind(problem)
    schedule = _instantiate(cfg.schedule, "schedule")
    params = problem.init_params()
    try:
        optimizer = _instantiate(cfg.optimizer, "optimizer")(params)
    except UserError:
        raise
    except Exception as exc:  # torch.optim checks its hyperparameters: "Invalid learning rate: -1"; betas=[0.9]
        settings = {k: v for k, v in OmegaConf.to_container(cfg.optimizer).items() if not k.startswith("_")}
        raise ConfigError(f"Invalid optimizer setting for {cfg.optimizer._target_} "
                          f"(optimizer.{', optimizer.'.join(settings)} = {settings}): "
                          f"{first_line(exc)}.") from None
    if uses_group:  # refuse now what would fail at the first teleport (state policy, batch width)
        symmetry.check_run(problem, teleporter, optimizer)
        teleporter.objective.check(symmetry)
    return problem, symmetry, teleporter, schedule, params, optimizer


def _instantiate(node: DictConfig, group: str):
    try:
        check_types(OmegaConf.to_container(node, resolve=True), group)
    except ConfigError:
        raise
    except Exception:  # an interpolation that does not resolve: instantiate reports it below
        pass
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


def check_top_level(cfg: DictConfig) -> tuple[int, list[float], dict, int | None]:
    """The top-level settings: (log_every, loss thresholds, checkpoint settings, checkpoint.every)."""
    log_every = _positive_int(cfg, "log_every")
    thresholds = loss_thresholds(cfg)
    check_metric(cfg.get("optimize_metric", "final_loss"), thresholds)
    if not isinstance(cfg.get("plots"), bool) and cfg.get("plots") != "auto":
        raise ConfigError(f"Invalid plots: {cfg.get('plots')!r}; it must be auto (a single run draws its figures, "
                          "a sweep's jobs do not: the sweep report draws them), true or false.")
    ckpt_cfg = cfg.get("checkpoint") or {}
    path = ckpt_cfg.get("path", "checkpoint.pt")
    if (not isinstance(path, str) or not path or Path(path).is_absolute() or ".." in Path(path).parts
            or Path(path).name in ("", ".") or path.endswith("/")):
        raise ConfigError(f"Invalid checkpoint.path: {path!r}; it must be a file name inside the run folder "
                          "(relative, no '..'), e.g. checkpoint.pt.")
    return log_every, thresholds, ckpt_cfg, checkpoint_every(ckpt_cfg.get("every"))


def run(cfg: DictConfig, run_dir: Path, *, stop: StopRequest | None = None,
        hydra_files: dict[str, str] | None = None, multirun: bool = False) -> dict:
    """Build everything from ``cfg``, train, and return the summary (also written to summary.json).

    ``stop`` is the caller's ``StopRequest`` (the CLI feeds it from SIGINT/SIGTERM); ``hydra_files`` are the
    ``.hydra/`` files to write when the run starts (``hydra.yaml``, ``overrides.yaml``). Raises ``UserError``
    (nothing written) for anything refused before the run starts, and re-raises what fails during it after
    writing a ``failed`` summary. ``multirun``: a job of a sweep (``plots=auto`` then draws no figures of its
    own: ~0.5 s a job, the sweep report draws them once). Warnings raised while building are shown once the
    run starts (so that train.log has them too), or at once when the run is refused."""
    threads_before = torch.get_num_threads()  # set for the run, given back: a caller keeps its own setting
    try:
        return _run(cfg, Path(run_dir), stop or StopRequest(), hydra_files, multirun)
    finally:
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)


def _run(cfg: DictConfig, run_dir: Path, stop: StopRequest, hydra_files, multirun: bool) -> dict:
    shown = []
    try:
        with warnings.catch_warnings(record=True) as shown:  # 1. Every check and every object, nothing written.
            warnings.simplefilter("always")
            dtype, device = resolve_dtype(cfg.dtype), resolve_device(cfg.device)
            log_every, thresholds, ckpt_cfg, every = check_top_level(cfg)
            problem = seeded_problem(cfg)  # the thread count is set before the problem's data and tensors
            threads = apply_threads(cfg.get("threads", "auto"), problem)
            problem, symmetry, teleporter, schedule, params, optimizer = build(cfg, device, dtype, problem)
            if cfg.get("print_pairs", False):  # list where the symmetry acts, and stop before the folder is touched
                print("\n".join([f"{symmetry.name} on {problem.name}:", *symmetry.describe()]))
                return {"status": "completed", "pairs": symmetry.describe(), "run_dir": str(run_dir)}
            steps = total_steps(cfg, problem.steps_per_epoch)
            teleport_steps = schedule.steps(steps, problem.steps_per_epoch)
            loggers = [_instantiate(node, f"logger.{name}") for name, node in (cfg.logger or {}).items()]
    except BaseException:
        _reissue(shown)
        raise
    stats = RunStats(loss_thresholds=thresholds)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # group samples, on the device
    config = OmegaConf.to_container(cfg, resolve=True)
    checkpointer = Checkpointer(run_dir / ckpt_cfg.get("path", "checkpoint.pt"), params=params,
                                optimizer=optimizer, generator=generator, stats=stats, config=config)
    record = RunRecord(run_dir)
    try:
        with record.lock():  # 2. The folder: one live run, never a finished run's folder without resume.
            resume = should_resume(cfg.get("resume", False), checkpointer.path)
            if resume:
                start_step = checkpointer.load(steps)  # refuses another run's settings; restores in place
                check_run_files(run_dir)  # a damaged row is refused now, before the record changes
            else:
                record.refuse_if_taken(checkpointer.path)
                start_step = 0
            stop.check("before the run started")
            # 3. The run starts for real: its record is (re)written from here on, its output copied to train.log.
            record.begin(OmegaConf.to_yaml(cfg), hydra_files)
            with copy_output(run_dir / "train.log", append=resume):
                _reissue(shown)
                shown = []
                return _execute(cfg, config, run_dir, stop, record, loggers, resume, start_step,
                                dict(problem=problem, params=params, optimizer=optimizer, symmetry=symmetry,
                                     teleporter=teleporter, teleport_steps=teleport_steps, total_steps=steps,
                                     generator=generator, stats=stats, log_every=log_every,
                                     log_params=getattr(problem, "dim", 0) == 2, checkpoint_every=every,
                                     save_checkpoint=checkpointer.save, stop=stop), threads,
                                plots=cfg.plots if isinstance(cfg.plots, bool) else not multirun)
    finally:
        _reissue(shown)  # refused: the build's warnings still reach the console


def _reissue(caught) -> None:
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _execute(cfg, config: dict, run_dir: Path, stop: StopRequest, record: RunRecord, loggers, resume: bool,
             start_step: int, loop_args: dict, threads: tuple[int, str], plots: bool) -> dict:
    """Train (the loop), write the record, then the optional work; see ``run``."""
    problem, params, stats = loop_args["problem"], loop_args["params"], loop_args["stats"]
    jsonl = JsonlSink(run_dir, resume_step=start_step if resume else None)
    sink = Sinks([jsonl] + loggers)
    summary = {"status": "failed", "seed": cfg.seed, "device": str(params[0].device), "dtype": cfg.dtype,
               "steps": loop_args["total_steps"], "run_dir": str(run_dir), "threads": threads[0],
               "threads_reason": threads[1]}
    try:
        sink.log_config(config)
        result = train(sink=sink, start_step=start_step, flush_seconds=0.5 if sink.live else None, **loop_args)
        summary.update(result)
        if result["status"] == "completed":
            summary["final_metrics"] = {**stats.last_val, **problem.test(params)}
    except BaseException as exc:
        summary["message"] = _failure_message(exc)
        raise
    finally:
        summary.update(_stats_summary(stats))
        with stop.during("critical"):  # 4. The record, before anything optional.
            jsonl.close()
            try:
                record.finish(summary)
            except RecordWriteError as exc:
                warnings.warn(f"summary.json not written: {exc}.")
        if rejected_share(summary) > REJECTED_WARN:
            warnings.warn(f"{stats.n_teleports_rejected} of {stats.n_teleports} teleports were rejected (their loss "
                          "drift exceeded teleport.max_rel_drift) and rolled back"
                          + ("; in float32 near a zero loss use dtype=float64." if cfg.dtype == "float32" else "."))
        _optional_work(stop, plots, run_dir, problem, sink, summary)
    return summary


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, (UserError, RecordWriteError)):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted (KeyboardInterrupt)."
    return f"{type(exc).__name__}: {exc}"


def _optional_work(stop: StopRequest, plots: bool, run_dir: Path, problem, sink, summary: dict) -> None:
    """Figures, then the sinks' close (console table, W&B upload). Each may fail or be interrupted with one
    warning; the record on disk is already complete and is never changed here."""
    def guarded(what: str, work) -> None:
        try:
            with stop.during("optional"):
                work()
        except OptionalWorkInterrupted as exc:
            warnings.warn(f"{what} skipped: interrupted by {exc}. The run's record (summary.json) is complete.")
        except Exception as exc:
            warnings.warn(f"{what} skipped ({type(exc).__name__}: {exc}). The run's record is complete.")

    if plots and summary.get("status") == "interrupted":  # a stop should be prompt; resume draws them
        warnings.warn("Figures skipped: the run was interrupted (they are drawn when it completes after resume=true).")
    elif plots and summary.get("status") in ("completed", "diverged"):
        def figures():
            from .reporting.run_figures import plot_run

            sink.log_files(plot_run(run_dir, problem))

        guarded("Figures", figures)
    guarded("Closing the loggers", lambda: sink.close(summary))


def _stats_summary(stats: RunStats) -> dict:
    return {
        "n_teleports": stats.n_teleports, "n_teleports_rejected": stats.n_teleports_rejected,
        "max_rel_loss_drift": stats.max_rel_loss_drift, "time_total_s": stats.time_total_s,
        "time_teleport_s": stats.time_teleport_s, "time_eval_s": stats.time_eval_s,
        "time_descent_s": max(stats.time_total_s - stats.time_teleport_s - stats.time_eval_s, 0.0),
        "steps_to_loss": stats.steps_to_loss,
    }
