"""Backend hygiene on the CPU: a DLRT training step and integrator steps run on a strict CuPy stand-in.

``fake_cupy`` (this folder) plays CuPy with NumPy underneath: implicit conversion of a
device array to NumPy raises (as CuPy's), so does any NumPy function or ufunc that
receives one, any host array mixed into a device operation, and (strict mode) every
implicit host read (``float``, ``bool``, ``int``, ``.item()``, ``.tolist()``). Host
synchronisations are only possible through ``to_numpy`` (``.get()``) and are counted
with the library line that made them.

Asserted here, for a training step of every DLRT method and for integrator steps on a
matrix ODE: (1) no NumPy call received a device array and no array was created on the
wrong backend (no violation, recorded even if the library swallowed the exception);
(2) every parameter, factor and optimiser-state array is still a device array after the
step; (3) host synchronisations per step stay within the documented budget
:func:`sync_budget`; (4) the result equals the NumPy run's.

Host synchronisations per training step (L low-rank layers; each one is a
``to_numpy`` of a small array — the GEMMs never leave the device):

* 1 per pass: the loss, with the label range check in the same transfer
  (``nn/loss.py``);
* ra-bug, parallel — per layer: 1 for the rank decision of the truncation (the
  singular values, with a finiteness flag: ``truncation.truncate``); per augmented side
  (U and V) the rank decision of ``orthonormal.orthonormalise_after``, with the norm ‖A‖_F
  of its threshold δ = 10·√(q+k)·eps·‖A‖_F in the same transfer: with Householder 1
  (the σ of R22); with ``ortho="cholqr2"`` 1 (the eigenvalues of the float64 Gram
  matrix of the new directions), + 1 for R22's σ where the Gram matrix cannot resolve
  the σ around δ and the Householder form decides (float64 data; float32 data with
  m + k ≤ 64(q + k) is always decided by the Gram matrix in one read,
  ``test_augmentation_reads_the_device_once``).
  So ≤ 1 + 2·1 per layer with Householder, ≤ 1 + 2·2 with CholeskyQR2;
* bug, ksl — per layer: 1 per CholeskyQR2 orthonormalisation (K and L), none with
  Householder.

"""
import numpy as np
import pytest

from tests.gpu import fake_cupy
from dlrt_ref.backend import available_backends, get_backend, to_numpy
from dlrt_ref.integrators import INTEGRATORS
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.nn import mlp
from dlrt_ref.orthonormal import orthonormalise, orthonormalise_after
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD, Adam
from dlrt_ref.truncation import truncate

WIDTHS, RANKS = [20, 12, 10, 4], [3, 3, None]


def sync_budget(method: str, ortho: str, n_layers: int, passes: int) -> int:
    """The documented bound on host synchronisations per training step (module docstring)."""
    per_layer = {"ra-bug": 1 + 2 * (2 if ortho == "cholqr2" else 1), "parallel": 1 + 2 * (2 if ortho == "cholqr2" else 1),
                 "bug": 2 if ortho == "cholqr2" else 0, "ksl": 2 if ortho == "cholqr2" else 0}[method]
    return passes + n_layers * per_layer


def _is_device(a) -> bool:
    return isinstance(a, fake_cupy.ndarray)


def _all_arrays(trainer):
    for layer in trainer.net.layers:
        yield from layer.params.values()
        if getattr(layer, "lowrank", False):
            yield from (layer.U, layer.S, layer.V)
    for st in trainer.opt.state.values():
        for k, v in st.items():
            if k == "frame":
                yield from v
            elif k != "t":
                yield v


# --------------------------------------------------------------------------- #
# The stand-in itself
# --------------------------------------------------------------------------- #
def test_stand_in_behaves_like_a_strict_cupy(fake):
    be = get_backend("cupy")
    assert "cupy" in available_backends() and be.xp is fake_cupy
    a = be.asarray(np.arange(6.0).reshape(2, 3))
    assert _is_device(a) and _is_device(a.sum()) and _is_device(a @ a.T) and _is_device(2.0 * a + np.float32(1))
    for implicit in (lambda: np.asarray(a), lambda: float(a.sum()), lambda: bool(a.all()), lambda: a.sum().item(),
                     lambda: a.tolist(), lambda: int(a[0, 0]), lambda: f"{a.sum():.3f}"):
        with pytest.raises(TypeError):
            implicit()
    for numpy_call in (lambda: np.linalg.norm(a), lambda: np.sqrt(a), lambda: np.concatenate([a, a])):
        with pytest.raises(TypeError, match="NumPy"):
            numpy_call()
    for mixed in (lambda: a + np.ones(3), lambda: fake_cupy.concatenate([a, np.ones((1, 3))]),
                  lambda: a[np.array([0])]):
        with pytest.raises(TypeError, match="wrong backend"):
            mixed()
    n_violations = len(fake.violations)
    assert n_violations == 13
    assert fake.syncs == []
    np.testing.assert_array_equal(to_numpy(a), np.arange(6.0).reshape(2, 3))  # the explicit path: counted
    assert [k for k, _ in fake.syncs] == ["get"] and "test_fake_cupy.py" in fake.syncs[0][1]
    # CuPy's cholesky does not raise for a matrix that is not positive definite; neither does the stand-in
    L = fake_cupy.linalg.cholesky(be.asarray(np.array([[1.0, 2.0], [2.0, 1.0]])))
    assert to_numpy(L)[1, 1] <= 0


