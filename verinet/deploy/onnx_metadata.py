"""Deprecated alias of ``verinet.onnx.metadata``: import from there instead."""

import warnings

from verinet.onnx.metadata import (
    build_metadata,
    certificate_mismatch,
    read_metadata,
    weights_sha256,
)

warnings.warn(
    "verinet.deploy.onnx_metadata is deprecated; import from "
    "verinet.onnx.metadata instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["build_metadata", "certificate_mismatch", "read_metadata", "weights_sha256"]
