r"""The convolutional networks of the thesis's CIFAR experiments: VGG16 (BatchNorm), AlexNet, ResNet20, LeNet5.

Zangrando 2022 (ch. 5, the fine-tuning table) trains these four networks on
CIFAR-10 with DLRT; Schotthöfer et al. 2022 (§5, conv tables) use VGG16 and
AlexNet. Input (B, 3, 32, 32), ``classes`` logits (10 for CIFAR-10, 100 for
CIFAR-100).

Which layers are low-rank (``lowrank``):

* ``"fc"`` — the hidden fully connected layers only ("FC only", the thesis's first
  VGG variant);
* ``"all"`` — every convolution too (the thesis's second variant; 1×1 projections
  of ResNet20 included);
* ``"none"`` — a dense network (the baseline);
* a sequence of booleans, one per hidden weight layer (convolutions and hidden
  fc layers in forward order; the shortcut projections of ResNet20 after the
  second convolution of their block), to choose layer by layer. ``*_WEIGHT_LAYERS``
  gives their number per model (VGG16 15, AlexNet 7, ResNet20 21, LeNet5 3).

The output layer is always dense, as in the thesis's LeNet5 τ table (classifier
dense). A low-rank layer with an m×n weight starts at rank ``min(rank, ⌊min(m, n)/2⌋)``
(at least 1; default ``rank=None``: ⌊min(m, n)/2⌋), the default r_max of
:class:`~dlrt_ref.train.dlrt.DLRT`, which leaves room to augment.

``width`` multiplies every channel count and hidden width (at least 2), so that
tests build tiny versions; ``width=1`` is the architecture described.

Details the thesis does not state, chosen here (each builder's docstring says which):
the classifier heads of VGG16 and AlexNet, ResNet20's shortcut option, where
dropout sits. Dense conv layers keep their bias in front of a BatchNorm (it is
redundant there: its gradient is 0 in training mode).
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.nn.conv import Conv2d, GlobalAvgPool2d, LowRankConv2d, MaxPool2d
from dlrt_ref.nn.dropout import Dropout
from dlrt_ref.nn.layers import Dense, Flatten
from dlrt_ref.nn.lowrank_layers import LowRankLinear
from dlrt_ref.nn.network import Sequential, activation_layer
from dlrt_ref.nn.norm import BatchNorm2d
from dlrt_ref.nn.residual import Residual

__all__ = ["vgg16", "alexnet", "resnet20", "lenet5_cifar", "CIFAR_MODELS", "LOWRANK_CHOICES", "VGG16_CONVS",
           "WEIGHT_LAYERS"]

LOWRANK_CHOICES = ("fc", "all", "none")

#: VGG16's 13 convolutions (configuration D of Simonyan & Zisserman 2015); "M" is a 2×2 max pooling
VGG16_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

#: hidden weight layers (convolutions, projections, hidden fc layers; not the output layer) per model
WEIGHT_LAYERS = {"vgg16": 15, "alexnet": 7, "resnet20": 21, "lenet5_cifar": 3}


class _Builder:
    """The shared choices of a model: dtype/backend, one seeded generator, which layers are low-rank, widths."""

    def __init__(self, name, lowrank, rank, width, activation, backend, dtype, seed, decay, spectrum):
        if isinstance(lowrank, str):
            if lowrank not in LOWRANK_CHOICES:
                raise ValueError(f"{name}: lowrank must be one of {LOWRANK_CHOICES} or one bool per weight layer, "
                                 f"got {lowrank!r}")
        else:
            flags = list(lowrank) if isinstance(lowrank, (list, tuple)) else None
            if flags is None or not all(isinstance(f, (bool, np.bool_)) for f in flags) \
                    or len(flags) != WEIGHT_LAYERS[name]:
                raise ValueError(f"{name}: lowrank must be one of {LOWRANK_CHOICES} or {WEIGHT_LAYERS[name]} bools "
                                 f"(one per hidden weight layer), got {lowrank!r}")
            lowrank = [bool(f) for f in flags]
        self.name, self.n_weight = name, 0
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"{name}: width must be a number > 0, got {width!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1):
            raise ValueError(f"{name}: rank must be an integer >= 1 or None, got {rank!r}")
        self.lowrank, self.rank, self.width, self.act = lowrank, rank, float(width), activation
        self.kw = dict(backend=backend, dtype=dtype)
        self.lr_kw = dict(decay=decay, spectrum=spectrum)
        self.rng = np.random.default_rng(seed)

    def w(self, c: int) -> int:
        """A channel count or hidden width scaled by ``width`` (at least 2)."""
        return max(2, int(round(c * self.width)))

    def _r(self, m, n):
        cap = max(1, min(m, n) // 2)
        return cap if self.rank is None else min(int(self.rank), cap)

    def _pick(self, kind: str) -> bool:
        """Whether the next hidden weight layer (a ``kind`` = "conv" or "fc") is low-rank."""
        i, self.n_weight = self.n_weight, self.n_weight + 1
        if not isinstance(self.lowrank, str):
            return self.lowrank[i]
        return self.lowrank == "all" or (self.lowrank == "fc" and kind == "fc")

    def conv(self, c_in, c_out, k, stride=1, padding=0):
        if self._pick("conv"):
            return LowRankConv2d(c_in, c_out, k, self._r(c_out, c_in * k * k), stride, padding, activation=self.act,
                                 seed=self.rng, **self.lr_kw, **self.kw)
        return Conv2d(c_in, c_out, k, stride, padding, activation=self.act, seed=self.rng, **self.kw)

    def fc(self, n_in, n_out):
        """A hidden fully connected layer: low-rank unless ``lowrank == "none"``."""
        if self._pick("fc"):
            return LowRankLinear(n_in, n_out, self._r(n_out, n_in), activation=self.act, seed=self.rng, **self.lr_kw,
                                 **self.kw)
        return Dense(n_in, n_out, activation=self.act, seed=self.rng, **self.kw)

    def head(self, n_in, classes):
        """The output layer: always dense."""
        return Dense(n_in, classes, activation="linear", seed=self.rng, **self.kw)

    def bn(self, c):
        return BatchNorm2d(c, **self.kw)

    def a(self):
        return activation_layer(self.act)

    def dropout(self, p):
        return Dropout(p, seed=int(self.rng.integers(2**31)))


def _check_classes(name, classes):
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise ValueError(f"{name}: classes must be an integer >= 2, got {classes!r}")
    return int(classes)


def vgg16(classes=10, lowrank="fc", rank=None, width=1.0, dropout=0.5, activation="relu", backend="numpy",
          dtype=np.float32, seed=0, decay=None, spectrum="halfnormal") -> Sequential:
    """VGG16 with BatchNorm for 32×32 inputs.

    Features: the 13 3×3 convolutions of :data:`VGG16_CONVS` (padding 1), each
    followed by BatchNorm2d and the activation, five 2×2 max poolings: (B, 512, 1, 1).
    Head (**chosen**; the thesis does not print it): flatten (512), dropout,
    fc 512→512, act, dropout, fc 512→512, act, output 512→classes — the usual
    CIFAR head of VGG (the ImageNet head's 7×7 pooling only copies the 1×1 map).
    ``lowrank="fc"`` makes the two hidden fc layers low-rank, ``"all"`` also the 13 convolutions.
    """
    classes = _check_classes("vgg16", classes)
    b = _Builder("vgg16", lowrank, rank, width, activation, backend, dtype, seed, decay, spectrum)
    layers, c = [], 3
    for v in VGG16_CONVS:
        if v == "M":
            layers.append(MaxPool2d(2))  # spatial /2
        else:
            layers += [b.conv(c, b.w(v), 3, padding=1), b.bn(b.w(v)), b.a()]  # (B, v, s, s)
            c = b.w(v)
    hidden = b.w(512)
    layers += [Flatten(), b.dropout(dropout), b.fc(c, hidden), b.a(), b.dropout(dropout), b.fc(hidden, hidden), b.a(),
               b.head(hidden, classes)]
    return Sequential(layers)


def alexnet(classes=10, lowrank="fc", rank=None, width=1.0, dropout=0.5, activation="relu", backend="numpy",
            dtype=np.float32, seed=0, decay=None, spectrum="halfnormal") -> Sequential:
    """AlexNet, CIFAR variant (**chosen**: the thesis names "AlexNet" without the CIFAR adaptation).

    conv 3→64 3×3 stride 2 pad 1 (16×16), pool 2 (8×8), act; conv 64→192 3×3 pad 1,
    pool 2 (4×4), act; conv 192→384, act; conv 384→256, act; conv 256→256 (3×3 pad 1),
    pool 2 (2×2), act; flatten (1024); dropout, fc 1024→4096, act, dropout,
    fc 4096→4096, act, output 4096→classes — Krizhevsky et al. 2012's five
    convolutions and three fc layers with the kernels and strides shrunk for 32×32
    inputs, no BatchNorm or local response normalisation.
    """
    classes = _check_classes("alexnet", classes)
    b = _Builder("alexnet", lowrank, rank, width, activation, backend, dtype, seed, decay, spectrum)
    c1, c2, c3, c4, c5, hidden = (b.w(c) for c in (64, 192, 384, 256, 256, 4096))
    layers = [
        b.conv(3, c1, 3, stride=2, padding=1), MaxPool2d(2), b.a(),  # (B, c1, 8, 8)
        b.conv(c1, c2, 3, padding=1), MaxPool2d(2), b.a(),  # (B, c2, 4, 4)
        b.conv(c2, c3, 3, padding=1), b.a(),
        b.conv(c3, c4, 3, padding=1), b.a(),
        b.conv(c4, c5, 3, padding=1), MaxPool2d(2), b.a(),  # (B, c5, 2, 2)
        Flatten(),  # (B, 4 c5)
        b.dropout(dropout), b.fc(4 * c5, hidden), b.a(), b.dropout(dropout), b.fc(hidden, hidden), b.a(),
        b.head(hidden, classes),
    ]
    return Sequential(layers)


def resnet20(classes=10, lowrank="all", rank=None, width=1.0, activation="relu", backend="numpy", dtype=np.float32,
             seed=0, decay=None, spectrum="halfnormal") -> Sequential:
    """ResNet20 (He et al. 2016, §4.2: 6n+2 layers with n = 3).

    conv 3→16 3×3, BN, act; three stages of three basic blocks with 16, 32, 64
    channels (the first block of stages 2 and 3 has stride 2); a basic block is
    :class:`~dlrt_ref.nn.residual.Residual` with branch conv 3×3, BN, act, conv 3×3, BN
    and the activation after the sum; global average pooling; output 64→classes.
    Shortcut (**chosen**: option B of He et al., a 1×1 stride-2 convolution and BN
    where the shape changes, identity elsewhere; the thesis does not say, and
    option A's zero padding has no weight to train). ResNet20 has no hidden fc
    layer, so ``lowrank="fc"`` gives a dense network; the default is ``"all"``.
    """
    classes = _check_classes("resnet20", classes)
    b = _Builder("resnet20", lowrank, rank, width, activation, backend, dtype, seed, decay, spectrum)
    c = b.w(16)
    layers = [b.conv(3, c, 3, padding=1), b.bn(c), b.a()]  # (B, 16, 32, 32)
    for stage, base in enumerate((16, 32, 64)):
        for block in range(3):
            c_out, stride = b.w(base), (2 if stage > 0 and block == 0 else 1)
            branch = [b.conv(c, c_out, 3, stride, 1), b.bn(c_out), b.a(), b.conv(c_out, c_out, 3, 1, 1), b.bn(c_out)]
            short = None if (stride == 1 and c == c_out) else [b.conv(c, c_out, 1, stride), b.bn(c_out)]
            layers += [Residual(branch, short), b.a()]  # (B, c_out, 32/2^stage, 32/2^stage)
            c = c_out
    layers += [GlobalAvgPool2d(), b.head(c, classes)]  # (B, 64) -> (B, classes)
    return Sequential(layers)


def lenet5_cifar(classes=10, lowrank="all", rank=None, width=1.0, activation="relu", backend="numpy",
                 dtype=np.float32, seed=0, decay=None, spectrum="halfnormal") -> Sequential:
    """LeNet5 of the thesis with a 3×32×32 input (the MNIST :func:`~dlrt_ref.nn.network.lenet5`, widths kept).

    conv 3→20 5×5 (28×28), max pool 2, act; conv 20→50 5×5 (10×10), max pool 2, act;
    flatten (50·5·5 = 1250); fc 1250→500, act; output 500→classes. As in the thesis's
    LeNet5 τ table, ``"all"`` makes conv1, conv2 and fc1 low-rank and keeps the
    classifier dense (**chosen** for CIFAR, where the thesis gives no separate table).
    """
    classes = _check_classes("lenet5_cifar", classes)
    b = _Builder("lenet5_cifar", lowrank, rank, width, activation, backend, dtype, seed, decay, spectrum)
    c1, c2, hidden = b.w(20), b.w(50), b.w(500)
    return Sequential([
        b.conv(3, c1, 5), MaxPool2d(2), b.a(),  # (B, c1, 14, 14)
        b.conv(c1, c2, 5), MaxPool2d(2), b.a(),  # (B, c2, 5, 5)
        Flatten(), b.fc(25 * c2, hidden), b.a(),  # (B, hidden)
        b.head(hidden, classes),
    ])


#: name -> builder, as the command line and the experiments name them
CIFAR_MODELS = {"vgg16": vgg16, "alexnet": alexnet, "resnet20": resnet20, "lenet5_cifar": lenet5_cifar}
