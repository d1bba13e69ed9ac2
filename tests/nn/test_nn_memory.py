"""A low-rank layer's forward and backward allocate no n_out×n_in array (tracemalloc sees NumPy's buffers)."""
import tracemalloc

import numpy as np

from dlrt_ref.nn import Dense, LowRankLinear

N_IN, N_OUT, R, B = 3000, 2000, 5, 8
LIMIT = N_OUT * N_IN * 8 // 4  # a quarter of one float64 n_out×n_in array (12 MB)


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_lowrank_backward_never_forms_the_gradient():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((B, N_IN)), rng.standard_normal((B, N_OUT))
    lr = LowRankLinear(N_IN, N_OUT, R, dtype=np.float64)

    def lowrank_step():
        lr.forward(x)
        lr.backward(dy)
        lr.grad_K(), lr.grad_L(), lr.grad_S()
        lr.grad_op @ lr.V, lr.grad_op.H @ lr.U, lr.grad_op.core(lr.U, lr.V)

    peak = _peak(lowrank_step)
    assert peak < LIMIT, f"low-rank forward/backward peaked at {peak / 1e6:.1f} MB"

    # sanity check of the measurement: the dense layer's backward does form the gradient
    dense = Dense(N_IN, N_OUT, dtype=np.float64)
    dense.forward(x)
    dense_peak = _peak(lambda: dense.backward(dy))
    assert dense_peak >= N_OUT * N_IN * 8 > LIMIT
