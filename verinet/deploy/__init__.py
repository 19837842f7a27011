"""Deployment: batch-norm folding, ONNX export and ONNX import.

Example:
    >>> deployed = vn.deploy(model)
    >>> vn.export_onnx(model, "model.onnx", report=report)
    >>> vn.certify_onnx("model.onnx", x_test, y_test, epsilon=0.05)
"""

from verinet.deploy.fold import deploy
from verinet.deploy.onnx_export import export_onnx
from verinet.deploy.onnx_import import SUPPORTED_OPS, certify_onnx, from_onnx
from verinet.deploy.onnx_metadata import read_metadata, weights_sha256

__all__ = [
    "SUPPORTED_OPS",
    "certify_onnx",
    "deploy",
    "export_onnx",
    "from_onnx",
    "read_metadata",
    "weights_sha256",
]
