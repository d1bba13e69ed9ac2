"""Test-only experiment (not registered; specs name it by module path): fc_tau_sweep's runs, one of which
kills the worker process that executes it, once.

The victim's config carries ``kill_marker`` (a file path) and ``test_pid`` (the test process). The first
time the victim runs, it creates the marker and sends SIGKILL to its own process; once the marker exists
it runs normally. It never kills the test process itself (it raises instead), so a serial run is safe.
"""
import os
import signal

from dlrt_ref.experiments import fc_tau_sweep
from dlrt_ref.experiments.runs import RunSpec

NAME = "tests.experiments.kill_once"


def specs(base_specs, marker, victim: int) -> list:
    """``base_specs`` (fc_tau_sweep's) under this module; the one at index ``victim`` kills its worker once."""
    out = []
    for i, s in enumerate(base_specs):
        config = dict(s.config, kill_marker=str(marker), test_pid=os.getpid()) if i == victim else s.config
        out.append(RunSpec(NAME, s.key, config, s.deps))
    return out


def run_one(c: dict, tag: str, deps=None) -> dict:
    c = dict(c)
    marker, test_pid = c.pop("kill_marker", None), c.pop("test_pid", None)
    if marker is not None:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: only the first run gets here
        except FileExistsError:
            pass
        else:
            os.close(fd)
            if os.getpid() == test_pid:
                raise RuntimeError("kill_once: the victim runs in the test process; not killing it")
            os.kill(os.getpid(), signal.SIGKILL)
    return fc_tau_sweep.run_one(c, tag)
