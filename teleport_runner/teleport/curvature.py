"""The curvature of the orbit as a teleport objective (the 2024 follow-up, arXiv 2305.13404).

Through the point w' = g·w the orbit curve along a Lie-algebra direction M is gamma(t) = exp(tM)·w'
(``Symmetry.orbit_curve`` gives its group coordinates). Its curvature at t = 0, in parameter space, is

    kappa = sqrt(|gamma'|^2 |gamma''|^2 - (gamma' . gamma'')^2) / |gamma'|^3

and the objective psi(w') is kappa averaged over ``n_directions`` directions M of unit Frobenius norm, drawn once
per teleport (isotropic: normalized Gaussian; ``positive``: normalized uniform on [0, 1), the follow-up's draw).
gamma' and gamma'' come from forward-mode differentiation of the action (nested ``torch.func.jvp``), which stays
differentiable in g, so the ascent differentiates psi by one backward through the two jvps.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import jvp

from ..errors import ConfigError
from ..symmetries.gl_elements import forward_ad_safe
from .objectives import Objective, Target, unit_draws


def curve_curvature(d1: Tensor, d2: Tensor) -> Tensor:
    """kappa of a curve with velocity d1 and acceleration d2 (flat vectors) at a point (Lagrange's identity form:
    ||d1 x d2|| / ||d1||^3 in any dimension)."""
    a, b, c = d1.square().sum(), d2.square().sum(), (d1 * d2).sum()
    return (a * b - c.square()).clamp_min(0).sqrt() / a.pow(1.5)


def derivatives(curve, dtype, device) -> tuple[Tensor, Tensor]:
    """(gamma'(0), gamma''(0)) of ``curve`` (a function of the scalar t returning a flat tensor), by nested jvp."""
    zero = torch.zeros((), dtype=dtype, device=device)
    one = torch.ones((), dtype=dtype, device=device)
    with forward_ad_safe():
        return jvp(lambda t: jvp(curve, (t,), (one,))[1], (zero,), (one,))


class CurvatureTarget(Target):
    def value(self, xi):
        total = 0.0
        for M in self.directions:
            def curve(t, M=M):
                coords = self.symmetry.orbit_curve(xi, M, t, self.ctx)
                return torch.cat([p.reshape(-1) for p in self.symmetry.act(coords, self.params, self.ctx)])

            total = total + curve_curvature(*derivatives(curve, self.params[0].dtype, self.params[0].device))
        return total / len(self.directions)


class Curvature(Objective):
    """psi: the mean curvature of the orbit curves exp(tM)·w at t = 0 (``n_directions`` unit directions M)."""

    name = "curvature"
    target = CurvatureTarget

    def __init__(self, direction: str, n_directions: int, directions: str):
        super().__init__(direction)
        self.n_directions, self.directions = int(n_directions), directions

    def check(self, symmetry) -> None:
        if getattr(symmetry, "subgroup", "full") != "full":
            raise ConfigError(f"teleport.objective=curvature does not support symmetry.subgroup="
                              f"{symmetry.subgroup!r}: its orbit curves are drawn in the Lie algebra of all of "
                              "GL(d). Use symmetry.subgroup=full.")

    def draw(self, target, generator):
        identity = target.symmetry.identity(target.params, target.ctx)
        target.directions = unit_draws([x.shape for x in identity], self.n_directions, self.directions, generator,
                                       target.params[0])
