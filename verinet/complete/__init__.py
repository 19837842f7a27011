"""Complete verification: exact MILP and branch and bound on ReLU splits.

``vn.certify(..., method="milp" | "bab" | "auto")`` and ``vn.verify`` use
these; they are public for users who want one solve.

Example:
    >>> from verinet.complete import MILPEncoding, relu_bab
"""

from verinet.complete.bab import BaBResult, relu_bab
from verinet.complete.milp import MILPEncoding, MILPResult, check_milp_supported

__all__ = [
    "BaBResult",
    "MILPEncoding",
    "MILPResult",
    "check_milp_supported",
    "relu_bab",
]
