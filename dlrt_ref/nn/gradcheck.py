r"""Checking handwritten gradients: finite differences, Taylor remainders, adjoints.

A check sees a scalar function :math:`L(\theta)` of some coordinates
:math:`\theta = (\theta_1, \dots)` through an :class:`Objective`:

* ``value()`` evaluates L at the current coordinates (forward only);
* ``value_and_grad()`` evaluates L and runs the backward, after which
  ``coordinate.grad()`` returns :math:`\partial L/\partial\theta_i`;
* each :class:`Coordinate` has ``get``/``set``/``grad`` callables.

Checks offered (all in float64; any other dtype is refused):

:func:`directional_check`
    :math:`\frac{d}{dh} L(\theta + h d)|_0` by a 4-point central difference
    (error :math:`O(h^4)`) against :math:`\langle \nabla L, d\rangle` for a random d.
:func:`entry_check`
    the same along a few sampled coordinate axes of every parameter.
:func:`taylor_test`
    the remainder :math:`r(h) = |L(\theta + h d) - L(\theta) - h \langle \nabla L, d\rangle|`
    must decay like :math:`h^2`: the slope of :math:`\log r` against
    :math:`\log h` over a geometric range of h (median of the local slopes) must be :math:`\ge 1.8` (a wrong
    gradient gives slope 1). No tolerance on the size of anything is involved.
:func:`adjoint_test`
    the dot-product test :math:`\langle J v, w\rangle = \langle v, J^T w\rangle` for
    a layer's backward (:math:`J^T w`) at the cached point, with :math:`J v` by a
    4-point central difference of the forward (exact up to rounding for layers
    that are affine in x).

Low-rank layers are checked in the factor coordinates of DLRT, with the other
factors fixed and **no QR or SVD** anywhere (:func:`factor_coordinates`):

* ``"K"``: :math:`W = K V^T` (the layer is rewritten as ``U := U S``, ``S := I``),
  gradient ``grad_K()``;
* ``"L"``: :math:`W = U L^T` (``V := V S^T``, ``S := I``), gradient ``grad_L()``;
* ``"S"``: :math:`W = U S V^T`, gradient ``grad_S()``.

Helpers build objectives for one layer (:func:`layer_objective`, with the input as
a coordinate too) and for a network with a loss (:func:`network_objective`);
:func:`check_layer` / :func:`check_network` run everything.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dlrt_ref.backend import backend_name, get_backend, to_numpy
from dlrt_ref.nn.conv import MaxPool2d
from dlrt_ref.nn.errors import NonFiniteError

__all__ = [
    "Coordinate", "Objective", "CheckResult", "TaylorResult", "GradientCheckError",
    "directional_check", "entry_check", "taylor_test", "adjoint_test",
    "factor_coordinates", "param_coordinates", "layer_objective", "network_objective",
    "check_layer", "check_network", "relative_error",
]


class GradientCheckError(AssertionError):
    """A gradient, Taylor or adjoint check failed its criterion."""


@dataclass
class Coordinate:
    """One array-valued coordinate: ``get() -> array``, ``set(array)``, ``grad() -> array``."""

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]
    grad: Callable[[], Any]


@dataclass
class Objective:
    """A scalar function of ``coordinates`` with its handwritten gradient (see module doc)."""

    value: Callable[[], float]
    value_and_grad: Callable[[], float]
    coordinates: list


@dataclass
class CheckResult:
    name: str
    analytic: float
    numeric: float
    rel_error: float


@dataclass
class TaylorResult:
    hs: np.ndarray
    remainders: np.ndarray  # |L(θ+hd) - L(θ) - h<g,d>|, should be O(h²)
    first_order: np.ndarray  # |L(θ+hd) - L(θ)|, O(h) for contrast
    slope: float  # median local slope log2 r(h)/r(h/2) over the points above rounding level
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def relative_error(a: float, b: float, floor: float = 0.0) -> float:
    """:math:`|a-b| / \\max(|a|, |b|, \\text{floor})` (0 when both are 0)."""
    den = max(abs(a), abs(b), floor)
    return 0.0 if den == 0 else abs(a - b) / den


# -- helpers ------------------------------------------------------------------
def _finite_scalar(v, where: str) -> float:
    v = float(v)
    if not np.isfinite(v):
        raise NonFiniteError(f"gradient check: the loss is not finite ({v}) {where}")
    return v


def _check_coordinates(obj: Objective, allow_float32: bool = False):
    for c in obj.coordinates:
        a = c.get()
        if not allow_float32 and a.dtype != np.float64:
            raise ValueError(
                f"gradient check: coordinate {c.name} has dtype {a.dtype}; checks need float64 "
                f"(build the layer/network with dtype=np.float64)"
            )
        if not bool(np.all(np.isfinite(to_numpy(a)))):
            raise NonFiniteError(f"gradient check: coordinate {c.name} contains NaN or inf")


def _xp_of(a):
    return get_backend(backend_name(a))


def _dot(a, b) -> float:
    return float((a * b).sum())


def _evaluate_at(obj: Objective, base, dirs, h: float, where: str) -> float:
    """L(θ + h d), restoring θ afterwards. ``dirs`` entries may be None (no move)."""
    try:
        for c, t, d in zip(obj.coordinates, base, dirs):
            if d is not None:
                c.set(t + h * d)
        return _finite_scalar(obj.value(), f"at {where} (h={h:g})")
    finally:
        for c, t, d in zip(obj.coordinates, base, dirs):
            if d is not None:
                c.set(t)


def _derivative(obj, base, dirs, h, where) -> float:
    """4-point central difference (8(f(h)-f(-h)) - (f(2h)-f(-2h))) / 12h, error O(h⁴)."""
    f = {s: _evaluate_at(obj, base, dirs, s * h, where) for s in (-2, -1, 1, 2)}
    return (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * h)


def _reference(obj, allow_float32=False):
    """Check inputs, evaluate L and grads at θ; returns (L, base copies, grads)."""
    _check_coordinates(obj, allow_float32)
    L0 = _finite_scalar(obj.value_and_grad(), "at the base point")
    grads = [c.grad() for c in obj.coordinates]  # read before any perturbation
    for c, g in zip(obj.coordinates, grads):
        if not bool(np.all(np.isfinite(to_numpy(g)))):
            raise NonFiniteError(f"gradient check: the gradient of {c.name} contains NaN or inf")
    base = [c.get().copy() for c in obj.coordinates]
    return L0, base, grads


def _scale(a) -> float:
    """RMS of an array (1 if it is all zero): directions are scaled like their coordinate."""
    rms = float(np.sqrt(to_numpy((a * a).mean()))) if a.size else 0.0
    return rms if rms > 0 else 1.0


def _random_dirs(base, rng):
    return [_xp_of(t).asarray(rng.standard_normal(t.shape) * _scale(t), t.dtype) for t in base]


# -- the checks ------------------------------------------------------------------
def directional_check(obj: Objective, seed=0, h: float = 1e-4, rtol: float | None = None) -> CheckResult:
    """Directional derivative along a random direction d (scaled per coordinate like it).

    Returns a :class:`CheckResult` with ``analytic = <∇L, d>``, ``numeric`` the
    4-point central difference. Raises :class:`GradientCheckError` if ``rtol`` is
    given and the relative error exceeds it.
    """
    _, base, grads = _reference(obj)
    dirs = _random_dirs(base, np.random.default_rng(seed))
    analytic = sum(_dot(g, d) for g, d in zip(grads, dirs))
    numeric = _derivative(obj, base, dirs, h, "θ + h·d")
    res = CheckResult("random direction", analytic, numeric, relative_error(analytic, numeric))
    if rtol is not None and not res.rel_error <= rtol:
        raise GradientCheckError(f"directional derivative: analytic {analytic!r} vs finite difference {numeric!r}, "
                                 f"relative error {res.rel_error:.3e} > {rtol:g}")
    return res


def entry_check(obj: Objective, n_entries: int = 3, seed=0, h: float = 1e-3, floor: float = 1e-4,
                rtol: float | None = None) -> list:
    """Finite differences along ``n_entries`` sampled axes of every coordinate.

    The step along an axis is ``h * max(rms(θ_i), 1)``: an entry's gradient may be
    small in absolute terms, and the rounding error of the difference quotient,
    about ``eps |L| / step``, must stay well below it.

    An entry's relative error is ``|a-n| / max(|a|, |n|, floor·max|g|)``: entries far
    below the largest gradient entry of their array are measured against
    ``floor`` times it (their finite difference is dominated by rounding).
    """
    _, base, grads = _reference(obj)
    rng = np.random.default_rng(seed)
    results = []
    for i, (c, t, g) in enumerate(zip(obj.coordinates, base, grads)):
        g_host = to_numpy(g).ravel()
        gmax = float(np.abs(g_host).max()) if g_host.size else 0.0
        step = max(_scale(t), 1.0)  # axis steps of h·max(rms θ_i, 1): tiny coordinates still get steps >= h
        for idx in rng.choice(t.size, size=min(n_entries, t.size), replace=False):
            e = np.zeros(t.size)
            e[idx] = step
            dirs = [None] * len(base)
            dirs[i] = _xp_of(t).asarray(e.reshape(t.shape), t.dtype)
            numeric = _derivative(obj, base, dirs, h, f"{c.name}[{idx}]") / step
            analytic = float(g_host[idx])
            results.append(CheckResult(f"{c.name}[flat {int(idx)}]", analytic, numeric,
                                       relative_error(analytic, numeric, floor * gmax)))
    if rtol is not None:
        bad = [r for r in results if not r.rel_error <= rtol]
        if bad:
            raise GradientCheckError("entry check failed (relative error > %g):\n" % rtol + "\n".join(
                f"  {r.name}: analytic {r.analytic!r} vs finite difference {r.numeric!r} ({r.rel_error:.3e})" for r in bad))
    return results


def taylor_test(obj: Objective, seed=0, h0: float = 1e-3, n: int = 8, min_slope: float | None = 1.8) -> TaylorResult:
    r"""Taylor-remainder test: :math:`r(h) = |L(θ+hd) - L(θ) - h⟨∇L, d⟩| = O(h^2)`.

    h runs over ``h0 / 2**k``, k = 0..n-1. The slope is the median of the local
    slopes :math:`\log_2 r(h)/r(h/2)` (robust to the one or two pairs where the
    h² and h³ terms of r cancel before the asymptotic regime). Points whose remainder is below 100
    rounding units of L are dropped; if fewer than 3 remain, L is linear along d
    to rounding accuracy and the slope is reported as ``inf``. Raises
    :class:`GradientCheckError` if ``min_slope`` is given and the fitted slope is
    smaller (a wrong gradient leaves an O(h) remainder: slope ≈ 1).
    """
    L0, base, grads = _reference(obj)
    dirs = _random_dirs(base, np.random.default_rng(seed))
    slope0 = sum(_dot(g, d) for g, d in zip(grads, dirs))
    hs = h0 / 2.0 ** np.arange(n)
    Ls = np.array([_evaluate_at(obj, base, dirs, h, "θ + h·d") for h in hs])
    rem = np.abs(Ls - L0 - hs * slope0)
    first = np.abs(Ls - L0)
    used = rem > 100 * np.finfo(np.float64).eps * max(abs(L0), 1.0)
    pairs = used[:-1] & used[1:]  # consecutive h, h/2 both above rounding level
    if used.sum() >= 3 and pairs.sum() >= 2:
        local = np.log2(rem[:-1][pairs] / rem[1:][pairs])  # log2 r(h)/r(h/2): 2 for O(h²)
        slope = float(np.median(local))
    else:
        slope = float("inf")
    res = TaylorResult(hs, rem, first, slope, used)
    if min_slope is not None and not slope >= min_slope:
        raise GradientCheckError(
            f"Taylor remainder decays with slope {slope:.3f} < {min_slope} (O(h²) expected; a wrong gradient gives 1):\n"
            + "\n".join(f"  h={h:.3e}  r(h)={r:.3e}" for h, r in zip(hs, rem)))
    return res


def adjoint_test(layer, x, seed=0, h: float = 1e-6, rtol: float | None = None) -> CheckResult:
    """Dot-product test of ``layer.backward`` against ``layer.forward`` at x.

    ``analytic = <v, backward(w)>`` (the adjoint :math:`J^T w`),
    ``numeric = <J v, w>`` with :math:`J v` by a 4-point central difference of the
    forward, for random v (like x) and w (like y). Leaves the layer's cache at x.
    The default h is small so that piecewise-linear layers (ReLU, max pooling)
    do not cross a kink.
    """
    xh = to_numpy(x)
    if not np.all(np.isfinite(xh)):
        raise NonFiniteError(f"adjoint test of {layer!r}: the input x contains NaN or inf")
    if xh.dtype != np.float64:
        raise ValueError(f"adjoint test of {layer!r}: x has dtype {xh.dtype}; checks need float64")
    be = _xp_of(x)
    rng = np.random.default_rng(seed)
    y = layer.forward(x)
    w = be.asarray(rng.standard_normal(y.shape), np.float64)
    v = be.asarray(rng.standard_normal(x.shape) * _scale(x), np.float64)
    JTw = layer.backward(w)  # the adjoint at x
    analytic = _dot(v, JTw)
    f = {s: layer.forward(x + s * h * v) for s in (-2, -1, 1, 2)}
    Jv = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * h)
    numeric = _dot(Jv, w)
    layer.forward(x)
    res = CheckResult(f"adjoint of {layer!r}", analytic, numeric, relative_error(analytic, numeric))
    if not np.isfinite(analytic) or not np.isfinite(numeric):
        raise NonFiniteError(f"adjoint test of {layer!r}: non-finite dot products ({analytic}, {numeric})")
    if rtol is not None and not res.rel_error <= rtol:
        raise GradientCheckError(f"adjoint test of {layer!r}: <v, J^T w> = {analytic!r} vs <J v, w> = {numeric!r}, "
                                 f"relative error {res.rel_error:.3e} > {rtol:g}")
    return res


# -- coordinates -----------------------------------------------------------------
def param_coordinates(layer) -> list:
    """One :class:`Coordinate` per ``layer.params[name]`` with gradient ``layer.grads[name]``."""
    coords = []
    for name in layer.params:
        def setter(a, name=name):
            layer.params[name] = a
        coords.append(Coordinate(f"{layer!r}.{name}", lambda name=name: layer.params[name], setter,
                                 lambda name=name: layer.grads[name]))
    return coords


@contextlib.contextmanager
def factor_coordinates(layer, factor: str):
    """Reparametrise a low-rank layer in place to K, L or S coordinates; restore on exit.

    Yields a list with one :class:`Coordinate`. W = U S V^T is unchanged by the
    rewrite; no QR or SVD is used.
    """
    if factor not in ("K", "L", "S"):
        raise ValueError(f"factor must be 'K', 'L' or 'S', got {factor!r}")
    U0, S0, V0 = layer.U, layer.S, layer.V
    xp = _xp_of(S0).xp
    eye = xp.eye(S0.shape[0], dtype=S0.dtype)
    if factor == "K":
        layer.set_factors(U0 @ S0, eye, V0)  # K = U S (n_out, r): W = K V^T
        coord = Coordinate(f"{layer!r}.K", lambda: layer.U, lambda A: layer.set_factors(A, layer.S, layer.V), layer.grad_K)
    elif factor == "L":
        layer.set_factors(U0, eye, V0 @ S0.T)  # L = V S^T (n_in, r): W = U L^T
        coord = Coordinate(f"{layer!r}.L", lambda: layer.V, lambda A: layer.set_factors(layer.U, layer.S, A), layer.grad_L)
    else:
        coord = Coordinate(f"{layer!r}.S", lambda: layer.S, lambda A: layer.set_factors(layer.U, A, layer.V), layer.grad_S)
    try:
        yield [coord]
    finally:
        layer.set_factors(U0, S0, V0)


def layer_objective(layer, x, coordinates, seed=0, wrt_input: bool = True) -> Objective:
    r"""Objective :math:`L = \langle w, y\rangle + \tfrac12 \|y\|^2`, y = layer.forward(x).

    Nonlinear in y so that the Taylor test has a curvature to see. ``coordinates``
    are the layer's (e.g. ``param_coordinates(layer)`` plus factor coordinates);
    with ``wrt_input`` the input x is added as a coordinate checked against the
    returned ``dx``.
    """
    be = _xp_of(x)
    box = {"x": x, "dx": None}
    y = layer.forward(x)
    w = be.asarray(np.random.default_rng(seed).standard_normal(y.shape), y.dtype)

    def value():
        y = layer.forward(box["x"])
        return _dot(w, y) + 0.5 * _dot(y, y)

    def value_and_grad():
        y = layer.forward(box["x"])
        box["dx"] = layer.backward(w + y)  # dL/dy = w + y
        return _dot(w, y) + 0.5 * _dot(y, y)

    coords = list(coordinates)
    if wrt_input:
        coords.append(Coordinate(f"{layer!r} input x", lambda: box["x"], lambda a: box.__setitem__("x", a), lambda: box["dx"]))
    return Objective(value, value_and_grad, coords)


def network_objective(net, loss, x, labels, coordinates) -> Objective:
    """Objective ``loss.forward(net.forward(x), labels)`` with gradients from ``net.backward(loss.backward())``."""

    def value():
        return loss.forward(net.forward(x), labels)

    def value_and_grad():
        L = loss.forward(net.forward(x), labels)
        net.backward(loss.backward())
        return L

    return Objective(value, value_and_grad, list(coordinates))


def _all_checks(obj, seed, rtol, n_entries, taylor, h, taylor_h0, h_entry):
    out = {"directional": directional_check(obj, seed=seed, h=h, rtol=rtol),
           "entries": entry_check(obj, n_entries=n_entries, seed=seed + 1, h=h_entry, rtol=rtol)}
    if taylor:
        out["taylor"] = taylor_test(obj, seed=seed + 2, h0=taylor_h0)
    return out


def check_layer(layer, x, factors=("K", "L", "S"), seed=0, rtol=1e-7, n_entries=2, taylor=True, h=1e-4, taylor_h0=1e-3,
                h_entry=1e-3):
    """Run directional, entry, Taylor (unless ``taylor=False``) and adjoint checks on one layer.

    Dense layers are checked in their params and input; low-rank layers once per
    factor coordinate in ``factors`` (with the bias and the input). Returns a dict
    ``{factor or "params": {check: result}, "adjoint": result}``; raises
    :class:`GradientCheckError` on failure.
    """
    results = {}
    if getattr(layer, "lowrank", False):
        for f in factors:
            with factor_coordinates(layer, f) as fc:
                obj = layer_objective(layer, x, param_coordinates(layer) + fc, seed)
                results[f] = _all_checks(obj, seed, rtol, n_entries, taylor, h, taylor_h0, h_entry)
    else:
        obj = layer_objective(layer, x, param_coordinates(layer), seed)
        results["params"] = _all_checks(obj, seed, rtol, n_entries, taylor, h, taylor_h0, h_entry)
    results["adjoint"] = adjoint_test(layer, x, seed, rtol=rtol)
    return results


@contextlib.contextmanager
def frozen_pooling(net, x):
    """Freeze every max-pooling layer of ``net`` at its arg-max pattern for input ``x``.

    A network with max pooling is piecewise smooth; its backward is the exact
    derivative of the piece active at the current point. Inside this context
    the pooling layers select with the pattern of the current point, so the
    objective *is* that smooth piece and finite differences of any step size
    compare against the right derivative instead of straddling a kink.
    """
    pools = [layer for layer in net.flat_layers() if isinstance(layer, MaxPool2d)]
    net.forward(x)
    for p in pools:
        p.frozen = p._cache[1]
    try:
        yield
    finally:
        for p in pools:
            p.frozen = None


def check_network(net, loss, x, labels, factors=("K", "L", "S"), seed=0, rtol=1e-6, n_entries=2, taylor=True, h=1e-4,
                  taylor_h0=1e-3, h_entry=1e-3):
    """Directional, entry and Taylor checks of a whole network, once per factor coordinate.

    Every low-rank layer is put in the same factor coordinates at once; all
    ordinary params (dense weights, biases) are coordinates too. Max-pooling
    layers are frozen at the arg-max pattern of the point being checked
    (:func:`frozen_pooling`), so the checks see the smooth piece whose
    derivative the backward computes.
    """
    results = {}
    dense = [c for layer in net.flat_layers() for c in param_coordinates(layer)]
    lowrank = net.lowrank_layers()
    for f in (factors if lowrank else ("params",)):
        with contextlib.ExitStack() as stack:
            fc = [c for layer in lowrank for c in stack.enter_context(factor_coordinates(layer, f))]
            stack.enter_context(frozen_pooling(net, x))
            obj = network_objective(net, loss, x, labels, dense + fc)
            results[f] = _all_checks(obj, seed, rtol, n_entries, taylor, h, taylor_h0, h_entry)
    return results
