"""Property tests of dlrt_ref.lowrank: the tangent projector, and one-line errors for bad input to the API.

Notation as in Koch & Lubich (2007): Y = U S V^*, P(Y) Z = UU^*Z − UU^*ZVV^* + ZVV^*.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from dlrt_ref.backend import to_numpy
from dlrt_ref.lowrank import LowRankMatrix, tangent_project
from dlrt_ref.truncation import truncate
from tests.helpers.dlra import EPS, H, draw, fixture_settings, fro, lowrank, orth

shapes = st.tuples(st.integers(2, 20), st.integers(2, 20)).flatmap(
    lambda mn: st.tuples(st.just(mn[0]), st.just(mn[1]), st.integers(1, min(mn)))
)
seeds = st.integers(0, 2**32 - 1)
cplxs = st.booleans()


def inner(A, B):
    """Frobenius inner product ⟨A, B⟩ = tr(A^* B)."""
    return complex(np.vdot(to_numpy(A), to_numpy(B)))


# --------------------------------------------------------------------------- #
# Tangent projector
# --------------------------------------------------------------------------- #
@fixture_settings()
@given(shape=shapes, cplx=cplxs, seed=seeds)
def test_tangent_projector_algebra(backend, shape, cplx, seed):
    """P² = P, P self-adjoint in ⟨·,·⟩_F, P(Y)Y = Y, P Z = Z on tangent Z, (I − P)Z ⟂ T_Y M_r."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    Y = lowrank(rng, m, n, r, cplx, be=backend)
    Z1, Z2 = (backend.asarray(draw(rng, (m, n), cplx)) for _ in range(2))
    # a generic tangent vector δU S V^* + U δS V^* + U S δV^* = U C + D V^*
    T = Y.U @ backend.asarray(draw(rng, (r, n), cplx)) + backend.asarray(draw(rng, (m, r), cplx)) @ H(Y.V)
    P = lambda Z: tangent_project(Y, Z)
    tol = 20 * EPS * max(m, n)
    nz = fro(Z1)
    assert fro(P(P(Z1)) - P(Z1)) <= tol * nz
    assert abs(inner(P(Z1), Z2) - inner(Z1, P(Z2))) <= tol * nz * fro(Z2)
    Yd = Y.to_dense()
    assert fro(P(Yd) - Yd) <= tol * fro(Yd)
    assert fro(P(T) - T) <= tol * fro(T)
    N = Z1 - P(Z1)
    assert abs(inner(N, T)) <= tol * fro(N) * fro(T) + tol * nz * fro(T)
    # and the normal part is (I − UU^*) Z (I − VV^*)
    U, V = Y.U, Y.V
    assert fro(N - (Z1 - U @ (H(U) @ Z1)) @ (backend.xp.eye(n) - V @ H(V))) <= tol * nz
    # P does not depend on the gauge (U Q, Q^* S R, V R)
    Q, R = (backend.asarray(orth(rng, r, r, cplx)) for _ in range(2))
    Yg = LowRankMatrix(Y.U @ Q, H(Q) @ Y.S @ R, Y.V @ R)
    assert fro(tangent_project(Yg, Z1) - P(Z1)) <= tol * nz


# --------------------------------------------------------------------------- #
# Bad input to the Python API: one clear line, never a deep NumPy error
# --------------------------------------------------------------------------- #
def test_api_rejects_bad_factors_and_cores_with_one_line():
    I2, E = np.eye(2), np.eye(3, 2)
    Y = LowRankMatrix(E, I2, E)
    cases = [
        (lambda: LowRankMatrix([[1.0], [0.0]], np.eye(1), np.eye(2, 1)), TypeError, "U must be a NumPy or CuPy array, got list"),
        (lambda: LowRankMatrix(E, I2.tolist(), E), TypeError, "S must be a NumPy or CuPy array"),
        (lambda: LowRankMatrix(E.astype(np.float16), I2, E), TypeError, "U has dtype float16"),
        (lambda: LowRankMatrix(E, I2, E.astype(int)), TypeError, "V has dtype int64"),
        (lambda: LowRankMatrix(E, I2.astype(bool), E), TypeError, "S has dtype bool"),
        (lambda: truncate(Y, tau=0.1), TypeError, "not a LowRankMatrix; pass Y.S"),
        (lambda: truncate([[1.0]], tau=0.1), TypeError, "got list"),
        (lambda: truncate(I2.astype(np.float16), tau=0.1), TypeError, "dtype float16"),
        (lambda: truncate(np.array([[1.0, 0], [0, np.nan]]), tau=0.1), ValueError, "NaN or infinite"),
        (lambda: truncate(np.array([[np.inf, 0], [0, 1.0]]), rank=1), ValueError, "NaN or infinite"),
        (lambda: LowRankMatrix(E, np.array([[np.nan, 0], [0, 1.0]]), E).singular_values(), ValueError, "NaN or infinite"),
        (lambda: LowRankMatrix.from_dense(np.full((3, 3), np.nan), 1), ValueError, "NaN or infinite"),
    ]
    for call, exc, text in cases:
        with pytest.raises(exc) as info:
            call()
        assert text in str(info.value) and "\n" not in str(info.value), str(info.value)
    # the supported dtypes still work, complex included
    for dt in (np.float32, np.float64, np.complex64, np.complex128):
        assert truncate(LowRankMatrix(E.astype(dt), I2.astype(dt), E.astype(dt)).S, rank=1).rank == 1
