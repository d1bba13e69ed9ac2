import numpy as np
import pytest

from dlrt_ref.backend import BackendError, array_module, get_backend, to_numpy


def test_roundtrip(backend, rng):
    a = rng.standard_normal((3, 4))
    x = backend.asarray(a)
    assert type(x).__module__.split(".")[0] == backend.name
    np.testing.assert_array_equal(to_numpy(x), a)
    assert array_module(x) is backend.xp


def test_unknown_backend():
    with pytest.raises(BackendError, match="unknown backend 'torch'"):
        get_backend("torch")


def test_cupy_unavailable_message():
    from dlrt_ref.backend import available_backends

    if "cupy" in available_backends():
        pytest.skip("CuPy is available here")
    with pytest.raises(BackendError, match="not available"):
        get_backend("cupy")


def test_get_backend_is_idempotent():
    be = get_backend("numpy")
    assert get_backend(be) is be
