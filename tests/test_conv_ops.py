"""The torch fast path of the Conv2D rule's convolutions equals keras.ops."""

import math

import keras
import numpy as np
import pytest
import torch
from keras import ops

import verinet as vn
from verinet import layers
from verinet.layers import _conv_ops
from verinet.layers._spatial import paddings

CASES = [
    # (hw, kernel, strides, padding)
    ((9, 9), (3, 3), (1, 1), "same"),
    ((9, 8), (4, 4), (2, 2), "same"),  # asymmetric 'same' on one axis
    ((8, 8), (4, 4), (2, 2), "same"),
    ((7, 9), (2, 3), (3, 2), "valid"),
    ((6, 6), (1, 1), (1, 1), "valid"),
    ((7, 10), (3, 5), (1, 1), "same"),  # rectangular kernel, H and W pads differ
    ((9, 7), (5, 3), (2, 1), "same"),
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


# ---------------------------------------------------------------------------
# Rectangular kernels, non-square inputs, unequal strides: the Conv2D layer's
# forward call, interval rule and backward rule against torch references with
# TensorFlow's 'same' padding written out by hand.
# ---------------------------------------------------------------------------

RECT_CASES = [
    # (hw, kernel, strides, padding)
    ((7, 10), (3, 5), (1, 1), "same"),  # pads (1, 1), (2, 2)
    ((10, 7), (5, 3), (1, 1), "same"),  # pads (2, 2), (1, 1)
    ((9, 7), (5, 3), (2, 1), "same"),  # pads (2, 2), (1, 1)
    ((7, 9), (3, 5), (1, 2), "same"),  # pads (1, 1), (2, 2)
    ((6, 9), (2, 3), (2, 2), "same"),  # pads (0, 0), (1, 1)
    ((5, 8), (1, 3), (1, 1), "same"),  # pads (0, 0), (1, 1)
    ((8, 11), (3, 5), (2, 1), "same"),  # pads (0, 1), (2, 2): asymmetric
    ((10, 7), (5, 3), (2, 1), "same"),  # pads (1, 2), (1, 1): asymmetric
    ((7, 10), (3, 5), (1, 2), "valid"),
    ((10, 7), (5, 3), (2, 1), "valid"),
]


def _tf_same(size, k, s):
    """TensorFlow's 'same' padding for one axis, written out independently."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _torch_conv(x, kernel, bias, strides, padding):
    """Channels-last conv in float64 torch: explicit zero padding, then conv2d."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x, np.float64))
    xt = x.permute(0, 3, 1, 2)
    if padding == "same":
        top, bottom = _tf_same(xt.shape[2], kernel.shape[0], strides[0])
        left, right = _tf_same(xt.shape[3], kernel.shape[1], strides[1])
        xt = torch.nn.functional.pad(xt, (left, right, top, bottom))
    w = torch.as_tensor(np.asarray(kernel, np.float64)).permute(3, 2, 0, 1)
    b = None if bias is None else torch.as_tensor(np.asarray(bias, np.float64))
    out = torch.nn.functional.conv2d(xt, w, b, stride=strides)
    return out.permute(0, 2, 3, 1)


def _rect_layer(rng, hw, kernel, strides, padding, cin=2, cout=3):
    model = keras.Sequential(
        [
            layers.Input((*hw, cin)),
            layers.Conv2D(cout, kernel, strides=strides, padding=padding),
        ]
    )
    conv = model.layers[-1]
    W = rng.standard_normal((*kernel, cin, cout)).astype("float32")
    b = rng.standard_normal(cout).astype("float32")
    conv.set_weights([W, b])
    return model, conv, W, b


@pytest.mark.parametrize("hw, kernel, strides, padding", RECT_CASES)
def test_conv2d_layer_rectangular_matches_torch(rng, hw, kernel, strides, padding):
    model, conv, W, b = _rect_layer(rng, hw, kernel, strides, padding)
    x = rng.uniform(0.0, 1.0, (2, *hw, 2)).astype("float32")
    ref = _torch_conv(x, W, b, strides, padding).numpy()
    assert ref.shape[1:3] == tuple(
        math.ceil((n - (k - 1 if padding == "valid" else 0)) / s)
        for n, k, s in zip(hw, kernel, strides, strict=True)
    )
    out = ops.convert_to_numpy(model(x))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)

    # Interval rule: the exact range of an affine map over a box is
    # conv(l, W+) + conv(u, W-) + b below and conv(u, W+) + conv(l, W-) + b
    # above (zero padding is a constant point of both).
    low = np.clip(x - rng.uniform(0.0, 0.3, x.shape), 0.0, 1.0).astype("float32")
    up = np.clip(x + rng.uniform(0.0, 0.3, x.shape), 0.0, 1.0).astype("float32")
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    ref_low = (
        _torch_conv(low, Wp, b, strides, padding)
        + _torch_conv(up, Wn, None, strides, padding)
    ).numpy()
    ref_up = (
        _torch_conv(up, Wp, b, strides, padding)
        + _torch_conv(low, Wn, None, strides, padding)
    ).numpy()
    i_low, i_up = conv.interval(ops.convert_to_tensor(low), ops.convert_to_tensor(up))
    np.testing.assert_allclose(ops.convert_to_numpy(i_low), ref_low, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(i_up), ref_up, atol=1e-4)

    # Backward rule: A_in = conv^T(A) is the gradient of <A, conv(v)> in v
    # (torch autograd on the reference; each (batch, spec) row its own v),
    # and the bias term is <A, b>.
    specs = 3
    A = rng.standard_normal((2, specs, *ref.shape[1:])).astype("float32")
    v = torch.zeros((2 * specs, *hw, 2), dtype=torch.float64, requires_grad=True)
    rows = torch.as_tensor(A.reshape(2 * specs, *ref.shape[1:]), dtype=torch.float64)
    torch.sum(rows * _torch_conv(v, W, None, strides, padding)).backward()
    A_in, bias = conv.backward_affine(ops.convert_to_tensor(A), (*hw, 2))
    A_in = ops.convert_to_numpy(A_in)
    assert A_in.shape == (2, specs, *hw, 2)
    np.testing.assert_allclose(
        A_in, v.grad.numpy().reshape(A_in.shape), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(bias), A.sum(axis=(2, 3)) @ b, rtol=1e-5, atol=1e-4
    )
    # The adjoint identity <A, conv(v)> = <conv^T(A), v> on random v.
    v = rng.standard_normal((2, *hw, 2))
    conv_v = _torch_conv(v, W, None, strides, padding).numpy()
    lhs = np.einsum("bshwc,bhwc->bs", A, conv_v)
    rhs = np.einsum("bshwc,bhwc->bs", A_in, v)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("hw, kernel, strides, padding", RECT_CASES)
