"""Reusable soundness checker: bounds must enclose every reachable output.

A bound method is *sound* when, for every point ``x'`` of the perturbation
set ``S = {x' : ||x' - x|| <= eps} ∩ [low, high]^d``, the model output lies
within ``[lower, upper]``. We cannot enumerate ``S``, so we look for
counterexamples the three ways a bug tends to show up:

* uniform random points of ``S`` (catches gross errors everywhere);
* extreme points: the vertices of the L∞ box (random sign patterns, where
  linear pieces reach their extremes), or for L2 points on the sphere and
  the axis tips ``x ± eps·e_i``;
* a projected-gradient attack in torch that pushes each output coordinate
  (or a random subset of them) up and down inside ``S``.

Every point found is fed through the model in float32 and compared with the
bounds with a tolerance of ``TOL * (1 + |bound|)`` for rounding.

The attack results do not depend on the bound method, so ``empirical_extremes``
is computed once and can be checked against the bounds of several methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from keras import ops

import verinet as vn

TOL = 1e-4
METHODS = ("ibp", "crown", "crown-ibp")


# ---------------------------------------------------------------------------
# The perturbation set
# ---------------------------------------------------------------------------


def _flat(a):
    return a.reshape(a.shape[0], -1)


def project(points, x, epsilon, norm, input_range):
    """Map points (``(n, *x.shape)`` or ``x.shape``) into the set around ``x``.

    L∞: clamp to the box ∩ range. L2: shrink onto the ball, then clip to the
    range; since ``x`` lies inside the range, clipping is a projection onto a
    convex set containing ``x`` and never moves a point farther from ``x``,
    so the result stays inside the ball as well.
    """
    is_torch = isinstance(points, torch.Tensor)
    lib_x = (
        torch.as_tensor(x, dtype=points.dtype, device=points.device) if is_torch else x
    )
    delta = points - lib_x
    if norm == "linf":
        delta = (
            delta.clamp(-epsilon, epsilon)
            if is_torch
            else np.clip(delta, -epsilon, epsilon)
        )
    else:
        axes = tuple(range(delta.ndim - x.ndim + 1, delta.ndim))
        if is_torch:
            norms = delta.pow(2).sum(dim=axes, keepdim=True).sqrt()
            delta = delta * torch.clamp(epsilon / (norms + 1e-12), max=1.0)
        else:
            norms = np.sqrt((delta**2).sum(axis=axes, keepdims=True))
            delta = delta * np.minimum(1.0, epsilon / (norms + 1e-12))
    out = lib_x + delta
    if input_range is not None:
        low, high = input_range
        out = out.clamp(low, high) if is_torch else np.clip(out, low, high)
    return out


def in_set(points, x, epsilon, norm, input_range, slack=1e-5):
    """Boolean per point: is it inside the perturbation set (up to ``slack``)?"""
    delta = (points - x).reshape(points.shape[0], x.shape[0], -1)
    if norm == "linf":
        ok = np.abs(delta).max(axis=-1) <= epsilon * (1 + slack) + slack
    else:
        ok = np.sqrt((delta**2).sum(axis=-1)) <= epsilon * (1 + slack) + slack
    if input_range is not None:
        low, high = input_range
        flat = points.reshape(points.shape[0], x.shape[0], -1)
        ok &= (flat >= low - slack).all(axis=-1) & (flat <= high + slack).all(axis=-1)
    return ok


def uniform_points(x, epsilon, norm, input_range, n, rng):
    """``n`` uniform points of the ball (clipped to the range): ``(n, *x.shape)``."""
    shape = (n, *x.shape)
    if norm == "linf":
        pts = x + rng.uniform(-epsilon, epsilon, size=shape)
    else:
        d = int(np.prod(x.shape[1:]))
        direction = rng.standard_normal(shape)
        direction /= np.sqrt((direction**2).reshape(n, x.shape[0], -1).sum(-1)).reshape(
            n, x.shape[0], *([1] * (x.ndim - 1))
        )
        radius = epsilon * rng.uniform(size=(n, x.shape[0])) ** (1.0 / d)
        pts = x + direction * radius.reshape(n, x.shape[0], *([1] * (x.ndim - 1)))
    return project(pts, x, epsilon, norm, input_range)


def extreme_points(x, epsilon, norm, input_range, n, rng):
    """Points on the boundary of the set: box vertices (L∞) or sphere points
    and axis tips (L2), clipped to the range."""
    shape = (n, *x.shape)
    if norm == "linf":
        signs = rng.choice(np.array([-1.0, 1.0]), size=shape)
        pts = x + epsilon * signs
    else:
        d = int(np.prod(x.shape[1:]))
        direction = rng.standard_normal(shape)
        direction /= np.sqrt((direction**2).reshape(n, x.shape[0], -1).sum(-1)).reshape(
            n, x.shape[0], *([1] * (x.ndim - 1))
        )
        pts = x + epsilon * direction
        # Axis tips x ± eps e_i (a random subset when d is large).
        k = min(d, n // 2)
        axes = rng.choice(d, size=k, replace=False)
        tips = np.zeros((2 * k, x.shape[0], d))
        tips[np.arange(k), :, axes] = epsilon
        tips[k + np.arange(k), :, axes] = -epsilon
        pts[: 2 * k] = x + tips.reshape(2 * k, *x.shape)
    return project(pts, x, epsilon, norm, input_range)


# ---------------------------------------------------------------------------
# Model evaluation
# ---------------------------------------------------------------------------


def _spec_outputs(out, C):
    """Flatten outputs ``(m, batch, ...)``; apply ``C`` ``(batch, specs, n)``."""
    out = out.reshape(*out.shape[:2], -1)
    if C is None:
        return out
    if isinstance(out, torch.Tensor):
        return torch.einsum(
            "bsn,mbn->mbs", torch.as_tensor(C, dtype=out.dtype, device=out.device), out
        )
    return np.einsum("bsn,mbn->mbs", C, out)


def evaluate(model, points, C=None, chunk=4096):
    """Model outputs for points ``(n, batch, *in)`` → ``(n, batch, specs)``."""
    n, b = points.shape[:2]
    flat = points.reshape(n * b, *points.shape[2:]).astype(np.float32)
    outs = []
    with torch.no_grad():
        for start in range(0, len(flat), chunk):
            y = model(torch.as_tensor(flat[start : start + chunk]), training=False)
            outs.append(y.detach().cpu().numpy().astype(np.float64))
    out = np.concatenate(outs).reshape(n, b, -1)
    return _spec_outputs(out, C)


def pgd_extremes(
    model,
    x,
    epsilon,
    norm,
    input_range,
    C=None,
    coords=None,
    steps=20,
    restarts=2,
    rng=None,
):
    """Projected gradient ascent/descent on chosen output coordinates.

    Returns ``(lo, hi)`` arrays ``(batch, specs)`` (NaN for coordinates that
    were not attacked): the smallest / largest value seen over every iterate.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    b = x.shape[0]
    specs = evaluate(model, x[None], C).shape[-1]
    coords = np.arange(specs) if coords is None else np.asarray(coords)
    k = len(coords)
    # Replicas: (restart, sign, coord) for every batch element.
    reps = restarts * 2 * k
    sign = np.tile(np.repeat([1.0, -1.0], k), restarts)  # (reps,)
    coord = np.tile(coords, 2 * restarts)
    starts = uniform_points(x, epsilon, norm, input_range, reps, rng)
    starts[: 2 * k] = x  # the first restart starts at the centre
    # On the model's device (a GPU when Keras uses one).
    xt = ops.convert_to_tensor(x, dtype="float32")
    cur = ops.convert_to_tensor(starts, dtype="float32")
    sign_t = ops.convert_to_tensor(sign, dtype="float32")[:, None]
    coord_t = ops.convert_to_tensor(coord)
    alpha = 2.5 * epsilon / steps
    best_hi = np.full((b, specs), -np.inf)
    best_lo = np.full((b, specs), np.inf)
    in_axes = tuple(range(2, cur.ndim))

    def record(values):
        # Replica r attacks coordinate coords[r % k]: fold the replicas.
        v = values.detach().cpu().numpy().astype(np.float64).reshape(-1, k, b)
        best_hi[:, coords] = np.maximum(best_hi[:, coords], v.max(0).T)
        best_lo[:, coords] = np.minimum(best_lo[:, coords], v.min(0).T)

    for step in range(steps + 1):
        cur = cur.detach().requires_grad_(True)
        out = model(cur.reshape(reps * b, *x.shape[1:]), training=False)
        out = _spec_outputs(out.reshape(reps, b, -1), C)  # (reps, b, specs)
        chosen = torch.gather(out, 2, coord_t[:, None, None].expand(reps, b, 1))[..., 0]
        record(chosen)
        if step == steps or epsilon == 0:
            break
        (grad,) = torch.autograd.grad((sign_t * chosen).sum(), cur)
        if norm == "linf":
            move = grad.sign()
        else:
            g = grad.pow(2).sum(dim=in_axes, keepdim=True).sqrt()
            move = grad / (g + 1e-12)
        with torch.no_grad():
            cur = project(cur + alpha * move, xt, epsilon, norm, input_range)
    lo = np.full((b, specs), np.nan)
    hi = np.full((b, specs), np.nan)
    lo[:, coords], hi[:, coords] = best_lo[:, coords], best_hi[:, coords]
    return lo, hi


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------


