"""Values flowing through the ONNX importer.

A constant is a numpy array (weights, shapes: folded at import time); data
that depends on the model input is a ``Sym``: a Keras tensor plus how its
axes relate to the ONNX axes, and an elementwise affine map not yet applied.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Stands for the (dynamic) batch size inside constant shape arithmetic.
BATCH = -(2**40)


@dataclass(frozen=True, eq=False)
class Sym:
    """A symbolic value: Keras axis ``k`` holds ONNX axis ``perm[k]``.

    ``pending`` is an elementwise affine map ``(scale, shift)`` (arrays in
    the Keras layout, without the batch axis) still to be applied to
    ``tensor``: chains of Mul/Add/Sub/Div by constants are composed and
    become one layer, or are folded into the Dense/Conv2D before them.
    """

    tensor: object
    perm: tuple
    pending: tuple | None = None
    single: bool = True  # every value from ``tensor`` to here has one reader

    @property
    def rank(self) -> int:
        return len(self.perm)

    @property
    def shape(self) -> tuple:
        """The ONNX shape (batch as ``None``)."""
        out = [None] * self.rank
        for k, axis in enumerate(self.perm):
            out[axis] = self.tensor.shape[k]
        return tuple(out)


def identity(rank: int) -> tuple:
    """The permutation that keeps ONNX's axis order."""
    return tuple(range(rank))


#: Keras holds ONNX ``(N, C, H, W)`` data channels_last, as ``(N, H, W, C)``.
NCHW_AS_NHWC = (0, 2, 3, 1)
