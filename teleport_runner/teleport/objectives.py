"""Teleport objectives: what a teleport maximizes or minimizes over the orbit of the current parameters.

An ``Objective`` is a function phi of the parameters on the teleport batch (the gradient norm, sharpness, the
orbit's curvature: ``curvature.py``) and a direction (``max`` or ``min``). Once per teleport it is bound to the
point, the batch and the symmetry (``bind``), which also draws whatever randomness it has (sharpness's
perturbation directions, curvature's Lie-algebra directions), so that every ascent step sees the same
deterministic function. The bound ``Target`` is all a solver sees:

    value(xi)                phi(g(xi)·w), differentiable in the group coordinates xi (through ``symmetry.act``)
    score(xi)                sign * phi (detached): what the solver maximizes (sign -1 for ``min``)
    score_and_direction(xi)  the score and the direction of an ascent step on it (``symmetry.ascent_direction``)
    report(xi)               objective, objective_before, objective_after for the teleport event

||grad L||^2 maximized keeps the symmetries' closed form as its fast path (``value_and_direction``); every other
objective and direction differentiates ``value`` by autograd. The teleport guard is the same for all of them: the
loss must stay on its level set, whatever is optimized.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError, one_of
from ..symmetries.base import Coords

OBJECTIVES = ("grad_norm", "sharpness", "curvature")
DIRECTIONS = ("max", "min")
DRAWS = ("isotropic", "positive")


class Target:
    """One teleport's objective, bound to the point ``params``, the batch and the symmetry's context."""

    def __init__(self, objective: "Objective", problem, symmetry, params, batch, ctx):
        self.objective, self.problem, self.symmetry = objective, problem, symmetry
        self.params, self.batch, self.ctx = params, batch, ctx
        self.sign = 1.0 if objective.direction == "max" else -1.0

    def value(self, xi: Coords) -> Tensor:
        """phi(g(xi)·w) on the batch, differentiable in xi. Default: phi of the acted parameters."""
        return self.objective.at_params(self, self.symmetry.act(xi, self.params, self.ctx))

    def score(self, xi: Coords) -> Tensor:
        with torch.enable_grad():  # some objectives differentiate the loss to get their value
            return self.sign * self.value(xi).detach()

    def score_and_direction(self, xi: Coords) -> tuple[Tensor, Coords]:
        leaves = [x.detach().requires_grad_(True) for x in xi]
        with torch.enable_grad():
            value = self.value(leaves)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else self.sign * g for x, g in zip(leaves, grads)]
        return self.sign * value.detach(), self.symmetry.ascent_direction([x.detach() for x in xi], grads, self.ctx)

    def report(self, xi: Coords) -> dict:
        """The objective before (at the identity) and after (at xi) the teleport, for its event."""
        identity = self.symmetry.identity(self.params, self.ctx)
        with torch.enable_grad():
            before, after = self.value(identity).detach(), self.value(xi).detach()
        return {"objective_before": float(before), "objective_after": float(after)}


class GradNormTarget(Target):
    """||grad L(g·w)||^2: the symmetry's own objective (a closed form for the network symmetries). Maximized, the
    symmetry's ``value_and_direction`` is the fast path (no gradient through g for ``exp`` steps)."""

    def value(self, xi):
        return self.symmetry.grad_norm_sq(xi, self.params, self.batch, self.ctx, True)

    def score(self, xi):
        with torch.enable_grad():
            return self.sign * self.symmetry.grad_norm_sq(xi, self.params, self.batch, self.ctx, False).detach()

    def score_and_direction(self, xi):
        if self.sign > 0:
            return self.symmetry.value_and_direction(xi, self.params, self.batch, self.ctx)
        return super().score_and_direction(xi)

    def report(self, xi):
        return {}  # the guard logs ||grad L||^2 before and after, measured on the real parameters


