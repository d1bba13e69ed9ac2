"""Property tests of dlrt_ref.truncation: the truncation contract of the rank-adaptive BUG.

Notation as in Ceruti, Kusch & Lubich (2022): the rank-adaptive truncation of a core
S = P Σ Q^* to the smallest rank whose discarded ℓ2 tail is ≤ ϑ.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from dlrt_ref.backend import to_numpy
from dlrt_ref.integrators import truncate_core
from dlrt_ref.truncation import truncate
from tests.helpers.dlra import EPS, H, draw, fro, orth

seeds = st.integers(0, 2**32 - 1)
cplxs = st.booleans()


# --------------------------------------------------------------------------- #
# Truncation contract
# --------------------------------------------------------------------------- #
@st.composite
def cores(draw_, max_k=16):
    k = draw_(st.integers(1, max_k))
    cplx = draw_(cplxs)
    seed = draw_(seeds)
    decay = draw_(st.sampled_from(["geometric", "flat", "cliff", "random"]))
    rng = np.random.default_rng(seed)
    if decay == "geometric":
        s = 10.0 ** -np.arange(k) * rng.uniform(0.5, 1.0)
    elif decay == "flat":
        s = np.ones(k)
    elif decay == "cliff":
        j = rng.integers(0, k + 1)
        s = np.concatenate([np.ones(j), 1e-9 * rng.uniform(0.1, 1.0, k - j)])
    else:
        s = np.sort(rng.exponential(1.0, k))[::-1]
    S = orth(rng, k, k, cplx) @ np.diag(s) @ H(orth(rng, k, k, cplx))
    return S, np.sort(s)[::-1], cplx, rng


def _tails(s):
    return np.sqrt(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))  # tails[j] = ‖s[j:]‖


@given(core=cores(), frac=st.floats(0.0, 1.2), rmin=st.integers(1, 6), rmax=st.one_of(st.none(), st.integers(1, 16)))
def test_truncation_contract(core, frac, rmin, rmax):
    """Tail ≤ ϑ at the minimal rank, clipped to [r_min, r_max]; P Σ Q^* is the SVD truncation."""
    S, s, cplx, _ = core
    k = s.size
    theta = frac * float(np.linalg.norm(s))
    tr = truncate(S, theta=theta, r_min=rmin, r_max=rmax)
    r1 = tr.rank
    tails = _tails(s)
    rtol = 50 * EPS * k * max(s[0], 1e-300)
    # bounds
    lo = min(max(rmin, 1), k)
    assert r1 >= lo or (rmax is not None and r1 == min(rmax, k))
    if rmax is not None:
        assert r1 <= max(rmax, 1)
    assert 1 <= r1 <= k
    # reported discarded values are the σ_j, j > r1, and tail = their ℓ2 norm
    assert tr.discarded.shape == (k - r1,)
    assert np.allclose(tr.discarded, s[r1:], rtol=0, atol=rtol)
    assert abs(tr.tail - tails[r1]) <= rtol
    assert tr.theta == pytest.approx(theta)
    free = rmax is None or r1 < rmax
    if free:  # r_max did not bind: the tolerance is met ...
        assert tr.tail <= theta + rtol
    if r1 > lo:  # ... and the rank is minimal: dropping one more exceeds ϑ
        assert tails[r1 - 1] > theta - rtol
    # P, Q orthonormal; ‖S − P Σ Q^*‖_F = tail (Eckart–Young)
    P, Q = to_numpy(tr.P), to_numpy(tr.Q)
    assert fro(H(P) @ P - np.eye(r1)) <= 20 * EPS * k
    assert fro(H(Q) @ Q - np.eye(r1)) <= 20 * EPS * k
    approx = P @ np.diag(to_numpy(tr.sigma)) @ H(Q)
    assert abs(fro(S - approx) - tr.tail) <= rtol * 10 + 1e-8 * tr.tail


@given(core=cores(), tau=st.floats(0.0, 1.0, exclude_max=True))  # τ ≥ 1 is refused (ValueError)
def test_truncation_relative_is_absolute_times_norm(core, tau):
    """Relative ϑ = τ‖σ‖₂ gives exactly the absolute truncation at that ϑ."""
    S, s, _, _ = core
    rel = truncate(S, tau=tau)
    ab = truncate(S, theta=tau * float(np.linalg.norm(s)))
    assert rel.theta == pytest.approx(tau * np.linalg.norm(s), rel=1e-12, abs=0)
    assert rel.rank == ab.rank
    assert rel.tail <= rel.theta * (1 + 1e-12) + 50 * EPS * s[0]


@given(core=cores(), r=st.integers(1, 20))
def test_truncation_fixed_rank(core, r):
    S, s, _, _ = core
    tr = truncate(S, rank=r)
    assert tr.rank == min(r, s.size)
    assert abs(tr.tail - np.linalg.norm(s[tr.rank:])) <= 50 * EPS * s.size * s[0]


@given(m=st.integers(4, 20), n=st.integers(4, 20), cplx=cplxs, seed=seeds, frac=st.floats(0.0, 0.9))
def test_truncate_core_error_equals_discarded(m, n, cplx, seed, frac):
    """‖Y1 − Ŷ1‖_F² = Σ discarded σ², for Ŷ1 = Û Ŝ V̂^* with orthonormal Û, V̂ ([CKL22] Alg. 1 step 3)."""
    rng = np.random.default_rng(seed)
    k = min(m, n, 8)
    Uh, Vh = orth(rng, m, k, cplx), orth(rng, n, k, cplx)
    S = draw(rng, (k, k), cplx) * (2.0 ** -np.arange(k))[None, :]
    s = np.linalg.svd(S, compute_uv=False)
    Y1, tr = truncate_core(Uh, S, Vh, theta=frac * np.linalg.norm(s))
    Yhat = Uh @ S @ H(Vh)
    d2 = float(np.sum(tr.discarded**2))
    assert abs(fro(Y1.to_dense() - Yhat) ** 2 - d2) <= 100 * EPS * max(m, n) * fro(Yhat) ** 2
    assert fro(H(Y1.U) @ Y1.U - np.eye(tr.rank)) <= 20 * EPS * max(m, n)
    assert fro(H(Y1.V) @ Y1.V - np.eye(tr.rank)) <= 20 * EPS * max(m, n)
    assert abs(fro(Y1.to_dense()) ** 2 + d2 - fro(Yhat) ** 2) <= 100 * EPS * max(m, n) * fro(Yhat) ** 2


def test_compat_2022_differs_from_correct_truncation():
    """The 2022 reference codes' truncation (compat_2022) breaks the contract in two documented ways.

    1. Its tail leaves out the last singular value: σ = (1, .1, .01, .01), ϑ = .012 —
       the correct rank is 3 (tail .01 ≤ ϑ); compat picks 2, whose true tail .0141 > ϑ.
    2. It builds the right factor from Vh[:, :r] instead of Vh^*[:, :r], so for a
       generic (non-normal) core P Σ Q^* is not the SVD truncation of S.
    """
    rng = np.random.default_rng(7)
    s = np.array([1.0, 0.1, 0.01, 0.01])
    S = orth(rng, 4, 4, False) @ np.diag(s) @ orth(rng, 4, 4, False).T
    good, bad = truncate(S, theta=0.012), truncate(S, theta=0.012, compat_2022=True)
    assert good.rank == 3 and good.tail <= 0.012
    assert bad.rank == 2 and bad.tail > 0.012
    # 2. the untransposed Vh: same rank, different (wrong) matrix
    for cplx in (False, True):
        S = draw(rng, (6, 6), cplx)
        good, bad = truncate(S, rank=3), truncate(S, rank=3, compat_2022=True)
        err_good = fro(S - to_numpy(good.P) @ np.diag(to_numpy(good.sigma)) @ H(to_numpy(good.Q)))
        err_bad = fro(S - to_numpy(bad.P) @ np.diag(to_numpy(bad.sigma)) @ H(to_numpy(bad.Q)))
        assert err_good == pytest.approx(good.tail, rel=1e-10)
        assert err_bad > 1.5 * err_good + 0.1 * fro(S)


def test_truncation_rejects_bad_arguments():
    S = np.eye(3)
    with pytest.raises(ValueError):
        truncate(S)
    with pytest.raises(ValueError):
        truncate(S, theta=0.1, tau=0.1)
    with pytest.raises(ValueError):
        truncate(S, theta=-1.0)
    with pytest.raises(ValueError):
        truncate(S, rank=0)


def test_compat_2022_on_a_rectangular_core_pads_with_zeros():
    """A k1×k2 core (rank-revealing augmentation dropped a direction) is truncated as the zero-padded square core."""
    rng = np.random.default_rng(2)
    S = rng.standard_normal((6, 5))
    Sq = np.concatenate([S, np.zeros((6, 1))], axis=1)
    a, b = truncate(S, tau=0.3, compat_2022=True), truncate(Sq, tau=0.3, compat_2022=True)
    assert a.rank == b.rank and a.P.shape == (6, a.rank) and a.Q.shape == (5, a.rank)
    np.testing.assert_allclose(a.Q, b.Q[:5], atol=1e-14)
    np.testing.assert_allclose(a.P, b.P, atol=1e-14)
    np.testing.assert_allclose(a.sigma, b.sigma, atol=1e-14)
