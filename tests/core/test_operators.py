import numpy as np
import pytest

from dlrt_ref.operators import DenseOperator, OuterProductOperator, as_operator


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_outer_product_matches_dense(backend, rng, dtype):
    B, m, n, r = 7, 5, 4, 3
    cplx = np.issubdtype(dtype, np.complexfloating)
    draw = lambda *s: rng.standard_normal(s) + (1j * rng.standard_normal(s) if cplx else 0)
    D, X, U, V = (backend.asarray(draw(*s)) for s in [(B, m), (B, n), (m, r), (n, r)])
    c = (0.5 - 2j) if cplx else -1.5
    op = OuterProductOperator(D, X, c)
    F = c * (D.T @ X)
    tol = 50 * np.finfo(float).eps * (B + m + n)
    xp = backend.xp
    assert op.shape == (m, n)
    for got, want in [
        (op @ V, F @ V),
        (op.H @ U, F.conj().T @ U),
        (op.core(U, V), U.conj().T @ F @ V),
        (op.scaled(2.0).to_dense(), 2.0 * F),
        (as_operator(F).H @ U, F.conj().T @ U),
        (DenseOperator(F).core(U, V), U.conj().T @ F @ V),
    ]:
        assert float(xp.abs(got - want).max()) <= tol * float(xp.abs(want).max())


def test_bad_shapes():
    with pytest.raises(ValueError, match="same B"):
        OuterProductOperator(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        DenseOperator(np.zeros(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factor_grad_operator_reuses_the_products_of_an_augmented_basis(rng, dtype):
    """core([U0 | Ũ], [V0 | Ṽ]) reuses the pass's Δ U0 and X V0 and equals the full product up to rounding.

    The stored products are planted with a marker (+1 in every entry): it must show in the leading blocks of
    the result exactly when the bases start with the layer's factors, and never otherwise.
    """
    from dlrt_ref.nn.lowrank_layers import FactorGradOperator

    B, m, n, r, k = 9, 8, 7, 3, 2
    D, X = (rng.standard_normal(s).astype(dtype) for s in [(B, m), (B, n)])
    U0, Ut, V0, Vt = (np.linalg.qr(rng.standard_normal(s))[0].astype(dtype) for s in [(m, r), (m, k), (n, r), (n, k)])
    U_hat, V_hat = np.concatenate([U0, Ut], axis=1), np.concatenate([V0, Vt], axis=1)
    c = -0.7
    full = c * (D @ U_hat).T @ (X @ V_hat)  # (r + k, r + k)
    tol = 20 * np.finfo(dtype).eps * B * float(np.abs(D).max() * np.abs(X).max())
    exact = FactorGradOperator(D, X, c, V=V0, XV=X @ V0, U=U0, DU=D @ U0)
    assert np.abs(exact.core(U_hat, V_hat) - full).max() <= tol
    marked = FactorGradOperator(D, X, c, V=V0, XV=X @ V0 + 1, U=U0, DU=D @ U0 + 1)
    got = marked.core(U_hat, V_hat)
    want = c * np.concatenate([D @ U0 + 1, D @ Ut], axis=1).T @ np.concatenate([X @ V0 + 1, X @ Vt], axis=1)
    assert np.abs(got - want).max() <= tol  # the stored products were used
    other = np.concatenate([U0 * (1 + np.finfo(dtype).eps * 4), Ut], axis=1)  # not [U0 | ...] bit for bit
    assert np.abs(marked.core(other, np.concatenate([Vt, V0], axis=1)) - c * (D @ other).T @ (X @ np.concatenate(
        [Vt, V0], axis=1))).max() <= tol  # no reuse: computed in full
