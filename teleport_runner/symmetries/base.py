"""The symmetry contract (geoopt-style: a small interface, the math in pure functions).

A group element g is given by coordinates ``xi`` (a list of tensors, the identity at zero) in which
``act(xi, params, ctx)`` is differentiable; teleport solvers only ever call this interface and never ask
which symmetry they hold. A symmetry may keep an entry of ``xi`` in a form only it reads (the GL actions keep a
wide layer's ``exp`` ascent iterate as the product of its low-rank steps, ``gl_elements.FactoredElement``); such
entries only occur with ``bound = "path"``, so a solver never scales or measures them, only passes them back.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from ..problems.base import Batch, Problem

Coords = list[Tensor]


def autograd_grad_norm_sq(problem: Problem, symmetry: "Symmetry", xi: Coords, params: list[Tensor], batch: Batch,
                          ctx: Any, create_graph: bool) -> Tensor:
    """||grad_w' L(w')||^2 at w' = g(xi)·w by autograd; differentiable in xi when ``create_graph``."""
    return grad_norm_sq_at(problem, symmetry.act(xi, params, ctx), batch, create_graph)


def grad_norm_sq_at(problem: Problem, w_new: list[Tensor], batch: Batch, create_graph: bool) -> Tensor:
    """||grad L||^2 at parameters ``w_new`` that are functions of group coordinates (differentiable in them when
    ``create_graph``)."""
    # Differentiate w.r.t. every new parameter: those the action leaves alone (other layers, a last bias)
    # are plain tensors and become leaves; when only the value is needed, all of them do.
    w_new = [w if create_graph and w.requires_grad else w.detach().requires_grad_(True) for w in w_new]
    loss = problem.loss(w_new, batch)
    grads = torch.autograd.grad(loss, w_new, create_graph=create_graph)
    return sum(g.square().sum() for g in grads)


