"""Linear bounds in convolutional ("patches") form.

CROWN's intermediate bounds start from an identity specification over a
whole layer: one row per neuron. Stored densely, each row holds a
coefficient for every element of every layer it passes through, so memory
grows with the square of the layer size. Behind a convolution, though, row
``r`` only has nonzero coefficients over the receptive field of its neuron.
``Patches`` stores just that window:

* ``coeffs`` ``(batch or 1, rows, kh, kw, channels)``: the window of row ``r``;
* ``rows`` ``(rows, 2)``: each row's grid position ``(h, w)``;
* ``stride``/``offset``: entry ``(i, j)`` of row ``r``'s window multiplies the
  node element at ``(h*stride - offset + i, w*stride - offset + j)``;
* ``shape``: the ``(H, W, C)`` of the node the coefficients multiply.

Invariant: entries whose position falls outside the node (the padding of a
convolution) are zero, so sums over a window need no mask.

Rules that know this form (``supports_patches = True``: Conv2D, the
elementwise affine layers, the activations, Dropout, ZeroPadding2D, Add)
act on it directly; the engine turns it dense (``to_dense``) before any other
rule, which is always correct, only larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops


@dataclass(frozen=True)
class Patches:
    """Rows of linear coefficients, each over a window of a ``(H, W, C)`` node.

    See the module docstring for the fields.
    """

    coeffs: object
    rows: np.ndarray
    stride: tuple[int, int]
    offset: tuple[int, int]
    shape: tuple[int, int, int]

    @classmethod
    def identity(cls, shape, index, dtype) -> Patches:
        """Rows ``e_k`` for the flat indices ``index`` of a ``(H, W, C)`` node.

        Args:
            shape: the node's ``(H, W, C)``.
            index: flat (row-major) indices of the neurons to bound.
            dtype: the coefficients' dtype.
        """
        height, width, channels = shape
        index = np.asarray(index, dtype=np.int64)
        rows = np.stack([index // (width * channels), (index // channels) % width], 1)
        dtype = keras.backend.standardize_dtype(dtype)
        onehot = np.zeros((1, len(index), 1, 1, channels), dtype=dtype)
        onehot[0, np.arange(len(index)), 0, 0, index % channels] = 1.0
        return cls(ops.convert_to_tensor(onehot), rows, (1, 1), (0, 0), shape)

    @property
    def window(self) -> tuple[int, int]:
        return tuple(self.coeffs.shape[2:4])

    def replace(self, coeffs, **changes) -> Patches:
        """A copy with new coefficients (and optionally new geometry)."""
        fields = dict(
            rows=self.rows, stride=self.stride, offset=self.offset, shape=self.shape
        )
        fields.update(changes)
        return Patches(coeffs, **fields)

    def _positions(self) -> np.ndarray:
        """``(rows, kh*kw)`` flat ``h*W + w`` of each entry; ``H*W`` if outside."""
        (kh, kw), (height, width) = self.window, self.shape[:2]
        hh = self.rows[:, 0, None] * self.stride[0] - self.offset[0] + np.arange(kh)
        ww = self.rows[:, 1, None] * self.stride[1] - self.offset[1] + np.arange(kw)
        inside = ((hh >= 0) & (hh < height))[:, :, None] & ((ww >= 0) & (ww < width))[
            :, None, :
        ]
        flat = hh[:, :, None] * width + ww[:, None, :]
        return np.where(inside, flat, height * width).reshape(len(self.rows), -1)

    def unfold(self, t):
        """Gather ``t`` ``(b, H, W, C)`` at each row's window: ``(b, rows, kh, kw, C)``.

        Positions outside the node read zero.
        """
        batch, channels = t.shape[0], t.shape[-1]
        flat = ops.reshape(t, (batch, -1, channels))
        flat = ops.concatenate([flat, ops.zeros_like(flat[:, :1])], axis=1)
        index = ops.convert_to_tensor(self._positions().reshape(-1), dtype="int64")
        out = ops.take(flat, index, axis=1)
        return ops.reshape(out, (batch, len(self.rows), *self.window, channels))

    def mask(self):
        """``(1, rows, kh, kw, 1)``: 1 where an entry lies inside the node."""
        inside = self._positions() < self.shape[0] * self.shape[1]
        mask = inside.reshape(1, len(self.rows), *self.window, 1)
        return ops.cast(ops.convert_to_tensor(mask), self.coeffs.dtype)

    def to_dense(self):
        """The same rows as a dense ``(batch, rows, H, W, C)`` tensor."""
        (kh, kw), (height, width, channels) = self.window, self.shape
        positions = self._positions()
        # For each node position, which window entry of the row lands there.
        lookup = np.full((len(self.rows), height * width + 1), kh * kw, np.int64)
        row = np.repeat(np.arange(len(self.rows)), kh * kw)
        entry = np.tile(np.arange(kh * kw), len(self.rows))
        lookup[row, positions.reshape(-1)] = entry  # outside: the dropped column
        lookup = lookup[:, : height * width]
        batch = self.coeffs.shape[0]
        flat = ops.reshape(self.coeffs, (batch, len(self.rows), kh * kw, channels))
        flat = ops.concatenate([flat, ops.zeros_like(flat[:, :, :1])], axis=2)
        index = ops.convert_to_tensor(lookup[None, :, :, None], dtype="int64")
        index = ops.broadcast_to(index, (batch, len(self.rows), height * width, 1))
        dense = ops.take_along_axis(flat, index, axis=2)
        return ops.reshape(dense, (batch, len(self.rows), height, width, channels))

    def pad_window(self, before, after) -> Patches:
        """Grow the window by zeros: ``before``/``after`` = ``(rows, cols)``."""
        if before == (0, 0) and after == (0, 0):
            return self
        pad = ((0, 0), (0, 0), (before[0], after[0]), (before[1], after[1]), (0, 0))
        offset = (self.offset[0] + before[0], self.offset[1] + before[1])
        return self.replace(ops.pad(self.coeffs, pad), offset=offset)


def aligned(a: Patches, b: Patches) -> bool:
    """Whether two patches describe the same rows on the same grid."""
    return (
        a.shape == b.shape
        and a.stride == b.stride
        and a.rows.shape == b.rows.shape
        and bool(np.all(a.rows == b.rows))
    )


def add_patches(a: Patches, b: Patches) -> Patches:
    """Sum of two aligned patches, their windows padded to a common frame."""
    start = [min(-a.offset[k], -b.offset[k]) for k in range(2)]
    end = [max(-p.offset[k] + p.window[k] for p in (a, b)) for k in range(2)]

    def frame(p):
        before = tuple(-p.offset[k] - start[k] for k in range(2))
        after = tuple(end[k] - (-p.offset[k] + p.window[k]) for k in range(2))
        return p.pad_window(before, after)

    a, b = frame(a), frame(b)
    return a.replace(a.coeffs + b.coeffs)


def coefficients(A):
    """The coefficient tensor of a dense or patches bound (leading axes batch, rows)."""
    return A.coeffs if isinstance(A, Patches) else A


def like(A, coeffs):
    """Wrap ``coeffs`` in the same form (and geometry) as ``A``."""
    return A.replace(coeffs) if isinstance(A, Patches) else coeffs


def spread(t, A):
    """Align a per-element tensor ``t`` ``(b, *shape)`` with the rows of ``A``.

    Dense: ``t[:, None]``; patches: ``t`` gathered at each row's window.
    """
    return A.unfold(t) if isinstance(A, Patches) else t[:, None]


def to_dense(A):
    """``A`` as a dense tensor (``None`` stays ``None``)."""
    return A.to_dense() if isinstance(A, Patches) else A


def add_linear(a, b):
    """Sum of two bounds' coefficients, in either form (``None`` is zero)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, Patches) and isinstance(b, Patches) and aligned(a, b):
        return add_patches(a, b)
    return to_dense(a) + to_dense(b)


def rows_of(A) -> int:
    """Number of specification rows of a bound in either form."""
    return coefficients(A).shape[1]


def numel(A) -> int:
    """Number of stored coefficients."""
    return int(np.prod(coefficients(A).shape))
