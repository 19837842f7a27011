"""Deprecated alias of ``verinet.onnx.export``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    check_onnx_matches,
    export_onnx,
)
from verinet.onnx.writer import INPUT_NAME, OUTPUT_NAME

warn_moved("verinet.deploy.onnx_export", "verinet.onnx.export")

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "check_onnx_matches",
    "export_onnx",
]
