"""One DLRT training step of every method against a step written out by hand in NumPy.

The reference forms every weight W = U S Vᵀ densely, computes the loss gradient of the MLP with its
own forward/backward (ReLU, softmax cross-entropy), and writes each integrator's sub-steps with SGD
(explicit Euler) as in the papers. Documented pass rule (dlrt_ref.train.dlrt): every pass of a step
sees the dense parameters (biases, dense layers) as they were at the start of the step; they are
updated once, after the last pass, with the gradient of the pass that serves the S-step.
"""
import numpy as np
import pytest

from dlrt_ref.data import teacher_student
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

WIDTHS = [20, 24, 24, 4]
H = 0.2


@pytest.fixture(scope="module")
def batch():
    ds = teacher_student(64, 10, WIDTHS, ranks=3, seed=2, dtype=np.float64)
    return ds.x_train, ds.y_train


def _net():
    return mlp(WIDTHS, ranks=[8, 8, None], dtype=np.float64, seed=0, spectrum="linear")


def mlp_grads(Ws, bs, x, y):
    """Hand-written forward/backward of the ReLU MLP with mean softmax cross-entropy: (dW, db) per layer."""
    acts, a = [x], x
    for k, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W.T + b  # (B, n_in)(n_in, n_out)
        a = np.maximum(z, 0) if k < len(Ws) - 1 else z
        acts.append(a)
    z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(len(y)), y] -= 1
    d /= len(y)  # ∂L/∂logits
    dWs, dbs = [None] * len(Ws), [None] * len(Ws)
    for k in reversed(range(len(Ws))):
        dWs[k], dbs[k] = d.T @ acts[k], d.sum(axis=0)  # (n_out, B)(B, n_in)
        d = (d @ Ws[k]) * (acts[k] > 0) if k > 0 else None
    return dWs, dbs


def _state(net):
    lr = [(l.U.copy(), l.S.copy(), l.V.copy()) for l in net.lowrank_layers()]
    bs = [l.params["b"].copy() for l in net.layers if "b" in l.params]
    W_last = net.layers[-1].params["W"].copy()
    return lr, bs, W_last


def _apply_dense(bs, W_last, dbs, dW_last):
    return [b - H * g for b, g in zip(bs, dbs)], W_last - H * dW_last


