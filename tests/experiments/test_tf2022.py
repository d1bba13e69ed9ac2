"""The emulation of the 2022 TensorFlow step (dlrt_ref.experiments.tf2022_step): its glue to the library's
layers, loss and truncation, each switch, and its numbers from before the move out of dlrt_ref/train/."""
import numpy as np
import pytest

from dlrt_ref.experiments.tf2022_emulation import VARIANTS
from dlrt_ref.experiments.tf2022_step import KerasAdam, TF2022Emulation

WIDTHS = [12, 10, 8, 4]


def _data(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return rng.random((n, WIDTHS[0])), rng.integers(0, WIDTHS[-1], n)


def _central(loss, A, idx, h=1e-6):
    """Central difference of ``loss()`` in the entry ``idx`` of array ``A`` (changed in place, restored)."""
    old = A[idx]
    A[idx] = old + h
    lp = loss()
    A[idx] = old - h
    lm = loss()
    A[idx] = old
    return (lp - lm) / (2 * h)


def _check(grad, loss, A, rng, n=4, rtol=1e-6):
    """``grad`` against central differences at ``n`` random entries, relative to the gradient's scale
    (h = 1e-6 in float64: truncation ~h², cancellation ~eps/h ~ 1e-10, far below the tolerance)."""
    tol = rtol * np.abs(grad).max() + 1e-9
    for _ in range(n):
        idx = tuple(rng.integers(0, s) for s in A.shape)
        fd = _central(loss, A, idx)
        assert abs(grad[idx] - fd) <= tol, (idx, grad[idx], fd)


@pytest.mark.parametrize("start_rank, seed", [(2, 3), (None, 4)])
def test_factor_gradients_match_finite_differences(start_rank, seed):
    """K-, L- and S-gradients of the 2022 variables (Keras orientation) from the library's layers, against central
    differences of the loss (float64; no QR/SVD inside): ∂L/∂K at W = K Vᵀ, ∂L/∂Lᵀ at W = U Lᵀ, ∂L/∂S̃ at
    W = Û S̃ V̂ᵀ, the biases and the dense classifier. At a random point of unit scale (the Keras init's
    gradients, ~1e-7 here, would hide errors below the differences' round-off)."""
    em = TF2022Emulation(WIDTHS, 0.1, start_rank=start_rank, dtype=np.float64, seed=seed)
    x, y = _data()
    rng = np.random.default_rng(1)
    p = em.p
    for L in em.layers:  # a random point; K = U S, Lᵀ = S Vᵀ, as the step sets them
        k, r = L["k"], L["r"]
        for name in ("U", "S", "Vt", "b"):
            p[f"{name}{k}"][...] = 0.5 * rng.standard_normal(p[f"{name}{k}"].shape)
        p[f"K{k}"][:, :r] = p[f"U{k}"][:, :r] @ p[f"S{k}"][:r, :r]
        p[f"Lt{k}"][:r, :] = p[f"S{k}"][:r, :r] @ p[f"Vt{k}"][:r, :]
    g = em._kl_gradients(x, y)
    for L in em.layers:
        k, r = L["k"], L["r"]
        I = np.eye(r)
        K, Lt, U, Vt = p[f"K{k}"][:, :r], p[f"Lt{k}"][:r, :], p[f"U{k}"][:, :r], p[f"Vt{k}"][:r, :]
        others = em._current()
        at_K = lambda: em._pass(x, y, others[:k] + [(K, I, Vt.T)] + others[k + 1:])  # W_k = K Vᵀ
        at_L = lambda: em._pass(x, y, others[:k] + [(U, I, Lt.T)] + others[k + 1:])  # W_k = U Lᵀ
        _check(g[f"K{k}"][:, :r], at_K, K, rng)
        _check(g[f"Lt{k}"][:r, :], at_L, Lt, rng)
        assert not g[f"K{k}"][:, r:].any() and not g[f"Lt{k}"][r:, :].any()
    hat = {}
    for L in em.layers:  # a random augmented point Û S̃ V̂ᵀ
        k, r = L["k"], L["r"]
        hat[k] = (np.linalg.qr(rng.standard_normal((L["n_in"], 2 * r)))[0],
                  np.linalg.qr(rng.standard_normal((L["n_out"], 2 * r)))[0].T)
        p[f"S{k}"][:2 * r, :2 * r] = rng.standard_normal((2 * r, 2 * r))
    _, g = em._s_gradients(x, y, hat)
    at_S = lambda: em._s_gradients(x, y, hat)[0]
    for L in em.layers:
        k, r = L["k"], L["r"]
        _check(g[f"S{k}"], at_S, p[f"S{k}"], np.random.default_rng(2), n=6)  # zero outside the 2r×2r block
        _check(g[f"b{k}"], at_S, p[f"b{k}"], rng)
    _check(g["W_out"], at_S, p["W_out"], rng)
    _check(g["b_out"], at_S, p["b_out"], rng)


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
        opt = KerasAdam(1e-2)
        p = {"a": np.ones(3), "b": np.ones(3)}
        opt.apply(p, {"a": np.ones(3), "b": np.ones(3)}, ["a", "b"], drift)
        b1 = p["b"].copy()
        opt.apply(p, {"a": np.ones(3)}, ["a", "b"], drift)
        moved = not np.allclose(p["b"], b1)
        assert moved == drift


@pytest.mark.parametrize("drift", [True, False])
def test_drift_switch_in_the_step(drift):
    """In a step, the S-core and biases move before the S-step only when drift is on (zero-gradient Adam steps)."""
    em = TF2022Emulation([20, 16, 16, 3], 0.2, init="library", drift=drift, seed=1, dtype=np.float64)
    x, y = np.random.default_rng(2).random((32, 20)), np.arange(32) % 3
    em.step(x, y)  # first moments of S and b are now non-zero
    seen = {}
    s_gradients = em._s_gradients

    def spy(x, y, hat):  # the biases when the S-pass starts
        seen["b"] = [em.p[f"b{L['k']}"].copy() for L in em.layers]
        return s_gradients(x, y, hat)

    em._s_gradients = spy
    b_before = [em.p[f"b{L['k']}"].copy() for L in em.layers]
    em.step(x, y)
    moved = any(not np.array_equal(a, b) for a, b in zip(b_before, seen["b"]))
    assert moved == drift


def test_init_switch():
    """init="library": orthonormal U, V and zero biases (He-scaled); "tf2022": N(0, 0.05²) entries everywhere."""
    em = TF2022Emulation([100, 80, 80, 10], 0.1, init="library", seed=0, dtype=np.float64)
    for L in em.layers:
        k, r = L["k"], L["r"]
        for B in (em.p[f"U{k}"][:, :r], em.p[f"Vt{k}"][:r, :].T):
            np.testing.assert_allclose(B.T @ B, np.eye(r), atol=1e-12)
        assert not em.p[f"b{k}"].any()
    em = TF2022Emulation([100, 80, 80, 10], 0.1, init="tf2022", seed=0, dtype=np.float64)
    for name in ("U0", "Vt1", "S0", "b0", "W_out"):
        assert 0.04 < em.p[name].std() < 0.06, name  # b0: 80 entries
    U = em.p["U0"][:, :40]
    assert np.linalg.norm(U.T @ U - np.eye(40)) > 1.0


def test_reset_state_forgets_the_history():
    """state="reset": the moments of K, L and S from before a step do not matter; "positional" keeps them."""
    x, y = np.random.default_rng(2).random((32, 20)), np.arange(32) % 3
    for state in ("reset", "positional"):
        ems = [TF2022Emulation([20, 16, 16, 3], 0.2, init="library", drift=False, state=state, seed=1,
                               dtype=np.float64) for _ in range(2)]
        for em in ems:
            em.step(x, y)
        junk = np.random.default_rng(3)
        for name in ems[1].opt.m:
            if name[0] in "KLS":
                ems[1].opt.m[name] += junk.standard_normal(ems[1].opt.m[name].shape)
        losses = [em.step(x[::-1], y[::-1]) for em in ems] + [em.step(x, y) for em in ems]
        same = np.array_equal(ems[0].p["U0"], ems[1].p["U0"]) and losses[2] == losses[3]
        assert same == (state == "reset"), state


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
    with pytest.raises(ValueError, match="widths"):
        TF2022Emulation([12, 3, 4], 0.1)  # cap R = 1 < 2


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


# Losses of 4 steps, final ranks and the sum of the final logits of each emulated variant of the experiment
# (widths [20, 16, 12, 3], τ = 0.15, seed 2, float64), computed with dlrt_ref/train/tf2022.py before it was moved
# here and rebuilt on the library's layers, loss and truncation (git 8721502). The rebuilt step agrees to ~1e-10.
BEFORE_THE_MOVE = [
    ([1.089393948646, 1.091631669062, 1.088967250835, 1.090806095959], [4, 5], 4.3847691095),
    ([1.089393948646, 1.091620760885, 1.088957668739, 1.090776496282], [5, 4], 4.3791322672),
    ([1.114883338215, 1.034951817006, 1.116722332223, 1.051766249042], [8, 5], -6.9167870257),
    ([1.114883338215, 1.034636561659, 1.116424950719, 1.031619747619], [8, 5], 1.7270945326),
    ([1.114883338215, 1.034636561659, 1.116929400984, 1.032008872649], [8, 5], 1.770766771),
    ([1.114883338215, 1.034636561659, 1.115983431759, 1.031204207335], [8, 5], 1.7507777362),
]


def test_variants_match_the_emulation_before_the_move():
    switches = [sw for sw in VARIANTS.values() if sw is not None]
    assert len(switches) == len(BEFORE_THE_MOVE)
    rng = np.random.default_rng(4)
    x, y = rng.random((64, 20)), rng.integers(0, 3, 64)
    for sw, (losses, ranks, logit_sum) in zip(switches, BEFORE_THE_MOVE):
        em = TF2022Emulation([20, 16, 12, 3], 0.15, seed=2, dtype=np.float64, **sw)
        got = [em.step(x[i:i + 32], y[i:i + 32]) for i in (0, 32, 0, 32)]
        np.testing.assert_allclose(got, losses, rtol=1e-9, err_msg=str(sw))
        assert em.ranks() == ranks, sw
        assert em.logits(x).sum() == pytest.approx(logit_sum, rel=1e-8), sw
