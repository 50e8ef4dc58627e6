"""The teleport guard shared by every solver: measure, propose, verify, then commit or roll back.

A group solver implements ``search`` (find group coordinates; the default ``propose`` turns them into the
candidate g·w). A solver that moves the parameters without a group (level-set SLP, ``slp.py``) overrides
``propose`` instead and sets ``needs_group = False``. ``teleport`` wraps every proposal the same way: loss and
||grad L||^2 before, the candidate, loss and ||grad L||^2 after, and the relative loss drift.
A candidate that is not finite or drifts more than ``max_rel_drift`` is never written into the parameters
(rolled back) and is counted as rejected. Accepted teleports are written in place (``p.copy_``), so
optimizer state stays attached to the same tensors; ``optimizer_state`` then says what happens to it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, one_of
from ..problems.base import Batch, Problem
from ..symmetries.base import Coords, Symmetry
from ..signals import Interrupted, StopRequest
from .objectives import make_objective
from .state import STATE_POLICIES, apply_state_policy

#: Settings of any solver. A preset tunes the solver it names (``teleport.lr=...``); when the user then swaps
#: the solver (``teleport=none``) those keys stay in the merged config, so every solver tolerates the others'
#: settings. Anything else is a typo and is rejected (Hydra already rejects unknown keys on the command line).
SOLVER_SETTINGS = {"steps", "lr", "init", "init_scale", "max_group_norm", "compound", "samples", "scale",
                   "rho", "tol", "max_backtracks", "sublevel"}
#: The guard's and the objective's settings, which every solver takes (``objectives.py``).
GUARD_SETTINGS = {"max_rel_drift", "optimizer_state", "batches", "batch_size", "objective", "direction", "radii",
                  "n_directions", "directions"}


def check_other_settings(kind: str, settings: dict) -> None:
    unknown = sorted(set(settings) - SOLVER_SETTINGS)
    if unknown:
        raise ConfigError(f"Unknown teleport setting(s) {unknown} for {kind}. Valid settings: "
                          f"{sorted(SOLVER_SETTINGS | GUARD_SETTINGS)}.")


#: Default drift tolerance per dtype: float32 rounding alone reaches ~1e-7 relative (worse near L = 0).
DEFAULT_MAX_REL_DRIFT = {torch.float32: 1e-5, torch.float64: 1e-10}


def loss_and_grad_norm_sq(problem: Problem, params: list[Tensor], batch: Batch) -> tuple[Tensor, Tensor]:
    """L(w) and ||grad L(w)||^2 at ``params`` (detached copies; nothing accumulates into .grad)."""
    w = [p.detach().requires_grad_(True) for p in params]
    with torch.enable_grad():
        loss = problem.loss(w, batch)
        grads = torch.autograd.grad(loss, w)
    return loss.detach(), sum(g.square().sum() for g in grads)


def relative_drift(before: Tensor, after: Tensor) -> Tensor:
    tiny = torch.finfo(before.dtype).tiny
    return (after - before).abs() / before.abs().clamp_min(tiny)


@dataclass
class Proposal:
    """What a solver proposes: the candidate parameters (new tensors; the guard decides whether they are written),
    the group coordinates and symmetry context that produced them (``optimizer_state=transform`` reads them; None
    for a move without a group), and the solver's own diagnostics, added to the teleport event."""

    params: list[Tensor]
    xi: Coords | None = None
    ctx: Any = None
    info: dict = field(default_factory=dict)


