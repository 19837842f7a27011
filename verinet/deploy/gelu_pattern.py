"""Deprecated alias of ``verinet.onnx.gelu_pattern``: import from there instead."""

import warnings

from verinet.onnx.gelu_pattern import fuse_gelu

warnings.warn(
    "verinet.deploy.gelu_pattern is deprecated; import from "
    "verinet.onnx.gelu_pattern instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["fuse_gelu"]
