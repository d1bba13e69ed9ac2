"""A sequential network and the builders of the thesis/paper architectures.

``Sequential.forward`` runs the layers in order, ``Sequential.backward`` runs
their backwards in reverse; nothing else is hidden. The training code reads

* ``net.lowrank_layers()``: the layers with factors ``U, S, V`` and a lazy
  gradient ``grad_op`` (LowRankLinear, LowRankConv2d), integrated by DLRT;
* ``net.dense_params()``: ``(layer, name)`` pairs for every ordinary parameter
  ``layer.params[name]`` with gradient ``layer.grads[name]`` (dense weights,
  and the biases of all layers including low-rank ones), trained by plain SGD.

Container layers (a residual block, :mod:`dlrt_ref.nn.residual`) hold layers of
their own and list them in ``layer.children()``. ``net.flat_layers()`` is every
leaf layer in forward order (containers replaced by their children, recursively);
the two lists above, checkpoints, the trainer's snapshot and the gradient checks
all read it, so a layer inside a block is integrated and saved like any other.
For a network without containers it is ``net.layers`` itself (so checkpoint
indices are unchanged). Non-trainable arrays (BatchNorm's running statistics)
live in ``layer.state`` and travel with checkpoints.

Modes and steps: ``net.train()`` / ``net.eval()`` set ``layer.training`` on every
leaf (BatchNorm and Dropout read it); ``net.begin_step(k)`` tells every leaf
with a ``begin_step`` method that the passes that follow belong to training
step k (Dropout draws its mask from it; BatchNorm updates its running
statistics once per step). The trainers call it before every pass.

Passes are counted here, by the network: ``net.forward_calls`` and
``net.backward_calls`` count every call of ``forward`` and ``backward``, so a
trainer reports the passes it actually ran, not the number its method
declares (:class:`~dlrt_ref.train.dlrt.DLRT` reads them around each step).
"""
from __future__ import annotations

import copy as _copy

import numpy as np

from dlrt_ref.backend import get_backend
from dlrt_ref.nn.conv import Conv2d, LowRankConv2d, MaxPool2d
from dlrt_ref.nn.layers import Dense, Flatten, ReLU, Tanh
from dlrt_ref.nn.lowrank_layers import LowRankLinear

__all__ = ["Sequential", "flatten_layers", "copy_layer", "mlp", "lenet5", "activation_layer", "net_backend", "LENET5_SHAPES"]

# (n_out, n_in) of the weight matrices of lenet5(): conv1 20×(1·5²), conv2 50×(20·5²), fc1 500×800, fc2 10×500
LENET5_SHAPES = ((20, 25), (50, 500), (500, 800), (10, 500))


class Sequential:
    """Layers applied in order.

    Parameters
    ----------
    layers : list of layers (objects with ``forward``, ``backward``, ``params``, ``grads``, ``lowrank``)
    """

    def __init__(self, layers):
        self.layers = list(layers)
        self.training = True
        self.forward_calls = 0  # every forward and backward, counted (passes per step are read from these)
        self.backward_calls = 0

    def forward(self, x):
        self.forward_calls += 1
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, input_grad=True):
        """Backwards in reverse order; returns ∂L/∂x, or None with ``input_grad=False``.

        ``input_grad=False`` (a trainer's pass) skips ∂L/∂x of the first layer when it allows that
        (``layer.input_grad_optional``, see :mod:`dlrt_ref.nn.layers`); its parameter gradients are
        computed as before.
        """
        self.backward_calls += 1
        first = self.layers[0] if self.layers else None
        for layer in reversed(self.layers):
            if layer is first and not input_grad and getattr(layer, "input_grad_optional", False):
                layer.backward(dy, input_grad=False)
                return None
            dy = layer.backward(dy)
        return dy if input_grad else None

    def flat_layers(self):
        """Every leaf layer in forward order: containers (``layer.children()``) replaced by their layers."""
        return flatten_layers(self.layers)

    def lowrank_layers(self):
        """List of the low-rank layers (``layer.lowrank`` is True), in forward order, inside blocks too."""
        return [layer for layer in self.flat_layers() if getattr(layer, "lowrank", False)]

    def dense_params(self):
        """Iterator of ``(layer, name)`` over every ``layer.params[name]`` (gradient in ``layer.grads[name]``)."""
        for layer in self.flat_layers():
            for name in layer.params:
                yield layer, name

    def train(self, mode: bool = True) -> "Sequential":
        """Training mode (batch statistics, dropout on) or, with ``mode=False``, evaluation mode."""
        self.training = bool(mode)
        for layer in self.flat_layers():
            layer.training = self.training
        return self

    def eval(self) -> "Sequential":
        """Evaluation mode: BatchNorm uses its running statistics, Dropout is the identity."""
        return self.train(False)

    def begin_step(self, step: int) -> None:
        """The passes that follow belong to training step ``step`` (see the module docstring)."""
        for layer in self.flat_layers():
            if hasattr(layer, "begin_step"):
                layer.begin_step(step)

    def copy(self) -> "Sequential":
        """An independent copy: every parameter, state and factor array copied, caches and gradients dropped."""
        net = Sequential([copy_layer(layer) for layer in self.layers])
        net.training = self.training
        return net

    def num_params(self) -> int:
        """Trainable numbers: dense params, plus r(n_out+n_in)+r² per low-rank layer."""
        return int(sum(layer.num_params() for layer in self.layers if hasattr(layer, "num_params")))

    def __repr__(self):
        return "Sequential([\n" + "".join(f"  {layer!r},\n" for layer in self.layers) + "])"


