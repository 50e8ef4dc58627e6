"""Group elements of GL(d) as the network symmetries use them: the forms an element takes and the low-rank
exponential steps that move it (the matrix exponential itself is ``exponential.py``).

Every form offers the products the actions and the closed-form objective need, ``left`` (g M), ``rows`` (M g^T),
``right`` (M g) and ``right_inv`` (M g^-1), each exact (an LU solve or Woodbury, never a first-order inverse; the
one first-order form, ``TangentElement``'s, is only read for a value and a first derivative at E = 0, where it is
exact too):
``DenseElement`` (g = I + T), ``BatchSubgroupElement`` (g = I + U V^T, r x r work), ``KeptInverseElement`` (dense T
with g^-1 kept by the ascent), ``FactoredElement`` (a wide layer's ``exp`` iterate as the product of its low-rank
steps), and two that only the ``exp`` ascent's gradient uses: ``TangentElement`` ((I + E) g near a fixed g, for the
Lie-algebra gradient dF/dE at E = 0) and ``ProbedElement`` (recording the products for a factored Lie-algebra
gradient). Which form a pair uses, and how the ascent moves it, is ``layer_pairs.GLPairSymmetry``'s business.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
from torch import Tensor


def group_element(T: Tensor) -> Tensor:
    """g = I + T: the coordinates of every GL element are its offset from the identity (both parametrizations;
    they differ in how the ascent moves T, see ``GLPairSymmetry``)."""
    return torch.eye(T.shape[0], device=T.device, dtype=T.dtype) + T


#: Set while nested forward-mode AD runs through the action (``forward_ad_safe``): the curvature objective.
_NESTED_FORWARD_AD = False


@contextmanager
def forward_ad_safe():
    """Within this block ``right_divide`` takes the path that nested forward AD differentiates correctly."""
    global _NESTED_FORWARD_AD
    previous, _NESTED_FORWARD_AD = _NESTED_FORWARD_AD, True
    try:
        yield
    finally:
        _NESTED_FORWARD_AD = previous


def right_divide(W: Tensor, g: Tensor) -> Tensor:
    """W g^-1, exactly, by one LU solve (cheaper than forming g^-1).

    Never the first-order stand-in W (I - T) for W (I + T)^-1: that leaves the level set (docs/results.md).
    The ``_ex`` forms do not raise on a singular g: the result is then non-finite or far off the level set, and
    the teleport guard rejects it, instead of an exception in the middle of a teleport.

    Two paths, the same value. ``linalg.solve_ex``: its backward is one more solve with the same LU. Under
    nested forward AD (``forward_ad_safe``, the curvature objective) torch 2.13's ``solve`` drops a second-order
    term (pytorch/pytorch#196695), so there an explicit ``lu_factor_ex`` + ``lu_solve``, whose backward goes
    through the factorization: on GL(512) an ascent step measured ~90 ms against ~10 ms with ``solve_ex``
    (``scripts/bench.py``, ``gl_data[linear]``)."""
    if _NESTED_FORWARD_AD:
        lu, pivots, _ = torch.linalg.lu_factor_ex(g)
        return torch.linalg.lu_solve(lu, pivots, W, left=False)
    return torch.linalg.solve_ex(g, W, left=False)[0]


def group_matrices(T: Tensor) -> tuple[Tensor, Tensor]:
    """(g, g^-1), both exact (for actions that need g^-1 itself, such as carrying optimizer state)."""
    g = group_element(T)
    return g, right_divide(torch.eye(T.shape[0], device=T.device, dtype=T.dtype), g)


class DenseElement:
    """g = I + T in GL(d) from coordinates T (d x d)."""

    def __init__(self, T: Tensor):
        self.g = group_element(T)

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
    """g = I + U V^T in the subgroup of GL(d) that fixes the orthogonal complement of span(V) pointwise.

    V (d, r) is an orthonormal basis of the teleport batch's hidden vectors (``subgroup: batch``), U (d, r) the
    coordinates (the identity at U = 0; ||g - I||_F = ||U||_F). Exact, with r x r work only:
        g^-1 = I - U (I_r + V^T U)^-1 V^T   (Woodbury; the r x r matrix is invertible whenever g is).
    Every product with g or g^-1 then costs O(d k r) instead of O(d^2 k), and there is no d x d matrix at all.
    The subgroup is closed under products, (I + U1 V^T)(I + U V^T) = I + (U + U1 (I_r + V^T U)) V^T, and its Lie
    algebra is {X V^T}: ``exp`` ascent steps stay in it (``GLPairSymmetry.retract``).
    """

    def __init__(self, U: Tensor, V: Tensor):
        self.U, self.V = U, V

    @functools.cached_property
    def K_inv(self) -> Tensor:
        """-(I_r + V^T U)^-1, formed on first use: actions that never divide by g (gl_hidden) skip the solve."""
        eye = torch.eye(self.V.shape[1], device=self.U.device, dtype=self.U.dtype)
        return -torch.linalg.solve_ex(eye + self.V.T @ self.U, eye)[0]

    def left(self, M: Tensor) -> Tensor:
        return M + self.U @ (self.V.T @ M)

    def rows(self, M: Tensor) -> Tensor:
        return M + (M @ self.V) @ self.U.T

    def right(self, M: Tensor) -> Tensor:
        return M + (M @ self.U) @ self.V.T

    def right_inv(self, M: Tensor) -> Tensor:
        return M + ((M @ self.U) @ self.K_inv) @ self.V.T


class KeptInverseElement:
    """g = I + T with g^-1 = C kept by the caller (or None when the action never divides by g): products with
    batch-sized matrices as addmm's, no d x d identity, sum or LU."""

    def __init__(self, T: Tensor, C: Tensor | None):
        self.T, self.C = T, C
        self.width, self.device, self.dtype = T.shape[0], T.device, T.dtype

    def rows(self, M: Tensor) -> Tensor:
        return torch.addmm(M, M, self.T.T)

    def right(self, M: Tensor) -> Tensor:
        return torch.addmm(M, M, self.T)

    def left(self, M: Tensor) -> Tensor:
        return torch.addmm(M, self.T, M)

    def right_inv(self, M: Tensor) -> Tensor:
        return M @ self.C


class TangentElement:
    """The group element (I + E V^T) g (or (I + E) g with no basis V) near a fixed g (``base``: an element without
    gradients) for a zero leaf E, whose gradient is the ascent's Lie-algebra direction: the gradient of
    F(exp(E V^T) g) at E = 0, since exp(E V^T) = I + E V^T + O(E^2). Only the value at E = 0 and the first derivative
    there are ever used, and to first order (I + Delta)^-1 = I - Delta, so ``right_inv`` is M g^-1 - M g^-1 Delta:
    exact for both (this element never moves the parameters; ``act`` divides by g exactly). The products then cost
    g's products without their backward, plus one batch-sized product with E each: no LU solve and no derivative of
    one per ascent step, and dF/dE needs no conversion into a direction."""

    def __init__(self, base, E: Tensor, V: Tensor | None = None):
        self.base, self.E, self.V = base, E, V

    def _plus_times_delta(self, M: Tensor, alpha: float = 1.0, transposed: bool = False) -> Tensor:
        """M + alpha M Delta (or M Delta^T), Delta = E V^T, as one addmm."""
        if self.V is None:
            return torch.addmm(M, M, self.E.T if transposed else self.E, alpha=alpha)
        if transposed:
            return torch.addmm(M, M @ self.V, self.E.T, alpha=alpha)
        return torch.addmm(M, M @ self.E, self.V.T, alpha=alpha)

    def rows(self, M: Tensor) -> Tensor:
        return self._plus_times_delta(self.base.rows(M), transposed=True)

    def right(self, M: Tensor) -> Tensor:
        return self.base.right(self._plus_times_delta(M))

    def right_inv(self, M: Tensor) -> Tensor:
        return self._plus_times_delta(self.base.right_inv(M), alpha=-1.0)


class LowRankFactor:
    """One step F = I + Y V^T (Y, V: (d, r)) of a ``FactoredElement``, with the Woodbury term of its inverse,
    F^-1 = I - (Y K) V^T, K = (I_r + V^T Y)^-1, formed on first use: actions that never divide by g (gl_hidden)
    skip the r x r inverse (~45 us per pair and step on GL(512) at r = 40)."""

    def __init__(self, Y: Tensor, V: Tensor):
        self.Y, self.V = Y, V

    @functools.cached_property
    def YK(self) -> Tensor:
        eye = torch.eye(self.Y.shape[1], device=self.Y.device, dtype=self.Y.dtype)
        return self.Y @ torch.linalg.inv_ex(eye + self.V.T @ self.Y)[0]


class FactoredElement:
    """An ``exp`` ascent iterate on a wide layer kept as the product of its steps, g = F_k ... F_1 with
    F_j = exp(X_j V_j^T) = I + Y_j V_j^T (rank r each), and g^-1 = F_1^-1 ... F_k^-1 with
    F_j^-1 = I - Y_j K_j V_j^T, K_j = (I_r + V_j^T Y_j)^-1 (Woodbury; I_r + V_j^T Y_j = exp(V_j^T X_j) is invertible):
    coordinates T = g - I that are never formed during the ascent.

    A step appends one factor (no d x d work; ``LowRankFactor``); a product of g or g^-1 with k vectors costs
    O(k d R), R = the steps' total rank, against O(k d^2) with dense g, g^-1 and O(d^2 r) per step to update them.
    On 784-512-512-10 with a teleport batch of 20 (r = 40) an ascent step of gl_data then costs ~1.8-3.0 descent steps
    (scripts/bench.py, 10 steps; an earlier version with dense g and g^-1 updated per step measured 3.8-4.5).
    ``GLPairSymmetry`` goes on densely once R would pass d (``dense``, ``dense_inverse``: O(d^2 R) once), and the
    action multiplies the weights by the factors too (O(d R) per row; exact as an LU: each factor's inverse is exact
    to rounding). Iterates share their older factors (an immutable tuple), so the solver can keep every one it
    visits."""

    def __init__(self, steps: tuple, width: int, like: Tensor, parent_rows: tuple | None = None):
        self.steps, self.width = steps, width  # steps: (LowRankFactor, ...), oldest first
        self.rank = sum(step.V.shape[1] for step in steps)
        self.device, self.dtype = like.device, like.dtype
        # (M, M g^T) of the iterate this one stepped from: the objective applies g to the same batch activations
        # (a constant tensor) at every step, so one factor brings the parent's product up to date
        self.parent_rows, self.last_rows = parent_rows, None

    @classmethod
    def identity(cls, d: int, like: Tensor) -> "FactoredElement":
        return cls((), d, like)

    def times_exp(self, Y: Tensor, V: Tensor) -> "FactoredElement":
        """exp(X V^T) g, given exp(X V^T) = I + Y V^T."""
        return FactoredElement(self.steps + (LowRankFactor(Y, V),), self.width, Y, self.last_rows)

    def left(self, M: Tensor) -> Tensor:
        """g M (M: (d, k) or a vector (d,))."""
        product = torch.addmm if M.dim() == 2 else torch.addmv
        for step in self.steps:
            M = product(M, step.Y, step.V.T @ M)
        return M

    def rows(self, M: Tensor) -> Tensor:
        """M g^T (from the parent's M g^T when it had the same constant M: one factor instead of all)."""
        operand, steps = M, self.steps
        if self.parent_rows is not None and self.parent_rows[0] is M:
            M, steps = self.parent_rows[1], steps[-1:]
        for step in steps:
            M = torch.addmm(M, M @ step.V, step.Y.T)
        if not operand.requires_grad:
            self.last_rows = (operand, M)
        return M

    def right(self, M: Tensor) -> Tensor:
        """M g."""
        for step in reversed(self.steps):
            M = torch.addmm(M, M @ step.Y, step.V.T)
        return M

    def right_inv(self, M: Tensor) -> Tensor:
        """M g^-1."""
        for step in self.steps:
            M = torch.addmm(M, M @ step.YK, step.V.T, alpha=-1)
        return M

    def dense(self) -> Tensor:
        """T = g - I (d x d)."""
        eye = torch.eye(self.width, device=self.device, dtype=self.dtype)
        return self.left(eye) - eye

    def dense_inverse(self) -> Tensor:
        """g^-1 (d x d)."""
        return self.right_inv(torch.eye(self.width, device=self.device, dtype=self.dtype))


def step_basis(P: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """(X, V) with X V^T = P Q^T exactly and ||X||_F >= ||P Q^T||_F, V (d, r) orthonormal up to rounding, from a
    Cholesky factor of Q^T Q (r x r): a step X V^T then never moves further than the norm the solver counts for it
    (the path bound holds). Q^T Q + delta I = L L^T, V = Q L^-T, X = P L: X V^T = P Q^T for any delta > 0, and
    V^T V = I - delta L^-1 L^-T has norm <= 1, so ||X V^T|| <= ||X||. delta (relative rounding of the trace) keeps
    L invertible where Q has dependent columns (or is zero). A QR of Q does the same with an exactly orthonormal V
    and costs ~4x more on 512 x 40 (two per step on 784-512-512-10)."""
    gram = Q.T @ Q
    delta = torch.finfo(Q.dtype).eps * gram.diagonal().sum() + torch.finfo(Q.dtype).tiny
    L = torch.linalg.cholesky_ex(torch.diagonal_scatter(gram, gram.diagonal() + delta))[0]
    V = torch.linalg.solve_triangular(L, Q.T, upper=False).T
    return P @ L, V


def dense_coords(T) -> Tensor:
    """The d x d coordinates T of a GL element, whichever form the ascent kept them in."""
    return T.dense() if isinstance(T, FactoredElement) else T


class ProbedElement:
    """A group element (``KeptInverseElement`` or ``FactoredElement``) whose products with batch-sized matrices
    (``rows``, ``right``, ``right_inv``: all the closed-form objective uses) add a zero "probe" tensor to their
    result, for the factored ``exp`` direction on wide layers.

    After one backward, a probe's gradient G_bar (batch, d) and the product's operands give that product's share
    of the Lie-algebra gradient A (the gradient of F((I + E) g) in E at E = 0) as one (d x batch)(batch x d)
    outer product, so A comes as P Q^T with P, Q of width r = (products) x batch << d: no d x d gradient, no
    derivative of an inverse, no LU per step. The shares:
        rows M g^T: G_bar^T (M g^T)        right M g: M^T (g G_bar^T)^T        right_inv M g^-1: -(M g^-1)^T G_bar
    """

    def __init__(self, element):
        self.element = element
        self.records = []  # (probe, kind, operand M, product)

    def _probed(self, kind: str, M: Tensor, product: Tensor) -> Tensor:
        probe = torch.zeros_like(product, requires_grad=True)
        self.records.append((probe, kind, M.detach(), product.detach()))
        return product + probe

    def rows(self, M: Tensor) -> Tensor:
        return self._probed("rows", M, self.element.rows(M))

    def right(self, M: Tensor) -> Tensor:
        return self._probed("right", M, self.element.right(M))

    def right_inv(self, M: Tensor) -> Tensor:
        return self._probed("right_inv", M, self.element.right_inv(M))

    def factors(self, probe_grads: list[Tensor | None]) -> tuple[Tensor, Tensor]:
        """(P, Q) with P Q^T = A (see the class docstring), from the probes' gradients."""
        P, Q = [], []
        for (_, kind, M, product), G in zip(self.records, probe_grads):
            if G is None:  # a product the objective did not depend on
                continue
            if kind == "rows":
                P.append(G.T), Q.append(product.T)
            elif kind == "right":
                P.append(M.T), Q.append(self.element.left(G.T))  # g G^T
            else:
                P.append(-product.T), Q.append(G.T)
        if not P:  # the objective does not depend on this pair: a zero direction
            element = self.element
            P = Q = [torch.zeros(element.width, 1, device=element.device, dtype=element.dtype)]
        return torch.cat(P, 1), torch.cat(Q, 1)


def span_basis(vectors: Tensor) -> Tensor:
    """An orthonormal basis (d, r) of the span of the rows of ``vectors`` (batch, d), r = min(batch, d), from a
    reduced QR in float64. (Only the group's norm convention needs V orthonormal; exactness never does.)"""
    return torch.linalg.qr(vectors.double().T)[0].to(vectors.dtype)
