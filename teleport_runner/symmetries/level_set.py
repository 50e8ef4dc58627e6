"""Level-set rotations for losses of the form L(x) = ||h(x)||^2 with a bijection h."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import SymmetryMismatch
from ..problems.base import Problem
from ..problems.test_functions import LevelSetProblem
from .base import Coords, Symmetry


def rotation(xi: Tensor, n: int) -> Tensor:
    """R in SO(n) from coordinates: an angle for n = 2 (exact cos/sin), else exp(S - S^T) for an
    n x n matrix S (the matrix exponential of a skew-symmetric matrix is exactly orthogonal)."""
    if n == 2:
        c, s = torch.cos(xi), torch.sin(xi)
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    return torch.linalg.matrix_exp(xi - xi.T)


class LevelSetRotation(Symmetry):
    """SO(n) acting through the bijection h: g·x = h^-1(R h(x)), so ||h(g·x)|| = ||h(x)||.

    Group: SO(n) (an angle theta for n = 2, the exponential of a skew-symmetric matrix otherwise).
    Exact: for every x and every R, up to floating-point rounding in h and h^-1. Data-free.
    Source: Zhao et al. 2022, Prop. 4.1 (Rosenbrock, Booth); for a quadratic w^T A w, h = A^1/2 w gives
    the O(n) action A^-1/2 R A^1/2 w (reflections add nothing a continuous search can use).
    """

    name = "level_set"

    def bind(self, problem: Problem) -> None:
        if not isinstance(problem, LevelSetProblem):
            raise SymmetryMismatch(
                f"Symmetry 'level_set' does not fit problem {problem.name!r}: it needs a loss written as "
                "||h(x)||^2 with a bijection h (problem=rosenbrock, booth or quadratic). For networks use "
                "symmetry=gl_data, gl_hidden, gl_linear or rescale.")
        super().bind(problem)
        self.n = problem.dim

    def _zeros(self, params: list[Tensor]) -> Tensor:
        shape = () if self.n == 2 else (self.n, self.n)
        return torch.zeros(shape, device=params[0].device, dtype=params[0].dtype)

    def identity(self, params, ctx) -> Coords:
        return [self._zeros(params)]

    def sample(self, params, ctx, generator, scale) -> Coords:
        z = self._zeros(params)
        if self.n == 2:  # uniform angle in [0, pi), as the paper's Booth solver starts
            return [torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype) * torch.pi]
        return [scale * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)]

    def act(self, xi: Coords, params: list[Tensor], ctx) -> list[Tensor]:
        p = self.problem
        return [p.h_inv(rotation(xi[0], self.n) @ p.h(params[0]))]

    def prepare(self, params, batch) -> Tensor:
        """u = h(x), once per teleport: every candidate has h(g·x) = R u."""
        return self.problem.h(params[0].detach())

    def grad_norm_sq(self, xi, params, batch, ctx, create_graph: bool = True) -> Tensor:
        """||grad L(x')||^2 at x' = h^-1(R u) in closed form: grad L(x') = 2 J_h(x')^T h(x') with h(x') = R u known,
        so one vector-Jacobian product of h at x' (differentiable in xi when ``create_graph``) instead of the
        loss's gradient and a double backward through h(x), h^-1 and the loss."""
        v = rotation(xi[0], self.n) @ ctx  # h(x')
        x_new = self.problem.h_inv(v)
        with torch.enable_grad():
            if not x_new.requires_grad:
                x_new = x_new.detach().requires_grad_(True)
            (jv,) = torch.autograd.grad(self.problem.h(x_new), x_new, grad_outputs=v, create_graph=create_graph)
        return 4 * (jv @ jv)