@dataclass
class Extremes:
    """Smallest and largest outputs found inside the set, ``(batch, specs)``."""

    lo: np.ndarray
    hi: np.ndarray
    arg_lo: np.ndarray  # the sampled input that reached ``lo`` (per batch, spec)
    arg_hi: np.ndarray

    def columns(self, index):
        """The extremes of a subset of the specifications."""
        return Extremes(
            self.lo[:, index],
            self.hi[:, index],
            self.arg_lo[:, index],
            self.arg_hi[:, index],
        )


def empirical_extremes(
    model,
    x,
    epsilon,
    norm="linf",
    input_range=None,
    C=None,
    n_samples=256,
    n_extreme=256,
    pgd_steps=20,
    pgd_restarts=2,
    max_coords=8,
    seed=0,
):
    """Search the set for the extreme outputs (sampling, vertices and PGD)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    pts = np.concatenate(
        [
            x[None],
            uniform_points(x, epsilon, norm, input_range, n_samples, rng),
            extreme_points(x, epsilon, norm, input_range, n_extreme, rng),
        ]
    )
    assert in_set(pts, x, epsilon, norm, input_range).all(), "sampler left the set"
    vals = evaluate(model, pts, C)  # (n, b, specs)
    i_lo, i_hi = vals.argmin(0), vals.argmax(0)
    lo, hi = vals.min(0), vals.max(0)
    b, specs = lo.shape
    bi = np.arange(b)[:, None]
    arg_lo, arg_hi = pts[i_lo, bi], pts[i_hi, bi]
    coords = np.arange(specs)
    if specs > max_coords:
        coords = np.sort(rng.choice(specs, size=max_coords, replace=False))
    if pgd_steps and epsilon > 0:
        p_lo, p_hi = pgd_extremes(
            model,
            x,
            epsilon,
            norm,
            input_range,
            C,
            coords,
            pgd_steps,
            pgd_restarts,
            rng,
        )
        lo[:, coords] = np.minimum(lo[:, coords], p_lo[:, coords])
        hi[:, coords] = np.maximum(hi[:, coords], p_hi[:, coords])
    return Extremes(lo, hi, arg_lo, arg_hi)


def assert_contains(lower, upper, ext, label=""):
    """Assert ``lower <= ext.lo`` and ``ext.hi <= upper`` within tolerance."""
    # Bounds may come shaped like the model output: compare them flattened.
    lower = np.asarray(lower, dtype=np.float64).reshape(ext.lo.shape[0], -1)
    upper = np.asarray(upper, dtype=np.float64).reshape(ext.hi.shape[0], -1)
    assert lower.shape == ext.lo.shape, (
        f"{label}: bound shape {lower.shape} != {ext.lo.shape}"
    )
    assert upper.shape == ext.hi.shape, (
        f"{label}: bound shape {upper.shape} != {ext.hi.shape}"
    )
    assert np.all(np.isfinite(lower)) and np.all(np.isfinite(upper)), (
        f"{label}: non-finite"
    )
    assert np.all(lower <= upper + TOL * (1 + np.abs(upper))), f"{label}: lower > upper"
    below = ext.lo < lower - TOL * (1 + np.abs(lower))
    above = ext.hi > upper + TOL * (1 + np.abs(upper))
    msgs = []
    for b, s in zip(*np.nonzero(below), strict=True):
        msgs.append(
            f"output[{b},{s}] reached {ext.lo[b, s]:.6g} < lower {lower[b, s]:.6g}"
        )
    for b, s in zip(*np.nonzero(above), strict=True):
        msgs.append(
            f"output[{b},{s}] reached {ext.hi[b, s]:.6g} > upper {upper[b, s]:.6g}"
        )
    assert not msgs, f"{label}: unsound bounds:\n  " + "\n  ".join(msgs[:10])


def check_soundness(
    model,
    x,
    epsilon,
    norm="linf",
    input_range=None,
    methods=METHODS,
    C=None,
    dtype=None,
    extremes=None,
    **search,
):
    """Bound ``model`` with each method and check the bounds against a search.

    Args:
        model, x, epsilon, norm, input_range, C, dtype: as in
            ``vn.compute_bounds``.
        methods: a method name or a sequence of them.
        extremes: a precomputed ``Extremes`` (to share one search between
            several methods); computed here when ``None``.
        **search: options for ``empirical_extremes``.

    Returns:
        ``(extremes, {method: (lower, upper)})``.
    """
    if isinstance(methods, str):
        methods = (methods,)
    x = np.asarray(x, dtype=np.float32)
    if extremes is None:
        extremes = empirical_extremes(model, x, epsilon, norm, input_range, C, **search)
    bounds = {}
    for method in methods:
        lower, upper = vn.compute_bounds(
            model,
            x,
            epsilon,
            method=method,
            norm=norm,
            input_range=input_range,
            C=C,
            dtype=dtype,
        )
        assert_contains(lower, upper, extremes, f"{method}/{norm}/range={input_range}")
        bounds[method] = (lower, upper)
    return extremes, bounds


# ---------------------------------------------------------------------------
# Random weights and inputs
# ---------------------------------------------------------------------------


def iter_layers(model):
    """Every layer of a model, descending into nested models and the inner
    layers of composite zoo layers (``ResidualBlock``)."""
    for layer in model.layers:
        if hasattr(layer, "layers") and not isinstance(layer, vn.layers.ResidualBlock):
            yield from iter_layers(layer)
        else:
            yield layer
            yield from getattr(layer, "inner", [])


def randomize_weights(model, rng, scale=1.0, bias_scale=0.3, negative_gamma=None):
    """Draw every weight from ``rng`` (reproducible, independent of Keras seeds).

    Kernels are ``N(0, 2 scale^2 / fan_in)`` (He scaling times ``scale``: at
    ``scale`` > 1 intermediate values grow and more neurons are unstable);
    biases ``N(0, bias_scale^2)``. BatchNormalization gets random moving
    statistics, beta, and gamma of random sign (all negative when
    ``negative_gamma`` is True, all positive when False).
    """
    for layer in iter_layers(model):
        if isinstance(layer, (vn.layers.Dense, vn.layers.Conv2D)):
            shape = tuple(layer.kernel.shape)
            fan_in = int(np.prod(shape[:-1]))
            std = scale * np.sqrt(2.0 / fan_in)
            layer.kernel.assign(rng.standard_normal(shape).astype(np.float32) * std)
            if layer.use_bias:
                b = rng.standard_normal(tuple(layer.bias.shape)) * bias_scale
                layer.bias.assign(b.astype(np.float32))
        elif isinstance(layer, vn.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 1, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.05, 3.0, n).astype(np.float32))
            if layer.scale:
                gamma = rng.uniform(0.3, 2.0, n) * rng.choice([-1.0, 1.0], n)
                if negative_gamma is not None:
                    gamma = np.abs(gamma) * (-1.0 if negative_gamma else 1.0)
                layer.gamma.assign(gamma.astype(np.float32))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.5, n).astype(np.float32))
    return model


def random_inputs(shape, batch, rng, input_range=None):
    """Inputs ``(batch, *shape)``: N(0,1) when free; in ``input_range`` with a
    third of the entries on its faces (so clipping to the range matters)."""
    if input_range is None:
        return rng.standard_normal((batch, *shape)).astype(np.float32)
    low, high = input_range
    x = rng.uniform(low, high, size=(batch, *shape))
    face = rng.uniform(size=x.shape)
    x = np.where(face < 1 / 6, low, np.where(face > 5 / 6, high, x))
    return x.astype(np.float32)
