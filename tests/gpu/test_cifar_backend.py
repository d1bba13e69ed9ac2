"""The CIFAR layers, models and augmentation on the strict CuPy stand-in: a DLRT ra-bug step of each
tiny model and an augmented batch stay on the device, call no NumPy function on a device array, and
give the NumPy run's numbers."""
import numpy as np
import pytest

from dlrt_ref.backend import get_backend, to_numpy
from dlrt_ref.nn.cifar_models import CIFAR_MODELS
from dlrt_ref.train.augment import Augment
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD
from tests.gpu import fake_cupy


def _step(name, backend):
    be = get_backend(backend)
    net = CIFAR_MODELS[name](lowrank="all", width=1 / 16, backend=backend, dtype=np.float64, seed=0)
    g = np.random.default_rng(1)
    x, y = g.random((4, 3, 32, 32)), g.integers(0, 10, 4)
    aug = Augment([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], seed=2)
    xb = aug(be.asarray(x), step=0)
    tr = DLRT(net, SGD(0.05), method="ra-bug", tau=0.1)
    info = tr.step(xb, be.asarray(y))
    net.eval()
    logits = net.forward(xb)
    return tr, info, xb, logits


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_model_step_and_augmentation_on_the_stand_in(fake, name):
    ref, ref_info, ref_x, ref_logits = _step(name, "numpy")
    fake.reset()
    tr, info, xb, logits = _step(name, "cupy")
    assert fake.violations == [], fake.violations
    assert isinstance(xb, fake_cupy.ndarray) and isinstance(logits, fake_cupy.ndarray)
    for layer in tr.net.flat_layers():
        for a in list(layer.params.values()) + list(getattr(layer, "state", {}).values()):
            assert isinstance(a, fake_cupy.ndarray), layer
    np.testing.assert_array_equal(to_numpy(xb), ref_x)
    assert info.loss == pytest.approx(ref_info.loss, rel=1e-10) and info.ranks == ref_info.ranks
    np.testing.assert_allclose(to_numpy(logits), ref_logits, rtol=1e-8, atol=1e-10)
