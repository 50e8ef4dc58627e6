"""The GL ascent's matrix exponential (``symmetries/exponential.py``) against ``torch.linalg.matrix_exp``."""
from __future__ import annotations

import math

import pytest
import torch

from teleport_runner.symmetries.exponential import expm, matrix_exps

#: 1-norms from zero through each Taylor degree's range (float64: T_1 to 2.2e-16, T_2 to 2.6e-8, T_4 to 3.4e-4,
#: T_18 to 1.09; float32: 1.2e-7, 6.0e-4, 0.051, 3.01) to six squarings
NORMS = (0.0, 1e-17, 1e-9, 1e-6, 1e-4, 1e-3, 0.1, 1.0, 1.09, 3.0, 20.0, 50.0)


def matrices(n: int, kind: str, norms, dtype=torch.float64):
    """Random n x n matrices with the given 1-norms: Gaussian, or upper triangular (non-normal)."""
    gen = torch.Generator().manual_seed(n)
    for norm in norms:
        A = torch.randn(n, n, dtype=torch.float64, generator=gen)
        if kind == "non-normal":
            A = 3 * torch.triu(A)
        yield (A * norm / torch.linalg.matrix_norm(A, ord=1)).to(dtype)


def rel_err(got, ref) -> float:
    return float((got.double() - ref).norm() / ref.norm())


@pytest.mark.parametrize("kind", ["gaussian", "non-normal"])
@pytest.mark.parametrize("n", [2, 6, 13, 32, 80])
def test_expm_equals_torch_matrix_exp_in_float64(n, kind):
    for A in matrices(n, kind, NORMS):
        assert rel_err(expm(A), torch.linalg.matrix_exp(A)) < 1e-13


@pytest.mark.parametrize("kind", ["gaussian", "non-normal"])
@pytest.mark.parametrize("n", [2, 13, 32])
def test_expm_in_float32_is_as_accurate_as_torch(n, kind):
    """Against the float64 exponential of the same float32 matrix: within float32 rounding (2e-6), or where the
    exponential itself is ill-conditioned (a non-normal matrix with eigenvalue -3: both ~3e-6), within 3x of
    torch's own float32 error."""
    for A in matrices(n, kind, NORMS, torch.float32):
        got, ref = expm(A), torch.linalg.matrix_exp(A.double())
        assert got.dtype == torch.float32
        assert rel_err(got, ref) < max(2e-6, 3 * rel_err(torch.linalg.matrix_exp(A), ref))


def test_expm_of_a_batch_scales_each_matrix_by_its_own_norm():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(4, 7, 7, dtype=torch.float64, generator=gen)
    A[1] *= 10  # squared several times
    A[2] *= 0  # the identity
    A[3] *= 1e-6
    before = A.clone()
    got = expm(A)
    torch.testing.assert_close(A, before, rtol=0, atol=0)  # the input is not modified
    for g, a in zip(got, A):
        assert rel_err(g, torch.linalg.matrix_exp(a)) < 1e-13
    assert torch.equal(got[2], torch.eye(7, dtype=torch.float64))


def test_expm_edge_cases():
    assert torch.equal(expm(torch.zeros(5, 5)), torch.eye(5))
    x = torch.tensor([[-20.0]])
    assert torch.equal(expm(x), x.exp())  # 1 x 1: the scalar exp, accurate where exp(x) is tiny
    for bad in (math.nan, math.inf):
        A = torch.eye(3)
        A[0, 1] = bad
        assert expm(A).isnan().all()
        assert expm(torch.stack([torch.eye(3), A])).isnan().all()


@pytest.mark.parametrize("sizes", [(3, 7, 5), (40, 30, 12)])  # one block-diagonal call; a padded batch
def test_matrix_exps_equals_one_exponential_per_matrix(sizes):
    gen = torch.Generator().manual_seed(0)
    mats = [torch.randn(n, n, dtype=torch.float64, generator=gen) / n ** 0.5 for n in sizes]
    for got, A in zip(matrix_exps(mats), mats):
        torch.testing.assert_close(got, torch.linalg.matrix_exp(A), rtol=1e-12, atol=1e-12)
