"""Deprecated alias of ``verinet.onnx.handlers``: import from there instead."""

import warnings

from verinet.onnx.handlers import HANDLERS, LAZY, SUPPORTED_OPS

warnings.warn(
    "verinet.deploy.onnx_ops is deprecated; import from verinet.onnx.handlers instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["HANDLERS", "LAZY", "SUPPORTED_OPS"]
