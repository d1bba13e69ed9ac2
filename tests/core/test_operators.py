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
