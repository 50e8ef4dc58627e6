"""Group teleport solvers: how to choose g. Each implements ``TeleportSolver.search`` (or, for the control that
moves nothing, ``propose``) and nothing else; the symmetry-free level-set solver is ``slp.py``."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError, one_of
from ..symmetries.base import Coords
from .base import Proposal, TeleportSolver


def _clip(xi: Coords, max_norm: float | Tensor) -> tuple[Coords, Tensor]:
    """The coordinates scaled so their joint norm is at most ``max_norm``, and that norm (no host sync; fused
    ops: every ascent step clips, and on a small network each op costs about as much as its arithmetic)."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(xi)))
    factor = (max_norm / (norm + 1e-30)).clamp(max=1.0)
    return list(torch._foreach_mul(xi, factor)), norm * factor


class GradientAscent(TeleportSolver):
    """Gradient ascent on the group coordinates of the teleport objective (||grad L(g·w)||^2 by default, the paper's
    solver; ``objective``/``direction``: any ``objectives.py`` objective, maximized or minimized as a score).

    Starts at the identity (or at a random element, ``init=random``, as the paper's Booth run), takes
    ``steps`` ascent steps of size ``lr`` (each along ``symmetry.ascent_direction``, moved by ``symmetry.retract``),
    bounds the search by ``max_group_norm`` because the optimal g can be unbounded (``symmetry.bound`` says how:
    the coordinates' norm, or for multiplicative ``exp`` steps the summed norms of the steps taken from the
    start), and returns the best iterate seen, so a teleport never picks a worse point on its own path than one
    it already evaluated.

    ``compound=True`` is the official 2022 code's ascent instead: every step starts at the identity of the orbit
    of the current weights, moves by ``lr`` times the direction there, and applies that element at once
    (w <- g_k·w, the symmetry re-prepared at w), so the moves compound; the teleport ends at the last point (no
    best-iterate choice), and ``max_group_norm`` bounds each step's element. With an exact action this is an
    exact teleport too (a product of group elements); with ``gl_data`` ``form: official`` it is the official one.
    The event adds ``path_loss``, the teleport batch's loss after each step.
    """

    def __init__(self, steps: int = 10, lr: float = 0.1, init: str = "identity", init_scale: float = 1.0,
                 max_group_norm: float | None = None, compound: bool = False, **guard):
        super().__init__(**guard)
        if int(steps) < 1:
            raise ConfigError(f"Invalid teleport.steps: {steps!r}; it must be a positive integer.")
        if not 0 < lr < float("inf"):
            raise ConfigError(f"Invalid teleport.lr: {lr!r}; the ascent learning rate must be a finite number > 0.")
        if init not in ("identity", "random"):
            raise one_of("teleport.init", init, ("identity", "random"))
        if not init_scale > 0:
            raise ConfigError(f"Invalid teleport.init_scale: {init_scale!r}; the spread of the random start must be "
                              "> 0.")
        if max_group_norm is not None and not max_group_norm > 0:
            raise ConfigError(f"Invalid teleport.max_group_norm: {max_group_norm!r}; use a positive bound "
                              "or null for none.")
        self.steps, self.lr, self.init, self.init_scale = int(steps), float(lr), init, float(init_scale)
        self.max_group_norm = max_group_norm
        self.compound = bool(compound)
        if self.compound and init != "identity":
            raise ConfigError("teleport.compound=true starts every ascent step at the identity of the current "
                              f"weights' orbit; teleport.init={init!r} does not apply. Use teleport.init=identity.")
        if self.compound and self.optimizer_state == "transform":
            raise ConfigError("teleport.optimizer_state=transform needs the one group element a teleport applied; "
                              "with teleport.compound=true it applies one per ascent step. Use keep or reset.")

    def propose(self, problem, symmetry, params, batch, generator) -> Proposal:
        """Compounding (``compound``): one element per ascent step, each applied to the weights the last one left."""
        if not self.compound:
            return super().propose(problem, symmetry, params, batch, generator)
        w, path = list(params), []
        for _ in range(self.steps):
            self.check_stop()
            ctx = symmetry.prepare(w, batch)
            start = symmetry.identity(w, ctx)
            direction = self.bind_objective(problem, symmetry, w, batch, ctx, generator).score_and_direction(start)[1]
            with torch.no_grad():
                step = list(torch._foreach_mul(direction, self.lr))
                if self.max_group_norm is not None:
                    step = _clip(step, self.max_group_norm)[0]
                w = [t.detach() for t in symmetry.act(symmetry.retract(start, step, ctx), w, ctx)]
                path.append(problem.loss(w, batch))
        return Proposal(w, info={"path_loss": torch.stack(path).tolist()})

    def search(self, problem, symmetry, params, batch, ctx, generator, target=None) -> Coords:
        target = self.bind_objective(problem, symmetry, params, batch, ctx, generator, target)
        xi = (symmetry.identity(params, ctx) if self.init == "identity"
              else symmetry.sample(params, ctx, generator, self.init_scale))
        path_budget = None  # what is left of a "path" bound (a tensor: no host sync)
        point_bound = self.max_group_norm if symmetry.bound == "point" else None
        if point_bound is not None:
            xi = _clip(xi, point_bound)[0]
        elif self.max_group_norm is not None:
            path_budget = torch.full((), self.max_group_norm, device=params[0].device, dtype=params[0].dtype)
        visited, values = [], []
        for _ in range(self.steps):
            self.check_stop()
            objective, direction = target.score_and_direction(xi)
            visited.append(xi)
            values.append(objective)
            with torch.no_grad():
                step = list(torch._foreach_mul(direction, self.lr))
                if path_budget is not None:
                    step, taken = _clip(step, path_budget)
                    path_budget = (path_budget - taken).clamp(min=0.0)
                xi = symmetry.retract(xi, step, ctx)
                if point_bound is not None:
                    xi = _clip(xi, point_bound)[0]
        visited.append(xi)
        values.append(target.score(xi))
        # One host sync per teleport: non-finite values never win.
        values = torch.stack(values)
        values = torch.where(torch.isfinite(values), values, torch.full_like(values, -torch.inf))
        return visited[int(values.argmax())]


class RandomSearch(TeleportSolver):
    """Best of ``samples`` random group elements by the teleport objective (||grad L(g·w)||^2 by default; no double
    backward).

    With ``samples=1`` it is the control 'an unoptimized group element'. ``scale`` sets the spread of the
    samples around the identity (for non-compact groups).
    """

    def __init__(self, samples: int = 10, scale: float = 0.1, **guard):
        super().__init__(**guard)
        if int(samples) < 1:
            raise ConfigError(f"Invalid teleport.samples: {samples!r}; it must be a positive integer.")
        self.samples, self.scale = int(samples), float(scale)

    def search(self, problem, symmetry, params, batch, ctx, generator, target=None) -> Coords:
        target = self.bind_objective(problem, symmetry, params, batch, ctx, generator, target)
        candidates, values = [], []
        for _ in range(self.samples):
            self.check_stop()
            xi = symmetry.sample(params, ctx, generator, self.scale)
            candidates.append(xi)
            values.append(target.score(xi))
        values = torch.stack(values)
        values = torch.where(torch.isfinite(values), values, torch.full_like(values, -torch.inf))
        return candidates[int(values.argmax())]


class ResetOnly(TeleportSolver):
    """Control: at each scheduled step reset the optimizer state and leave the parameters where they are."""

    needs_group = False

    def __init__(self, **guard):
        guard["optimizer_state"] = "reset"
        super().__init__(**guard)

    def propose(self, problem, symmetry, params, batch, generator) -> Proposal:
        return Proposal(list(params))
