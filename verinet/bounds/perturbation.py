"""Perturbation sets: the one threat model of verinet.

``LinfBall`` and ``L2Ball`` (optionally clipped to an input range) and
``Box`` (per-feature bounds, e.g. from a VNN-LIB property). A perturbation

* turns linear bounds ``A·x' + b`` over the set into numbers
  (``concretize``) and gives the smallest box holding the set (``box``), for
  the bound engine;
* moves points into the set (``project``), gives the steepest-ascent step
  (``direction``) and random points (``sample``, ``vertex``), for attacks;
* tells exactly which points lie in it (``contains``, float64, no
  tolerance), for certificates.

The bound methods take tensors and use ``keras.ops``; the attack methods
take torch tensors (attacks differentiate through the model with torch
autograd) and compute in the tensors' own dtype; ``sample`` and ``vertex``
draw from a ``torch.Generator`` so attacks stay reproducible. ``contains``
takes numpy arrays.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from verinet.bounds.patches import Patches, to_dense
from verinet.errors import InvalidInputError


class Perturbation:
    """The set ``{x' : ||x' - x|| <= epsilon, low <= x' <= high}``.

    Args:
        epsilon: radius, in input units.
        input_range: optional ``(low, high)`` box intersected with the ball.
    """

    def __init__(self, epsilon, input_range=None):
        self.epsilon = float(epsilon) if np.ndim(epsilon) == 0 else epsilon
        self.input_range = input_range

    def box(self, x):
        """Return the elementwise ``(lower, upper)`` enclosing the set.

        In a dtype narrower than float64 the edges ``x -/+ epsilon`` are
        rounded outward: each float edge lies at or beyond the float64 one,
        so every point that ``contains`` accepts lies in the box.
        """
        if keras.backend.standardize_dtype(x.dtype) == "float64":
            eps = like_tensor(self.epsilon, x)
            lower, upper = x - eps, x + eps
        else:
            lower, upper = _outward_box(x, self.epsilon)
        if self.input_range is not None:
            low, high = (like_tensor(v, x) for v in self.input_range)
            lower, upper = ops.maximum(lower, low), ops.minimum(upper, high)
        return lower, upper

    def concretize(self, x, A, sign: int):
        """Bound ``A·x'`` over the set.

        Args:
            x: the centre, ``(batch, *input_shape)``.
            A: coefficients ``(batch, specs, *input_shape)`` or ``Patches``.
            sign: ``-1`` for the minimum, ``+1`` for the maximum.

        Returns:
            ``(batch, specs)`` tensor.
        """
        raise NotImplementedError

    def _clip_to_range(self, points):
        if self.input_range is None:
            return points
        return points.clamp(*(like_tensor(v, points) for v in self.input_range))

    def project(self, points, x):
        """``points`` moved into the set around ``x`` (tensors, same shape).

        Example:
            >>> LinfBall(0.1).project(x + 1.0, x)  # x + 0.1
        """
        raise NotImplementedError

    def direction(self, grad):
        """The steepest ascent step of unit size for this norm (per sample)."""
        raise NotImplementedError

    def sample(self, x, generator):
        """A random point of the set around each row of ``x`` (projected)."""
        raise NotImplementedError

    def vertex(self, x, generator):
        """A random extreme point of the ball around each row (projected)."""
        raise NotImplementedError

    def contains(self, points, x) -> np.ndarray:
        """Which ``points`` lie in the set around ``x``, exactly.

        No tolerance: the stored values (e.g. float32) are widened to
        float64; a point is inside when it is finite, within the ball and in
        ``input_range``.

        Args:
            points: ``(n, *shape)`` candidate inputs (numpy).
            x: ``(n, *shape)`` clean inputs.

        Returns:
            A boolean array ``(n,)``.
        """
        shape = np.shape(points)[1:]
        p = _rows(np.asarray(points, dtype=np.float64))
        delta = p - _rows(np.asarray(x, dtype=np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            inside = self._within(delta, shape)
            if self.input_range is not None:
                low, high = (_feature_row(v, shape) for v in self.input_range)
                inside &= np.all((p >= low) & (p <= high), axis=1)
        return inside & np.all(np.isfinite(p), axis=1)

    def _within(self, delta, shape) -> np.ndarray:
        raise NotImplementedError

    def exact_points(self, candidate, x):
        """Candidate points (e.g. an attack's) moved exactly into the set.

        Args:
            candidate: ``(n, *shape)`` points; non-finite entries are
                replaced by the clean input's.
            x: ``(n, *shape)`` clean inputs (float32).

        Returns:
            ``(points, inside)``: float32 points and the mask of those that
            ``contains`` accepts (no tolerance). A point outside the mask
            could not be repaired and must not be used.
        """
        raise NotImplementedError

    def _range64(self, x64):
        if self.input_range is None:
            return -np.inf, np.inf
        return tuple(np.asarray(v, dtype=np.float64) for v in self.input_range)


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], int(np.prod(array.shape[1:])))


def f32_inside(p64, lo, hi):
    """``p64`` rounded to float32 inside ``[lo, hi]`` (float64 bounds).

    Rounding to nearest can land one ulp outside; such a coordinate is moved
    one ulp inward, which lands inside whenever a float32 lies in
    ``[lo, hi]`` (the clean input does, so the set is never empty).
    """
    p = np.clip(p64, lo, hi).astype(np.float32)
    p = np.where(p.astype(np.float64) < lo, np.nextafter(p, np.float32(np.inf)), p)
    return np.where(p.astype(np.float64) > hi, np.nextafter(p, np.float32(-np.inf)), p)


def _clip_exactly(perturbation, candidate, x, lo, hi):
    """Box-shaped sets: clip into ``[lo, hi]`` (float64), then step any
    coordinate that float64 rounding of the bounds left outside one ulp
    toward ``x``."""
    points = f32_inside(candidate, lo, hi)
    inside = perturbation.contains(points, x)
    for _ in range(3):
        if inside.all():
            break
        p64 = points.astype(np.float64)
        out = (p64 < lo) | (p64 > hi)
        points = np.where(out, np.nextafter(points, x), points)
        inside = perturbation.contains(points, x)
    return points, inside


def _candidates64(candidate, x):
    return np.where(np.isfinite(candidate), candidate, x).astype(np.float64)


def _outward_box(x, epsilon):
    """``x -/+ epsilon`` in ``x``'s dtype, rounded outward: computed in
    float64, rounded to nearest, then stepped one ulp outward wherever that
    landed inside the float64 edge (the set ``contains`` tests)."""
    import torch

    x64 = x.to(torch.float64)
    eps64 = (
        epsilon
        if np.ndim(epsilon) == 0
        else torch.as_tensor(epsilon, dtype=torch.float64, device=x.device)
    )
    lo64, hi64 = x64 - eps64, x64 + eps64
    lower, upper = lo64.to(x.dtype), hi64.to(x.dtype)
    lower = torch.where(
        lower.to(torch.float64) > lo64,
        torch.nextafter(lower, torch.full_like(lower, -np.inf)),
        lower,
    )
    upper = torch.where(
        upper.to(torch.float64) < hi64,
        torch.nextafter(upper, torch.full_like(upper, np.inf)),
        upper,
    )
    return lower, upper


def like_tensor(value, x):
    """A number as it is; a per-feature array as a tensor like ``x`` (its
    dtype and device)."""
    if np.ndim(value) == 0:
        return value
    import torch

    return torch.as_tensor(np.asarray(value), dtype=x.dtype, device=x.device)


def _feature_row(value, shape):
    """A number as it is; a per-feature array (broadcastable to one sample's
    ``shape``) as one float64 row."""
    if np.ndim(value) == 0:
        return value
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).reshape(1, -1)


def _per_sample(values, like):
    """``(n,)`` values shaped to broadcast over ``like``'s sample axis."""
    return values.view(-1, *[1] * (like.dim() - 1))


def _norms(t):
    """Per-sample L2 norms, floored at 1e-12 (no division by zero)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12)


def _flat(t, batch_dims):
    return ops.reshape(t, (*t.shape[:batch_dims], -1))


def concretize_box(lower, upper, A, sign: int):
    """Bound ``A·x`` over the box ``lower <= x <= upper`` (``A`` in either form)."""
    if isinstance(A, Patches):
        center, radius = (lower + upper) / 2, (upper - lower) / 2
        coeffs = A.coeffs
        dot = _flat(coeffs * A.unfold(center), 2)
        spread = _flat(ops.abs(coeffs) * A.unfold(radius), 2)
        return ops.sum(dot, axis=-1) + sign * ops.sum(spread, axis=-1)
    center = _flat((lower + upper) / 2, 1)[:, None, :]
    radius = _flat((upper - lower) / 2, 1)[:, None, :]
    A = _flat(A, 2)
    return ops.sum(A * center, axis=-1) + sign * ops.sum(ops.abs(A) * radius, axis=-1)


class LinfBall(Perturbation):
    """L-infinity ball (a box), optionally clipped to ``input_range``.

    ``epsilon`` and either side of ``input_range`` may be numpy arrays of
    the input shape (one value per feature, the same for every sample).
    """

    norm = "linf"

    def concretize(self, x, A, sign):
        lower, upper = self.box(x)
        return concretize_box(lower, upper, A, sign)

    def project(self, points, x):
        eps = like_tensor(self.epsilon, x)
        delta = (points - x).clamp(-eps, eps)
        return self._clip_to_range(x + delta)

    def direction(self, grad):
        return grad.sign()

    def sample(self, x, generator):
        import torch

        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        eps = like_tensor(self.epsilon, x)
        return self.project(x + ((2 * noise - 1) * eps).to(x.dtype), x)

    def vertex(self, x, generator):
        import torch

        coin = torch.rand(x.shape, generator=generator, device="cpu") < 0.5
        sign = torch.where(coin, -1.0, 1.0).to(x.device, x.dtype)
        return self.project(x + like_tensor(self.epsilon, x) * sign, x)

    def _within(self, delta, shape):
        return np.all(np.abs(delta) <= _feature_row(self.epsilon, shape), axis=1)

    def exact_points(self, candidate, x):
        x64 = np.asarray(x, dtype=np.float64)
        eps = np.asarray(self.epsilon, dtype=np.float64)
        low, high = self._range64(x64)
        lo, hi = np.maximum(x64 - eps, low), np.minimum(x64 + eps, high)
        # ``x - eps`` rounds in float64: a point on it may lie a hair outside
        # the ball, which ``contains`` sees; it is then moved one ulp inward.
        points = f32_inside(_candidates64(candidate, x), lo, hi)
        inside = self.contains(points, x)
        for _ in range(3):
            if inside.all():
                break
            p64 = points.astype(np.float64)
            out = (np.abs(p64 - x64) > eps) | (p64 < low) | (p64 > high)
            points = np.where(out, np.nextafter(points, x), points)
            inside = self.contains(points, x)
        return points, inside


class L2Ball(Perturbation):
    """L2 ball, optionally intersected with the box ``input_range``.

    With a box the bound is the tighter of the ball's and the clipped box's
    bounds (each set contains the intersection). For bounds only (as
    ``certified_radius`` uses it), ``epsilon`` may also be an array of shape
    ``(batch, 1, ..., 1)``: one radius per sample.
    """

    norm = "l2"

    def concretize(self, x, A, sign):
        A = to_dense(A)
        flat_A = _flat(A, 2)
        centre = ops.sum(flat_A * _flat(x, 1)[:, None, :], axis=-1)
        eps = self.epsilon
        if np.ndim(eps) > 0:  # one radius per sample, shape (batch, 1, ..., 1)
            eps = ops.reshape(like_tensor(eps, x), (x.shape[0], 1))
        ball = centre + sign * eps * ops.sqrt(ops.sum(flat_A * flat_A, axis=-1))
        if self.input_range is None:
            return ball
        lower, upper = self.box(x)
        box = concretize_box(lower, upper, A, sign)
        return ops.maximum(ball, box) if sign < 0 else ops.minimum(ball, box)

    def project(self, points, x):
        delta = points - x
        factor = (self.epsilon / _norms(delta)).clamp(max=1.0)
        return self._clip_to_range(x + delta * _per_sample(factor, delta))

    def direction(self, grad):
        return grad / _per_sample(_norms(grad), grad)

    def sample(self, x, generator):
        import torch

        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        delta = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        delta = delta / _per_sample(_norms(delta), delta)
        radius = _per_sample(noise.flatten(1)[:, 0], noise)
        return self.project(x + (delta * self.epsilon * radius).to(x.dtype), x)

    def vertex(self, x, generator):
        import torch

        noise = torch.randn(x.shape, generator=generator, device="cpu")
        return self.project(x + self.epsilon * self.direction(noise.to(x)), x)

    def _within(self, delta, shape):
        return np.sqrt(np.sum(delta * delta, axis=1)) <= self.epsilon

    def exact_points(self, candidate, x):
        # Scale the difference onto the ball, clip to the range, and shrink
        # further until the float64 norm of the float32 difference fits.
        x64 = np.asarray(x, dtype=np.float64)
        low, high = self._range64(x64)
        eps = self.epsilon
        delta = _rows(np.clip(_candidates64(candidate, x), low, high) - x64)
        size = np.sqrt(np.sum(delta * delta, axis=1))
        scale = np.where(size > eps, eps / np.where(size > 0, size, 1.0), 1.0)
        points = np.empty_like(x, dtype=np.float32)
        inside = np.zeros(len(x), dtype=bool)
        todo = np.arange(len(x))
        for shrink in (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1.0):
            step = delta[todo] * (scale[todo] * (1.0 - shrink))[:, None]
            moved = x64[todo] + step.reshape(x[todo].shape)
            points[todo] = f32_inside(moved, low, high)
            inside[todo] = self.contains(points[todo], x[todo])
            todo = todo[~inside[todo]]
            if not len(todo):
                break
        return points, inside


class Box(Perturbation):
    """The box ``lower <= x' <= upper``, given per sample and feature.

    The set ignores the centre ``x`` the engine passes (VNN-LIB properties
    and per-feature radii are boxes). It is an L-infinity set: ``norm`` is
    ``"linf"`` and ``epsilon`` is the largest half-width.

    Args:
        lower: ``(batch, *input_shape)`` lower bounds (tensor or array).
        upper: the upper bounds, same shape, ``upper >= lower``.

    Example:
        >>> box = Box(x - 0.1, x + 0.2)
        >>> lower, upper = vn.bounds.compute_bounds  # doctest: +SKIP
    """

    norm = "linf"

    def __init__(self, lower, upper):
        self.lower = ops.convert_to_tensor(lower)
        self.upper = ops.convert_to_tensor(upper)
        self.input_range = None

    @property
    def epsilon(self) -> float:
        """The largest half-width (computed on request: it syncs a device)."""
        half = ops.convert_to_numpy(self.upper - self.lower) / 2
        return float(np.max(half)) if half.size else 0.0

    def box(self, x):
        return self.lower, self.upper

    def concretize(self, x, A, sign):
        return concretize_box(self.lower, self.upper, A, sign)

    def project(self, points, x):
        return points.clamp(self.lower, self.upper)

    def direction(self, grad):
        return grad.sign()

    def sample(self, x, generator):
        import torch

        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        return self.lower + (self.upper - self.lower) * noise.to(x.dtype)

    def vertex(self, x, generator):
        import torch

        coin = torch.rand(x.shape, generator=generator, device="cpu") < 0.5
        return torch.where(coin.to(x.device), self.lower, self.upper)

    def exact_points(self, candidate, x):
        lo = np.asarray(ops.convert_to_numpy(self.lower), dtype=np.float64)
        hi = np.asarray(ops.convert_to_numpy(self.upper), dtype=np.float64)
        return _clip_exactly(self, _candidates64(candidate, x), x, lo, hi)

    def contains(self, points, x=None) -> np.ndarray:
        p = _rows(np.asarray(points, dtype=np.float64))
        low = _rows(np.asarray(ops.convert_to_numpy(self.lower), dtype=np.float64))
        high = _rows(np.asarray(ops.convert_to_numpy(self.upper), dtype=np.float64))
        with np.errstate(invalid="ignore"):
            inside = np.all((p >= low) & (p <= high), axis=1)
        return inside & np.all(np.isfinite(p), axis=1)


NORMS = {"linf": LinfBall, "l2": L2Ball}


def unpack_ball(epsilon, norm="linf", input_range=None):
    """``(epsilon, norm, input_range)``: as given, or read off a ball.

    Every public entry point takes the threat model either as the three
    arguments or as one ``LinfBall``/``L2Ball`` in place of ``epsilon``
    (with ``norm`` and ``input_range`` left at their defaults).

    Raises:
        InvalidInputError: for a ``Box`` (its bounds belong to particular
            samples) or a ball given together with a different ``norm`` or
            an ``input_range``.

    Example:
        >>> unpack_ball(LinfBall(0.1, (0.0, 1.0)))
        (0.1, 'linf', (0.0, 1.0))
    """
    if not isinstance(epsilon, Perturbation):
        return epsilon, norm, input_range
    if isinstance(epsilon, Box):
        raise InvalidInputError(
            "A Box holds the bounds of particular samples; give an LinfBall "
            "(a per-feature epsilon is an array radius) or the bounds directly "
            "to method.bounds."
        )
    if input_range is not None or norm not in ("linf", epsilon.norm):
        raise InvalidInputError(
            f"epsilon is a {type(epsilon).__name__}, which carries its own norm "
            "and input_range; do not pass them as well."
        )
    return epsilon.epsilon, epsilon.norm, epsilon.input_range
