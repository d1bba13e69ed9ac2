"""The emulation of the 2022 TensorFlow step (dlrt_ref.train.tf2022): hand-written gradients and each switch."""
import numpy as np
import pytest

from dlrt_ref.train.tf2022 import TF2022Emulation, _Adam

WIDTHS = [12, 10, 8, 4]


def _data(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return rng.random((n, WIDTHS[0])), rng.integers(0, WIDTHS[-1], n)


def _central(em, x, y, pts, A, idx, h=1e-6):
    """Central difference of the pass's loss in the entry ``idx`` of array ``A`` (changed in place, restored)."""
    old = A[idx]
    A[idx] = old + h
    lp = em._pass(x, y, pts, False)[0]
    A[idx] = old - h
    lm = em._pass(x, y, pts, False)[0]
    A[idx] = old
    return (lp - lm) / (2 * h)


@pytest.mark.parametrize("init", ["tf2022", "library"])
def test_pass_gradients_match_finite_differences(init):
    """Gradients of one pass (layers at (P, Q, c)) against central differences, float64 (no QR/SVD inside)."""
    em = TF2022Emulation(WIDTHS, 0.1, init=init, dtype=np.float64, seed=3)
    x, y = _data()
    rng = np.random.default_rng(1)
    pts = [(rng.standard_normal((a, 3)) * 0.5, rng.standard_normal((3, b)) * 0.5, rng.standard_normal(b) * 0.1)
           for a, b in zip(WIDTHS[:-2], WIDTHS[1:-1])]
    loss, grads, gout = em._pass(x, y, pts, True)
    for i, (P, Q, c) in enumerate(pts):
        for j, A in enumerate((P, Q, c)):
            for _ in range(4):
                idx = tuple(rng.integers(0, s) for s in A.shape)
                fd = _central(em, x, y, pts, A, idx)
                assert abs(grads[i][j][idx] - fd) <= 1e-6 * max(1.0, abs(fd)), (i, j, idx)
    for name in ("W_out", "b_out"):
        idx = tuple(rng.integers(0, s) for s in em.p[name].shape)
        assert abs(gout[name][idx] - _central(em, x, y, pts, em.p[name], idx)) <= 1e-7


def _hat(em, k):
    """A random augmented basis pair and core for layer k, as after the S-step."""
    L = em.layers[k]
    r = L["r"]
    rng = np.random.default_rng(5)
    Uh = np.linalg.qr(rng.standard_normal((L["n_in"], 2 * r)))[0]
    Vh = np.linalg.qr(rng.standard_normal((L["n_out"], 2 * r)))[0]
    S = rng.standard_normal((2 * r, 2 * r)) * np.geomspace(1, 1e-3, 2 * r)
    em.p[f"S{k}"][:2 * r, :2 * r] = S
    return Uh, Vh.T, Uh @ S @ Vh.T


@pytest.mark.parametrize("truncation", ["correct", "2022"])
def test_truncation_at_zero_tolerance(truncation):
    """τ = 0: the correct truncation keeps Û S̃ V̂ᵀ exactly; the 2022 one (rows of V) changes it."""
    em = TF2022Emulation([40, 30, 30, 4], 0.0, start_rank=3, init="library", truncation=truncation,
                         dtype=np.float64)
    Uh, Vth, W = _hat(em, 0)
    em._truncate(em.layers[0], (Uh, Vth))
    r = em.layers[0]["r"]
    W_new = em.p["U0"][:, :r] @ em.p["S0"][:r, :r] @ em.p["Vt0"][:r, :]
    err = np.linalg.norm(W_new - W) / np.linalg.norm(W)
    if truncation == "correct":
        assert r == 6 and err <= 100 * np.finfo(float).eps
    else:
        assert r == 3  # no cut found below the tolerance: the rank stays (2022 rule)
        assert err > 1e-3


def test_truncation_tail_rule():
    """The 2022 tail sum leaves out the last singular value; the correct one includes it.

    σ = (1, 1, 1, 1, 1, 0.8), ϑ = τ‖σ‖ = 1.1: the correct rule cuts at 5 (‖σ[5:]‖ = 0.8 < ϑ ≤ ‖σ[4:]‖ = 1.28),
    the 2022 rule at 4 (‖σ[4:5]‖ = 1.0 < ϑ).
    """
    d = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.8])
    tau = 1.1 / np.linalg.norm(d)
    for truncation, expected in (("correct", 5), ("2022", 4)):
        em = TF2022Emulation([40, 30, 30, 4], tau, start_rank=3, init="library", truncation=truncation,
                             dtype=np.float64)
        em.p["S0"][:6, :6] = np.diag(d)  # diagonal: the 2022 transposition has no effect here
        em._truncate(em.layers[0], (np.eye(40)[:, :6], np.eye(30)[:6]))
        assert em.layers[0]["r"] == expected


