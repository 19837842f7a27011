"""verinet: train Keras models that resist adversarial perturbations, prove it,
and deploy exactly the model that was proven.

Example:
    >>> import verinet as vn
    >>> from verinet import layers
    >>> model = vn.Sequential([layers.Input((8, 8, 1)), layers.Flatten(),
    ...                        layers.Dense(64), layers.ReLU(), layers.Dense(10)])
"""

from verinet import _backend

_backend.ensure_torch_backend()

from verinet import (  # noqa: E402
    attacks,
    bounds,
    callbacks,
    complete,
    datasets,
    distributed,
    layers,
    objectives,
    plot,
    schedules,
    smoothing,
    vnnlib,
)
from verinet._backend import BackendError  # noqa: E402
from verinet.bounds import compute_bounds, margin_bounds  # noqa: E402
from verinet.certify import (  # noqa: E402
    CertificationReport,
    ReportAnalysis,
    certify,
    robustness_curve,
)
from verinet.deploy import deploy  # noqa: E402
from verinet.errors import (  # noqa: E402
    CertificateMismatchWarning,
    InvalidInputError,
    MemoryBudgetError,
    SoundnessError,
    UnsupportedLayerError,
    VerinetError,
)
from verinet.models import Model, Sequential, convert  # noqa: E402
from verinet.onnx import certify_onnx, export_onnx, from_onnx  # noqa: E402
from verinet.refine import refine  # noqa: E402
from verinet.saving import load_model  # noqa: E402
from verinet.vnnlib import verify  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CertificateMismatchWarning",
    "CertificationReport",
    "InvalidInputError",
    "MemoryBudgetError",
    "Model",
    "ReportAnalysis",
    "Sequential",
    "SoundnessError",
    "UnsupportedLayerError",
    "VerinetError",
    "attacks",
    "bounds",
    "callbacks",
    "certify",
    "certify_onnx",
    "complete",
    "compute_bounds",
    "convert",
    "datasets",
    "deploy",
    "distributed",
    "export_onnx",
    "from_onnx",
    "layers",
    "load_model",
    "margin_bounds",
    "objectives",
    "plot",
    "refine",
    "robustness_curve",
    "schedules",
    "smoothing",
    "verify",
    "vnnlib",
]
