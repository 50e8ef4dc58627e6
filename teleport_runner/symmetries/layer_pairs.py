"""What every network symmetry shares (the layer pairs it acts on, the checks), and GL(d) on them.

Pair m is (layer m, layer m+1); its group acts on the d_m-dimensional hidden layer between them (d_m = outputs
of layer m). Coordinates ``xi`` hold one tensor per pair (a d x d matrix T with g = I + T for GL(d), a vector t of
log-scales for rescaling), the identity at zero.
"""
from __future__ import annotations

import functools
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


def group_element(T: Tensor) -> Tensor:
    """g = I + T: the coordinates of every GL element are its offset from the identity (both parametrizations;
    they differ in how the ascent moves T, see ``GLPairSymmetry``)."""
    return torch.eye(T.shape[0], device=T.device, dtype=T.dtype) + T


def right_divide(W: Tensor, g: Tensor) -> Tensor:
    """W g^-1, exactly, by one LU solve (cheaper than forming g^-1, and its backward is one more solve).

    Never the first-order stand-in W (I - T) for W (I + T)^-1: that leaves the level set (reference.md §4).
    ``solve_ex`` does not raise on a singular g: the result is then non-finite or far off the level set, and
    the teleport guard rejects it, instead of an exception in the middle of a teleport."""
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


class FactoredElement:
    """An ``exp`` ascent iterate on a wide layer kept as the product of its steps, g = F_k ... F_1 with
    F_j = exp(X_j V_j^T) = I + Y_j V_j^T (rank r each), and g^-1 = F_1^-1 ... F_k^-1 with
    F_j^-1 = I - Y_j K_j V_j^T, K_j = (I_r + V_j^T Y_j)^-1 (Woodbury; I_r + V_j^T Y_j = exp(V_j^T X_j) is invertible):
    coordinates T = g - I that are never formed during the ascent.

    A step appends one factor (an r x r inverse, no d x d work); a product of g or g^-1 with k vectors costs
    O(k d R), R = the steps' total rank, against O(k d^2) with dense g, g^-1 and O(d^2 r) per step to update them.
    On 784-512-512-10 with a teleport batch of 20 (r = 40) an ascent step of gl_data then costs ~2.5 descent steps
    instead of 3.8-4.5 (scripts/bench.py, 10 steps).
    ``GLPairSymmetry`` goes on densely once R would pass d (``dense``, ``dense_inverse``: O(d^2 R) once), and the
    action multiplies the weights by the factors too (O(d R) per row; exact as an LU: each factor's inverse is exact
    to rounding). Iterates share their older factors (an immutable tuple), so the solver can keep every one it
    visits."""

    def __init__(self, steps: tuple, width: int, like: Tensor, parent_rows: tuple | None = None):
        self.steps, self.width = steps, width  # steps: ((Y_j, V_j, Y_j K_j), ...), oldest first
        self.rank = sum(step[1].shape[1] for step in steps)
        self.device, self.dtype = like.device, like.dtype
        # (M, M g^T) of the iterate this one stepped from: the objective applies g to the same batch activations
        # (a constant tensor) at every step, so one factor brings the parent's product up to date
        self.parent_rows, self.last_rows = parent_rows, None

    @classmethod
    def identity(cls, d: int, like: Tensor) -> "FactoredElement":
        return cls((), d, like)

    def times_exp(self, Y: Tensor, V: Tensor) -> "FactoredElement":
        """exp(X V^T) g, given exp(X V^T) = I + Y V^T."""
        K = torch.linalg.inv_ex(torch.eye(Y.shape[1], device=Y.device, dtype=Y.dtype) + V.T @ Y)[0]
        return FactoredElement(self.steps + ((Y, V, Y @ K),), self.width, Y, self.last_rows)

    def left(self, M: Tensor) -> Tensor:
        """g M (M: (d, k) or a vector (d,))."""
        product = torch.addmm if M.dim() == 2 else torch.addmv
        for Y, V, _ in self.steps:
            M = product(M, Y, V.T @ M)
        return M

    def rows(self, M: Tensor) -> Tensor:
        """M g^T (from the parent's M g^T when it had the same constant M: one factor instead of all)."""
        operand, steps = M, self.steps
        if self.parent_rows is not None and self.parent_rows[0] is M:
            M, steps = self.parent_rows[1], steps[-1:]
        for Y, V, _ in steps:
            M = torch.addmm(M, M @ V, Y.T)
        if not operand.requires_grad:
            self.last_rows = (operand, M)
        return M

    def right(self, M: Tensor) -> Tensor:
        """M g."""
        for Y, V, _ in reversed(self.steps):
            M = torch.addmm(M, M @ Y, V.T)
        return M

    def right_inv(self, M: Tensor) -> Tensor:
        """M g^-1."""
        for _, V, YK in self.steps:
            M = torch.addmm(M, M @ YK, V.T, alpha=-1)
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


