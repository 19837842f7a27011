"""Deprecated alias of ``verinet.onnx.importer``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.handlers import SUPPORTED_OPS
from verinet.onnx.importer import (
    OnnxOrigin,
    certify_onnx,
    check_against_onnxruntime,
    from_onnx,
    load_onnx,
    session_input_info,
)

warn_moved("verinet.deploy.onnx_import", "verinet.onnx.importer")

__all__ = [
    "OnnxOrigin",
    "SUPPORTED_OPS",
    "certify_onnx",
    "check_against_onnxruntime",
    "from_onnx",
    "load_onnx",
    "session_input_info",
]
