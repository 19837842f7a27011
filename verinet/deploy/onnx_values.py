"""Deprecated alias of ``verinet.onnx.values``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.values import BATCH, NCHW_AS_NHWC, Sym, identity

warn_moved("verinet.deploy.onnx_values", "verinet.onnx.values")

__all__ = ["BATCH", "NCHW_AS_NHWC", "Sym", "identity"]
