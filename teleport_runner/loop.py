"""The training loop: Algorithm 1 of the paper, with its bookkeeping. It takes live objects, never a config,
so tests and notebooks call ``train`` directly. Signals are the caller's (``signals.handle_signals``): the loop
only reads a ``StopRequest`` at step boundaries."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .logging.base import Sink
from .problems.base import Problem
from .signals import Interrupted, StopRequest


class Diverged(Exception):
    """The loss became NaN or Inf at descent step ``step`` (found at the next flush: no host sync per step)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclass
class RunStats:
    """Running totals that become summary.json; plain data, so it checkpoints and resumes exactly.

    ``steps_to_loss`` is the first step whose loss is below each threshold: every descent step's loss (logged
    or not) for full-batch problems; for mini-batch problems the epoch's mean training loss, credited to the
    step that ends the epoch (one mini-batch is noise)."""

    loss_thresholds: list[float] = field(default_factory=list)
    steps_to_loss: dict = field(default_factory=dict)
    n_teleports: int = 0
    n_teleports_rejected: int = 0
    max_rel_loss_drift: float = 0.0
    time_teleport_s: float = 0.0
    time_eval_s: float = 0.0
    time_total_s: float = 0.0
    last_val: dict = field(default_factory=dict)
    epoch_loss_sum: float = 0.0  # the current epoch's batch losses so far (a resumed run continues the sum)
    epoch_grad_sum: float = 0.0  # and its logged steps' ||grad L||^2, with their count
    epoch_grad_n: int = 0

    def __post_init__(self):
        for t in self.loss_thresholds:
            self.steps_to_loss.setdefault(str(t), None)

    def add_loss(self, step: int, loss: float) -> None:
        for t in self.loss_thresholds:
            if self.steps_to_loss[str(t)] is None and loss < t:
                self.steps_to_loss[str(t)] = step

    def add_teleport(self, event: dict) -> None:
        self.n_teleports += 1
        self.time_teleport_s += event["time_s"]
        if event["accepted"]:
            self.max_rel_loss_drift = max(self.max_rel_loss_drift, event["rel_loss_drift"])
        else:
            self.n_teleports_rejected += 1

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class MetricBuffer:
    """Per-step metrics kept as device tensors and copied to the host in one sync per flush, so logging
    every step costs a couple of tensor ops, not a host round-trip. Every step's loss is kept (a reference, no
    copy), logged or not, so a divergence between two logged steps is found at its own step."""

    # Gradients with more elements than this get their squared norm from a BLAS dot (vectorized and
    # multi-threaded: 784x512 floats in 21 us against 47 us for a norm on a 2-core CPU); the small ones share
    # one fused _foreach_norm, so a small network pays one dispatch, not one per tensor.
    DOT_MIN_NUMEL = 1 << 15

    def __init__(self, track_params: bool = False, log_every: int = 1):
        self.track_params, self.log_every = track_params, log_every
        self._large = None  # which parameters are large: decided at the first step, kept for the run
        self._clear()

    def _clear(self) -> None:
        self.steps, self.logged, self.times, self.params = [], [], [], []
        self.all_steps, self.losses = [], []
        self.small_norms, self.big_sq_norms = [], []

    def add(self, step: int, loss: Tensor, params: list[Tensor], elapsed: float) -> None:
        """Step ``step``'s loss (always) and, every ``log_every`` steps, its gradient norm, time and point."""
        self.all_steps.append(step)
        self.losses.append(loss.detach())
        if step % self.log_every:
            return
        if self._large is None:
            self._large = [p.numel() >= self.DOT_MIN_NUMEL for p in params]
        self.steps.append(step)
        self.logged.append(len(self.losses) - 1)
        small = [p.grad for p, large in zip(params, self._large) if not large]
        if small:
            self.small_norms.append(torch._foreach_norm(small))
        flat = [p.grad.reshape(-1) for p, large in zip(params, self._large) if large]
        if flat:
            self.big_sq_norms.append([torch.dot(g, g) for g in flat])
        self.times.append(elapsed)
        if self.track_params:  # low-dimensional problems: the trajectory, for contour plots
            self.params.append(params[0].detach().clone())

    def __len__(self) -> int:
        """Steps held since the last drain (logged or not)."""
        return len(self.all_steps)

    def _grad_norm_sq(self) -> list[float]:
        total = torch.zeros(len(self.steps), dtype=torch.float64, device=self.losses[0].device)
        if self.small_norms:
            total += torch.stack([torch.stack(n) for n in self.small_norms]).double().square().sum(1)
        if self.big_sq_norms:
            total += torch.stack([torch.stack(n) for n in self.big_sq_norms]).double().sum(1)
        return total.tolist()

    def drain(self) -> tuple[list[dict], list[tuple[int, float]]]:
        """(the logged rows, every held step's (step, loss)), in one host sync for the losses."""
        if not self.all_steps:
            return [], []
        losses = torch.stack(self.losses).tolist()
        rows = []
        if self.steps:
            rows = [{"step": s, "loss": losses[i], "grad_norm_sq": g, "time_s": t}
                    for s, i, g, t in zip(self.steps, self.logged, self._grad_norm_sq(), self.times)]
        if self.track_params and rows:
            for row, x in zip(rows, torch.stack(self.params).tolist()):
                row["params"] = x
        every = list(zip(self.all_steps, losses))
        self._clear()
        return rows, every


