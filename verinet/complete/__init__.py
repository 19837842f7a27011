"""Complete verification: exact MILP and branch and bound."""

from verinet.complete.milp import MILPEncoding, MILPResult, check_milp_supported

__all__ = ["MILPEncoding", "MILPResult", "check_milp_supported"]
