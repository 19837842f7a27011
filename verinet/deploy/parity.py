"""Deprecated alias of ``verinet.onnx.parity``: import from there instead."""

import warnings

from verinet.onnx.parity import TOLERANCE, output_gap, probe_inputs

warnings.warn(
    "verinet.deploy.parity is deprecated; import from verinet.onnx.parity instead.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["TOLERANCE", "output_gap", "probe_inputs"]
