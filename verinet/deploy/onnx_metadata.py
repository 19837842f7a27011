"""Deprecated alias of ``verinet.onnx.metadata``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.metadata import (
    build_metadata,
    certificate_mismatch,
    read_metadata,
    weights_sha256,
)

warn_moved("verinet.deploy.onnx_metadata", "verinet.onnx.metadata")

__all__ = ["build_metadata", "certificate_mismatch", "read_metadata", "weights_sha256"]
