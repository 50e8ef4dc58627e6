"""The matrix exponential of the GL ascent's Lie-algebra steps, g <- exp(lr A) g (forward only: the ascent never
differentiates it).

Why not ``torch.linalg.matrix_exp`` here: it searches for its Taylor degree (1 to 18) at every call with ~200 small
internal ops (a batched call evaluates degree 18 for every matrix), and on CUDA it copies the input's norm to the
host first. ``expm`` below uses the same polynomials and thresholds, with the degree and the squarings picked
from one host read of the norms: on this project's CPU, float32, 9-35 us a call on the regression net's 13 x 13
block against 34-73 us, 10-73 us against 34-131 us on 26-32 wide blocks, 29-311 us against 373-439 us on a batch
of two 80 x 80 phi-blocks (norms 1e-9 to 1; docs/performance.md). Accuracy: torch's, within rounding (tests:
float64 and float32, norms 0 to 50). ``level_set`` differentiates through its rotation's exponential and keeps
torch's.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: T_18(A) = the degree-18 Taylor polynomial of exp, evaluated with 5 matrix products from the powers
#: I, A, A^2, A^3, A^6 (Bader, Blanes and Casas 2019, "Computing the matrix exponential with an optimized Taylor
#: polynomial approximation", Mathematics 7(12), 1174): B_k = sum_j C[k][j] P_j, A_9 = B_0 B_4 + B_3,
#: T_18 = B_1 + (B_2 + A_9) A_9.
_T18 = ((0., -1.00365581030144618291e-01, -8.02924648241156932449e-03, -8.92138498045729985177e-04, 0.),
        (0., 3.97849749499645077844e-01, 1.36783778460411720168e+00, 4.98289622525382669416e-01,
         -6.37898194594723280150e-04),
        (-1.09676396052962061844e+01, 1.68015813878906206114e+00, 5.71779846478865511061e-02,
         -6.98210122488052056106e-03, 3.34975017086070470649e-05),
        (-9.04316832390810593223e-02, -6.76404519071381882256e-02, 6.75961301770459654925e-02,
         2.95552570429315521194e-02, -1.39180257516060693404e-05),
        (0., 0., -9.23364619367118555360e-02, -1.69364939002081722752e-02, -1.40086798182036094347e-05))
#: The largest 1-norm at which the degree-m Taylor polynomial T_m has a backward error below the unit roundoff
#: (the same paper), for the degrees used here.
_THETAS = {torch.float32: {1: 1.192092800768788e-07, 2: 5.978858893805233e-04, 4: 5.116619363445086e-02,
                           18: 3.010066362817634},
           torch.float64: {1: 2.220446049250313e-16, 2: 2.580956802971767e-08, 4: 3.397168839976962e-04,
                           18: 1.090863719290036}}


@functools.lru_cache(maxsize=None)
def _coefficients(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """(C[:, 1:], C[:, 0]) on the device, made once: a host-to-device copy per call would wait for the device."""
    table = torch.tensor(_T18, dtype=dtype, device=device)
    return table[:, 1:].contiguous(), table[:, 0].contiguous()


def _taylor_18(A: Tensor) -> Tensor:
    """T_18(A) for A (..., n, n)."""
    n = A.shape[-1]
    weights, identity_weights = _coefficients(A.dtype, A.device)
    A2 = A @ A
    A3 = A2 @ A
    powers = torch.stack([A, A2, A3, A3 @ A3], dim=-3).flatten(-2)  # (..., 4, n^2)
    B = (weights @ powers).unflatten(-1, (n, n))  # (..., 5, n, n): all five combinations in one product
    B.diagonal(dim1=-2, dim2=-1).add_(identity_weights[:, None])
    B0, B1, B2, B3, B4 = B.unbind(-3)
    if A.dim() == 2:
        A9 = torch.addmm(B3, B0, B4)
        return torch.addmm(B1, B2 + A9, A9)
    A9 = B0 @ B4 + B3
    return B1 + (B2 + A9) @ A9


def _taylor_low(A: Tensor, degree: int) -> Tensor:
    """T_1, T_2 or T_4 of A (..., n, n): 0, 1 or 2 products, for the tiny steps where T_18's 5 would be waste."""
    if degree == 1:
        E = A.clone()
    elif degree == 2:
        E = A @ A * 0.5 + A
    else:
        A2 = A @ A
        inner = A2 / 24 + A / 6
        inner.diagonal(dim1=-2, dim2=-1).add_(0.5)
        E = A2 @ inner + A
    E.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return E