#: The identity block's scale in ``phi_block``: a power of two, so dividing by it is exact.
PHI_SCALE = 2.0 ** -10


def phi_block(A: Tensor) -> Tensor:
    """[[A, s I], [0, 0]] (2r x 2r, s = ``PHI_SCALE``): its exponential holds s phi(A), phi(A) = sum_k A^k / (k+1)!, in
    the top-right block (``phi_of``), so exp(X V^T) = I + X phi(V^T X) V^T takes one 2r x 2r exponential instead of a
    d x d one. Why s < 1: the top-right block of every power and product is linear in s (the zero blocks stay exactly
    zero), so its relative rounding does not depend on s, while ``matrix_exp`` picks its Taylor degree and
    squarings from the whole matrix's norm; with s = 1 that norm is at least 1 however small the step, and the call
    costs 2-3x more (measured on 80 x 80 blocks, ||A|| <= 0.1; the same accuracy against scipy's expm)."""
    r = A.shape[0]
    top = torch.cat([A, torch.eye(r, device=A.device, dtype=A.dtype).mul_(PHI_SCALE)], 1)
    return torch.cat([top, torch.zeros_like(top)], 0)


def phi_of(exp_block: Tensor) -> Tensor:
    """phi(A) from the exponential of ``phi_block(A)``."""
    r = exp_block.shape[0] // 2
    return exp_block[:r, r:] / PHI_SCALE


#: Up to this total size ``matrix_exps`` exponentiates one block-diagonal matrix (call overhead dominates there).
BLOCK_DIAG_MAX = 64


