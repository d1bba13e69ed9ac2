"""Optimisers against hand-written references, and the optimiser-state rule for basis changes.

The rule (derived in the docstring of :mod:`dlrt_ref.train.optim`): linear state m ← m T,
second moment and the per-coordinate bias-correction weights c ← c (T∘T̄), T = B_oldᴴ B_new.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.backend import get_backend
from dlrt_ref.train.optim import Adam, Momentum, SGD, make_optimizer

B1, B2, EPS = 0.9, 0.999, 1e-8


def orthonormal(rng, n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def adam_reference(p, grads, lr, b1=B1, b2=B2, eps=EPS):
    """Kingma & Ba 2015, Alg. 1, written out: the parameter after each gradient of ``grads``."""
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


def momentum_reference(p, grads, lr, mu):
    m, out = np.zeros_like(p), []
    for g in grads:
        m = mu * m + g
        p = p - lr * m
        out.append(p)
    return out


# --------------------------------------------------------------------------- without basis change
@pytest.mark.parametrize("policy", ["transport", "transport-shared-t", "reset", "stale"])
def test_adam_and_momentum_equal_the_hand_written_reference_without_basis_change(policy):
    rng = np.random.default_rng(0)
    p0, grads = rng.standard_normal((4, 3)), [rng.standard_normal((4, 3)) for _ in range(6)]
    frame = (orthonormal(rng, 5, 3),)  # one fixed frame: no basis change
    for opt, ref in ((Adam(1e-2, state_policy=policy), adam_reference(p0, grads, 1e-2)),
                     (Momentum(1e-2, mu=0.8, state_policy=policy), momentum_reference(p0, grads, 1e-2, 0.8))):
        p = p0
        for g, want in zip(grads, ref):
            p = opt.update("K", p, g, frame=frame)
            np.testing.assert_allclose(p, want, rtol=1e-13, atol=1e-15)
    p = p0
    for g in grads:  # SGD: explicit Euler
        p = SGD(0.1).update("x", p, g)
        p0 = p0 - 0.1 * g
    assert np.array_equal(p, p0)


def test_adam_dense_parameter_weights_are_one_minus_beta_power_t():
    opt = Adam(1e-3)
    p = np.ones(5)
    for _ in range(7):
        p = opt.update("b", p, np.arange(5.0))
    st = opt.state["b"]
    np.testing.assert_allclose(st["c1"], 1 - B1**7, rtol=1e-14)
    np.testing.assert_allclose(st["c2"], 1 - B2**7, rtol=1e-14)


# --------------------------------------------------------------------------- with a basis change
def _frames(rng, n=7, r=3):
    """Old frame B (n×r) and new frame B' = [b_2, −b_0, b_1, b_new] with b_new ⟂ span B."""
    Q = orthonormal(rng, n, r + 1)
    B = Q[:, :r]
    B_new = np.stack([B[:, 2], -B[:, 0], B[:, 1], Q[:, r]], axis=1)  # old directions permuted/flipped + one new
    return B, B_new


def test_adam_after_a_basis_change_equals_the_reference_per_direction():
    """Old directions continue exactly as the uninterrupted Adam run; the new direction is a fresh Adam
    parameter (its own step count) started at the change."""
    rng = np.random.default_rng(1)
    B, B_new = _frames(rng)
    m, k0, k1, lr = 4, 5, 4, 1e-2
    G = [rng.standard_normal((m, B.shape[0])) for _ in range(k0 + k1)]  # W-space gradients (m, n)
    p0 = rng.standard_normal((m, 3))
    old_ref = adam_reference(p0, [g @ B for g in G], lr)  # never changes basis
    new_ref = adam_reference(np.zeros(m), [g @ B_new[:, 3] for g in G[k0:]], lr)  # fresh from the change on

    opt, p = Adam(lr), p0
    for g in G[:k0]:
        p = opt.update("K", p, g @ B, frame=(B,))  # (m, n)(n, r)
    p = p @ (B.T @ B_new)  # the parameter in the new coordinates: new column 0
    for j, g in enumerate(G[k0:]):
        p = opt.update("K", p, g @ B_new, frame=(B_new,))
        want = np.stack([old_ref[k0 + j][:, 2], -old_ref[k0 + j][:, 0], old_ref[k0 + j][:, 1], new_ref[j]], axis=1)
        np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-14)
    assert opt.transports == 1


