"""Adam's ``"stale"`` state policy (the 2022 codes' per-entry state, :mod:`dlrt_ref.train.optim`).

Stale state is plain Adam on the coordinate arrays, whatever the basis: equal to ``"transport"`` while
the basis is fixed, different once it rotates, and positional across rank changes (the moments of
columns cut away are kept, decaying, and used again when the rank grows back), as in r_max-sized arrays.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.backend import get_backend
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import STATE_POLICIES, Adam, Momentum, embed_leading, leading_block

B1, B2, EPS = 0.9, 0.999, 1e-8


def orthonormal(rng, n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def padded_adam_reference(p, grads, shape, lr):
    """Kingma & Ba's Adam on a fixed ``shape`` array of which each step uses a leading block (the 2022 codes'
    K, L, S variables): gradient zero outside the block, every moment entry updated, block of the step applied."""
    m, v, out = np.zeros(shape), np.zeros(shape), []
    for t, g in enumerate(grads, start=1):
        G = np.zeros(shape)
        G[:g.shape[0], :g.shape[1]] = g
        m = B1 * m + (1 - B1) * G
        v = B2 * v + (1 - B2) * G * G
        step = lr * (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS)
        k = g.shape
        P = np.zeros(shape)
        P[:p.shape[0], :p.shape[1]] = p
        p = (P - step)[:k[0], :k[1]]
        out.append(p)
    return out


def test_stale_is_a_state_policy():
    assert "stale" in STATE_POLICIES
    assert Adam(1e-3, state_policy="stale").hyper()["state_policy"] == "stale"


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_stale_equals_transport_while_the_basis_is_fixed(seed):
    """Same basis at every step (a new array each time, as the integrators make): the two policies give the
    same parameters to round-off (transport maps by T = BᵀB' = I; stale does not map)."""
    rng = np.random.default_rng(seed)
    n, r, m, lr = 9, 3, 5, 1e-2
    B = orthonormal(rng, n, r)
    p0 = rng.standard_normal((m, r))
    out = {}
    for policy in ("transport", "stale"):
        opt, p = Adam(lr, state_policy=policy), p0
        for g in [np.random.default_rng(seed + k).standard_normal((m, r)) for k in range(6)]:
            p = opt.update("K", p, g, frame=(B.copy(),))
        out[policy] = p
    np.testing.assert_allclose(out["stale"], out["transport"], rtol=1e-10, atol=1e-13)


def test_stale_differs_from_transport_when_the_basis_rotates_and_keeps_the_state_unmapped():
    """B → B Q (Q a rotation of the old span): transport maps m to m Q; stale keeps m entry by entry, so its
    update is plain Adam on the coordinate arrays (the hand-written reference) and not transport's."""
    rng = np.random.default_rng(7)
    n, r, m, lr = 8, 4, 5, 1e-2
    B, Q = orthonormal(rng, n, r), orthonormal(rng, r, r)
    grads = [rng.standard_normal((m, r)) for _ in range(8)]
    p0 = rng.standard_normal((m, r))
    ref = padded_adam_reference(p0, grads, (m, r), lr)
    res = {}
    for policy in ("transport", "stale"):
        opt, p = Adam(lr, state_policy=policy), p0
        for k, g in enumerate(grads):
            frame = (B,) if k < 4 else (B @ Q,)  # the basis rotates after 4 steps
            if k == 4:
                m_before = opt.state["K"]["m"].copy()
            p = opt.update("K", p, g, frame=frame)
            if k == 4:
                m_after = opt.state["K"]["m"]
        res[policy] = (p, m_before, m_after)
    p, m0, m1 = res["stale"]
    np.testing.assert_allclose(m1, B1 * m0 + (1 - B1) * grads[4], rtol=1e-13)  # unmapped
    np.testing.assert_allclose(p, ref[-1], rtol=1e-12, atol=1e-14)
    pt, m0t, m1t = res["transport"]
    np.testing.assert_allclose(m1t, B1 * m0t @ Q + (1 - B1) * grads[4], rtol=1e-12, atol=1e-14)  # mapped
    assert np.max(np.abs(pt - p)) > 1e-4  # the policies differ by a visible amount


def test_stale_is_positional_across_rank_changes():
    """Rank 4 → 2 → 4 (K-type, columns): the columns cut away keep their moments (decaying with zero
    gradient) and serve again when the rank grows back — Adam on an r_max-sized array, by entry."""
    rng = np.random.default_rng(8)
    m, lr = 5, 1e-2
    ranks = [4, 4, 2, 2, 2, 4, 4, 3]
    grads = [rng.standard_normal((m, r)) for r in ranks]
    p = rng.standard_normal((m, 4))
    ref = padded_adam_reference(p, grads, (m, 4), lr)
    opt = Adam(lr, state_policy="stale")
    for k, (r, g) in enumerate(zip(ranks, grads)):
        frame = (orthonormal(rng, 9, r),)  # a new basis at every step: never used by "stale"
        p_in = ref[k - 1] if k else p
        if p_in.shape[1] < r:  # the grown columns: whatever the parameter holds there (zero here)
            p_in = np.concatenate([p_in, np.zeros((m, r - p_in.shape[1]))], axis=1)
        p_out = opt.update("K", p_in[:, :r], g, frame=frame)
        assert p_out.shape == (m, r)
        np.testing.assert_allclose(p_out, ref[k][:, :r], rtol=1e-12, atol=1e-14, err_msg=f"step {k}")
    assert opt.state["K"]["m"].shape == (m, 4) and opt.transports == 0 and opt.resets == 0


def test_stale_two_sided_buffer_grows_to_the_largest_shape():
    opt, rng = Momentum(0.1, mu=0.5, state_policy="stale"), np.random.default_rng(9)
    opt.update("S", rng.standard_normal((4, 4)), np.ones((4, 4)), frame=(np.eye(6)[:, :4], np.eye(6)[:, :4]))
    opt.update("S", rng.standard_normal((6, 3)), np.ones((6, 3)), frame=(np.eye(6), np.eye(6)[:, :3]))
    mbuf = opt.state["S"]["m"]
    assert mbuf.shape == (6, 4)
    np.testing.assert_allclose(mbuf[:4, :3], 1.5)  # two steps: 0.5·1 + 1
    np.testing.assert_allclose(mbuf[:4, 3], 0.5)  # used once, then decayed
    np.testing.assert_allclose(mbuf[4:, :3], 1.0)  # new entries start from zero
    assert mbuf[4:, 3].tolist() == [0.0, 0.0]  # never used


def test_stale_state_survives_a_checkpoint_round_trip():
    rng = np.random.default_rng(10)
    opt = Adam(1e-2, state_policy="stale")
    opt.update("K", rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), frame=(orthonormal(rng, 6, 4),))
    p = opt.update("K", rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), frame=(orthonormal(rng, 6, 2),))
    new = Adam(1e-2, state_policy="stale")
    new.load_state_dict(opt.state_dict(), get_backend("numpy"))
    g = rng.standard_normal((3, 2))
    frame = (orthonormal(rng, 6, 2),)
    assert np.array_equal(new.update("K", p, g, frame=frame), opt.update("K", p, g, frame=frame))
    assert "c1" not in new.state["K"]


