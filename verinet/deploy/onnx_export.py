"""Deprecated alias of ``verinet.onnx.export``: import from there instead."""

import warnings

from verinet.onnx.export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    check_onnx_matches,
    export_onnx,
)
from verinet.onnx.writer import INPUT_NAME, OUTPUT_NAME

warnings.warn(
    "verinet.deploy.onnx_export is deprecated; import from "
    "verinet.onnx.export instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "check_onnx_matches",
    "export_onnx",
]
