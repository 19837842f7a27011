"""ONNX: export a deployed model as a checked file, import one for certifying.

``export_onnx`` writes the batch-norm-folded model (``vn.deploy``) after
onnxruntime has reproduced its outputs, with the certificate's figures and
a weights hash in the metadata; ``from_onnx`` builds a bound-aware model
from an ONNX graph and ``certify_onnx`` certifies it.

Example:
    >>> from verinet.onnx import certify_onnx, export_onnx, read_metadata
    >>> export_onnx(model, "model.onnx", report=report)
    >>> read_metadata("model.onnx")["weights_sha256_ok"]
    True
    >>> certify_onnx("model.onnx", x_test, y_test, epsilon=0.05)
"""

from verinet.onnx.export import export_onnx
from verinet.onnx.handlers import SUPPORTED_OPS
from verinet.onnx.importer import certify_onnx, from_onnx, load_onnx
from verinet.onnx.metadata import read_metadata, weights_sha256

__all__ = [
    "SUPPORTED_OPS",
    "certify_onnx",
    "export_onnx",
    "from_onnx",
    "load_onnx",
    "read_metadata",
    "weights_sha256",
]
