"""The CIFAR augmentation: each output is a window of the zero-padded image, mirrored when drawn so,
normalised per channel; seeded per step; shape, dtype and backend kept."""
import numpy as np
import pytest

import dlrt_ref.train.augment as augment_module
from dlrt_ref.data.splits import make_dataset
from dlrt_ref.nn.layers import Dense, Flatten
from dlrt_ref.nn.network import Sequential
from dlrt_ref.train.augment import Augment, channel_stats
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.loop import epoch_order, evaluate, fit
from dlrt_ref.train.optim import SGD


def _images(B=8, C=3, H=6, W=5, seed=0):
    return np.random.default_rng(seed).random((B, C, H, W)).astype(np.float32)


def test_each_output_is_the_drawn_window_of_the_padded_image_mirrored_and_normalised():
    x = _images()
    mean, std = [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]
    aug = Augment(mean, std, pad=2, seed=3)
    y = aug(x, step=7)
    oy, ox, flips = aug.draw(len(x), 7)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(len(x)):
        win = padded[i, :, oy[i] : oy[i] + 6, ox[i] : ox[i] + 5]
        if flips[i]:
            win = win[:, :, ::-1]
        expect = (win - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
        np.testing.assert_allclose(y[i], expect, rtol=1e-6, atol=1e-6)
    assert y.shape == x.shape and y.dtype == x.dtype


def test_seeded_per_step_and_the_draws_cover_every_offset_and_both_flips():
    x = _images(B=4)
    aug = Augment([0, 0, 0], [1, 1, 1], pad=4, seed=1)
    np.testing.assert_array_equal(aug(x, 3), aug(x, 3))
    assert not np.array_equal(aug(x, 3), aug(x, 4))
    oy, ox, flips = aug.draw(4000, 0)
    assert set(oy) == set(range(9)) and set(ox) == set(range(9))
    assert 0.45 < flips.mean() < 0.55


def test_no_pad_no_flip_is_normalisation_only_and_stats_normalise_the_training_set():
    x = _images(B=50, seed=2) * 3 + 1
    mean, std = channel_stats(x)
    aug = Augment(mean, std, pad=0, flip=False)
    y = aug(x, 0)
    np.testing.assert_allclose(y, aug.normalise(x))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-5)


@pytest.mark.parametrize("kw, match", [(dict(mean=[0, 0], std=[1, 1, 1]), "one entry"), (dict(std=[1, 0, 1]), "std"),
                                       (dict(pad=-1), "pad"), (dict(seed=-2), "seed")])
def test_bad_arguments(kw, match):
    args = dict(mean=[0, 0, 0], std=[1, 1, 1], **{k: v for k, v in kw.items() if k not in ("mean", "std")})
    args.update({k: v for k, v in kw.items() if k in ("mean", "std")})
    with pytest.raises(ValueError, match=match):
        Augment(**args)
    with pytest.raises(ValueError, match="images"):
        Augment([0], [1])(_images(), 0)  # 3 channels for a 1-channel normalisation


def test_chunked_channel_stats_equal_the_direct_float64_ones(monkeypatch):
    x = (_images(B=37, C=3, H=4, W=4, seed=5) * 255).astype(np.uint8)
    monkeypatch.setattr(augment_module, "_CHUNK", 5)  # 8 chunks, the last one short
    mean, std = channel_stats(x)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-12)


def test_config_round_trip_and_the_training_set_constructor():
    x = _images(B=20, seed=4) * 2
    aug = Augment.for_training_set(x, seed=9)
    assert aug.pad == 4 and aug.flip and aug.seed == 9
    back = Augment.from_config(aug.to_config())
    np.testing.assert_array_equal(back(x, 5), aug(x, 5))
    np.testing.assert_allclose(aug.normalise(x).mean(axis=(0, 2, 3)), 0, atol=1e-5)


# ---- the augmentation inside fit (dlrt_ref.train.loop) ----------------------------------------------------------

