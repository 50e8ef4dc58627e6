"""What every network symmetry shares: the layer pairs it acts on, the checks, and the GL(d) parametrization.

Pair m is (layer m, layer m+1); its group acts on the d_m-dimensional hidden layer between them (d_m = outputs
of layer m). Coordinates ``xi`` hold one tensor per pair (a d x d matrix T for GL(d), a vector t for rescaling),
the identity at zero.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, SymmetryMismatch, one_of
from ..problems.base import Problem
from .base import Coords, Symmetry

PARAMETRIZATIONS = ("exp", "linear")
SUBGROUPS = ("full", "batch")


def group_element(T: Tensor, parametrization: str) -> Tensor:
    """g = exp(T) (``exp``: invertible for every T) or g = I + T (``linear``, the paper's parametrization)."""
    if parametrization == "exp":
        return torch.linalg.matrix_exp(T)
    return torch.eye(T.shape[0], device=T.device, dtype=T.dtype) + T


def right_divide(W: Tensor, g: Tensor) -> Tensor:
    """W g^-1, exactly, by one LU solve (cheaper than forming g^-1, and its backward is one more solve).

    Never the first-order stand-in W (I - T) for W (I + T)^-1: that leaves the level set (reference.md §4).
    ``solve_ex`` does not raise on a singular g: the result is then non-finite or far off the level set, and
    the teleport guard rejects it, instead of an exception in the middle of a teleport."""
    return torch.linalg.solve_ex(g, W, left=False)[0]


def group_matrices(T: Tensor, parametrization: str) -> tuple[Tensor, Tensor]:
    """(g, g^-1), both exact (for actions that need g^-1 itself, such as carrying optimizer state)."""
    g = group_element(T, parametrization)
    return g, right_divide(torch.eye(T.shape[0], device=T.device, dtype=T.dtype), g)


class DenseElement:
    """g in GL(d) from coordinates T (d x d): g = exp(T) or I + T."""

    def __init__(self, T: Tensor, parametrization: str):
        self.g = group_element(T, parametrization)

    def left(self, M: Tensor) -> Tensor:
        """g M (M: (d, k) or a vector (d,))."""
        return self.g @ M

    def rows(self, M: Tensor) -> Tensor:
        """g applied to every row of M (batch, d): M g^T."""
        return M @ self.g.T

    def right(self, M: Tensor) -> Tensor:
        """M g (M: (k, d))."""
        return M @ self.g

    def right_inv(self, M: Tensor) -> Tensor:
        """M g^-1 (M: (k, d))."""
        return right_divide(M, self.g)


class BatchSubgroupElement:
    """g in the subgroup {I + U K V^T} of GL(d) that fixes the orthogonal complement of span(V) pointwise.

    V (d, r) is an orthonormal basis of the teleport batch's hidden vectors (``subgroup: batch``), U (d, r) the
    coordinates (the identity at U = 0; ||T||_F = ||U||_F for T = U V^T). Exact, with r x r work only:
        linear: g = I + U V^T                          (K = I, never multiplied)
        exp:    g = exp(U V^T) = I + U phi(V^T U) V^T   (K = phi(V^T U)),
                phi(A) = sum_k A^k / (k+1)!, the top-right block of exp([[A, I], [0, 0]]);
        both:   g^-1 = I - U K (I_r + V^T U K)^-1 V^T  (Woodbury; the r x r matrix is invertible whenever g is).
    Every product with g or g^-1 then costs O(d k r) instead of O(d^2 k), and there is no d x d matrix at all.
    """

    def __init__(self, U: Tensor, V: Tensor, parametrization: str):
        r = V.shape[1]
        eye = torch.eye(r, device=U.device, dtype=U.dtype)
        A = V.T @ U
        if parametrization == "exp":
            self.K = _phi(A)
            # K_inv = -K (I + A K)^-1: one r x r solve (no second matrix exponential for phi(-A))
            self.K_inv = -torch.linalg.solve_ex(eye + A @ self.K, self.K, left=False)[0]
        else:  # K = I: no products with it
            self.K, self.K_inv = None, -torch.linalg.solve_ex(eye + A, eye)[0]
        self.U, self.V = U, V

    def left(self, M: Tensor) -> Tensor:
        VtM = self.V.T @ M
        return M + self.U @ (VtM if self.K is None else self.K @ VtM)

    def rows(self, M: Tensor) -> Tensor:
        MV = M @ self.V
        return M + (MV if self.K is None else MV @ self.K.T) @ self.U.T

    def right(self, M: Tensor) -> Tensor:
        MU = M @ self.U
        return M + (MU if self.K is None else MU @ self.K) @ self.V.T

    def right_inv(self, M: Tensor) -> Tensor:
        return M + ((M @ self.U) @ self.K_inv) @ self.V.T


def _phi(A: Tensor) -> Tensor:
    """phi(A) = (exp(A) - I) A^-1 (defined for every A) as a block of one 2r x 2r matrix exponential."""
    r = A.shape[0]
    top = torch.cat([A, torch.eye(r, device=A.device, dtype=A.dtype)], 1)
    block = torch.cat([top, torch.zeros_like(top)], 0)
    return torch.linalg.matrix_exp(block)[:r, r:]


def span_basis(vectors: Tensor) -> Tensor:
    """An orthonormal basis (d, r) of the span of the rows of ``vectors`` (batch, d), r = min(batch, d), from a
    reduced QR in float64. (Only the group's norm convention needs V orthonormal; exactness never does.)"""
    return torch.linalg.qr(vectors.double().T)[0].to(vectors.dtype)


def inverse_activation(name: str, slope: float):
    """sigma^-1 for bijective activations (LeakyReLU: slope 1/alpha on the negative side; identity)."""
    if name == "leaky_relu":  # itself a LeakyReLU, with slope 1/alpha: one op
        return lambda u: F.leaky_relu(u, 1 / slope)
    if name == "identity":
        return lambda u: u
    raise SymmetryMismatch(f"Activation {name!r} has no inverse on all of R.")


class LayerPairSymmetry(Symmetry):
    """Base class: a group acting on the hidden layers between chosen consecutive layer pairs.

    Args:
        pairs: null for every pair (0 .. n_layers-2), or a list of pair indices.
        parametrization: ``exp`` (g = matrix_exp(T), default: invertible for every T, conditioning bounded by
            ``max_group_norm``) or ``linear`` (g = I + T, the paper's: no matrix_exp, so ~2.5x cheaper per ascent
            step on small networks and ~40x on GL(512), but singular when T has an eigenvalue -1: keep
            ``teleport.max_group_norm`` < 1). Both exact: the inverse is an LU solve, not the official I - T.
    """

    #: activations the action is exact for (None: all)
    activations: Sequence[str] | None = None
    why_not: str = ""

    def __init__(self, pairs: Sequence[int] | None = None, parametrization: str = "exp"):
        if parametrization not in PARAMETRIZATIONS:
            raise one_of("symmetry.parametrization", parametrization, PARAMETRIZATIONS)
        if pairs is not None:
            pairs = list(pairs)
            if not pairs or any(int(p) != p or p < 0 for p in pairs) or len(set(pairs)) != len(pairs):
                raise ConfigError(f"Invalid symmetry.pairs: {pairs!r}; use null (every consecutive layer pair) or "
                                  "a non-empty list of distinct pair indices >= 0 (pair m = layers m and m+1).")
        self.pairs_requested = pairs
        self.parametrization = parametrization

    def bind(self, problem: Problem) -> None:
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

    def element(self, T: Tensor, m: int, ctx):
        """The group element of pair m with coordinates T."""
        basis = self.basis(m, ctx)
        if basis is None:
            return DenseElement(T, self.parametrization)
        return BatchSubgroupElement(T, basis, self.parametrization)

    def elements(self, xi: Coords, ctx) -> dict:
        """{pair: group element} for all pairs (what the closed-form objective reads)."""
        return {m: self.element(T, m, ctx) for T, m in zip(xi, self.pairs)}

    def identity(self, params, ctx) -> Coords:
        ref = params[0]
        return [torch.zeros(self._coord_shape(m, ctx), device=ref.device, dtype=ref.dtype) for m in self.pairs]

    def sample(self, params, ctx, generator, scale) -> Coords:
        """T ~ scale N(0, 1) / sqrt(d): the spectral norm of T is then about 2 scale whatever the width."""
        ref = params[0]
        return [scale * torch.randn(self._coord_shape(m, ctx), generator=generator, device=ref.device,
                                    dtype=ref.dtype) / self.width(m) ** 0.5 for m in self.pairs]

    # --- checks before training -------------------------------------------------------------------------
    def check_run(self, problem, teleporter, optimizer) -> None:
        super().check_run(problem, teleporter, optimizer)
        self.check_batch(problem.teleport_batch_size(getattr(teleporter, "batch_size", None)))
        if hasattr(teleporter, "max_group_norm") and teleporter.max_group_norm is None:
            warnings.warn(
                f"teleport.max_group_norm is null with symmetry {self.name!r}: its group is not compact and the "
                "objective ||grad L(g·w)||^2 is unbounded on it, so the ascent can go far enough along the orbit "
                "that descent diverges after the teleport. The network presets bound it (paper_regression: 2.0, "
                "paper_mnist: 0.1); set teleport.max_group_norm (and a teleport.lr for the problem's scale).",
                stacklevel=2)

    def check_batch(self, batch_size: int) -> None:
        """Data-dependent actions refuse batches they cannot be exact on."""