def test_drift_moves_variables_without_gradient():
    """Keras Adam with a zero gradient still moves a variable by its first moment; drift=False does not."""
    for drift in (True, False):
        opt = _Adam(1e-2)
        p = {"a": np.ones(3), "b": np.ones(3)}
        opt.apply(p, {"a": np.ones(3), "b": np.ones(3)}, ["a", "b"], drift)
        b1 = p["b"].copy()
        opt.apply(p, {"a": np.ones(3)}, ["a", "b"], drift)
        moved = not np.allclose(p["b"], b1)
        assert moved == drift


def test_step_runs_and_respects_caps():
    em = TF2022Emulation([20, 16, 16, 3], 0.2, seed=1)
    x, y = np.random.default_rng(2).random((32, 20)), np.arange(32) % 3
    losses = [em.step(x, y) for _ in range(5)]
    assert all(np.isfinite(losses))
    for L in em.layers:
        assert 2 <= L["r"] <= L["R"] == min(L["n_in"], L["n_out"]) // 2


def test_bad_options():
    with pytest.raises(ValueError):
        TF2022Emulation(WIDTHS, 0.1, truncation="wrong")
    with pytest.raises(ValueError):
        TF2022Emulation(WIDTHS, -1.0)


def test_mapped_state_follows_a_rotation_of_the_basis():
    """state="mapped": rotating the frame by orthogonal Q rotates the first moments like the coordinates."""
    em = TF2022Emulation([40, 30, 30, 4], 0.1, start_rank=3, init="library", drift=False, state="mapped",
                         dtype=np.float64)
    rng = np.random.default_rng(7)
    Uh = np.linalg.qr(rng.standard_normal((40, 6)))[0]
    Vth = np.linalg.qr(rng.standard_normal((30, 6)))[0].T
    Q1, Q2 = (np.linalg.qr(rng.standard_normal((6, 6)))[0] for _ in range(2))
    m = rng.standard_normal((6, 6))
    em.opt.m["S0"], em.opt.v["S0"] = np.zeros_like(em.p["S0"]), np.zeros_like(em.p["S0"])
    em.opt.m["S0"][:6, :6] = m
    em._map("S0", (Uh, Vth))
    em._map("S0", (Uh @ Q1, Q2.T @ Vth))  # W = Uh S Vth = (Uh Q1)(Q1ᵀ S Q2)(Q2ᵀ Vth)
    np.testing.assert_allclose(em.opt.m["S0"][:6, :6], Q1.T @ m @ Q2, atol=1e-12)
    Vt = np.linalg.qr(rng.standard_normal((30, 3)))[0].T  # K's frame: the rows of Vᵀ
    Q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    mk = rng.standard_normal((40, 3))
    em.opt.m["K0"], em.opt.v["K0"] = np.zeros_like(em.p["K0"]), np.zeros_like(em.p["K0"])
    em.opt.m["K0"][:, :3] = mk
    em._map("K0", (Vt,))
    em._map("K0", (Q @ Vt,))  # K Vᵀ = (K Qᵀ)(Q Vᵀ)
    np.testing.assert_allclose(em.opt.m["K0"][:, :3], mk @ Q.T, atol=1e-12)
    with pytest.raises(ValueError, match="drift"):
        TF2022Emulation(WIDTHS, 0.1, state="mapped", drift=True)
