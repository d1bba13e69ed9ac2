"""A Dask LocalCluster shared by the tests that need a running scheduler (one start instead of one per test)."""
import pytest


@pytest.fixture(scope="session")
def dask_cluster():
    """A LocalCluster of 2 worker processes with one thread each (skips when dask is not installed)."""
    dd = pytest.importorskip("dask.distributed")
    with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster
