r"""The thesis's CIFAR augmentation: random crop with zero padding 4, horizontal flip, per-channel normalisation.

For a batch x (B, C, H, W) of images in [0, 1] (Zangrando 2022, ch. 5; the usual
CIFAR recipe of He et al. 2016, §4.2):

1. pad every image with ``pad`` zeros on each side and cut a random H×W window,
   offsets :math:`o_y, o_x \in \{0, \dots, 2\,\text{pad}\}` (uniform);
2. mirror it left–right with probability 1/2;
3. normalise each channel c: :math:`(x_c - m_c)/s_c`, with the mean and standard
   deviation of the training images (:func:`channel_stats`).

Evaluation images get step 3 only (:meth:`Augment.normalise`).

Seeded and backend-agnostic: the random numbers of a batch (B offsets pairs and
B flips) come from ``numpy.random.default_rng([seed, AUGMENT_STREAM, step])`` on
the host, so a step's augmentation is the same on NumPy and CuPy and for a
resumed run; the images never leave their backend (crop and flip are one gather
with index arrays). The constant :data:`AUGMENT_STREAM` keeps these draws apart
from the shuffle's ``default_rng([seed, epoch])`` of the same run seed.

In training, :func:`~dlrt_ref.train.loop.fit` (``augment=``) calls the
augmentation on batch b of epoch e with ``step = e·n_batches + b``, a pure
function of (seed, e, b) like the shuffle, and evaluates on
:meth:`Augment.normalise`\ d images; ``train --augment`` builds it with
:meth:`Augment.for_training_set`.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import array_module

__all__ = ["Augment", "channel_stats", "AUGMENT_STREAM"]

AUGMENT_STREAM = 0xA06  # second entry of the seed sequence: the augmentation's own stream (not the shuffle's)
_CHUNK = 2048  # images per chunk of channel_stats (a float64 copy of 2048 CIFAR images is 50 MB, not 1.2 GB)


def channel_stats(x):
    """Per-channel mean and standard deviation (each (C,), float64 on the host) of host images x (N, C, H, W).

    Two passes over chunks of :data:`_CHUNK` images, accumulated in float64 (population std, ddof = 0).
    """
    if getattr(x, "ndim", None) != 4 or len(x) == 0:
        raise ValueError(f"channel_stats: x must be images (N, C, H, W) with N >= 1, got shape "
                         f"{getattr(x, 'shape', None)}")
    x = np.asarray(x)
    count = x.shape[0] * x.shape[2] * x.shape[3]  # N·H·W values per channel
    total = sum(x[i:i + _CHUNK].sum(axis=(0, 2, 3), dtype=np.float64) for i in range(0, len(x), _CHUNK))
    mean = total / count  # (C,)
    m = mean.reshape(1, -1, 1, 1)  # float64, so each chunk's deviations are float64
    sq = sum(((x[i:i + _CHUNK] - m) ** 2).sum(axis=(0, 2, 3)) for i in range(0, len(x), _CHUNK))
    return mean, np.sqrt(sq / count)


class Augment:
    """Random crop (zero padding ``pad``), horizontal flip (if ``flip``), normalisation by ``mean``/``std``.

    Parameters
    ----------
    mean, std : sequences of C floats (``std`` > 0), e.g. from :func:`channel_stats` of the training set
    pad : int >= 0 (4 in the thesis); 0 switches cropping off
    flip : bool
    seed : int >= 0; the randomness of step k comes from ``default_rng([seed, AUGMENT_STREAM, k])``
    """

    def __init__(self, mean, std, pad=4, flip=True, seed=0):
        self.mean = np.asarray(mean, dtype=np.float64).ravel()
        self.std = np.asarray(std, dtype=np.float64).ravel()
        if self.mean.shape != self.std.shape or self.mean.size < 1:
            raise ValueError(f"Augment: mean and std need one entry per channel, got {self.mean.shape} and {self.std.shape}")
        if not (np.all(np.isfinite(self.std)) and np.all(self.std > 0) and np.all(np.isfinite(self.mean))):
            raise ValueError(f"Augment: std must be finite and > 0 and mean finite, got mean={mean}, std={std}")
        if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
            raise ValueError(f"Augment: pad must be an integer >= 0, got {pad!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Augment: seed must be an integer >= 0, got {seed!r}")
        self.pad, self.flip, self.seed = int(pad), bool(flip), int(seed)

    @classmethod
    def for_training_set(cls, x_train, pad=4, flip=True, seed=0) -> "Augment":
        """The thesis's augmentation for host training images x_train (N, C, H, W): their channel statistics."""
        mean, std = channel_stats(x_train)
        return cls(mean, std, pad=pad, flip=flip, seed=seed)

    def to_config(self) -> dict:
        """JSON-able description (stored in a run's config; :meth:`from_config` rebuilds it)."""
        return {"pad": self.pad, "flip": self.flip, "seed": self.seed, "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std]}

    @classmethod
    def from_config(cls, c: dict) -> "Augment":
        return cls(c["mean"], c["std"], pad=c["pad"], flip=c["flip"], seed=c["seed"])

    def __repr__(self):
        return f"Augment(pad={self.pad}, flip={self.flip}, seed={self.seed}, {self.mean.size} channels)"

    def draw(self, B: int, step: int):
        """The host random numbers of a step: offsets oy, ox (B,) in [0, 2 pad] and flips (B,) bool."""
        g = np.random.default_rng([self.seed, AUGMENT_STREAM, int(step)])
        oy, ox = g.integers(0, 2 * self.pad + 1, size=(2, B))
        flips = g.random(B) < 0.5 if self.flip else np.zeros(B, dtype=bool)
        return oy, ox, flips

    def _check(self, x):
        if getattr(x, "ndim", None) != 4 or x.shape[1] != self.mean.size:
            raise ValueError(f"Augment: x must be images (B, {self.mean.size}, H, W), got shape "
                             f"{getattr(x, 'shape', None)}")

    def normalise(self, x):
        """(x − m) / s per channel, in x's dtype and backend (evaluation images)."""
        self._check(x)
        xp = array_module(x)
        m = xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        s = xp.asarray(self.std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x - m) / s

    def __call__(self, x, step: int):
        """The augmented batch of training step ``step``: crop, flip, normalise; same shape, dtype, backend."""
        self._check(x)
        xp = array_module(x)
        B, C, H, W = x.shape
        oy, ox, flips = self.draw(B, step)
        p = self.pad
        padded = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x  # (B, C, H+2p, W+2p), zeros outside
        ar_h, ar_w = np.arange(H), np.arange(W)
        rows = oy[:, None] + ar_h[None, :]  # (B, H): the window's rows in the padded image
        cols = np.where(flips[:, None], ox[:, None] + (W - 1 - ar_w)[None, :], ox[:, None] + ar_w[None, :])  # (B, W)
        b = xp.asarray(np.arange(B)[:, None, None, None])
        c = xp.asarray(np.arange(C)[None, :, None, None])
        out = padded[b, c, xp.asarray(rows[:, None, :, None]), xp.asarray(cols[:, None, None, :])]  # (B, C, H, W)
        return self.normalise(out)
