"""The CIFAR augmentation: each output is a window of the zero-padded image, mirrored when drawn so,
normalised per channel; seeded per step; shape, dtype and backend kept."""
import numpy as np
import pytest

from dlrt_ref.train.augment import Augment, channel_stats


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
