"""The bound engine: perturbation sets, relaxations and bound methods."""

from verinet.bounds.alpha import AlphaCROWN
from verinet.bounds.api import compute_bounds, margin_bounds
from verinet.bounds.graph import BoundGraph
from verinet.bounds.memory import memory_budget, memory_limit
from verinet.bounds.methods import (
    CROWN,
    CROWNIBP,
    IBP,
    BoundMethod,
    CROWNHidden,
    CROWNOutput,
    IntervalHidden,
    IntervalOutput,
)
from verinet.bounds.perturbation import Box, L2Ball, LinfBall, Perturbation

__all__ = [
    "AlphaCROWN",
    "Box",
    "CROWN",
    "CROWNIBP",
    "IBP",
    "BoundGraph",
    "BoundMethod",
    "CROWNHidden",
    "CROWNOutput",
    "IntervalHidden",
    "IntervalOutput",
    "L2Ball",
    "LinfBall",
    "Perturbation",
    "compute_bounds",
    "margin_bounds",
    "memory_budget",
    "memory_limit",
]
