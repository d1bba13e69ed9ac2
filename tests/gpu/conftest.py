"""Fixtures of the GPU tests: the strict CuPy stand-in (always) and the real CuPy (only with a GPU).

``HAVE_GPU`` is decided once, at collection, before any stand-in is installed.
Tests marked ``gpu`` skip cleanly without CuPy and a GPU.
"""
import pytest

from dlrt_ref.backend import available_backends
from tests.gpu import fake_cupy

HAVE_GPU = "cupy" in available_backends()


def pytest_collection_modifyitems(config, items):
    if HAVE_GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a GPU (tests marked 'gpu')")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def fake():
    """The stand-in plays CuPy for this test (strict: implicit host conversions raise); yields its STATS."""
    with fake_cupy.install(strict=True) as stats:
        yield stats