def expm(A: Tensor) -> Tensor:
    """exp(A) for a float32/float64 matrix or a batch (..., n, n), to the accuracy of ``torch.linalg.matrix_exp``.

    The lowest Taylor degree of 1, 2, 4 whose range holds every matrix's 1-norm; beyond that scaling and squaring
    around T_18: each matrix is scaled by 2^-s, the smallest power of two that brings its 1-norm to theta_18 or
    below (exact: a power of two), and its T_18 squared s times; a batch's smaller matrices are not over-scaled.
    One host read per call (the norms: the degree and the number of squarings). A non-finite input gives NaN, as
    torch's does; 1 x 1 is the scalar exp (as torch: a polynomial loses relative accuracy where exp(a) is tiny)."""
    if A.shape[-1] == 1:
        return A.exp()
    norms = torch.linalg.matrix_norm(A, ord=1).reshape(-1).tolist()  # the one host read
    if not all(math.isfinite(x) for x in norms):
        return torch.full_like(A, math.nan)
    thetas = _THETAS[A.dtype]
    degree = next((m for m in (1, 2, 4) if max(norms) <= thetas[m]), None)
    if degree is not None:
        return _taylor_low(A, degree)
    squarings = [max(0, math.ceil(math.log2(x / thetas[18]))) if x > 0 else 0 for x in norms]
    if A.dim() == 2:
        E = _taylor_18(A * 2.0 ** -squarings[0] if squarings[0] else A)
        for _ in range(squarings[0]):
            E = E @ E
        return E
    if any(squarings):  # scaled matrix by matrix: a tensor of factors would be a host-to-device copy
        A = A.clone()
        for a, s in zip(A.view(-1, *A.shape[-2:]), squarings):
            a.mul_(2.0 ** -s)
    E = _taylor_18(A)
    for e, s in zip(E.view(-1, *E.shape[-2:]), squarings):
        for _ in range(s):
            e.copy_(e @ e)
    return E


#: The identity block's scale in ``phi_block``: a power of two, so dividing by it is exact.
PHI_SCALE = 2.0 ** -10


def phi_block(A: Tensor) -> Tensor:
    """[[A, s I], [0, 0]] (2r x 2r, s = ``PHI_SCALE``): its exponential holds s phi(A), phi(A) = sum_k A^k / (k+1)!, in
    the top-right block (``phi_of``), so exp(X V^T) = I + X phi(V^T X) V^T takes one 2r x 2r exponential instead of a
    d x d one. Why s < 1: the top-right block of every power and product is linear in s (the zero blocks stay exactly
    zero), so its relative rounding does not depend on s, while the exponential takes its number of squarings from
    the whole matrix's norm; with s = 1 that norm is at least 1 however small the step (with torch's
    ``matrix_exp``, which also picks its degree from it, the call cost 2-3x more: measured on 80 x 80 blocks,
    ||A|| <= 0.1, the same accuracy against scipy's expm)."""
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
    """exp of square matrices of different sizes in one ``expm`` call, which costs one call's ops and host read
    instead of one per matrix (below ~64 the op count, not the flops, dominates). Small ones as one block-diagonal
    matrix, whose exponential is the block-diagonal of theirs; larger ones zero-padded into a batch (exp of
    [[A, 0], [0, 0]] is [[exp(A), 0], [0, I]]), which keeps the O(n^3) work per matrix."""
    sizes = [a.shape[0] for a in matrices]
    if sum(sizes) <= BLOCK_DIAG_MAX:
        E = expm(torch.block_diag(*matrices))
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [E[i:i + n, i:i + n] for i, n in zip(starts, sizes)]
    n = max(sizes)
    out = expm(torch.stack([F.pad(a, (0, n - k, 0, n - k)) if k < n else a for a, k in zip(matrices, sizes)]))
    return [e[:k, :k] for e, k in zip(out, sizes)]
