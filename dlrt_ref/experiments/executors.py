"""Where a sweep's runs execute: here, in N local processes, or on a Dask cluster (``figures --jobs/--dask``).

Every executor has ``map(calls)``, which yields ``(index, result, error, seconds)`` for each call
``(spec, data_folder, deps)`` as it finishes (in any order; :func:`dlrt_ref.experiments.runs.sweep` puts
the results back in spec order), and ``close()``. ``calls`` may grow while ``map`` runs (the sweep appends
a spec once the runs it depends on have finished): after each result it yields, ``map`` submits what was
appended, and it ends when every call has a result.

- :class:`~dlrt_ref.experiments.runs.SerialExecutor`: one after the other, in this process.
- :class:`ProcessExecutor` (``--jobs N``): N processes of the standard library, started with ``spawn``;
  each sets its BLAS/OpenMP threads to 1 (:func:`dlrt_ref.threads.apply_threads`) before NumPy loads.
  A worker that dies (killed, out of memory) breaks the pool: every run in flight is resubmitted once
  to a fresh pool; what fails again is reported, the finished runs are cached, so a rerun resumes.
- :class:`DaskExecutor` (``--dask ADDRESS`` or ``--dask local:N``): a running ``dask.distributed``
  scheduler, or a ``LocalCluster`` of N worker processes with one thread each. Dask reschedules the
  runs of a worker that dies. Dask is optional (``pip install .[cluster]``) and imported only here, on use.

GPUs (``--backend cupy``): on a cluster each worker uses its own GPU, one run at a time (one thread
per worker). :func:`gpu_for_worker` picks the device of a worker from its name, or takes the first
device it sees under dask-cuda (``LocalCUDACluster``, ``dask cuda worker``: its own GPU listed first);
:func:`on_gpu` makes it the current CuPy device around each run. Start GPU workers as
``dask worker ADDRESS --nworkers N --nthreads 1 --name gpu`` (named gpu-0 … gpu-(N−1)) or with dask-cuda.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from dlrt_ref.errors import UsageError
from dlrt_ref.experiments.runs import SerialExecutor, execute, timed
from dlrt_ref.threads import apply_threads

__all__ = ["SerialExecutor", "ProcessExecutor", "DaskExecutor", "make_executor", "gpu_for_worker", "on_gpu",
           "DASK_MISSING"]

DASK_MISSING = "--dask needs dask.distributed, which is not installed: pip install .[cluster]"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class ProcessExecutor:
    """``n`` local worker processes (``spawn``), each pinned to one BLAS thread before NumPy loads.

    A worker that dies breaks the pool: the runs it took down are resubmitted once to a fresh pool
    (a run that kills its worker twice is reported as failed); finished runs are kept.
    """

    def __init__(self, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"jobs must be a positive integer, got {n!r}")
        self.n, self.name = n, f"{n} local processes"
        self.pool = self._new_pool()

    def _new_pool(self):
        # the initializer is dlrt_ref.threads.apply_threads: unpickling it imports no NumPy
        return ProcessPoolExecutor(max_workers=self.n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=functools.partial(apply_threads, ["--threads", "1"]))

    def map(self, calls):
        tries, running, submitted, retry = {}, {}, 0, []
        while submitted < len(calls) or running or retry:
            for i in retry + list(range(submitted, len(calls))):  # calls appended since the last look too
                running[self.pool.submit(timed, execute, *calls[i])] = i
            retry, submitted = [], len(calls)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in finished):
                finished, _ = wait(running)  # a worker died: every run of the broken pool ends now
            for fut in sorted(finished, key=running.get):
                i = running.pop(fut)
                try:
                    result, error, seconds = fut.result()
                except BrokenProcessPool as exc:  # retry the runs of a broken pool once, on a fresh pool
                    tries[i] = tries.get(i, 0) + 1
                    if tries[i] < 2:
                        retry.append(i)
                        continue
                    result, error, seconds = None, f"worker died twice: {exc}", 0.0
                yield i, result, error, seconds
            if retry:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = self._new_pool()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _import_dask():
    try:
        import dask.distributed as dd  # optional dependency: loaded on use only
    except ImportError:
        raise UsageError(DASK_MISSING) from None
    return dd


class DaskExecutor:
    """A ``dask.distributed`` client: ``address`` of a running scheduler, or ``local:N`` for a LocalCluster."""

    def __init__(self, address: str, backend: str = "numpy"):
        dd = _import_dask()
        self.cluster = None
        m = re.fullmatch(r"local:(\d+)", address)
        if m:
            n = int(m.group(1))
            if n < 1:
                raise UsageError(f"--dask local:N needs N >= 1, got {address!r}")
            self.cluster = dd.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                           env=dict(ONE_THREAD))
            self.client = dd.Client(self.cluster)
            self.name = f"dask LocalCluster of {n} worker processes"
        elif address.startswith("local"):
            raise UsageError(f"--dask: give local:N (N worker processes) or a scheduler address, got {address!r}")
        else:
            try:
                self.client = dd.Client(address, timeout="20s")
            except OSError as exc:
                raise UsageError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
            self.name = f"dask scheduler {address}"
        self.gpu = backend == "cupy"

    def map(self, calls):
        dd = _import_dask()
        task = (on_gpu, timed, execute) if self.gpu else (timed, execute)
        futures, submitted, pending = {}, 0, dd.as_completed(loop=self.client.loop)
        t0 = time.perf_counter()
        while True:
            for i in range(submitted, len(calls)):  # calls appended since the last look too
                fut = self.client.submit(*task, *calls[i], pure=False)
                futures[fut] = i
                pending.add(fut)
            submitted = len(calls)
            if pending.is_empty():
                return
            fut = next(pending)
            try:
                result, error, seconds = fut.result()
            except Exception as exc:  # e.g. the run killed its workers too often (KilledWorker)
                result, error, seconds = None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
            yield futures.pop(fut), result, error, seconds

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(jobs: int | None = None, dask: str | None = None, backend: str = "numpy"):
    """The executor for ``--jobs`` / ``--dask`` (serial without either)."""
    if jobs is not None and dask is not None:
        raise UsageError("give --jobs or --dask, not both")
    if dask is not None:
        return DaskExecutor(dask, backend)
    if jobs is not None and jobs > 1:
        return ProcessExecutor(jobs)
    return SerialExecutor()


# ---- GPUs ----------------------------------------------------------------------------------------------------------

def gpu_for_worker(name, n_devices: int, visible: str | None = None, dask_cuda: bool = False) -> int:
    """The CuPy device index a worker uses (one worker per GPU, one run at a time).

    - A dask-cuda worker (``dask cuda worker``, ``LocalCUDACluster``; ``dask_cuda``): 0. dask-cuda gives worker k
      the list ``CUDA_VISIBLE_DEVICES`` rotated by k, so its own GPU is the first visible one, CuPy's device 0.
    - A worker that sees exactly one device (``visible``, its ``CUDA_VISIBLE_DEVICES``, names one): 0.
    - Any other worker: the number its name ends with (a LocalCluster's 0, 1, ...; ``gpu-3`` from
      ``dask worker --nworkers N --name gpu``) modulo ``n_devices``.
    """
    if n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, got {n_devices!r}")
    if dask_cuda or (visible is not None and visible.strip() and "," not in visible):
        return 0  # its own device is the first it sees
    m = re.search(r"(\d+)$", str(name))
    if m is None:
        raise ValueError(f"worker name {name!r} has no number to pick a GPU by; name workers like gpu-0, gpu-1")
    return int(m.group(1)) % n_devices


def on_gpu(fn, *args):
    """``fn(*args)`` on a Dask worker with its own GPU (:func:`gpu_for_worker`) as the current CuPy device.

    CuPy's current device is per thread, so it is set around each run, in the thread that executes it.
    """
    import cupy  # optional: only --backend cupy sweeps on a cluster come here
    from dask.distributed import get_worker  # optional: we run on a Dask worker

    device = gpu_for_worker(get_worker().name, cupy.cuda.runtime.getDeviceCount(),
                            os.environ.get("CUDA_VISIBLE_DEVICES"), dask_cuda="dask_cuda" in sys.modules)
    with cupy.cuda.Device(device):
        return fn(*args)