class Symmetry(ABC):
    """A group action that leaves a problem's loss invariant: L(g·w) = L(w).

    Subclass docstrings state the group, the action formula, when it is exact, and its source.
    """

    name: str = "symmetry"
    #: True when the action is exact only on the batch it was built from (eq. 8 and its follow-up form).
    data_dependent: bool = False
    #: True for a data-free action whose exactness the guard also checks on held-out data (sites found in a user's
    #: module): a teleport that changes the held-out loss more than the drift tolerance is rolled back.
    verify_off_batch: bool = False
    #: False for an action that is not a symmetry at all (``gl_data`` with ``inverse: first_order``, the official
    #: code's): a run must open the guard for it, and each teleport event says ``exact_action: false``.
    exact: bool = True

    def for_problem(self, problem: Problem) -> "Symmetry":
        """The symmetry that acts on ``problem`` (itself, unless a family has a form for it: ``rescale`` on a
        ``problem=module`` becomes ``conv_rescale.ModuleRescale``)."""
        return self

    def describe(self) -> list[str]:
        """Where the action acts, one line each (``print_pairs=true``)."""
        return [f"{self.name}: acts on all of the problem's parameters"]

    def bind(self, problem: Problem) -> None:
        """Check that this symmetry fits ``problem`` (raise ``SymmetryMismatch`` otherwise) and keep it."""
        self.problem = problem

    def prepare(self, params: list[Tensor], batch: Batch) -> Any:
        """Work done once per teleport, not per ascent step (hidden activations, pseudo-inverses)."""
        return None

    @abstractmethod
    def identity(self, params: list[Tensor], ctx: Any) -> Coords:
        """Coordinates of the identity element, on the parameters' device and dtype."""

    @abstractmethod
    def sample(self, params: list[Tensor], ctx: Any, generator: torch.Generator, scale: float) -> Coords:
        """A random group element; ``scale`` sets how far from the identity (ignored by compact groups)."""

    @abstractmethod
    def act(self, xi: Coords, params: list[Tensor], ctx: Any) -> list[Tensor]:
        """The parameters g·w, as new tensors (inputs untouched), differentiable in ``xi``."""

    def grad_norm_sq(self, xi: Coords, params: list[Tensor], batch: Batch, ctx: Any,
                     create_graph: bool = True) -> Tensor:
        """The teleport objective ||grad_w' L(w')||^2 at w' = g(xi)·w on ``batch``, differentiable in ``xi`` when
        ``create_graph``. Default: autograd through ``act`` and the loss (a double backward); a symmetry may give
        an exact closed form that costs less (every network symmetry does: ``batch_objective.py``)."""
        return autograd_grad_norm_sq(self.problem, self, xi, params, batch, ctx, create_graph)

    def value_and_direction(self, xi: Coords, params: list[Tensor], batch: Batch, ctx: Any) -> tuple[Tensor, Coords]:
        """The objective at ``xi`` (detached) and the direction an ascent step takes from there (what ``retract``
        moves along, scaled by the step size). Default: autograd of ``grad_norm_sq`` in the coordinates, then
        ``ascent_direction``; a symmetry may compute the direction another way (``gl_elements.ProbedElement``)."""
        leaves = [x.detach().requires_grad_(True) for x in xi]
        with torch.enable_grad():
            objective = self.grad_norm_sq(leaves, params, batch, ctx, True)
            grads = torch.autograd.grad(objective, leaves)
        return objective.detach(), self.ascent_direction([x.detach() for x in xi], list(grads), ctx)

    def ascent_direction(self, xi: Coords, grads: Coords, ctx: Any) -> Coords:
        """The direction an ascent step takes from ``xi``, given the objective's gradient ``grads`` in the coordinates.
        Default: ``grads`` (for abelian groups in exponential coordinates, an angle or log-scales, this is also the
        Lie-algebra gradient); the GL symmetries with ``parametrization: exp`` return the Lie-algebra gradient."""
        return grads

    def retract(self, xi: Coords, step: Coords, ctx: Any) -> Coords:
        """The point reached from ``xi`` by ``step`` (lr times an ``ascent_direction``). Default: xi + step."""
        return [x + s for x, s in zip(xi, step)]

    def orbit_curve(self, xi: Coords, M: Coords, t: Tensor, ctx: Any) -> Coords:
        """Coordinates of exp(t M)·g(xi) for a Lie-algebra direction M (shaped like ``xi``): the orbit curve
        through g·w that the curvature objective differentiates in t. Default: xi + t M (exponential coordinates
        of an abelian group: an angle, log-scales); the GL symmetries multiply by the matrix exponential."""
        return [x + t * m for x, m in zip(xi, M)]

    #: How ``teleport.max_group_norm`` bounds the ascent: "point" (the coordinates' norm, ||xi|| <= bound) or
    #: "path" (the summed norms of the ascent's steps <= bound: multiplicative steps, see ``layer_pairs.py``).
    bound: str = "point"

    def transform_state(self, xi: Coords, params: list[Tensor], ctx: Any, states: list[dict]) -> list[dict]:
        """Carry optimizer state across the teleport ``xi`` (``teleport.optimizer_state=transform``):
        one state dict per parameter in, one out (``params`` are the parameters before the teleport).

        Default: refuse, because the action is not linear in a way the state can follow."""
        from ..errors import ConfigError

        raise ConfigError(f"teleport.optimizer_state=transform is not supported by symmetry "
                          f"{self.name!r}: its action does not carry optimizer state linearly. "
                          "Use optimizer_state=keep or optimizer_state=reset.")

    def check_run(self, problem: Problem, teleporter, optimizer: torch.optim.Optimizer) -> None:
        """Refuse before training what would otherwise fail at the first teleport (``train.build`` calls it
        when teleports are enabled): here the optimizer-state policy; subclasses add e.g. batch-width checks."""
        if getattr(teleporter, "optimizer_state", "keep") == "transform":
            self.check_state_policy(optimizer)

    def check_state_policy(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise ``ConfigError`` when ``transform_state`` cannot carry ``optimizer``'s state."""
        if type(self).transform_state is Symmetry.transform_state:
            self.transform_state([], [], None, [])  # the default refusal, with its message


class NoSymmetry(Symmetry):
    """No group at all (``symmetry=none``): for solvers that move the parameters without one (``teleport=slp``,
    ``reset_only``), which never bind it. A group solver binding it is refused with the options that fit."""

    name = "none"

    def bind(self, problem: Problem) -> None:
        from ..errors import SymmetryMismatch

        raise SymmetryMismatch(
            f"symmetry=none has no group for the teleport solver to search (problem {problem.name!r}). Use "
            "teleport=slp (level-set teleportation, needs no group), teleport=reset_only or teleport=none with it, "
            "or choose a symmetry: level_set for rosenbrock, booth and quadratic; gl_data, gl_hidden, gl_linear or "
            "rescale for networks.")

    def identity(self, params, ctx) -> Coords:
        return []

    def sample(self, params, ctx, generator, scale) -> Coords:
        return []

    def act(self, xi, params, ctx) -> list[Tensor]:
        return [p.clone() for p in params]