def _compare(net, Ws_lowrank, bs, W_last, ranks=None):
    got = [l.to_dense() for l in net.lowrank_layers()]
    for a, b in zip(got, Ws_lowrank):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    got_b = [l.params["b"] for l in net.layers if "b" in l.params]
    for a, b in zip(got_b, bs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(net.layers[-1].params["W"], W_last, rtol=1e-10, atol=1e-13)
    if ranks is not None:
        assert [l.rank for l in net.lowrank_layers()] == ranks


def test_ksl_step_by_hand(batch):
    """Lie splitting K → S (backward) → L ([LO14] Sec. 3.2) with SGD sub-steps, three passes:
    K at W0; S at U1 Ŝ1 V0ᵀ; L at U1 S̃0 V0ᵀ. Dense parameters: start values in every pass,
    gradient of the S pass (the 2nd)."""
    x, y = batch
    net = _net()
    lr, bs, W_last = _state(net)
    Ws = lambda lows: [*lows, W_last]  # noqa: E731  the dense classifier stays at its start value
    dW0, _ = mlp_grads(Ws([U @ S @ V.T for U, S, V in lr]), bs, x, y)  # K pass
    K1 = [U @ S - H * G @ V for (U, S, V), G in zip(lr, dW0)]  # K̇ = −G V0
    QR = [np.linalg.qr(K) for K in K1]  # U1, Ŝ1
    dW1, db1 = mlp_grads(Ws([U1 @ S1 @ V.T for (U1, S1), (_, _, V) in zip(QR, lr)]), bs, x, y)  # S pass
    S_t = [S1 + H * U1.T @ G @ V for (U1, S1), (_, _, V), G in zip(QR, lr, dW1)]  # Ṡ = +U1ᵀ G V0 (backward)
    dW2, _ = mlp_grads(Ws([U1 @ St @ V.T for (U1, _), St, (_, _, V) in zip(QR, S_t, lr)]), bs, x, y)  # L pass
    L1 = [V @ St.T - H * G.T @ U1 for (_, _, V), St, (U1, _), G in zip(lr, S_t, QR, dW2)]  # L̇ = −Gᵀ U1
    W1 = [U1 @ L.T for (U1, _), L in zip(QR, L1)]  # U1 L1ᵀ = U1 S1 V1ᵀ
    bs1, W_last1 = _apply_dense(bs, W_last, db1, dW1[-1])
    info = DLRT(net, SGD(H), method="ksl").step(x, y)
    assert info.passes == 3
    _compare(net, W1, bs1, W_last1, ranks=[8, 8])


def test_parallel_step_by_hand(batch):
    """Parallel BUG ([CKL24] Alg. 1) with SGD: one pass at W0; K1, L1, S̄1 from it; the augmented
    core [[S̄1, L1ᵀṼ], [ŨᵀK1, 0]] truncated at ϑ = τ‖σ‖ within [r_min, r_max]."""
    x, y = batch
    tau, r_min, r_max = 0.3, 2, 12
    net = _net()
    lr, bs, W_last = _state(net)
    dW, db = mlp_grads([*[U @ S @ V.T for U, S, V in lr], W_last], bs, x, y)
    W1, ranks = [], []
    for (U, S, V), G in zip(lr, dW):
        K1, L1, S_bar = U @ S - H * G @ V, V @ S.T - H * G.T @ U, S - H * U.T @ G @ V
        Ut = np.linalg.qr(K1 - U @ (U.T @ K1))[0]  # new directions: orth((I − U0U0ᵀ) K1)
        Vt = np.linalg.qr(L1 - V @ (V.T @ L1))[0]
        S_hat = np.block([[S_bar, L1.T @ Vt], [Ut.T @ K1, np.zeros((Ut.shape[1], Vt.shape[1]))]])
        P, s, Qh = np.linalg.svd(S_hat)
        tails = [np.sqrt(np.sum(s[j:] ** 2)) for j in range(len(s) + 1)]
        r1 = min(max(next(j for j, t in enumerate(tails) if t <= tau * np.linalg.norm(s)), r_min), r_max)
        U_hat, V_hat = np.hstack([U, Ut]), np.hstack([V, Vt])
        W1.append(U_hat @ P[:, :r1] @ np.diag(s[:r1]) @ Qh[:r1] @ V_hat.T)
        ranks.append(r1)
    bs1, W_last1 = _apply_dense(bs, W_last, db, dW[-1])
    info = DLRT(net, SGD(H), method="parallel", tau=tau, r_min=r_min, r_max=r_max).step(x, y)
    assert info.passes == 1
    assert ranks != [8, 8]  # the truncation chose new ranks
    _compare(net, W1, bs1, W_last1, ranks=ranks)


def test_bug_step_by_hand(batch):
    """Fixed-rank BUG ([CL22]) with SGD: K and L at W0, Galerkin S-step at U1 M S0 Nᵀ V1ᵀ (2nd pass,
    which also gives the dense gradient)."""
    x, y = batch
    net = _net()
    lr, bs, W_last = _state(net)
    dW0, _ = mlp_grads([*[U @ S @ V.T for U, S, V in lr], W_last], bs, x, y)
    U1 = [np.linalg.qr(U @ S - H * G @ V)[0] for (U, S, V), G in zip(lr, dW0)]
    V1 = [np.linalg.qr(V @ S.T - H * G.T @ U)[0] for (U, S, V), G in zip(lr, dW0)]
    S0 = [Ua.T @ U @ S @ V.T @ Va for Ua, Va, (U, S, V) in zip(U1, V1, lr)]  # M S0 Nᵀ
    dW1, db1 = mlp_grads([*[Ua @ S @ Va.T for Ua, S, Va in zip(U1, S0, V1)], W_last], bs, x, y)
    W1 = [Ua @ (S - H * Ua.T @ G @ Va) @ Va.T for Ua, S, Va, G in zip(U1, S0, V1, dW1)]
    bs1, W_last1 = _apply_dense(bs, W_last, db1, dW1[-1])
    info = DLRT(net, SGD(H), method="bug").step(x, y)
    assert info.passes == 2
    _compare(net, W1, bs1, W_last1, ranks=[8, 8])