class TeleportSolver:
    """Base class of solvers: the guard above, plus the schedule-independent settings.

    Args:
        max_rel_drift: reject a teleport whose |L_after - L_before| / |L_before| exceeds this; ``None``
            picks 1e-5 in float32 and 1e-10 in float64.
        optimizer_state: ``keep``, ``reset`` or ``transform`` (move the state with the group action).
        batches: teleports per scheduled step, each on its own mini-batch (the paper's Algorithm 2, B).
        batch_size: size of a teleport batch; ``None`` uses the training batch size.
        objective: what the search optimizes over the orbit: ``grad_norm`` (||grad L||^2), ``sharpness`` or
            ``curvature`` (``objectives.py``, ``curvature.py``); ``direction``: ``max`` or ``min`` (null: max, for
            grad_norm only). ``radii`` and ``n_directions`` (perturbation directions per radius) set sharpness,
            ``n_directions`` the orbit curves of curvature; ``directions``: how they are drawn, ``isotropic``
            (normalized Gaussian) or ``positive`` (normalized uniform on [0, 1), the follow-up code's).
    """

    enabled = True
    #: False for solvers that never touch the symmetry (the runner then neither binds nor checks it)
    needs_group = True

    def __init__(self, max_rel_drift: float | None = None, optimizer_state: str = "keep",
                 batches: int = 1, batch_size: int | None = None, objective: str = "grad_norm",
                 direction: str | None = None, radii: list[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 n_directions: int = 10, directions: str = "isotropic", **other_solver_settings):
        check_other_settings(type(self).__name__, other_solver_settings)
        if max_rel_drift is not None and not max_rel_drift >= 0:
            raise ConfigError(f"Invalid teleport.max_rel_drift: {max_rel_drift!r}; it must be >= 0 "
                              "(or null for the dtype's default).")
        if optimizer_state not in STATE_POLICIES:
            raise one_of("teleport.optimizer_state", optimizer_state, STATE_POLICIES)
        if int(batches) < 1:
            raise ConfigError(f"Invalid teleport.batches: {batches!r}; it must be a positive integer.")
        if batch_size is not None and int(batch_size) < 1:
            raise ConfigError(f"Invalid teleport.batch_size: {batch_size!r}; it must be a positive integer "
                              "or null (the training batch size).")
        self.max_rel_drift = max_rel_drift
        self.optimizer_state = optimizer_state
        self.batches = int(batches)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.objective = make_objective(objective, direction, radii, n_directions, directions)

    def search(self, problem: Problem, symmetry: Symmetry, params: list[Tensor], batch: Batch, ctx: Any,
               generator: torch.Generator, target=None) -> Coords:
        """Coordinates of the chosen group element (detached), the best by ``target`` (an ``objectives.Target``;
        None: this solver's objective bound here). Group solvers implement this."""
        raise NotImplementedError(f"{type(self).__name__} implements neither search nor propose.")

    def propose(self, problem: Problem, symmetry: Symmetry, params: list[Tensor], batch: Batch,
                generator: torch.Generator) -> Proposal:
        """The candidate parameters for the point ``params`` (detached copies the solver may read, never
        write). Default: the group element ``search`` chose, applied by the symmetry."""
        ctx = symmetry.prepare(params, batch)
        target = self.bind_objective(problem, symmetry, params, batch, ctx, generator)
        xi = self.search(problem, symmetry, params, batch, ctx, generator, target)
        with torch.no_grad():
            candidate = symmetry.act(xi, params, ctx)
        return Proposal(candidate, xi, ctx, target.report(xi))

    def bind_objective(self, problem, symmetry, params, batch, ctx, generator, target=None):
        """``target`` if given, else this solver's objective bound to one teleport (its directions drawn)."""
        return target or self.objective.bind(problem, symmetry, params, batch, ctx, generator)

    def measures_holdout(self, symmetry: Symmetry) -> bool:
        """Whether a teleport may change the function off its batch (then the guard logs the change on held-out
        data): for group solvers, when the action is exact only on the batch."""
        return symmetry.data_dependent

    def drift(self, before: Tensor, after: Tensor) -> Tensor:
        """The loss change the guard compares with the tolerance: relative, in either direction."""
        return relative_drift(before, after)

    def tolerance(self, dtype: torch.dtype) -> float:
        return self.max_rel_drift if self.max_rel_drift is not None else DEFAULT_MAX_REL_DRIFT[dtype]

    def teleport(self, step: int, problem: Problem, symmetry: Symmetry, params: list[Tensor],
                 optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 stop: StopRequest | None = None) -> list[dict]:
        """Teleport once on each of ``batches`` mini-batches; return one event dict per teleport.

        ``stop`` (a ``StopRequest``) is read between ascent steps: a signal ends the search with
        ``Interrupted`` before anything is written into the parameters (a teleport is whole or not at all; of
        several batches' teleports, those committed before the signal stand and are returned)."""
        self._stop = stop or StopRequest()
        events = []
        for index, batch in enumerate(problem.teleport_batches(step, self.batches, self.batch_size)):
            try:
                self._stop.check(f"during the teleport at step {step}")
                events.append(self._teleport_once(step, index, problem, symmetry, params, optimizer, batch,
                                                  generator))
            except Interrupted:
                if not events:
                    raise
                break  # the teleports already committed stand (and are logged); the loop stops after this step
        return events

    def check_stop(self) -> None:
        """For solvers, between two search steps: raise ``Interrupted`` if a signal asked the run to stop."""
        stop = getattr(self, "_stop", None)
        if stop is not None and stop.signum is not None:
            stop.check("during a teleport (rolled back)")

    def _teleport_once(self, step, index, problem, symmetry, params, optimizer, batch, generator) -> dict:
        start = time.perf_counter()
        # Held-out data where a teleport may change the function off its batch (data-dependent actions, slp), or
        # where the symmetry asks the guard to verify exactness there (discovered pairs of a user's module).
        holdout = (problem.holdout_batch(step) if self.measures_holdout(symmetry) or symmetry.verify_off_batch
                   else None)
        loss_before, gn_before = loss_and_grad_norm_sq(problem, params, batch)
        with torch.no_grad():
            holdout_before = problem.loss(params, holdout) if holdout is not None else None
        w = [p.detach().clone() for p in params]  # the point before, kept for rollback and state
        proposal = self.propose(problem, symmetry, w, batch, generator)
        candidate = proposal.params
        loss_after, gn_after = loss_and_grad_norm_sq(problem, candidate, batch)
        drift = self.drift(loss_before, loss_after)
        finite = bool(torch.isfinite(loss_after) & torch.isfinite(gn_after)) and all(
            bool(torch.isfinite(c).all()) for c in candidate)
        accepted = finite and float(drift) <= self.tolerance(loss_before.dtype)
        event = {
            "step": step, "batch_index": index,
            "loss_before": float(loss_before), "loss_after": float(loss_after),
            "rel_loss_drift": float(drift),
            "grad_norm_sq_before": float(gn_before), "grad_norm_sq_after": float(gn_after),
            **self.objective.describe(), "objective_before": float(gn_before), "objective_after": float(gn_after),
            "accepted": accepted, **proposal.info,
        }
        if not symmetry.exact:
            event["exact_action"] = False
        if holdout is not None and (accepted or symmetry.verify_off_batch):
            with torch.no_grad():
                change = float(relative_drift(holdout_before, problem.loss(candidate, holdout)))
            event["holdout_rel_loss_change"] = change
            if symmetry.verify_off_batch and not change <= self.tolerance(loss_before.dtype):
                accepted = event["accepted"] = False  # a data-free action that moved the function off the batch
        if accepted:
            with torch.no_grad():
                for p, c in zip(params, candidate):
                    p.copy_(c)
            apply_state_policy(self.optimizer_state, optimizer, symmetry, proposal.xi, w, proposal.ctx, params)
        if params[0].device.type == "cuda":
            torch.cuda.synchronize(params[0].device)
        event["time_s"] = time.perf_counter() - start
        if params[0].numel() <= 3 and len(params) == 1:  # low-dimensional: keep the jump for plots
            event["params_before"] = [float(v) for v in w[0]]
            event["params_after"] = [float(v) for v in params[0].detach()]
        return event


class NoTeleport:
    """The baseline: never teleports (``teleport=none``)."""

    enabled = False
    max_rel_drift = None
    optimizer_state = "keep"

    def __init__(self, **settings):
        check_other_settings("NoTeleport", {k: v for k, v in settings.items()
                                            if k not in GUARD_SETTINGS})