def test_new_direction_first_step_has_magnitude_lr():
    """A direction new to the basis moves by lr·|g|/(|g| + ε) at its first step, like a fresh Adam
    parameter, whatever the factor's age; one step count per factor (the old rule) moves it by
    (1 − β₁)·√(1 − β₂ᵗ)/√(1 − β₂)·lr instead."""
    rng = np.random.default_rng(2)
    B, B_new = _frames(rng)
    lr, t = 1e-3, 235
    for policy in ("transport", "transport-shared-t"):
        opt, p = Adam(lr, state_policy=policy), rng.standard_normal((4, 3))
        for _ in range(t - 1):
            p = opt.update("K", p, rng.standard_normal((4, 7)) @ B, frame=(B,))
        p = p @ (B.T @ B_new)
        g = rng.standard_normal((4, 4))
        step = np.abs(opt.update("K", p, g, frame=(B_new,)) - p)[:, 3]
        expected = lr * np.abs(g[:, 3]) / (np.abs(g[:, 3]) + EPS)
        if policy == "transport":
            np.testing.assert_allclose(step, expected, rtol=1e-12)
        else:
            np.testing.assert_allclose(step, lr * (1 - B1) * np.sqrt((1 - B2**t) / (1 - B2)), rtol=1e-6)


def test_adam_rotation_of_the_old_span_keeps_bias_correction_and_first_moment():
    """B' = B Q (Q orthogonal) with equal weights: every weight stays 1 − βᵗ and m' = m Q exactly."""
    rng = np.random.default_rng(3)
    B, Q = orthonormal(rng, 8, 4), orthonormal(rng, 4, 4)
    opt, p = Adam(1e-2), rng.standard_normal((5, 4))
    for _ in range(6):
        p = opt.update("K", p, rng.standard_normal((5, 4)), frame=(B,))
    m_old = opt.state["K"]["m"].copy()
    p = opt.update("K", p @ Q, np.zeros((5, 4)), frame=(B @ Q,))  # zero gradient: only the decay acts
    stt = opt.state["K"]
    np.testing.assert_allclose(stt["c1"], 1 - B1**7, rtol=1e-12)
    np.testing.assert_allclose(stt["c2"], 1 - B2**7, rtol=1e-12)
    np.testing.assert_allclose(stt["m"], B1 * m_old @ Q, rtol=1e-12, atol=1e-15)