class Objective:
    """phi and the direction it is optimized in; ``bind`` gives one teleport's ``Target``."""

    name = "objective"
    target = Target

    def __init__(self, direction: str = "max"):
        if direction not in DIRECTIONS:
            raise one_of("teleport.direction", direction, DIRECTIONS)
        self.direction = direction

    @property
    def fast(self) -> bool:
        """True when the symmetry's own closed-form ascent applies (||grad L||^2 maximized)."""
        return False

    def check(self, symmetry) -> None:
        """Refuse, before training, a symmetry this objective cannot be computed on."""

    def bind(self, problem, symmetry, params, batch, ctx, generator: torch.Generator) -> Target:
        if not self.fast and hasattr(ctx, "factored"):
            ctx.factored = False  # autograd through act: dense coordinates only (no factored exp iterates)
        target = self.target(self, problem, symmetry, params, batch, ctx)
        self.draw(target, generator)
        return target

    def draw(self, target: Target, generator: torch.Generator) -> None:
        """Per-teleport randomness, kept on the target."""

    def at_params(self, target: Target, w: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"objective": self.name, "objective_direction": self.direction}


class GradNorm(Objective):
    """||grad L(w)||^2 on the teleport batch (the 2022 paper's objective)."""

    name = "grad_norm"
    target = GradNormTarget

    @property
    def fast(self) -> bool:
        return self.direction == "max"


def unit_draws(shapes: list[torch.Size], count: int, draw: str, generator: torch.Generator, like: Tensor
               ) -> list[list[Tensor]]:
    """``count`` random directions, each a list of tensors of ``shapes`` with joint unit norm: isotropic
    (normalized Gaussian) or ``positive`` (normalized uniform on [0, 1), the follow-up code's draw)."""
    out = []
    for _ in range(count):
        parts = [(torch.rand if draw == "positive" else torch.randn)(
            s, generator=generator, device=like.device, dtype=like.dtype) for s in shapes]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in parts]))
        out.append([p / norm for p in parts])
    return out


class Sharpness(Objective):
    """phi(w) = mean over radii r and unit directions d of L(w + r d) on the teleport batch (the follow-up's
    sharpness). The directions span all parameters, drawn once per teleport (``directions``: isotropic or
    positive), ``n_directions`` of them, each at every radius."""

    name = "sharpness"

    def __init__(self, direction: str, radii, n_directions: int, directions: str):
        super().__init__(direction)
        self.radii = [float(r) for r in radii]
        self.n_directions, self.directions = int(n_directions), directions

    def draw(self, target, generator):
        target.perturbations = unit_draws([p.shape for p in target.params], self.n_directions, self.directions,
                                          generator, target.params[0])

    def at_params(self, target, w):
        total = 0.0
        for d in target.perturbations:
            for r in self.radii:
                total = total + target.problem.loss([p + r * e for p, e in zip(w, d)], target.batch)
        return total / (len(target.perturbations) * len(self.radii))


def make_objective(objective: str, direction: str | None, radii, n_directions: int, directions: str) -> Objective:
    """The objective named by the teleport settings (``teleport.objective`` and its settings)."""
    if objective not in OBJECTIVES:
        raise one_of("teleport.objective", objective, OBJECTIVES)
    if direction is None:
        if objective != "grad_norm":
            raise ConfigError(f"teleport.direction is required with teleport.objective={objective}: min (flatter, "
                              "or less curved) or max. Only grad_norm defaults to max.")
        direction = "max"
    if directions not in DRAWS:
        raise one_of("teleport.directions", directions, DRAWS)
    if int(n_directions) < 1:
        raise ConfigError(f"Invalid teleport.n_directions: {n_directions!r}; it must be a positive integer.")
    radii = list(radii)
    if not radii or not all(isinstance(r, (int, float)) and r > 0 for r in radii):
        raise ConfigError(f"Invalid teleport.radii: {radii!r}; use a non-empty list of positive radii, "
                          "e.g. [0.1, 0.2].")
    if objective == "grad_norm":
        return GradNorm(direction)
    if objective == "sharpness":
        return Sharpness(direction, radii, n_directions, directions)
    from .curvature import Curvature

    return Curvature(direction, n_directions, directions)