def test_conv2d_rectangular_bounds_are_exact_and_sound(
    rng, hw, kernel, strides, padding
):
    """One Conv2D over an L∞ box clipped to [0, 1]: every method's bounds are
    the exact range (from the torch reference) and hold at sampled points."""
    model, _, W, b = _rect_layer(rng, hw, kernel, strides, padding)
    x = rng.uniform(0.0, 1.0, (1, *hw, 2)).astype("float32")
    eps = 0.2
    low, up = np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0)
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    ref_low = (
        _torch_conv(low, Wp, b, strides, padding)
        + _torch_conv(up, Wn, None, strides, padding)
    ).numpy()
    ref_up = (
        _torch_conv(up, Wp, b, strides, padding)
        + _torch_conv(low, Wn, None, strides, padding)
    ).numpy()
    points = rng.uniform(low, up, (64, *hw, 2))
    values = _torch_conv(points, W, b, strides, padding).numpy()
    for method in ("ibp", "crown"):
        b_low, b_up = vn.compute_bounds(
            model, x, eps, method=method, input_range=(0.0, 1.0)
        )
        assert b_low.shape == ref_low.shape
        np.testing.assert_allclose(b_low, ref_low, atol=1e-4)
        np.testing.assert_allclose(b_up, ref_up, atol=1e-4)
        assert np.all(values >= b_low - 1e-4) and np.all(values <= b_up + 1e-4)


@pytest.mark.parametrize("cin", [1, 3, 6])
@pytest.mark.parametrize(
    "window,kernel,strides",
    [((1, 1), (3, 3), (1, 1)), ((4, 3), (4, 2), (2, 1)), ((3, 5), (3, 3), (2, 3))],
)
def test_window_conv_transpose_is_the_valid_transposed_convolution(
    cin, window, kernel, strides
):
    """Both of its paths (overlap-add for few channels, the transposed
    convolution otherwise) against an entry-by-entry sum."""
    rng = np.random.default_rng(cin)
    cout = 5
    A = rng.standard_normal((3, *window, cout)).astype(np.float32)
    W = rng.standard_normal((*kernel, cin, cout)).astype(np.float32)
    out_hw = (
        (window[0] - 1) * strides[0] + kernel[0],
        (window[1] - 1) * strides[1] + kernel[1],
    )
    expected = np.zeros((3, *out_hw, cin), np.float32)
    for i in range(window[0]):
        for j in range(window[1]):
            for a in range(kernel[0]):
                for b in range(kernel[1]):
                    expected[:, i * strides[0] + a, j * strides[1] + b, :] += (
                        A[:, i, j, :] @ W[a, b].T
                    )
    got = _conv_ops.window_conv_transpose(
        ops.convert_to_tensor(A), ops.convert_to_tensor(W), strides
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), expected, rtol=1e-4, atol=1e-4
    )
