"""Checkpoints: one plain dict per file, loadable with ``torch.load(path, weights_only=True)``.

A checkpoint taken after ``step`` descent steps holds everything the next step depends on: the parameters,
the optimizer's ``state_dict()``, the global torch RNG states, the teleport generator's state, the
``RunStats`` totals and the step. Batches are a pure function of (seed, step), so a run resumed from it
repeats the uninterrupted run's numbers exactly (same device, dtype and seed). Only tensors and primitive
containers go in, so no pickled classes are ever loaded.

``resume=true`` compares the checkpoint's fingerprint (the config that decides the numbers: problem,
symmetry, teleport, optimizer, schedule, seed, dtype) with the current config and refuses a mismatch.
``steps`` may grow: resuming with a larger ``steps`` extends a run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .config_tree import flatten
from .errors import ConfigError, RecordWriteError, describe_os_error, first_line

FORMAT_VERSION = 1
#: Config keys whose values decide a run's numbers; a checkpoint only resumes a run with the same ones.
FINGERPRINT_KEYS = ("problem", "symmetry", "teleport", "optimizer", "schedule", "seed", "dtype", "log_every",
                    "loss_thresholds")


def fingerprint(config: dict) -> dict:
    """The part of a resolved config (plain dict) that a resumed run must share with the checkpoint."""
    return {key: config.get(key) for key in FINGERPRINT_KEYS}


class Checkpointer:
    """Saves and restores the live objects of one run; ``save`` is the loop's ``save_checkpoint`` callback.

    Args:
        path: the checkpoint file (written atomically: a kill never leaves half a checkpoint).
        params, optimizer, generator, stats: the run's live objects (restored in place).
        config: the resolved config as a plain dict (for the fingerprint).
    """

    def __init__(self, path: str | Path, *, params: list[Tensor], optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, stats, config: dict):
        self.path = Path(path)
        self.params, self.optimizer, self.generator, self.stats = params, optimizer, generator, stats
        self.fingerprint = fingerprint(config)

    def state_dict(self, step: int) -> dict:
        state = {
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "params": [p.detach().cpu().clone() for p in self.params],
            "optimizer": self.optimizer.state_dict(),
            "torch_rng_state": torch.get_rng_state(),
            "generator_state": self.generator.get_state(),
            "stats": json.loads(json.dumps(self.stats.state_dict())),  # plain JSON types only
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }
        if torch.cuda.is_available():
            state["cuda_rng_states"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, step: int) -> None:
        """Write the checkpoint atomically; a disk that refuses it keeps the previous checkpoint and raises
        ``RecordWriteError`` naming the file."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.state_dict(step), tmp)
            os.replace(tmp, self.path)  # atomic
        except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
            tmp.unlink(missing_ok=True)
            reason = describe_os_error(exc, self.path) if isinstance(exc, OSError) else f"{self.path}: {exc}"
            raise RecordWriteError(f"could not write the checkpoint {reason}; the previous checkpoint is "
                                   "kept") from None

    def load(self, total_steps: int | None = None) -> int:
        """Restore everything from the checkpoint in place; return the step to start from."""
        if not self.path.exists():
            raise ConfigError(f"resume=true, but there is no checkpoint at {self.path}. Resume in the run "
                              "directory of an interrupted run (hydra.run.dir=outputs/runs/<run> resume=true), "
                              "or drop resume=true to start a new run.")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"The checkpoint {self.path} cannot be read ({type(exc).__name__}: "
                              f"{first_line(exc)}). Delete it to start the run again, or point checkpoint.path "
                              "at another file.") from None
        if not isinstance(state, dict):
            raise ConfigError(f"The checkpoint {self.path} is not a teleport_runner checkpoint (it holds a "
                              f"{type(state).__name__}, not a dict). Delete it, or point checkpoint.path elsewhere.")
        self._check(state, total_steps)
        try:  # everything is restored, or the run is refused (a crafted or damaged file): never half of it
            with torch.no_grad():
                for p, saved in zip(self.params, state["params"]):
                    p.copy_(saved)
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng_state"])
            if "cuda_rng_states" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng_states"])
            self.generator.set_state(state["generator_state"])
            self.stats.load_state_dict(dict(state["stats"]))
        except Exception as exc:
            raise ConfigError(f"The checkpoint {self.path} is damaged or was not written by this run "
                              f"({type(exc).__name__}: {first_line(exc)}). Delete it to start the run again.") from None
        return int(state["step"])

    def _check(self, state: dict, total_steps: int | None) -> None:
        missing = sorted({"step", "params", "optimizer", "torch_rng_state", "generator_state", "stats",
                          "fingerprint"} - set(state))
        if missing:
            raise ConfigError(f"The checkpoint {self.path} lacks {', '.join(missing)}: it is damaged or not a "
                              "teleport_runner checkpoint. Delete it to start the run again.")
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ConfigError(f"The checkpoint {self.path} has step {step!r}; a checkpoint's step is an integer >= 0. "
                              "Delete it to start the run again.")
        if state.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"The checkpoint {self.path} has format version {state.get('format_version')!r}; "
                              f"this version of teleport_runner reads version {FORMAT_VERSION}.")
        try:
            recorded = json.loads(state["fingerprint"])
            saved = flatten(recorded)
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(f"The checkpoint {self.path} has an unreadable settings fingerprint: it is damaged or "
                              "not a teleport_runner checkpoint. Delete it to start the run again.") from None
        # Keys a checkpoint of an older version did not record are not compared (loss_thresholds came later).
        now = {k: v for k, v in flatten(json.loads(json.dumps(self.fingerprint, sort_keys=True))).items()
               if k.split(".")[0] in recorded}
        diff = [f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
                for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if diff:
            raise ConfigError(f"The checkpoint {self.path} was written by a run with other settings ("
                              + "; ".join(diff) + "). Resume with the same settings as the interrupted run "
                              "(only steps, epochs, logger, plots and checkpoint may change), or start a new run.")
        shapes = [tuple(getattr(p, "shape", ())) for p in state["params"]]
        if shapes != [tuple(p.shape) for p in self.params]:
            raise ConfigError(f"The checkpoint {self.path} holds parameters of shapes {shapes}, but the problem "
                              f"builds {[tuple(p.shape) for p in self.params]}.")
        if total_steps is not None and state["step"] > total_steps:
            raise ConfigError(f"The checkpoint {self.path} is at step {state['step']}, past steps={total_steps}. "
                              f"Resume with steps >= {state['step']}.")


def checkpoint_every(value) -> int | None:
    """Validate ``checkpoint.every``: a positive number of descent steps, or null (only on interruption)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"Invalid checkpoint.every: {value!r}; it must be a positive number of descent steps, "
                          "or null to checkpoint only when the run is interrupted.")
    return value


def should_resume(value, path: Path) -> bool:
    """``resume``: true (the checkpoint must exist), false, or auto (resume when ``path`` exists: a job
    that a cluster requeues after a time limit or preemption continues instead of starting over)."""
    if value in (True, False):
        return bool(value)
    if value == "auto":
        return Path(path).exists()
    raise ConfigError(f"Invalid resume: {value!r}. Valid values: false, true (continue from the run "
                      "directory's checkpoint), auto (continue if a checkpoint exists, else start).")
