"""VNN-LIB properties (the VNN-COMP format): read them, decide them.

Example:
    >>> prop = vn.vnnlib.read("prop.vnnlib")
    >>> result = vn.verify("net.onnx", "prop.vnnlib", timeout=30)
"""

from verinet.vnnlib.parser import OutputSpec, Property, Region, parse, read
from verinet.vnnlib.verify import VerificationResult, verify

__all__ = [
    "OutputSpec",
    "Property",
    "Region",
    "VerificationResult",
    "parse",
    "read",
    "verify",
]
