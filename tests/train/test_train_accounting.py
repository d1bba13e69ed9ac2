"""Parameter counts and compression rates against the published tables (see shared/published_results.md)."""
import numpy as np
import pytest

from dlrt_ref.nn import lenet5, mlp
from dlrt_ref.train import accounting as acc

LENET = [(20, 25), (50, 500), (500, 800), (10, 500)]


def mlp_rows(d, ranks):
    """[P] fully connected: 784 → d ×4 low-rank, dense 10·d classifier."""
    shapes = [(d, 784), (d, d), (d, d), (d, d)]
    return [acc.WeightShape(m, n, r) for (m, n), r in zip(shapes, ranks)] + [acc.WeightShape(10, d)]


@pytest.mark.parametrize("d,ranks,cr_eval,cr_train", [
    (500, [176, 170, 171, 174], 34.96, -71.28),
    (500, [81, 104, 111, 117], 61.55, 8.41),
    (500, [52, 67, 73, 72], 75.26, 44.78),
    (500, [17, 25, 26, 24], 91.12, 81.93),
    (784, [190, 190, 190, 190], 51.37, -20.37),
    (784, [76, 86, 85, 83], 78.70, 53.30),
    (784, [17, 23, 22, 23], 94.28, 88.58),
])
def test_paper_mlp_table(d, ranks, cr_eval, cr_train):
    rows = mlp_rows(d, ranks)
    assert acc.dense_count(rows) == 784 * d + 3 * d * d + 10 * d
    assert 100 * acc.compression_rate(rows, "eval") == pytest.approx(cr_eval, abs=0.005)
    assert 100 * acc.compression_rate(rows, "train-paper") == pytest.approx(cr_train, abs=0.005)


@pytest.mark.parametrize("ranks,cr_eval,cr_train", [
    ([15, 46, 13, 10], 88.86, 88.25), ([13, 31, 9, 10], 92.00, 91.70),
    ([10, 20, 7, 10], 94.04, 93.89), ([6, 9, 4, 10], 96.39, 96.34),
])
def test_paper_lenet5_table(ranks, cr_eval, cr_train):
    rows = [acc.WeightShape(m, n, r) for (m, n), r in zip(LENET, ranks)]
    assert acc.dense_count(rows) == 430_500
    assert 100 * acc.compression_rate(rows, "eval") == pytest.approx(cr_eval, abs=0.005)
    assert 100 * acc.compression_rate(rows, "train-lenet") == pytest.approx(cr_train, abs=0.005)


@pytest.mark.parametrize("ranks,params_test,cr_test,params_train,cr_train", [
    ([10, 23, 62], 37_445, 91.3, 532_176, 38.2),
    ([10, 20, 48], 30_278, 93.0, 412_898, 52.0),
    ([9, 16, 37], 24_542, 94.3, 316_997, 63.2),
    ([8, 8, 15], 13_091, 97.0, 135_536, 84.3),
    ([2, 2, 3], 6_647, 98.5, 35_654, 95.9),
])
def test_thesis_lenet5_counts(ranks, params_test, cr_test, params_train, cr_train):
    """The thesis's LeNet5 table (conv1, conv2, fc1 low-rank, classifier dense): "params test" and
    "params train" (with gradients) as its result files give them."""
    rows = [acc.WeightShape(m, n, r) for (m, n), r in zip(LENET, ranks + [None])]
    assert acc.count_params(rows, "thesis-test") == params_test
    assert round(100 * acc.compression_rate(rows, "thesis-test"), 1) == cr_test
    assert acc.count_params(rows, "thesis-train-grads") == params_train
    assert acc.dense_count(rows, "thesis-train-grads") == 861_000
    assert round(100 * acc.compression_rate(rows, "thesis-train-grads"), 1) == cr_train


def test_thesis_test_leaves_out_v():
    """The thesis's τ = 0.11 row: 93.0 % under its count, 81.7 % under eval (Σ r(m+n))."""
    rows = [acc.WeightShape(m, n, r) for (m, n), r in zip(LENET, [10, 20, 48, None])]
    assert round(100 * acc.compression_rate(rows, "eval"), 1) == 81.7
    assert acc.count_params(rows, "thesis-test") < acc.count_params(rows, "eval")


def test_counts_from_networks():
    net = mlp([784, 64, 32, 10], ranks=[5, 7, None])
    rows = acc.weight_table(net)
    assert rows == [acc.WeightShape(64, 784, 5), acc.WeightShape(32, 64, 7), acc.WeightShape(10, 32)]
    c = acc.param_counts(net)
    assert c["eval"] == 5 * (64 + 784) + 7 * (32 + 64) + 320
    assert c["train-paper"] == 2 * 5 * 848 + 4 * 25 + 2 * 7 * 96 + 4 * 49 + 320
    assert c["dense"] == 784 * 64 + 64 * 32 + 320
    crs = acc.compression_rates(net)
    assert set(crs) == {"cr_eval", "cr_train_paper", "cr_train_lenet", "cr_thesis_test", "cr_thesis_train",
                        "cr_thesis_train_grads"}
    assert acc.compression_rate(mlp([784, 64, 10]), "eval") == 0.0
    le = lenet5(ranks=[4, 6, 9, None])
    assert [(w.m, w.n) for w in acc.weight_table(le)] == LENET
    assert acc.dense_count(le) == 430_500


def test_unknown_definition():
    with pytest.raises(ValueError, match="unknown parameter-count definition"):
        acc.count_params([(3, 4, 1)], "train")