def _cifar_like(n=24, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n + n_test, 3, 8, 8), dtype=np.uint8)
    y = np.arange(n + n_test) % 3
    return make_dataset("tiny", x[:n], y[:n], x[n:], y[n:], flatten=False, dtype=np.float32, validation=0, seed=0,
                        subset=None, test_subset=None, classes=("a", "b", "c"))


def _recording_fit(data, aug, epochs=2, batch=8, seed=0):
    """fit a tiny dense net; return the (x, y) batches its trainer was given and the history."""
    net = Sequential([Flatten(), Dense(3 * 8 * 8, 3, seed=np.random.default_rng(1))])
    trainer = dense_trainer(net, SGD(0.01))
    seen, step = [], trainer.step

    def record(x, y):
        seen.append((np.array(x, copy=True), np.array(y, copy=True)))
        return step(x, y)

    trainer.step = record
    hist = fit(trainer, data, epochs, batch, seed=seed, log_every=0, log=lambda line: None, augment=aug)
    return seen, hist, trainer


def test_fit_gives_each_batch_its_position_draw_and_leaves_the_labels():
    data = _cifar_like()
    aug = Augment.for_training_set(data.x_train, seed=3)
    seen, _, _ = _recording_fit(data, aug, epochs=2, batch=8)
    n_batches = 3
    assert len(seen) == 2 * n_batches
    for e in range(2):
        order = epoch_order(len(data.y_train), 0, e)
        for b in range(n_batches):
            idx = order[b * 8 : (b + 1) * 8]
            x, y = seen[e * n_batches + b]
            np.testing.assert_array_equal(y, data.y_train[idx])  # labels untouched, in the shuffle's order
            np.testing.assert_array_equal(x, aug(data.x_train[idx], e * n_batches + b))


def test_fit_augmentation_is_reproducible_and_new_every_epoch():
    data = _cifar_like()
    aug = Augment.for_training_set(data.x_train, seed=3)
    a, hist_a, _ = _recording_fit(data, aug, epochs=2, batch=24)  # one batch per epoch
    b, hist_b, _ = _recording_fit(data, Augment.for_training_set(data.x_train, seed=3), epochs=2, batch=24)
    for (xa, ya), (xb, yb) in zip(a, b):  # same seed: the same batches, the same run
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert [s["loss"] for s in hist_a.steps] == [s["loss"] for s in hist_b.steps]
    c, _, _ = _recording_fit(data, Augment.for_training_set(data.x_train, seed=4), epochs=2, batch=24)
    assert not np.array_equal(a[0][0], c[0][0])  # another augmentation seed: other crops and flips
    # the same image in epochs 1 and 2 (undo the shuffles): a different crop or flip for most images
    inv = [np.argsort(epoch_order(24, 0, e)) for e in range(2)]
    e1, e2 = a[0][0][inv[0]], a[1][0][inv[1]]
    differs = [not np.array_equal(e1[i], e2[i]) for i in range(24)]
    assert sum(differs) >= 20, differs  # P(same offsets and flip) = 1/162 per image


def test_fit_evaluates_on_normalised_images_and_without_augment_is_unchanged():
    data = _cifar_like()
    aug = Augment.for_training_set(data.x_train, seed=3)
    _, hist, trainer = _recording_fit(data, aug, epochs=1)
    loss, acc = evaluate(trainer.net, data.x_test, data.y_test, transform=aug.normalise)
    assert hist.epochs[-1]["test_loss"] == loss and hist.epochs[-1]["test_acc"] == acc
    assert evaluate(trainer.net, data.x_test, data.y_test)[0] != loss  # the raw images give another loss
    plain, hist0, _ = _recording_fit(data, None, epochs=1)
    np.testing.assert_array_equal(plain[0][0], data.x_train[epoch_order(24, 0, 0)[:8]])  # the data as they are
