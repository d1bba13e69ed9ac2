"""Tests of dlrt_ref.orthonormal: orthonormalise (Householder, CholeskyQR2) and the augmented basis.

Notation as in Ceruti, Kusch & Lubich (2022): the rank-adaptive augmentation
Û = [U0 | Ũ] with span(Û) ⊇ span(U0) ∪ span(K1) and M̂ = Û^*U0 ([CKL22] Alg. 1, step 1).
(The rank-revealing cases of orthonormalise_after: tests/core/test_core_augment.py.)
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import dlrt_ref.orthonormal as orthonormal_module
from dlrt_ref.integrators import augment
from dlrt_ref.orthonormal import orthonormalise, orthonormalise_after
from tests.helpers.dlra import EPS, H, draw, fixture_settings, fro, lowrank, orth, orth_err

shapes = st.tuples(st.integers(2, 20), st.integers(2, 20)).flatmap(
    lambda mn: st.tuples(st.just(mn[0]), st.just(mn[1]), st.integers(1, min(mn)))
)
seeds = st.integers(0, 2**32 - 1)
cplxs = st.booleans()


@given(m=st.integers(2, 25), k=st.integers(1, 25), cplx=cplxs, seed=seeds,
       method=st.sampled_from(["householder", "cholqr2"]), cond=st.sampled_from([0, 4, 9, 14]))
def test_orthonormalise_spans_and_is_orthonormal(m, k, cplx, seed, method, cond):
    """Q^*Q = I and span(A) ⊆ span(Q), also for ill-conditioned A (κ up to 1e14: CholeskyQR2 falls back)."""
    rng = np.random.default_rng(seed)
    k = min(k, m)
    A = orth(rng, m, k, cplx) @ np.diag(np.logspace(0, -cond, k)) @ H(orth(rng, k, k, cplx))
    Q = orthonormalise(A, method)
    assert Q.shape == (m, k)
    assert fro(H(Q) @ Q - np.eye(k)) <= 20 * EPS * m
    assert fro(A - Q @ (H(Q) @ A)) <= 20 * EPS * m * fro(A)


# --------------------------------------------------------------------------- #
# Augmented basis ([CKL22] Alg. 1, step 1)
# --------------------------------------------------------------------------- #
@fixture_settings()
@given(shape=shapes, cplx=cplxs, seed=seeds, method=st.sampled_from(["householder", "cholqr2"]))
def test_augmented_basis_contains_old_basis_and_represents_Y0(backend, shape, cplx, seed, method):
    """span(Û) ⊇ span(U0) ∪ span(K1), Û^*Û = I, Û M̂ = U0, and Û (M̂ S0 N̂^*) V̂^* = Y0 exactly."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    Y0 = lowrank(rng, m, n, r, cplx, be=backend)
    K1 = Y0.U @ Y0.S + 0.1 * backend.asarray(draw(rng, (m, r), cplx))
    L1 = Y0.V @ H(Y0.S) + 0.1 * backend.asarray(draw(rng, (n, r), cplx))
    Uh, M = augment(K1, Y0.U, method)
    Vh, N = augment(L1, Y0.V, method)
    assert Uh.shape == (m, min(m, 2 * r)) and Vh.shape == (n, min(n, 2 * r))
    tol = 30 * EPS * max(m, n)
    assert fro(H(Uh) @ Uh - backend.xp.eye(Uh.shape[1])) <= tol
    assert fro(H(Vh) @ Vh - backend.xp.eye(Vh.shape[1])) <= tol
    assert fro(Y0.U - Uh @ (H(Uh) @ Y0.U)) <= tol * np.sqrt(r)
    assert fro(Y0.V - Vh @ (H(Vh) @ Y0.V)) <= tol * np.sqrt(r)
    assert fro(Uh @ M - Y0.U) <= tol * np.sqrt(r)
    assert fro(K1 - Uh @ (H(Uh) @ K1)) <= tol * fro(K1)
    Y0d = Y0.to_dense()
    S_tilde0 = M @ Y0.S @ H(N)
    assert fro(Uh @ S_tilde0 @ H(Vh) - Y0d) <= tol * fro(Y0d)


