"""verinet: train Keras models that resist adversarial perturbations, prove it,
and deploy exactly the model that was proven."""

from verinet import _backend

_backend.ensure_torch_backend()

from verinet import bounds, layers  # noqa: E402
from verinet.bounds import compute_bounds, margin_bounds  # noqa: E402
from verinet.errors import (  # noqa: E402
    InvalidInputError,
    SoundnessError,
    UnsupportedLayerError,
    VerinetError,
)

__version__ = "0.1.0"

__all__ = [
    "InvalidInputError",
    "SoundnessError",
    "UnsupportedLayerError",
    "VerinetError",
    "bounds",
    "compute_bounds",
    "layers",
    "margin_bounds",
]
