"""VNN-LIB properties (the VNN-COMP format): read, write and decide them,
one at a time or a benchmark's ``instances.csv`` at once.

Example:
    >>> prop = vn.vnnlib.read("prop.vnnlib")
    >>> result = vn.verify("net.onnx", "prop.vnnlib", timeout=30)
    >>> text = vn.vnnlib.robustness_property(x, label=3, epsilon=0.02, num_classes=10)
    >>> rows = vn.vnnlib.run_instances("instances.csv", results_dir="results")
"""

from verinet.vnnlib.instances import run_instances
from verinet.vnnlib.parser import OutputSpec, Property, Region, parse, read
from verinet.vnnlib.verify import VerificationResult, verify
from verinet.vnnlib.writer import robustness_property

__all__ = [
    "OutputSpec",
    "Property",
    "Region",
    "VerificationResult",
    "parse",
    "read",
    "robustness_property",
    "run_instances",
    "verify",
]