# --------------------------------------------------------------------------- #
# CholeskyQR2 and orthonormalise_after on DLRT's sizes (was test_lowrank_ortho.py)
#
# The property tests above check, for small random shapes, that both methods give
# QᴴQ = I and span(A) ⊆ span(Q) up to κ = 1e14. These add the error bound
# ‖QᵀQ − I‖₂ ≤ c·eps·k on tall-skinny matrices of the sizes DLRT uses (float32 and
# float64), that CholeskyQR2 itself — not its fallback — handles well-conditioned
# input, that κ = 1e12 and rank-deficient input *do* fall back and still give
# orthonormal Q, and that the block augmentation used by ra-bug/parallel with
# "cholqr2" spans the same space as Householder QR of [K1 | U0], with Û = [U0 | Ũ]
# and M̂ = [I; 0].
# --------------------------------------------------------------------------- #


def _matrix(rng, m, k, cond, dtype):
    """m×k with singular values logspace(0, -log10 cond) and random singular vectors."""
    P = np.linalg.qr(rng.standard_normal((m, k)))[0]
    Q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    return (P * np.logspace(0, -np.log10(cond), k)) @ Q.T


@pytest.fixture
def householder_calls(monkeypatch):
    """Count calls of the Householder QR (the fallback of CholeskyQR2)."""
    calls = []
    real = orthonormal_module._householder

    def counted(A):
        calls.append(A.shape)
        return real(A)

    monkeypatch.setattr(orthonormal_module, "_householder", counted)
    monkeypatch.setitem(orthonormal_module.ORTHONORMALISERS, "householder", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m,k,cond", [(2000, 40, 1.0), (2000, 80, 1e2), (5120, 16, 1e3), (300, 150, 10.0)])
def test_cholqr2_orthogonality_error_is_eps_k(householder_calls, dtype, m, k, cond):
    """Well-conditioned A (κ ≪ eps^-1/2): no fallback, ‖QᵀQ − I‖₂ ≤ c·eps·k and A = Q (QᵀA) to c·eps·κ."""
    if dtype == np.float32 and cond > 1e2:
        cond = 1e2  # CholeskyQR2's domain in float32 is κ ≲ eps^-1/2 ≈ 3e3
    rng = np.random.default_rng(m + k)
    A = _matrix(rng, m, k, cond, np.float64).astype(dtype)
    Q = orthonormalise(A, "cholqr2")
    assert householder_calls == []  # CholeskyQR2 itself did it
    assert Q.shape == (m, k) and Q.dtype == A.dtype
    eps = np.finfo(dtype).eps
    assert orth_err(Q, ord=2) <= 4 * eps * k
    A64 = A.astype(np.float64)
    Q64 = Q.astype(np.float64)
    assert np.linalg.norm(A64 - Q64 @ (Q64.T @ A64)) <= 20 * eps * np.sqrt(k) * cond * np.linalg.norm(A64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ill_conditioned_input_falls_back_and_stays_orthonormal(householder_calls, dtype):
    """κ = 1e12: the Gram matrix is numerically singular, CholeskyQR2 falls back to Householder."""
    rng = np.random.default_rng(7)
    m, k = 1000, 30
    A = _matrix(rng, m, k, 1e12, np.float64).astype(dtype)
    Q = orthonormalise(A, "cholqr2")
    assert householder_calls == [(m, k)]
    eps = np.finfo(dtype).eps
    assert orth_err(Q, ord=2) <= 20 * eps * k
    A64, Q64 = A.astype(np.float64), Q.astype(np.float64)
    assert np.linalg.norm(A64 - Q64 @ (Q64.T @ A64)) <= 50 * eps * np.sqrt(m) * np.linalg.norm(A64)


@pytest.mark.parametrize("kind", ["repeated column", "zero column", "rank 3 of 8"])
def test_rank_deficient_input(householder_calls, kind):
    """Exactly rank-deficient A: orthonormal Q of full width whose span contains span(A)."""
    rng = np.random.default_rng(3)
    m, k = 200, 8
    A = rng.standard_normal((m, k))
    if kind == "repeated column":
        A[:, 5] = A[:, 2]
    elif kind == "zero column":
        A[:, 0] = 0.0
    else:
        A = rng.standard_normal((m, 3)) @ rng.standard_normal((3, k))
    Q = orthonormalise(A, "cholqr2")
    assert len(householder_calls) == 1  # fell back
    assert Q.shape == (m, k)
    assert orth_err(Q, ord=2) <= 20 * np.finfo(float).eps * k
    assert np.linalg.norm(A - Q @ (Q.T @ A)) <= 1e-12 * np.linalg.norm(A)


def test_wide_input_uses_householder(householder_calls):
    A = np.random.default_rng(0).standard_normal((5, 9))
    Q = orthonormalise(A, "cholqr2")
    assert Q.shape == (5, 5) and householder_calls == [(5, 9)]
    assert orth_err(Q, ord=2) <= 1e-14


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_augmentation_spans_what_householder_spans(householder_calls, dtype):
    """augment(K1, U0, "cholqr2") spans span([K1 | U0]) as Householder QR does, although κ([K1|U0]) ~ 1/h."""
    rng = np.random.default_rng(11)
    m, r, h = 1500, 20, 1e-3
    U0 = np.linalg.qr(rng.standard_normal((m, r)))[0]
    S0 = np.diag(np.linspace(3.0, 0.5, r))
    K1 = (U0 @ S0 + h * rng.standard_normal((m, r))).astype(dtype)  # a K-step: U0 S0 + O(h)
    U0 = U0.astype(dtype)
    Uh_chol, M_chol = augment(K1, U0, "cholqr2")
    assert householder_calls == []  # no fallback, although CholeskyQR2 of [K1 | U0] itself would fall back
    Uh_hh, _ = augment(K1, U0, "householder")
    eps = np.finfo(dtype).eps
    assert orth_err(Uh_chol, ord=2) <= 20 * eps * 2 * r
    np.testing.assert_array_equal(Uh_chol[:, :r], U0)  # Û = [U0 | Ũ] ...
    np.testing.assert_array_equal(M_chol, np.vstack([np.eye(r), np.zeros((r, r))]))  # ... so M̂ = [I; 0]
    # same span: the orthogonal projectors agree; the new block is the normalised O(h) residual,
    # whose error is eps/h-amplified in both methods
    Pc, Ph = (Q.astype(float) @ Q.astype(float).T for Q in (Uh_chol, Uh_hh))
    tol = 1e-9 if dtype == np.float64 else 2e-2
    assert np.linalg.norm(Pc - Ph, 2) <= tol
    assert np.linalg.norm(Uh_chol.astype(float) @ M_chol - U0) <= 50 * eps * np.sqrt(r)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["inside span(Q)", "half inside span(Q)", "generic"])
@pytest.mark.parametrize("method", ["cholqr2", "householder"])
def test_orthonormalise_after_is_orthogonal_to_Q(dtype, kind, method):
    """Columns orthonormal and ⟂ Q; span(A) ⊆ span([Q | Q2]) — also when A lies (partly) in span(Q).

    Rank-revealing: inside span(Q), W = (I − QQᵀ)A is round-off and no column is
    returned; half inside, only the k/2 independent directions are.
    """
    rng = np.random.default_rng(5)
    m, q, k = 400, 12, 8
    Q = np.linalg.qr(rng.standard_normal((m, q)))[0]
    if kind == "inside span(Q)":
        A, k_new = Q @ rng.standard_normal((q, k)), 0
    elif kind == "half inside span(Q)":
        A, k_new = np.concatenate([Q[:, : k // 2] * 2.0, rng.standard_normal((m, k - k // 2))], axis=1), k - k // 2
    else:
        A, k_new = rng.standard_normal((m, k)), k
    Q, A = Q.astype(dtype), A.astype(dtype)
    Q2 = orthonormalise_after(Q, A, method)
    assert Q2.shape == (m, k_new) and Q2.dtype == dtype
    eps = np.finfo(dtype).eps
    Q64, Q264, A64 = Q.astype(float), Q2.astype(float), A.astype(float)
    assert np.linalg.norm(Q64.T @ Q264) <= 50 * eps * np.sqrt(k)
    assert orth_err(Q2, ord=2) <= 50 * eps * k
    B = np.concatenate([Q64, Q264], axis=1)
    assert np.linalg.norm(A64 - B @ (B.T @ A64)) <= 100 * eps * np.linalg.norm(A64)
    if kind == "generic":  # the trailing Q factor of [Q | A], up to column signs
        Q2h = orthonormalise_after(Q, A, "householder").astype(float)
        assert np.allclose(np.abs(Q2h.T @ Q264), np.eye(k), atol=100 * eps * k)
    with pytest.raises(ValueError):
        orthonormalise_after(Q, A, "gram-schmidt")
