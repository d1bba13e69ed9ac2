"""Shared fixtures: run tests on every available backend; CuPy skips cleanly."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

from dlrt_ref.cli import apply_threads  # noqa: E402  (imports no NumPy)

# BLAS threads chosen as the commands choose them (README "Threads"), before NumPy loads: an existing
# OMP_NUM_THREADS/OPENBLAS_NUM_THREADS wins, else one thread.
apply_threads([])

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from dlrt_ref.backend import available_backends, get_backend

# Hypothesis profile: modest example counts keep the suite fast on 2 cores;
# no deadline because BLAS timings on shared cores are erratic.
settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["numpy", "cupy"])
def backend(request):
    """Every test using this fixture runs on NumPy, and on CuPy where a GPU exists."""
    if request.param not in available_backends():
        pytest.skip(f"backend {request.param!r} not available on this machine")
    return get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
