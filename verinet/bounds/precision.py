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
