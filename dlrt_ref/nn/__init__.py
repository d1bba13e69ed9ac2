"""Networks with handwritten forward/backward: dense, low-rank and convolutional layers.

Public names:

* layers: :class:`Dense`, :class:`LowRankLinear`, :class:`MaskedDense`, :class:`MaskedConv2d` (pruning), :class:`Conv2d`, :class:`LowRankConv2d`,
  :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`GlobalAvgPool2d`, :class:`Flatten`, :class:`ReLU`, :class:`Tanh`,
  :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`Dropout`, :class:`Residual` (a container);
* loss: :class:`SoftmaxCrossEntropy`;
* networks: :class:`Sequential`, :func:`mlp`, :func:`lenet5`;
* unfolding: :func:`im2col`, :func:`col2im`;
* errors: :class:`ShapeError`, :class:`RankError`, :class:`NonFiniteError`, :class:`BackendError`.
"""
from dlrt_ref.nn.conv import AvgPool2d, Conv2d, GlobalAvgPool2d, LowRankConv2d, MaxPool2d, col2im, im2col
from dlrt_ref.nn.dropout import Dropout
from dlrt_ref.nn.errors import BackendError, NonFiniteError, RankError, ShapeError
from dlrt_ref.nn.layers import Dense, Flatten, Layer, ReLU, Tanh
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.nn.lowrank_layers import LowRankFactors, LowRankLinear
from dlrt_ref.nn.masked import MaskedConv2d, MaskedDense, masked_copy
from dlrt_ref.nn.network import Sequential, lenet5, mlp
from dlrt_ref.nn.norm import BatchNorm1d, BatchNorm2d
from dlrt_ref.nn.residual import Residual

__all__ = [
    "Layer", "Dense", "LowRankFactors", "LowRankLinear", "Conv2d", "LowRankConv2d", "MaxPool2d", "AvgPool2d",
    "GlobalAvgPool2d", "MaskedDense", "MaskedConv2d", "masked_copy", "BatchNorm1d", "BatchNorm2d", "Dropout", "Residual", "Flatten", "ReLU", "Tanh", "SoftmaxCrossEntropy", "Sequential", "mlp", "lenet5",
    "im2col", "col2im", "ShapeError", "RankError", "NonFiniteError", "BackendError",
]
