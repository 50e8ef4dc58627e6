"""Teleport a user's own model inside the user's own training loop, with the CLI's guard and solvers.

    tp = Teleporter(model, symmetry="rescale", solver="gradient_ascent", steps=10, lr=1.0, max_group_norm=1.0)
    event = tp.teleport((x, y), F.cross_entropy, optimizer=opt)   # between two optimizer steps

``teleport`` writes the teleported parameters into the model in place (``p.copy_``: the optimizer's state stays
attached), or leaves them untouched when the guard rolls the teleport back, and returns the same event dict the CLI
logs to teleports.jsonl (loss and ||grad L||^2 before and after, the relative loss drift, accepted). The loss is
measured with the model in eval mode (its previous mode is restored), so dropout does not make it random and
BatchNorm statistics are not updated by the teleport.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .errors import ConfigError, one_of
from .problems.base import Batch, Problem
from .problems.module import FunctionalModule
from .symmetries.base import Symmetry
from .symmetries.data_free import GLLinear, Rescale
from .symmetries.gl_data import GLData, GLHidden
from .teleport import GradientAscent, RandomSearch, TeleportSolver

SYMMETRIES = {"rescale": Rescale, "gl_linear": GLLinear, "gl_data": GLData, "gl_hidden": GLHidden}
SOLVERS = {"gradient_ascent": GradientAscent, "random_search": RandomSearch}


class ModelLoss(FunctionalModule, Problem):
    """A model and a loss function ``loss_fn(model(x), y)`` as a ``Problem`` on the batch given to ``teleport``."""

    is_module = True

    def __init__(self, model: nn.Module):
        FunctionalModule.__init__(self, model)
        self.name = f"module:{type(model).__name__}"
        self.loss_fn, self.batch, self.holdout = None, None, None

    def loss(self, params: list[Tensor], batch: Batch) -> Tensor:
        x, y = batch
        return self.loss_fn(self.forward(params, x), y)

    def teleport_batch_size(self, requested: int | None) -> int:
        return self.batch[0].shape[0]  # the batch given to teleport (what gl_data and gl_hidden check)

    def init_params(self) -> list[Tensor]:
        return list(self.model.parameters())

    def example_input(self) -> Tensor:
        return self.batch[0][:2]

    def teleport_batches(self, step: int, n: int, batch_size: int | None) -> list[Batch]:
        return [self.batch]

    def holdout_batch(self, step: int) -> Batch | None:
        return self.holdout


class Teleporter:
    """Symmetry teleportation for a user's ``nn.Module``.

    Args:
        model: the module; its parameters are teleported in place.
        symmetry: "rescale" (positive rescaling of the Linear/Conv2d pairs found in the model), "gl_linear",
            "gl_data" or "gl_hidden" (GL(d) on its Linear -> Linear pairs: ``module_gl``), or a ``Symmetry``.
        solver: "gradient_ascent" or "random_search", or a ``TeleportSolver`` (then the settings below are unused).
        steps, lr, max_group_norm: the ascent's steps, step size and bound on ||t|| (as ``teleport.*`` in the CLI).
        max_rel_drift: roll back a teleport whose relative loss change exceeds this (None: 1e-5 fp32, 1e-10 fp64).
        optimizer_state: keep, reset or transform (move the optimizer's state with the group action).
        pairs: indices of the discovered pairs to act on (None: all; ``describe()`` lists them).
        seed: seeds the generator of random starts and samples.
        **settings: other solver settings (``samples``, ``scale`` for random_search; ``init``).
    """

    def __init__(self, model: nn.Module, symmetry: str | Symmetry = "rescale", solver: str | TeleportSolver =
                 "gradient_ascent", steps: int = 10, lr: float = 1.0, max_group_norm: float | None = 1.0,
                 max_rel_drift: float | None = None, optimizer_state: str = "keep", pairs=None, seed: int = 0,
                 **settings):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Teleporter needs a torch.nn.Module; got {type(model).__name__}.")
        if isinstance(symmetry, str):
            if symmetry not in SYMMETRIES:
                raise one_of("symmetry", symmetry, SYMMETRIES)
            symmetry = SYMMETRIES[symmetry](pairs)
        if isinstance(solver, str):
            if solver not in SOLVERS:
                raise one_of("solver", solver, SOLVERS)
            solver = SOLVERS[solver](steps=steps, lr=lr, max_group_norm=max_group_norm, max_rel_drift=max_rel_drift,
                                     optimizer_state=optimizer_state, **settings)
        self.model, self.solver, self.seed = model, solver, int(seed)
        self.problem = ModelLoss(model)
        self._symmetry, self.symmetry, self._checked = symmetry, None, set()
        self.count, self.generator, self._input_shape = 0, None, None

    def _bind(self, x: Tensor) -> Symmetry:
        """The symmetry bound to the model (found at the first teleport; again when the input shape changes)."""
        key = tuple(x.shape[1:])
        if self.symmetry is None or self._input_shape != key:
            self.symmetry = self._symmetry.for_problem(self.problem)
            self.symmetry.bind(self.problem)
            self._input_shape, self._checked = key, set()
        return self.symmetry

    def describe(self, example_input: Tensor) -> list[str]:
        """The pairs the symmetry acts on and the layers it skips, one line each."""
        self.problem.batch = (example_input, None)
        return self._bind(example_input).describe()

    def teleport(self, batch: Batch, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 optimizer: torch.optim.Optimizer | None = None, holdout: Batch | None = None,
                 step: int | None = None) -> dict:
        """Teleport once on ``batch`` = (inputs, targets) with loss ``loss_fn(model(inputs), targets)``; returns the
        event dict. ``holdout``: a batch the guard also checks (a teleport that changes its loss is rolled back).
        ``optimizer``: needed for optimizer_state reset or transform."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and torch.is_tensor(batch[0])):
            raise ConfigError(f"Invalid batch: {type(batch).__name__}; Teleporter.teleport takes (inputs, targets).")
        if optimizer is None and self.solver.optimizer_state != "keep":
            raise ConfigError(f"optimizer_state={self.solver.optimizer_state!r} needs the optimizer: "
                              "tp.teleport(batch, loss_fn, optimizer=opt).")
        params = list(self.model.parameters())
        problem = self.problem
        problem.loss_fn, problem.batch, problem.holdout = loss_fn, tuple(batch), holdout
        problem.device, problem.dtype, problem.seed = params[0].device, params[0].dtype, self.seed
        if self.generator is None:
            self.generator = torch.Generator(device=params[0].device).manual_seed(self.seed)
        training = self.model.training
        self.model.eval()
        try:
            symmetry = self._bind(batch[0])
            if id(optimizer) not in self._checked:
                symmetry.check_run(problem, self.solver, optimizer)
                self._checked.add(id(optimizer))
            (event,) = self.solver.teleport(self.count if step is None else step, problem, symmetry, params,
                                            optimizer, self.generator)
        finally:
            self.model.train(training)
        self.count += 1
        return event
