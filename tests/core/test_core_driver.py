"""The one driver of stage generators (substeps.drive) and the Request type."""
from __future__ import annotations

import numpy as np
import pytest

from dlrt_ref.integrators import STAGES, INTEGRATORS, ADAPTIVE, run_stages
from dlrt_ref.substeps import Request, drive, get_substep
from dlrt_ref.lowrank import LowRankMatrix

from tests.helpers.dlra import GenericField, lowrank


def test_request_names_its_flows():
    Y = LowRankMatrix(np.eye(3, 1), np.eye(1), np.eye(3, 1))
    q = Request(t=0.0, Y=Y, flows=("K", "L"))
    assert q.flows == frozenset({"K", "L"}) and q.serves("K") and not q.serves("S")
    with pytest.raises(ValueError, match="flows"):
        Request(t=0.0, Y=Y, flows={"X"})
    with pytest.raises(ValueError, match="flows"):
        Request(t=0.0, Y=Y, flows=())


def _counter(n, tag):
    total = 0
    for k in range(n):
        total += yield Request(t=float(k), Y=tag, flows={"S"})
    return total


def test_drive_runs_generators_in_lock_step():
    rounds_seen = []

    def serve(requests):
        rounds_seen.append([q.Y for q in requests])
        return [len(rounds_seen)] * len(requests)

    results, rounds = drive([_counter(3, "a"), _counter(3, "b")], serve=serve)
    assert rounds == 3 and results == [1 + 2 + 3, 1 + 2 + 3]
    assert rounds_seen == [["a", "b"]] * 3
    with pytest.raises(RuntimeError, match="different rounds"):
        drive([_counter(2, "a"), _counter(3, "b")], serve=lambda qs: [0] * len(qs))
    with pytest.raises(RuntimeError, match="field values"):
        drive([_counter(2, "a")], serve=lambda qs: [])
    assert drive([], serve=None) == ([], 0)


@pytest.mark.parametrize("method", sorted(INTEGRATORS))
def test_step_functions_are_run_stages_of_their_generators(method):
    """Paths agree: ``*_step`` equals ``run_stages(*_stages)`` with the same arguments, bit for bit."""
    rng = np.random.default_rng(3)
    Y0 = lowrank(rng, 9, 7, 3, False)
    field = GenericField(rng, 9, 7, False)
    rule = dict(rank=3) if method in ADAPTIVE else {}
    sub = None if method == "naive" else get_substep("rk4")  # strang_step composes two half steps: same requests
    ref = run_stages(STAGES[method](t0=0.1, Y0=Y0, h=0.05, substep=sub, **rule), field=field)
    res = INTEGRATORS[method](field, t0=0.1, Y0=Y0, h=0.05, substep="rk4", **rule)
    assert res.evaluations == ref.evaluations
    np.testing.assert_array_equal(res.Y.to_dense(), ref.Y.to_dense())

