"""Double-precision bounds on backends where Keras narrows 64-bit results.

Keras's type promotion follows JAX's default and turns the float64 result of
an op like ``ops.matmul`` into float32 on every backend but TensorFlow. For
``dtype="float64"`` certification that would silently lose the precision the
user asked for, so bound computations in float64 run inside
``float64_promotion()``, which lets 64-bit floats promote to themselves.
"""

from __future__ import annotations

import contextlib
import threading

from keras.src.backend.common import dtypes as _dtypes

_lock = threading.RLock()


@contextlib.contextmanager
def float64_promotion(enabled: bool = True):
    """Keep float64 results float64 inside the block (no-op when disabled)."""
    if not enabled:
        yield
        return
    table = _dtypes.BIT64_TO_BIT32_DTYPE
    with _lock:
        saved = table.get("float64")
        table["float64"] = "float64"
        try:
            yield
        finally:
            table["float64"] = saved


def _tf32_switches():
    """``(object, attribute, ieee_value)`` for each TF32 switch torch has."""
    import torch

    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        return [
            (cudnn_conv, "fp32_precision", "ieee"),
            (torch.backends.cuda.matmul, "fp32_precision", "ieee"),
        ]
    return [
        (torch.backends.cudnn, "allow_tf32", False),
        (torch.backends.cuda.matmul, "allow_tf32", False),
    ]


@contextlib.contextmanager
def ieee_float32():
    """Compute float32 convolutions and matmuls in full float32 inside the block.

    On NVIDIA GPUs PyTorch may run float32 convolutions in TF32, whose
    10-bit mantissa moves results by about 1e-3 relative: enough to turn a
    small positive certified margin into a wrong certificate. Bounds,
    attacks and verdicts are therefore computed with TF32 off; training is
    left as the user configured it. A no-op on CPUs.
    """
    switches = _tf32_switches()
    saved = [getattr(obj, name) for obj, name, _ in switches]
    try:
        for obj, name, value in switches:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name, _), value in zip(switches, saved, strict=True):
            setattr(obj, name, value)
