"""Exact minima of tiny ReLU MLPs by enumerating activation patterns.

On one activation pattern the network is affine, and the inputs that
produce the pattern form a polytope; the least of one LP per pattern
(scipy's linprog) is the exact minimum over a box. It shares no code with
verinet's bounds or MILP, so the complete verifiers are checked against it.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog

from verinet import layers as L


def dense_weights(model):
    """``[(kernel, bias), ...]`` in float64 of a Dense/ReLU stack's Dense layers."""
    dense = [layer for layer in model.layers if isinstance(layer, L.Dense)]
    return [
        (d.kernel.numpy().astype(float), d.bias.numpy().astype(float)) for d in dense
    ]


def exact_min(model, slope, low, high, c, fixed=None):
    """``min c · f(x)`` over the box ``[low, high]``.

    Args:
        model: ``Dense, ReLU/LeakyReLU(slope), ..., Dense``.
        slope: the activations' negative slope (0 for ReLU).
        low, high: the input box.
        c: output coefficients.
        fixed: optional per-hidden-layer int arrays: +1 keeps only patterns
            where that neuron is active (pre-activation >= 0), -1 inactive,
            0 either (a branch-and-bound domain).

    Returns:
        The minimum (``inf`` when no input meets ``fixed``).
    """
    weights = dense_weights(model)
    hidden = [w.shape[1] for w, _ in weights[:-1]]
    wanted = None if fixed is None else np.concatenate(fixed)
    best = np.inf
    for pattern in itertools.product((0, 1), repeat=sum(hidden)):
        bits = np.array(pattern)
        if wanted is not None and np.any(
            ((wanted > 0) & (bits == 0)) | ((wanted < 0) & (bits == 1))
        ):
            continue
        M, v = np.eye(len(low)), np.zeros(len(low))
        rows, rhs, k = [], [], 0
        for w, b in weights[:-1]:
            M, v = w.T @ M, w.T @ v + b
            act = bits[k : k + w.shape[1]].astype(float)
            k += w.shape[1]
            # active: -(M x + v) <= 0; inactive: M x + v <= 0
            sign = np.where(act == 1, -1.0, 1.0)
            rows.append(sign[:, None] * M)
            rhs.append(-sign * v)
            d = act + slope * (1 - act)
            M, v = d[:, None] * M, d * v
        w, b = weights[-1]
        M, v = w.T @ M, w.T @ v + b
        res = linprog(
            c @ M,
            A_ub=np.vstack(rows),
            b_ub=np.concatenate(rhs),
            bounds=list(zip(low, high, strict=True)),
            method="highs",
        )
        if res.status == 0:
            best = min(best, res.fun + c @ v)
    return best