def matrix_exps(matrices: list[Tensor]) -> list[Tensor]:
    """exp of square matrices of different sizes in one ``torch.linalg.matrix_exp`` call, which costs one call's
    overhead instead of one per matrix (below ~64 the overhead, not the flops, dominates). Small ones as one
    block-diagonal matrix, whose exponential is the block-diagonal of theirs (and a 2-D call skips the batched
    path's per-call degree bucketing); larger ones zero-padded into a batch (exp of [[A, 0], [0, 0]] is
    [[exp(A), 0], [0, I]]), which keeps the O(n^3) work per matrix."""
    sizes = [a.shape[0] for a in matrices]
    if sum(sizes) <= BLOCK_DIAG_MAX:
        E = torch.linalg.matrix_exp(torch.block_diag(*matrices))
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [E[i:i + n, i:i + n] for i, n in zip(starts, sizes)]
    n = max(sizes)
    out = torch.linalg.matrix_exp(torch.stack([F.pad(a, (0, n - k, 0, n - k)) if k < n else a
                                               for a, k in zip(matrices, sizes)]))
    return [e[:k, :k] for e, k in zip(out, sizes)]


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
    """

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
        if hasattr(teleporter, "max_group_norm") and teleporter.max_group_norm is None:
            warnings.warn(
                f"teleport.max_group_norm is null with symmetry {self.name!r}: its group is not compact and the "
                "objective ||grad L(g·w)||^2 is unbounded on it, so the ascent can go far enough along the orbit "
                "that descent diverges after the teleport. The network presets bound it (paper_regression: 2.0, "
                "paper_mnist: 0.1); set teleport.max_group_norm (and a teleport.lr for the problem's scale).",
                stacklevel=2)

    def check_batch(self, batch_size: int) -> None:
        """Data-dependent actions refuse batches they cannot be exact on."""


class GLPairSymmetry(LayerPairSymmetry):
    """GL(d_m) on each chosen pair's hidden layer, g = I + T, and how the ascent moves it.

    Args:
        pairs: as ``LayerPairSymmetry``.
        parametrization: how the ascent moves g. The coordinates are always T = g - I (g = I + T, the identity at
            T = 0; ``bound`` says what ``teleport.max_group_norm`` bounds); ``exp`` (default) takes Lie-algebra steps,
            g <- exp(lr A) g with A = dF/dg g^T the gradient of the objective F at the current g in the
            direction of a left multiplication (the paper's "T initialized to 0" at every step, with the exact
            exponential instead of I + T): every iterate is a product of exponentials, so invertible with
            det > 0, and an ascent step needs one forward ``matrix_exp`` of all pairs (no derivative of it).
            ``linear`` takes additive steps T <- T + lr dF/dT, the paper's g = I + T: no exponential at all,
            but g is singular where T has an eigenvalue -1 (keep ``max_group_norm`` < 1). Both exact: W g^-1
            is an LU solve (or Woodbury in the batch subgroup), never the official I - T.
    """

    def __init__(self, pairs: Sequence[int] | None = None, parametrization: str = "exp"):
        if parametrization not in PARAMETRIZATIONS:
            raise one_of("symmetry.parametrization", parametrization, PARAMETRIZATIONS)
        super().__init__(pairs)
        self.parametrization = parametrization

    def element(self, T: Tensor, m: int, ctx):
        """The group element of pair m with coordinates T (a ``FactoredElement`` is one itself: its products with the
        weights cost O(d R) per row, never d x d work)."""
        if isinstance(T, FactoredElement):
            return T
        basis = self.basis(m, ctx)
        if basis is None:
            return DenseElement(T)
        return BatchSubgroupElement(T, basis)

    def identity(self, params, ctx) -> Coords:
        """Zeros; a pair whose ascent is factored starts as an empty ``FactoredElement`` (rank 0)."""
        factored, ref = self.factored_pairs(ctx), params[0]
        return [FactoredElement.identity(self.width(m), ref) if m in factored
                else torch.zeros(self._coord_shape(m, ctx), device=ref.device, dtype=ref.dtype) for m in self.pairs]

    def elements(self, xi: Coords, ctx) -> dict:
        """{pair: group element} for all pairs (what the closed-form objective reads)."""
        return {m: self.element(T, m, ctx) for T, m in zip(xi, self.pairs)}

    def sample(self, params, ctx, generator, scale) -> Coords:
        """g = exp(S) (``exp``; in the batch subgroup exp(S V^T)) or I + S (``linear``), S ~ scale N(0, 1) / sqrt(d):
        the spectral norm of S is then about 2 scale whatever the width."""
        S = super().sample(params, ctx, generator, scale)
        if self.parametrization == "linear":
            return S
        return self._times_exp([torch.zeros_like(s) for s in S], S, ctx)

    @property
    def bound(self) -> str:
        """``exp``: ``max_group_norm`` bounds the ascent's path in the Lie algebra, sum_k ||lr A_k||_F, which keeps
        the singular values of g within exp(+-bound) as ||T|| did for g = exp(T); ``linear``: ||T||_F itself."""
        return "path" if self.parametrization == "exp" else "point"

    #: With ``exp``, a dense pair's ascent direction is computed in factored form (``ProbedElement``) when its width
    #: is at least this many times the teleport batch: A then has rank <= 3 x batch << d, and from the identity the
    #: iterate is the product of its steps (``FactoredElement``): a step costs O(d R batch) for the steps' total
    #: rank R, instead of the O(d^3) of a d x d exponential and LU factorization. ``linear`` is never factored:
    #: its dense step is already O(d^2 batch) but for gl_data's one LU, and its point bound rescales T.
    factored_min_width_per_sample = 6
    #: closed-form objective available (``batch_objective.ClosedFormObjective`` sets it)
    uses_closed_form = False
    #: the action multiplies by g^-1 (then a factored step also keeps (I + T)^-1 up to date)
    uses_inverse = True

    def factored_pairs(self, ctx) -> list[int]:
        """The dense pairs whose direction is taken in factored form at this teleport (wide layers, ``exp``)."""
        if not self.uses_closed_form or self.parametrization != "exp":
            return []
        batch = ctx.trace.inputs[0].shape[0]
        return [m for m in self.pairs if self.basis(m, ctx) is None
                and self.width(m) >= self.factored_min_width_per_sample * batch]

    def value_and_direction(self, xi, params, batch, ctx):
        """As ``Symmetry.value_and_direction``; for wide dense pairs the factored gradient P Q^T (``ProbedElement``)
        is returned as X = P L in the step basis V = Q L^-T kept in ``ctx.step_bases`` (``step_basis``)."""
        factored = self.factored_pairs(ctx)
        if not factored:
            return super().value_and_direction(xi, params, batch, ctx)
        leaves = [x if m in factored else x.detach().requires_grad_(True) for x, m in zip(xi, self.pairs)]
        with torch.enable_grad():
            elements = {m: ProbedElement(self._factored_element(T, m, ctx)) if m in factored
                        else self.element(T, m, ctx) for T, m in zip(leaves, self.pairs)}
            objective = self.objective_at(elements, params, ctx)
            others = [x for x, m in zip(leaves, self.pairs) if m not in factored]
            probes = [record[0] for m in factored for record in elements[m].records]
            grads = torch.autograd.grad(objective, others + probes, allow_unused=True)
        other_grads, probe_grads = iter(grads[:len(others)]), grads[len(others):]
        directions = []
        for T, m in zip(leaves, self.pairs):
            if m not in factored:
                T = T.detach()
                G = next(other_grads)
                directions.append(self._direction(T, torch.zeros_like(T) if G is None else G, m, ctx))
                continue
            element = elements[m]
            P, Q = element.factors(probe_grads[:len(element.records)])
            probe_grads = probe_grads[len(element.records):]
            X, ctx.step_bases[m] = step_basis(P, Q)
            directions.append(X)
        return objective.detach(), directions

    def _factored_element(self, T, m: int, ctx):
        """The element a factored direction is taken at: the iterate itself while it is a ``FactoredElement``, else
        the dense T with its kept inverse."""
        if isinstance(T, FactoredElement):
            return T
        return KeptInverseElement(T.detach(), self._inverse(T, m, ctx) if self.uses_inverse else None)

    def _inverse(self, T: Tensor, m: int, ctx) -> Tensor:
        """(I + T)^-1: the one the last factored step computed for this very tensor T (same storage, not modified
        since: ``retract``'s output, as the solver passes it back), else an LU inverse (once per teleport)."""
        cached = ctx.inverses.get(m)
        if cached is not None:
            ref, version, C = cached
            if ref.data_ptr() == T.data_ptr() and ref._version == version and ref.shape == T.shape:
                return C
        T = T.detach()
        C = torch.linalg.inv_ex(group_element(T))[0]
        ctx.inverses[m] = (T, T._version, C)
        return C

    def ascent_direction(self, xi, grads, ctx) -> Coords:
        return [self._direction(T, G, m, ctx) for T, G, m in zip(xi, grads, self.pairs)]

    def _direction(self, T, G, m, ctx) -> Tensor:
        """``linear``: dF/dT. ``exp``: the Lie-algebra gradient A = dF/dg g^T (the gradient of F(exp(A) g) at A = 0);
        in the batch subgroup A = X V^T, returned as X = dF/dU (I_r + V^T U)^T."""
        if self.parametrization == "linear":
            return G
        V = self.basis(m, ctx)
        return torch.addmm(G, G, T.T if V is None else T.T @ V)  # G (I + T)^T, G (I + V^T U)^T

    def retract(self, xi, step, ctx) -> Coords:
        """``linear``: T + step. ``exp``: the coordinates of exp(A) g for the algebra step A (a factored step X
        means A = X V^T with V = ``ctx.step_bases[m]``, and (I + T')^-1 is updated in O(d^2 r) for the next step)."""
        if self.parametrization == "linear":
            return super().retract(xi, step, ctx)
        return self._times_exp(xi, step, ctx, getattr(ctx, "step_bases", None))

    def _times_exp(self, xi, steps, ctx, step_bases=None) -> Coords:
        """Coordinates of exp(A_m) g_m for every pair, all exponentials in one call. Dense: A = X, g' = g +
        (exp(X) - I) g. Batch subgroup (coordinates U, basis V) or a factored step (dense T, step basis V):
        A = X V^T, exp(X V^T) = I + Y V^T with Y = X phi(V^T X) (a 2r x 2r exponential); then U' = U + Y (I_r + V^T U),
        or T' = T + Y V^T (I + T) with (I + T')^-1 by Woodbury (an r x r solve), or for a ``FactoredElement`` new
        factors (``FactoredElement.times_exp``)."""
        step_bases = {} if step_bases is None else step_bases
        kinds = []  # per pair: (kind, V)
        blocks = []
        for X, m in zip(steps, self.pairs):
            V = step_bases.pop(m, None)
            if V is not None:
                kinds.append(("factored", V))
                blocks.append(phi_block(V.T @ X))
            else:
                V = self.basis(m, ctx)
                kinds.append(("dense", None) if V is None else ("subgroup", V))
                blocks.append(X if V is None else phi_block(V.T @ X))
        exps = iter(matrix_exps(blocks))
        out = []
        for T, X, m, (kind, V) in zip(xi, steps, self.pairs, kinds):
            if kind == "dense":
                D = next(exps) - torch.eye(T.shape[0], device=T.device, dtype=T.dtype)
                out.append(torch.addmm(T + D, D, T))  # T + D (I + T), D = exp(X) - I
                continue
            r = V.shape[1]
            Y = X @ phi_of(next(exps))
            if kind == "subgroup":
                out.append(torch.addmm(T + Y, Y, V.T @ T))
                continue
            if isinstance(T, FactoredElement):
                if T.rank + r <= T.width:
                    out.append(T.times_exp(Y, V))
                    continue
                T = self._to_dense(T, m, ctx)
            T_new = torch.addmm(T, Y, torch.addmm(V.T, V.T, T))  # T + Y V^T (I + T)
            out.append(T_new)
            if not self.uses_inverse:
                continue
            # Woodbury: g' = (I + Y V^T) g, so g'^-1 = C - C Y (I_r + V^T Y)^-1 V^T, and I_r + V^T Y = exp(V^T X)
            C = ctx.inverses[m][2]
            inner = torch.eye(r, device=T.device, dtype=T.dtype) + V.T @ Y
            C_new = torch.addmm(C, C @ Y, torch.linalg.solve_ex(inner, V.T)[0], alpha=-1)
            ctx.inverses[m] = (T_new, T_new._version, C_new)
        return out

    def _to_dense(self, element: FactoredElement, m: int, ctx) -> Tensor:
        """T = g - I from the factors, with g^-1 kept in ``ctx.inverses``: where a factored iterate's rank would
        pass the width, the dense form is the cheaper one from there on (formed once, O(d^2 R))."""
        T = element.dense()
        if self.uses_inverse:
            ctx.inverses[m] = (T, T._version, element.dense_inverse())
        return T