def test_stand_in_is_removed_after_the_test():
    assert get_backend("numpy").name == "numpy"
    if "cupy" not in available_backends():  # no real GPU here: the stand-in must not linger
        from dlrt_ref.backend import BackendError

        with pytest.raises(BackendError):
            get_backend("cupy")


def test_cholqr2_guard_catches_cupy_style_cholesky_failure(fake):
    """A rank-deficient A: NumPy raises in cholesky, CuPy (and the stand-in) return a factor with a bad pivot.

    The guard must still refuse (and Householder take over): orthonormalise returns orthonormal columns.
    """
    be = get_backend("cupy")
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 6))
    A[:, 5] = A[:, 4]  # rank 5
    # κ = 1e12: far outside CholeskyQR2's range (κ² = 1e24 > 1/eps), the Cholesky factor is garbage
    B = np.linalg.qr(rng.standard_normal((30, 6)))[0] @ np.diag(np.logspace(0, -12, 6)) @ \
        np.linalg.qr(rng.standard_normal((6, 6)))[0]
    for M in (A, B):
        Q = to_numpy(orthonormalise(be.asarray(M), "cholqr2"))
        np.testing.assert_allclose(Q.T @ Q, np.eye(6), atol=1e-12)
        assert np.linalg.norm(M - Q @ (Q.T @ M)) <= 1e-12 * np.linalg.norm(M)  # span(M) ⊆ span(Q)
    assert fake.violations == []


# --------------------------------------------------------------------------- #
# A training step
# --------------------------------------------------------------------------- #
def _train(backend, method, ortho, opt_cls, dtype, steps=2):
    be = get_backend(backend)
    net = mlp(WIDTHS, ranks=RANKS, backend=backend, dtype=dtype, seed=0)
    opt = opt_cls(0.05)
    tr = DLRT(net, opt, method=method, tau=0.1, r_min=1, ortho=ortho)
    rng = np.random.default_rng(0)
    x, y = be.asarray(rng.standard_normal((16, WIDTHS[0])).astype(dtype)), be.asarray(rng.integers(0, 4, 16))
    infos = [tr.step(x, y) for _ in range(steps)]
    return tr, infos


@pytest.mark.parametrize("method,ortho,opt_cls,dtype", [
    ("ra-bug", "cholqr2", SGD, np.float32), ("ra-bug", "householder", Adam, np.float64),
    ("parallel", "cholqr2", Adam, np.float32), ("bug", "cholqr2", SGD, np.float64), ("ksl", "householder", Adam, np.float32),
])
def test_training_step_on_the_stand_in(fake, method, ortho, opt_cls, dtype):
    ref, ref_infos = _train("numpy", method, ortho, opt_cls, dtype)
    fake.reset()
    tr, infos = _train("cupy", method, ortho, opt_cls, dtype, steps=1)
    first = len(fake.syncs)
    info = tr.step(*_batch(dtype))
    per_step = len(fake.syncs) - first
    assert fake.violations == [], fake.violations
    assert all(_is_device(a) for a in _all_arrays(tr)), "an array left the device"
    budget = sync_budget(method, ortho, len(tr.layers), info.passes)
    assert per_step <= budget, (per_step, budget, fake.sync_sites())
    assert per_step >= info.passes  # the loss is read every pass (the counter works)
    # same numbers as on NumPy (same operations, same order)
    assert [i.loss for i in infos + [info]] == pytest.approx([i.loss for i in ref_infos], rel=1e-6)
    assert info.ranks == ref_infos[-1].ranks
    for a, b in zip(tr.layers, ref.layers):
        W = to_numpy(a.to_dense())
        np.testing.assert_allclose(W, b.to_dense(), rtol=0, atol=1e-5 * np.abs(W).max())


def _batch(dtype):
    be = get_backend("cupy")
    rng = np.random.default_rng(0)
    return be.asarray(rng.standard_normal((16, WIDTHS[0])).astype(dtype)), be.asarray(rng.integers(0, 4, 16))


def test_fit_epoch_on_the_stand_in(fake, tmp_path):
    """The train loop (divergence guard, evaluation) keeps to the budget: + 1 sync per step for the NaN check."""
    from dlrt_ref.data import load_mnist
    from dlrt_ref.train.loop import fit

    data = load_mnist(subset=64, test_subset=32, seed=0)
    net = mlp([784, 16, 10], ranks=[4, None], backend="cupy", seed=0)
    tr = DLRT(net, SGD(0.1), method="ra-bug", tau=0.1, ortho="cholqr2")
    fake.reset()
    fit(tr, data, epochs=1, batch_size=32, log_every=0)
    assert fake.violations == [], fake.violations
    steps, eval_batches = tr.steps, 1  # 64 images in batches of 32; the test subset (32) in one evaluation batch
    assert steps == 2
    # per step: the DLRT budget + 1 NaN check of all parameters (loop._nonfinite_param) + 1 stream synchronisation
    # for the step time; per evaluation batch: the loss and the number of correct predictions
    budget = steps * (sync_budget("ra-bug", "cholqr2", 1, 1) + 2) + eval_batches * 2
    assert len(fake.syncs) <= budget, fake.sync_sites()
    # host -> device: only the batches (x, y) of the steps and of the evaluation, nothing created on the host
    assert len(fake.uploads) == 2 * (steps + eval_batches), fake.uploads