def test_embed_leading_and_leading_block_are_inverse_and_refuse_a_block_too_large():
    a = np.arange(6.0).reshape(2, 3)
    full = embed_leading(a, (4, 5))
    assert full.shape == (4, 5) and full.sum() == a.sum() and np.array_equal(leading_block(full, a.shape), a)
    with pytest.raises(ValueError, match="does not fit"):
        embed_leading(a, (1, 5))


def test_dlrt_trains_with_stale_state_through_rank_changes():
    """ra-bug on a small MLP with the stale policy: the ranks fall below the start, the step runs, the loss
    is finite, no state is mapped, and the K buffers keep the columns of the start rank (positional)."""
    rng = np.random.default_rng(11)
    net = mlp([12, 16, 16, 3], ranks=[6, 8, None], seed=0)
    tr = DLRT(net, Adam(1e-2, state_policy="stale"), method="ra-bug", tau=0.3)
    x, y = rng.standard_normal((32, 12)), rng.integers(0, 3, 32)
    for _ in range(4):
        assert np.isfinite(tr.step(x, y).loss)
    assert tr.ranks() != [6, 8] and tr.opt.transports == 0 and tr.opt.resets == 0
    assert [tr.opt.state[(i, "K")]["m"].shape[1] for i in range(2)] == [6, 8]
