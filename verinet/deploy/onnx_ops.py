"""Deprecated alias of ``verinet.onnx.handlers``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.handlers import HANDLERS, LAZY, SUPPORTED_OPS

warn_moved("verinet.deploy.onnx_ops", "verinet.onnx.handlers")

__all__ = ["HANDLERS", "LAZY", "SUPPORTED_OPS"]
