"""Deprecated alias of ``verinet.onnx.values``: import from there instead."""

import warnings

from verinet.onnx.values import BATCH, NCHW_AS_NHWC, Sym, identity

warnings.warn(
    "verinet.deploy.onnx_values is deprecated; import from "
    "verinet.onnx.values instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["BATCH", "NCHW_AS_NHWC", "Sym", "identity"]
