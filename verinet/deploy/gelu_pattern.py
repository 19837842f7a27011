"""Deprecated alias of ``verinet.onnx.gelu_pattern``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.gelu_pattern import fuse_gelu

warn_moved("verinet.deploy.gelu_pattern", "verinet.onnx.gelu_pattern")

__all__ = ["fuse_gelu"]
