"""Deprecated alias of ``verinet.onnx.parity``: import from there instead."""

from verinet.deploy._moved import warn_moved
from verinet.onnx.parity import TOLERANCE, output_gap, probe_inputs

warn_moved("verinet.deploy.parity", "verinet.onnx.parity")

__all__ = ["TOLERANCE", "output_gap", "probe_inputs"]