# --------------------------------------------------------------------------- #
# Integrator steps on a matrix ODE
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["ra-bug", "bug", "ksl", "parallel", "midpoint-bug"])
def test_integrator_step_on_the_stand_in(fake, method):
    rng = np.random.default_rng(1)
    m, n, r = 12, 9, 3
    A = rng.standard_normal((m, n))
    B = rng.standard_normal((m, m)) / m
    U0 = np.linalg.qr(rng.standard_normal((m, r)))[0]
    V0 = np.linalg.qr(rng.standard_normal((n, r)))[0]
    S0 = np.diag([1.0, 0.5, 0.1])
    rule = dict(tau=1e-3) if method in ("ra-bug", "parallel", "midpoint-bug") else {}

    def run(be):
        Ad, Bd = be.asarray(A), be.asarray(B)
        field = lambda t, Y: Bd @ Y.to_dense() + Ad  # noqa: E731 (m, m) @ (m, n) + (m, n)
        Y0 = LowRankMatrix(be.asarray(U0), be.asarray(S0), be.asarray(V0))
        return INTEGRATORS[method](field, t0=0.0, Y0=Y0, h=0.05, ortho="cholqr2", **rule)

    ref = run(get_backend("numpy"))
    fake.reset()
    res = run(get_backend("cupy"))
    assert fake.violations == [], fake.violations
    assert all(_is_device(a) for a in (res.Y.U, res.Y.S, res.Y.V))
    # an integrator step reads only small arrays: per augmented side ≤ 2 (the Gram eigenvalues with ‖A‖_F, and
    # R22's σ if the Householder form decides; see the module docstring), per truncation 1, per CholeskyQR2
    # orthonormalisation 1; midpoint-bug augments 4 sides
    budget = {"ra-bug": 2 * 2 + 1, "parallel": 2 * 2 + 1, "midpoint-bug": 4 * 2 + 1, "bug": 2, "ksl": 2}[method]
    assert len(fake.syncs) <= budget, fake.sync_sites()
    np.testing.assert_allclose(to_numpy(res.Y.to_dense()), ref.Y.to_dense(), rtol=0, atol=1e-12)


def test_truncate_reads_the_device_once(fake):
    be = get_backend("cupy")
    S = be.asarray(np.diag([3.0, 2.0, 1.0, 1e-3]).astype(np.float32))
    fake.reset()
    tr = truncate(S, tau=0.1)
    assert tr.solver == "gram" and tr.rank == 3 and _is_device(tr.P) and _is_device(tr.Q) and _is_device(tr.sigma)
    assert len(fake.syncs) == 1 and fake.violations == []
    S[1, 1] = np.float32(np.nan)
    with pytest.raises(ValueError, match="NaN"):
        truncate(S, tau=0.1)


@pytest.mark.parametrize("ortho", ["householder", "cholqr2"])
@pytest.mark.parametrize("deficit", [0, 3])
def test_augmentation_reads_the_device_once(fake, ortho, deficit):
    """orthonormalise_after on float32 data: one host read (‖A‖_F with the σ or the Gram eigenvalues) per call."""
    be = get_backend("cupy")
    rng = np.random.default_rng(2)
    m, q, k = 60, 6, 6
    Q = np.linalg.qr(rng.standard_normal((m, q)))[0]
    A = Q @ rng.standard_normal((q, k)) + rng.standard_normal((m, k - deficit)) @ rng.standard_normal((k - deficit, k))
    fake.reset()
    U = orthonormalise_after(be.asarray(Q.astype(np.float32)), be.asarray(A.astype(np.float32)), ortho)
    assert _is_device(U) and U.shape == (m, k - deficit)
    assert len(fake.syncs) == 1 and fake.violations == [], fake.sync_sites()


@pytest.mark.parametrize("kind", ["dense", "uv"])
def test_baseline_step_on_the_stand_in(fake, kind):
    """The dense and UVᵀ baselines: one host synchronisation per step (the loss)."""
    from dlrt_ref.train.baselines import UVTrainer, dense_trainer

    net = mlp(WIDTHS, ranks=None if kind == "dense" else RANKS, backend="cupy", seed=0)
    tr = dense_trainer(net, Adam(0.01)) if kind == "dense" else UVTrainer(net, Adam(0.01))
    x, y = _batch(np.float32)
    tr.step(x, y)
    fake.reset()
    tr.step(x, y)
    assert fake.violations == [] and len(fake.syncs) == 1, fake.sync_sites()
    assert all(_is_device(a) for layer in net.layers for a in layer.params.values())
