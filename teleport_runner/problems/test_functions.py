"""Test functions written as L(x) = ||h(x)||^2 with a bijection h (arXiv 2205.10637).

Writing the loss through h gives each function an exact level-set symmetry for free: any rotation R of
h-space keeps ||h||^2, so g·x = h^-1(R h(x)) stays on the level set (see ``symmetries/level_set.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import Batch, Problem


class LevelSetProblem(Problem):
    """A loss ||h(x)||^2 over x in R^n, started from a fixed point; full batch, no data."""

    #: (x_min, x_max, y_min, y_max) of the contour plot for 2-D problems
    plot_bounds: tuple[float, float, float, float] | None = None

    def __init__(self, start: Sequence[float]):
        self.start = [float(v) for v in start]
        if len(self.start) != self.dim:
            raise ConfigError(f"Invalid problem.start: {list(start)!r} has {len(self.start)} entries; "
                              f"{self.name} needs a point in R^{self.dim}.")

    dim: int = 2

    def init_params(self) -> list[Tensor]:
        return [torch.tensor(self.start, device=self.device, dtype=self.dtype, requires_grad=True)]

    def h(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def h_inv(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def minimum(self) -> list[float]:
        """The minimizer h^-1(0) (L = 0 there), marked on trajectory plots."""
        return [float(v) for v in self.h_inv(torch.zeros(self.dim, device=self.device, dtype=self.dtype))]

    def loss(self, params: list[Tensor], batch: Batch = None) -> Tensor:
        u = self.h(params[0])
        return u @ u  # one dot product: on 2-D problems every op is a measurable share of a step


class Rosenbrock(LevelSetProblem):
    """L = 100 (x1^2 - x2)^2 + (x1 - 1)^2; h = (10 (x1^2 - x2), x1 - 1); minimum 0 at (1, 1)."""

    name = "rosenbrock"
    plot_bounds = (-2.0, 2.0, -1.5, 3.0)

    def __init__(self, start: Sequence[float] = (-1.0, -1.0)):
        super().__init__(start)

    def h(self, x: Tensor) -> Tensor:
        x1, x2 = x.unbind()  # one op for both coordinates (three separate indexings cost 3 dispatches)
        return torch.stack([10 * (x1.square() - x2), x1 - 1])

    def h_inv(self, u: Tensor) -> Tensor:
        x1 = u[1] + 1
        return torch.stack([x1, x1**2 - u[0] / 10])


class Booth(LevelSetProblem):
    """L = (x1 + 2 x2 - 7)^2 + (2 x1 + x2 - 5)^2; h is linear; minimum 0 at (1, 3)."""

    name = "booth"
    plot_bounds = (-6.0, 8.0, -7.0, 7.0)

    def __init__(self, start: Sequence[float] = (5.0, -5.0)):
        super().__init__(start)

    def h(self, x: Tensor) -> Tensor:
        return torch.stack([x[0] + 2 * x[1] - 7, 2 * x[0] + x[1] - 5])

    def h_inv(self, u: Tensor) -> Tensor:
        return torch.stack([-u[0] / 3 + 2 * u[1] / 3 + 1, 2 * u[0] / 3 - u[1] / 3 + 3])


class Quadratic(LevelSetProblem):
    """L = w^T A w for a symmetric positive-definite A; h(w) = A^1/2 w, so the level-set action is the
    O(n) action g·w = A^-1/2 R A^1/2 w. Default: the ellipse x^2 + 9 y^2 started at (8, -2)."""

    name = "quadratic"

    def __init__(self, A: Sequence[Sequence[float]] = ((1.0, 0.0), (0.0, 9.0)),
                 start: Sequence[float] = (8.0, -2.0)):
        self.A_list = [[float(v) for v in row] for row in A]
        self.dim = len(self.A_list)
        A_t = torch.tensor(self.A_list, dtype=torch.float64, device="cpu")
        if A_t.ndim != 2 or A_t.shape[0] != A_t.shape[1]:
            raise ConfigError(f"Invalid problem.A: {self.A_list!r} is not a square matrix.")
        if not torch.allclose(A_t, A_t.T):
            raise ConfigError(f"Invalid problem.A: {self.A_list!r} is not symmetric.")
        evals, evecs = torch.linalg.eigh(A_t)
        if evals.min() <= 0:
            raise ConfigError(f"Invalid problem.A: {self.A_list!r} is not positive definite "
                              f"(smallest eigenvalue {evals.min().item():.3g}).")
        # A^{±1/2} once, in float64, then cast in setup: exact square roots, no per-step work.
        self._sqrt64 = evecs @ torch.diag(evals.sqrt()) @ evecs.T
        self._inv_sqrt64 = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
        super().__init__(start)
        if self.dim == 2:
            r = max(abs(v) for v in self.start) * 1.25
            self.plot_bounds = (-r, r, -r, r)

    def setup(self, device, dtype, seed) -> None:
        super().setup(device, dtype, seed)
        self.sqrt_A = self._sqrt64.to(device=self.device, dtype=dtype)
        self.inv_sqrt_A = self._inv_sqrt64.to(device=self.device, dtype=dtype)

    def h(self, x: Tensor) -> Tensor:
        return self.sqrt_A @ x

    def h_inv(self, u: Tensor) -> Tensor:
        return self.inv_sqrt_A @ u
