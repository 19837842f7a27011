"""Comparing a Keras model with onnxruntime: probe inputs and the gap measure.

Export and import both accept a graph only when
``max |onnx - keras| <= tol * max(1, max |reference|)``.
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4


def probe_inputs(shape, per_kind: int, seed: int = 0) -> np.ndarray:
    """``per_kind`` uniform [0, 1) inputs, then ``per_kind`` standard normal ones."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(0.0, 1.0, (per_kind, *shape))
    normal = rng.standard_normal((per_kind, *shape))
    return np.concatenate([uniform, normal]).astype(np.float32)


def output_gap(got: np.ndarray, reference: np.ndarray, tol: float = TOLERANCE):
    """``(largest absolute difference, allowed difference)`` of two outputs."""
    diff = float(np.max(np.abs(got - reference)))
    return diff, tol * max(1.0, float(np.max(np.abs(reference))))