def test_momentum_is_rotation_invariant_and_new_directions_start_fresh():
    """Heavy ball after B → [B Q | b_new]: the old span's trajectory is the uninterrupted run, rotated;
    the new column is a fresh heavy-ball parameter (hand-written references)."""
    rng = np.random.default_rng(4)
    n, r, m, k0, k1, lr, mu = 9, 3, 4, 4, 5, 0.05, 0.9
    Qn = orthonormal(rng, n, r + 1)
    B, Q = Qn[:, :r], orthonormal(rng, r, r)
    B_new = np.concatenate([B @ Q, Qn[:, r:]], axis=1)  # (n, r + 1)
    G = [rng.standard_normal((m, n)) for _ in range(k0 + k1)]
    p0 = rng.standard_normal((m, r))
    old_ref = momentum_reference(p0, [g @ B for g in G], lr, mu)
    new_ref = momentum_reference(np.zeros(m), [g @ Qn[:, r] for g in G[k0:]], lr, mu)
    opt, p = Momentum(lr, mu=mu), p0
    for g in G[:k0]:
        p = opt.update("K", p, g @ B, frame=(B,))
    p = p @ (B.T @ B_new)
    for j, g in enumerate(G[k0:]):
        p = opt.update("K", p, g @ B_new, frame=(B_new,))
        np.testing.assert_allclose(p[:, :r], old_ref[k0 + j] @ Q, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(p[:, r], new_ref[j], rtol=1e-12, atol=1e-14)


def test_two_sided_transport_is_the_derived_formula():
    """S in (U, V) → (U', V'): m' = T_U m T_V, v' = (T_U∘T_U) v (T_V∘T_V), c' likewise (by hand)."""
    rng = np.random.default_rng(5)
    U, V = orthonormal(rng, 8, 3), orthonormal(rng, 7, 3)
    U1, V1 = orthonormal(rng, 8, 4), orthonormal(rng, 7, 5)  # general new bases, partly outside the old spans
    opt, S = Adam(1e-2), rng.standard_normal((3, 3))
    for _ in range(3):
        S = opt.update("S", S, rng.standard_normal((3, 3)), frame=(U, V))
    old = {k: opt.state["S"][k].copy() for k in ("m", "v", "c1", "c2")}
    g = rng.standard_normal((4, 5))
    opt.update("S", rng.standard_normal((4, 5)), g, frame=(U1, V1))
    TU, TV = U1.T @ U, V.T @ V1  # (4, 3), (3, 5)
    want = {"m": B1 * TU @ old["m"] @ TV + (1 - B1) * g,
            "v": B2 * (TU**2) @ old["v"] @ (TV**2) + (1 - B2) * g**2,
            "c1": B1 * (TU**2) @ old["c1"] @ (TV**2) + (1 - B1),
            "c2": B2 * (TU**2) @ old["c2"] @ (TV**2) + (1 - B2)}
    for k, w in want.items():
        np.testing.assert_allclose(opt.state["S"][k], w, rtol=1e-12, atol=1e-15, err_msg=k)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_transport_keeps_second_moment_and_weights_nonnegative_and_vhat_in_range(seed, complex_):
    """v ≥ 0 and c ≥ 0 after any transport (T∘T̄ ≥ 0), and v̂' = v'/c₂' is a convex combination of the
    old v̂: it lies between their smallest and largest value (per-column, K-type frame)."""
    rng = np.random.default_rng(seed)
    n, r0, r1, m = 8, 3, int(rng.integers(1, 6)), 4

    def frame(r):
        A = rng.standard_normal((n, r)) + (1j * rng.standard_normal((n, r)) if complex_ else 0)
        return np.linalg.qr(A)[0]

    B0 = frame(r0)
    opt = Adam(1e-2)
    dtype = complex if complex_ else float
    p = rng.standard_normal((m, r0)).astype(dtype)
    for _ in range(int(rng.integers(1, 5))):
        p = opt.update("K", p, (rng.standard_normal((m, r0)) * rng.lognormal(0, 2, r0)).astype(dtype), frame=(B0,))
    stt = opt.state["K"]
    vhat_old = stt["v"] / stt["c2"]
    old_c2 = stt["c2"]
    B1_ = frame(r1)
    T2 = np.abs(B0.conj().T @ B1_) ** 2  # (r0, r1)
    opt.update("K", rng.standard_normal((m, r1)).astype(dtype), np.zeros((m, r1), dtype), frame=(B1_,))
    stt = opt.state["K"]
    assert np.all(stt["v"] >= 0) and np.all(stt["c1"] >= 0) and np.all(stt["c2"] >= 0)
    vhat_new = (stt["v"] / B2) / (old_c2 @ T2)  # undo the decay of the zero-gradient step
    covered = (old_c2 @ T2)[0] > 1e-12
    lo, hi = vhat_old.min(axis=1, keepdims=True), vhat_old.max(axis=1, keepdims=True)
    assert np.all(vhat_new[:, covered] >= lo * (1 - 1e-9) - 1e-300)
    assert np.all(vhat_new[:, covered] <= hi * (1 + 1e-9))


# --------------------------------------------------------------------------- policies, checkpoints, errors
def test_state_without_weights_from_an_old_checkpoint_gets_one_minus_beta_power_t():
    opt = Adam(1e-3)
    p = opt.update("K", np.ones((3, 2)), np.ones((3, 2)), frame=(np.eye(4)[:, :2],))
    sd = opt.state_dict()
    for stt in sd["state"].values():
        stt["t"] = 5
        del stt["c1"], stt["c2"]
    new = Adam(1e-3)
    new.load_state_dict(sd, get_backend("numpy"))
    np.testing.assert_allclose(new.state["K"]["c1"], np.full((1, 2), 1 - B1**5))
    np.testing.assert_allclose(new.state["K"]["c2"], np.full((1, 2), 1 - B2**5))
    del p


def test_snapshot_and_restore_put_back_the_state_exactly():
    rng = np.random.default_rng(6)
    B = orthonormal(rng, 6, 2)
    opt, p = Adam(1e-2), rng.standard_normal((3, 2))
    p = opt.update("K", p, rng.standard_normal((3, 2)), frame=(B,))
    snap = opt.snapshot()
    before = {k: (v if k in ("t", "frame") else v.copy()) for k, v in opt.state["K"].items()}
    opt.update("K", p, rng.standard_normal((3, 3)) @ np.eye(3)[:, :2], frame=(orthonormal(rng, 6, 2),))
    opt.update("b", np.ones(2), np.ones(2))
    opt.restore(snap)
    assert set(opt.state) == {"K"} and opt.transports == 0
    for k, v in before.items():
        if k == "frame":
            assert all(a is b for a, b in zip(v, opt.state["K"]["frame"]))
        else:
            assert np.array_equal(opt.state["K"][k], v), k


@pytest.mark.parametrize("kw,match", [(dict(beta1=1.0), "beta1"), (dict(beta2=-0.1), "beta2"),
                                      (dict(eps=float("nan")), "eps"), (dict(state_policy="keep"), "state_policy")])
def test_adam_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        Adam(1e-3, **kw)


def test_hyper_names_every_setting():
    assert make_optimizer("adam", 1e-3, beta1=0.8).hyper() == {
        "name": "adam", "lr": 1e-3, "state_policy": "transport", "beta1": 0.8, "beta2": B2, "eps": EPS}
    assert Momentum(0.1, mu=0.5, state_policy="reset").hyper() == {
        "name": "momentum", "lr": 0.1, "state_policy": "reset", "mu": 0.5}