def flatten_layers(layers) -> list:
    """``layers`` with every container (an object with ``children()``) replaced by its leaves, recursively."""
    out = []
    for layer in layers:
        if hasattr(layer, "children"):
            out += flatten_layers(layer.children())
        else:
            out.append(layer)
    return out


def copy_layer(layer):
    """An independent copy of one layer (a container copies itself through ``layer.copy_with(copy_layer)``)."""
    if hasattr(layer, "copy_with"):
        return layer.copy_with(copy_layer)
    new = _copy.copy(layer)  # shares only the (immutable) backend and shapes
    new.params = {k: v.copy() for k, v in layer.params.items()}
    if getattr(layer, "state", None) is not None:
        new.state = {k: v.copy() for k, v in layer.state.items()}
    new.grads, new._cache = {}, None
    if getattr(layer, "lowrank", False):
        new.U, new.S, new.V = layer.U.copy(), layer.S.copy(), layer.V.copy()
        new.grad_op, new._products, new._lr_cache = None, None, None
    return new


def activation_layer(name):
    """``"relu"`` -> ReLU(), ``"tanh"`` -> Tanh()."""
    if name == "relu":
        return ReLU()
    if name == "tanh":
        return Tanh()
    raise ValueError(f"unknown activation {name!r}; expected 'relu' or 'tanh'")


def _ranks(ranks, n, builder):
    if ranks is None:
        return [None] * n
    ranks = list(ranks)
    if len(ranks) != n:
        raise ValueError(f"{builder}: ranks needs one entry per weight layer ({n}), got {len(ranks)}: {ranks}")
    return ranks


def _linear(n_in, n_out, rank, *, init_activation, decay, spectrum, backend, dtype, rng):
    if rank is None:
        return Dense(n_in, n_out, activation=init_activation, backend=backend, dtype=dtype, seed=rng)
    return LowRankLinear(n_in, n_out, rank, activation=init_activation, decay=decay, spectrum=spectrum, backend=backend,
                         dtype=dtype, seed=rng)


def mlp(widths, ranks=None, activation="relu", backend="numpy", dtype=np.float32, seed=0, decay=None,
        spectrum="halfnormal"):
    """Fully connected network ``widths[0] -> ... -> widths[-1]``, activation between layers (none after the last).

    Parameters
    ----------
    widths : list of int, e.g. ``[784, 500, 500, 10]``
    ranks : list with one entry per linear layer, an int (LowRankLinear of that
        rank) or None (Dense); default all dense. E.g. ``ranks=[20, 20, None]``.
    activation : {"relu", "tanh"}; also selects the init (He / Glorot). The last
        layer is initialised for a linear output.
    backend, dtype, seed : layers draw their init, in order, from one ``default_rng(seed)``.
    decay : float, optional, passed to every low-rank layer (see :mod:`dlrt_ref.nn.init`).
    spectrum : {"halfnormal", "linear", "gaussian-product"}, shape of the low-rank layers' initial singular values.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"mlp: widths needs at least an input and an output width, got {widths}")
    n = len(widths) - 1
    ranks = _ranks(ranks, n, "mlp")
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out, r) in enumerate(zip(widths[:-1], widths[1:], ranks)):
        last = i == n - 1
        layers.append(_linear(n_in, n_out, r, init_activation="linear" if last else activation, decay=decay, spectrum=spectrum,
                              backend=backend, dtype=dtype, rng=rng))
        if not last:
            layers.append(activation_layer(activation))
    return Sequential(layers)


def lenet5(ranks=None, activation="relu", backend="numpy", dtype=np.float32, seed=0, decay=None,
           spectrum="halfnormal"):
    """LeNet5 of the thesis/paper, input (B, 1, 28, 28), 10 logits.

    conv 1→20 5×5, maxpool 2, act, conv 20→50 5×5, maxpool 2, act, flatten (800),
    linear 800→500, act, linear 500→10. ``ranks``: 4 entries (conv1, conv2, fc1,
    fc2), None = dense; rank caps are min(20, 25), min(50, 500), min(500, 800), 10.
    """
    r = _ranks(ranks, 4, "lenet5")
    rng = np.random.default_rng(seed)
    kw = dict(backend=backend, dtype=dtype)

    def conv(c_in, c_out, rank):
        if rank is None:
            return Conv2d(c_in, c_out, 5, activation=activation, seed=rng, **kw)
        return LowRankConv2d(c_in, c_out, 5, rank, activation=activation, decay=decay, spectrum=spectrum,
                             seed=rng, **kw)

    return Sequential([
        conv(1, 20, r[0]), MaxPool2d(2), activation_layer(activation),  # (B,20,24,24) -> (B,20,12,12)
        conv(20, 50, r[1]), MaxPool2d(2), activation_layer(activation),  # (B,50,8,8) -> (B,50,4,4)
        Flatten(),  # (B, 800)
        _linear(800, 500, r[2], init_activation=activation, decay=decay, spectrum=spectrum, rng=rng, **kw), activation_layer(activation),
        _linear(500, 10, r[3], init_activation="linear", decay=decay, spectrum=spectrum, rng=rng, **kw),
    ])


def net_backend(net):
    """The Backend of the first layer that has one (NumPy for a network without parameters)."""
    for layer in flatten_layers(net.layers):
        if getattr(layer, "backend", None) is not None:
            return layer.backend
    return get_backend("numpy")
