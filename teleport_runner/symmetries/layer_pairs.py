"""What every network symmetry shares: the layer pairs it acts on, and the checks (GL(d) on them: ``gl_pairs``).

Pair m is (layer m, layer m+1); its group acts on the d_m-dimensional hidden layer between them (d_m = outputs
of layer m). Coordinates ``xi`` hold one tensor per pair (a d x d matrix T with g = I + T for GL(d), a vector t of
log-scales for rescaling), the identity at zero.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError, SymmetryMismatch
from ..problems.base import Problem
from .base import Coords, Symmetry

PARAMETRIZATIONS = ("exp", "linear")
SUBGROUPS = ("full", "batch")


def inverse_activation(name: str, slope: float):
    """sigma^-1 for bijective activations (LeakyReLU: slope 1/alpha on the negative side; identity)."""
    if name == "leaky_relu":  # itself a LeakyReLU, with slope 1/alpha: one op
        return lambda u: F.leaky_relu(u, 1 / slope)
    if name == "identity":
        return lambda u: u
    raise SymmetryMismatch(f"Activation {name!r} has no inverse on all of R.")


def warn_unbounded(name: str, teleporter) -> None:
    """Warn when an ascent on a non-compact group has no bound (``teleport.max_group_norm`` null)."""
    if hasattr(teleporter, "max_group_norm") and teleporter.max_group_norm is None:
        warnings.warn(
            f"teleport.max_group_norm is null with symmetry {name!r}: its group is not compact and the "
            "objective ||grad L(g·w)||^2 is unbounded on it, so the ascent can go far enough along the orbit "
            "that descent diverges after the teleport. The network presets bound it (paper_regression: 2.0, "
            "paper_mnist: 0.1); set teleport.max_group_norm (and a teleport.lr for the problem's scale).",
            stacklevel=3)


class LayerPairSymmetry(Symmetry):
    """Base class: a group acting on the hidden layers between chosen consecutive layer pairs.

    Args:
        pairs: null for every pair (0 .. n_layers-2), or a list of pair indices.
    """

    #: Warn when the ascent has no ``max_group_norm`` (False where a run is unbounded by design).
    warns_unbounded = True

    #: activations the action is exact for (None: all)
    activations: Sequence[str] | None = None
    why_not: str = ""

    def __init__(self, pairs: Sequence[int] | None = None):
        if pairs is not None:
            pairs = list(pairs)
            if not pairs or any(int(p) != p or p < 0 for p in pairs) or len(set(pairs)) != len(pairs):
                raise ConfigError(f"Invalid symmetry.pairs: {pairs!r}; use null (every consecutive layer pair) or "
                                  "a non-empty list of distinct pair indices >= 0 (pair m = layers m and m+1).")
        self.pairs_requested = pairs

    def for_problem(self, problem: Problem) -> Symmetry:
        """On a user's module, the GL symmetries act on its Linear pairs (``module_gl``)."""
        if getattr(problem, "is_module", False):
            from .module_gl import module_version

            return module_version(self)
        return self

    def bind(self, problem: Problem) -> None:
        if getattr(problem, "is_module", False):
            raise SymmetryMismatch(
                f"Symmetry {self.name!r} does not act on problem=module: for a module's own layers use "
                "symmetry=rescale (Linear and Conv2d pairs), gl_linear, gl_data or gl_hidden (Linear pairs), or "
                "teleport=none.")
        if not getattr(problem, "is_network", False):
            raise SymmetryMismatch(
                f"Symmetry {self.name!r} does not fit problem {problem.name!r}: it acts on the layers of a network "
                "(problem=mlp_regression, mnist or fashion_mnist). For the test functions use symmetry=level_set.")
        n_pairs = problem.n_layers - 1
        if n_pairs < 1:
            raise SymmetryMismatch(f"Symmetry {self.name!r} needs at least two layers; problem {problem.name!r} "
                                   f"has sizes {problem.sizes}.")
        if self.activations is not None and problem.activation not in self.activations:
            raise SymmetryMismatch(
                f"Symmetry {self.name!r} does not fit activation {problem.activation!r}: {self.why_not} "
                f"Valid activations for it: {', '.join(self.activations)}.")
        pairs = list(range(n_pairs)) if self.pairs_requested is None else [int(p) for p in self.pairs_requested]
        if max(pairs) >= n_pairs:
            raise ConfigError(f"Invalid symmetry.pairs: {pairs}; problem {problem.name!r} has {problem.n_layers} "
                              f"layers, so pair indices 0..{n_pairs - 1}.")
        # Later pairs first: then each pair's precomputed activations are those of the untransformed network
        # (see gl_data.py), and for data-free actions the order does not matter.
        self.pairs = sorted(pairs, reverse=True)
        super().bind(problem)

    def describe(self) -> list[str]:
        sizes = self.problem.sizes
        return [f"pair {m}: layer {m} ({sizes[m]} -> {sizes[m + 1]}) -> layer {m + 1} ({sizes[m + 1]} -> "
                f"{sizes[m + 2]}): {self.name} on {sizes[m + 1]} units" for m in sorted(self.pairs)]

    # --- coordinates -----------------------------------------------------------------------------------
    def width(self, m: int) -> int:
        return self.problem.sizes[m + 1]

    def _coord_shape(self, m: int, ctx) -> tuple[int, ...]:
        """GL(d): a d x d matrix T; the batch subgroup: U (d, r); rescale overrides with (d,)."""
        basis = self.basis(m, ctx)
        return (self.width(m), self.width(m) if basis is None else basis.shape[1])

    def basis(self, m: int, ctx):
        """V of pair m for ``subgroup: batch`` (built in ``prepare``), else None."""
        return None

    def identity(self, params, ctx) -> Coords:
        ref = params[0]
        return [torch.zeros(self._coord_shape(m, ctx), device=ref.device, dtype=ref.dtype) for m in self.pairs]

    def sample(self, params, ctx, generator, scale) -> Coords:
        """Coordinates ~ scale N(0, 1) / sqrt(d): for a d x d matrix the spectral norm is then about 2 scale
        whatever the width."""
        ref = params[0]
        return [scale * torch.randn(self._coord_shape(m, ctx), generator=generator, device=ref.device,
                                    dtype=ref.dtype) / self.width(m) ** 0.5 for m in self.pairs]

    # --- checks before training -------------------------------------------------------------------------
    def check_run(self, problem, teleporter, optimizer) -> None:
        super().check_run(problem, teleporter, optimizer)
        self.check_batch(problem.teleport_batch_size(getattr(teleporter, "batch_size", None)))
        if self.warns_unbounded:
            warn_unbounded(self.name, teleporter)

    def check_batch(self, batch_size: int) -> None:
        """Data-dependent actions refuse batches they cannot be exact on."""