@torch.no_grad()
def _final_loss(problem: Problem, params: list[Tensor]) -> float:
    return float(problem.final_loss(params))


def train(*, problem: Problem, params: list[Tensor], optimizer: torch.optim.Optimizer, symmetry, teleporter,
          teleport_steps, total_steps: int, sink: Sink, generator: torch.Generator,
          stats: RunStats, start_step: int = 0, log_every: int = 1, flush_every: int = 200,
          checkpoint_every: int | None = None, save_checkpoint: Callable[[int], None] | None = None,
          log_params: bool = False, stop: StopRequest | None = None, flush_seconds: float | None = None) -> dict:
    """Run descent steps ``start_step .. total_steps-1``, teleporting before the scheduled ones.

    ``teleport_steps`` is any container answering ``step in teleport_steps`` (a schedule's lazy set).
    Metrics reach the sinks every ``flush_every`` steps, and also every ``flush_seconds`` when a live display
    wants them (each flush is one host sync). The clock starts after ``sink.start`` (a W&B init is not training).
    Returns the summary fields the loop owns (status, final loss, counts, times). Raises nothing for
    divergence or interruption: those end the run with ``status`` set, and what was logged is kept. A run is
    diverged when any step's loss (logged or not) or the final iterate's loss is not finite.
    """
    stop = stop or StopRequest()  # never requested unless the caller installed handlers feeding it
    teleporting = teleporter.enabled
    steps_per_epoch = problem.steps_per_epoch
    mini_batch = steps_per_epoch > 1
    buffer = MetricBuffer(track_params=log_params, log_every=log_every)
    status, message, step = "completed", None, start_step
    done = start_step  # descent steps fully completed (the step a checkpoint resumes from)
    time_before = stats.time_total_s  # a resumed run continues the clock

    def elapsed() -> float:
        return time_before + time.perf_counter() - t0

    def flush() -> None:
        nonlocal last_flush
        last_flush = time.perf_counter()
        rows, losses = buffer.drain()
        bad = next((s for s, value in losses if not math.isfinite(value)), None)
        if rows:  # a diverged row is kept on disk (the rows after it are not), then the run stops
            sink.log_rows(rows if bad is None else [r for r in rows if r["step"] <= bad])
        finite = losses if bad is None else [(s, v) for s, v in losses if s < bad]
        if mini_batch:
            stats.epoch_loss_sum += math.fsum(v for _, v in finite)
            norms = [r["grad_norm_sq"] for r in rows if bad is None or r["step"] < bad]
            stats.epoch_grad_sum += math.fsum(norms)
            stats.epoch_grad_n += len(norms)
        else:
            for s, value in finite:
                stats.add_loss(s, value)
        if bad is not None:
            value = dict(losses)[bad]
            raise Diverged(f"the loss became {value} at step {bad}", bad)

    def end_epoch(step: int) -> None:
        """The epoch's mean training loss (its batches' losses, summed at the flushes) and validation."""
        t_eval = time.perf_counter()
        val = problem.evaluate(params)
        stats.time_eval_s += time.perf_counter() - t_eval
        row = {"epoch": (step + 1) // steps_per_epoch, "train_loss": stats.epoch_loss_sum / steps_per_epoch}
        if stats.epoch_grad_n:  # the mean over the epoch's logged steps
            row["grad_norm_sq"] = stats.epoch_grad_sum / stats.epoch_grad_n
        stats.epoch_loss_sum, stats.epoch_grad_sum, stats.epoch_grad_n = 0.0, 0.0, 0
        stats.add_loss(step + 1, row["train_loss"])
        stats.last_val = val or stats.last_val
        sink.log(step + 1, {**row, **val}, kind="val")

    sink.start(total_steps, start_step, steps_per_epoch)
    t0 = last_flush = time.perf_counter()
    try:
        stop.check(f"before step {start_step}")
        for step in range(start_step, total_steps):
            # Algorithm 1, lines 2-4: teleport w_t along its orbit (loss unchanged, gradient larger).
            if teleporting and step in teleport_steps:
                flush()
                rng = generator.get_state()  # an interrupted teleport leaves no trace, not even in the RNG
                try:
                    events = teleporter.teleport(step, problem, symmetry, params, optimizer, generator, stop=stop)
                except Interrupted:
                    generator.set_state(rng)
                    raise
                for event in events:
                    stats.add_teleport(event)
                    sink.log(step, event, kind="teleport")
            # Line 6: one descent step of the chosen optimizer on this step's batch.
            loss = problem.loss(params, problem.train_batch(step))
            loss.backward()
            buffer.add(step, loss, params, elapsed())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # Bookkeeping at epoch ends and flush points (the only host syncs besides teleports).
            end_of_epoch = mini_batch and (step + 1) % steps_per_epoch == 0
            if len(buffer) >= flush_every or end_of_epoch or (
                    flush_seconds is not None and time.perf_counter() - last_flush >= flush_seconds):
                flush()
            if end_of_epoch:
                end_epoch(step)
            done = step + 1
            if checkpoint_every and save_checkpoint and done % checkpoint_every == 0:
                flush()
                stats.time_total_s = elapsed()
                with stop.during("critical"):
                    save_checkpoint(done)
            if stop.signum is not None:  # a Python attribute read: no string built per step
                stop.check(f"after step {step}")
        flush()
        step = total_steps
    except Diverged as exc:
        status, message = "diverged", f"Training diverged: {exc}."
        step = exc.step  # steps done with a finite loss; the loop may have run on until the flush that found it
    except (KeyboardInterrupt, Interrupted) as exc:
        status = "interrupted"
        try:
            flush()
        except Diverged as exc_div:  # the steps before the stop had already diverged: that is the result
            status, message, step = "diverged", f"Training diverged: {exc_div}.", exc_div.step
        if status == "interrupted":
            message = f"Interrupted ({exc or 'SIGINT'}); resume with resume=true."
            if save_checkpoint is not None and isinstance(exc, Interrupted):
                # A signal stops the loop between steps, so the state is exactly that after `done` steps.
                # A hard KeyboardInterrupt (2nd Ctrl-C) may land mid-step: keep the last periodic checkpoint.
                stats.time_total_s = elapsed()
                with stop.during("critical"):
                    save_checkpoint(done)
            step = done
    stats.time_total_s = elapsed()
    final_loss = _final_loss(problem, params) if status != "diverged" else float("nan")
    if status == "completed" and not math.isfinite(final_loss):  # the last update diverged
        status = "diverged"
        message = (f"Training diverged: the loss became {final_loss} at the final iterate (after step "
                   f"{total_steps - 1}).")
    elif status == "completed" and not mini_batch:  # the final iterate w_T counts for the thresholds too
        stats.add_loss(total_steps, final_loss)
    return {"status": status, "message": message, "final_loss": final_loss, "steps_done": step}
