"""Deprecated alias of ``verinet.onnx.importer``: import from there instead."""

import warnings

from verinet.onnx.handlers import SUPPORTED_OPS
from verinet.onnx.importer import (
    OnnxOrigin,
    certify_onnx,
    check_against_onnxruntime,
    from_onnx,
    load_onnx,
    session_input_info,
)

warnings.warn(
    "verinet.deploy.onnx_import is deprecated; import from "
    "verinet.onnx.importer instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "OnnxOrigin",
    "SUPPORTED_OPS",
    "certify_onnx",
    "check_against_onnxruntime",
    "from_onnx",
    "load_onnx",
    "session_input_info",
]
