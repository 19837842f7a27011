"""The torch fast path of the Conv2D rule's convolutions equals keras.ops."""

import numpy as np
import pytest
from keras import ops

from verinet.layers import _conv_ops
from verinet.layers._spatial import paddings

CASES = [
    # (hw, kernel, strides, padding)
    ((9, 9), (3, 3), (1, 1), "same"),
    ((9, 8), (4, 4), (2, 2), "same"),  # asymmetric 'same' on one axis
    ((8, 8), (4, 4), (2, 2), "same"),
    ((7, 9), (2, 3), (3, 2), "valid"),
    ((6, 6), (1, 1), (1, 1), "valid"),
]


def _both(monkeypatch, fn, *args):
    fast = ops.convert_to_numpy(fn(*args))
    monkeypatch.setattr(_conv_ops, "_torch", lambda: None)
    plain = ops.convert_to_numpy(fn(*args))
    monkeypatch.undo()
    return fast, plain


@pytest.mark.parametrize("hw, kernel, strides, padding", CASES)
def test_conv_and_transpose_match_keras_ops(
    monkeypatch, rng, hw, kernel, strides, padding
):
    pads = paddings(hw, kernel, strides, padding)
    x = ops.convert_to_tensor(rng.standard_normal((2, *hw, 3)).astype("float32"))
    w = ops.convert_to_tensor(rng.standard_normal((*kernel, 3, 5)).astype("float32"))
    fast, plain = _both(monkeypatch, _conv_ops.conv2d, x, w, strides, pads)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
    reference = ops.convert_to_numpy(ops.conv(x, w, strides, padding=padding))
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5)
    out_hw = ops.conv(x, w, strides, padding=padding).shape[1:3]
    A = ops.convert_to_tensor(rng.standard_normal((4, *out_hw, 5)).astype("float32"))
    fast, plain = _both(
        monkeypatch, _conv_ops.conv2d_transpose, A, w, strides, pads, hw
    )
    assert fast.shape == (4, *hw, 3)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
    # The adjoint identity <A, conv(x)> == <conv^T(A), x> (batch 2 of A vs x).
    y = ops.convert_to_numpy(ops.conv(x, w, strides, padding=padding))
    lhs = np.sum(ops.convert_to_numpy(A)[:2] * y)
    rhs = np.sum(fast[:2] * ops.convert_to_numpy(x))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)
