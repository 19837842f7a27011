"""Bound-aware 2-D pooling: AveragePooling2D (linear) and MaxPooling2D."""

import keras
from keras import ops

from verinet.layers._checks import require_channels_last
from verinet.layers._spatial import crop_hw, pad_hw, paddings, scatter_windows, windows
from verinet.layers._stock import channels_last
from verinet.layers.base import AffineRule, SingleInputRule, sum_spec
from verinet.layers.registry import register


class _PoolGeometry:
    """Window arithmetic shared by both pooling layers."""

    def _pads(self, hw):
        return paddings(hw, self.pool_size, self.strides, self.padding)

    def _padded_hw(self, hw):
        pads = self._pads(hw)
        return pads, (hw[0] + sum(pads[0]), hw[1] + sum(pads[1]))

    def _windows(self, x, out_hw, fill=0.0):
        pads = self._pads(x.shape[1:3])
        return list(
            windows(pad_hw(x, pads, fill), self.pool_size, self.strides, out_hw)
        )

    def _scatter(self, parts, input_shape):
        """Sum ``(batch, specs, Ho, Wo, C)`` window parts back onto the input."""
        batch, specs = parts[0].shape[:2]
        flat = [ops.reshape(p, (batch * specs, *p.shape[2:])) for p in parts]
        pads, padded = self._padded_hw(input_shape[:2])
        out = scatter_windows(flat, self.pool_size, self.strides, padded)
        out = crop_hw(out, pads, input_shape[:2])
        return ops.reshape(out, (batch, specs, *out.shape[1:]))


@keras.saving.register_keras_serializable(package="verinet")
class AveragePooling2D(keras.layers.AveragePooling2D, _PoolGeometry, AffineRule):
    """``keras.layers.AveragePooling2D`` ('valid' or 'same', channels_last).

    'same' padding follows Keras's torch backend exactly: symmetric padding
    averages the in-image elements of a window; asymmetric padding replicates
    the border and averages the whole window.

    Example:
        >>> from verinet import layers
        >>> layer = layers.AveragePooling2D(2)
    """

    def __init__(
        self, pool_size=(2, 2), strides=None, padding="valid", **kwargs
    ):  # pragma: no mutate block
        require_channels_last("AveragePooling2D", kwargs.get("data_format"))
        kwargs["data_format"] = "channels_last"  # not Keras's global default
        super().__init__(pool_size, strides=strides, padding=padding, **kwargs)

    def interval(self, lower, upper):
        return self.call(lower), self.call(upper)

    def backward_affine(self, A, input_shape):
        out_hw = A.shape[2:4]
        pads = self._pads(input_shape[:2])
        k = self.pool_size[0] * self.pool_size[1]
        if all(before == after for before, after in pads):
            # Zero padding, averaging only the in-image elements of a window.
            ones = ops.ones((1, *input_shape[:2], 1), dtype=A.dtype)
            count = sum(self._windows(ones, out_hw))  # (1, Ho, Wo, 1)
            return self._scatter([A / ops.expand_dims(count, 1)] * k, input_shape), None
        # Keras's torch backend pads asymmetric 'same' windows by replicating the
        # border, then averages all k elements: scatter onto the padded grid and
        # fold the padding back onto the border it copies.
        batch, specs = A.shape[:2]
        flat = ops.reshape(A / k, (batch * specs, *A.shape[2:]))
        padded = (input_shape[0] + sum(pads[0]), input_shape[1] + sum(pads[1]))
        grid = scatter_windows([flat] * k, self.pool_size, self.strides, padded)
        grid = _fold_replicated(grid, 1, pads[0])
        grid = _fold_replicated(grid, 2, pads[1])
        return ops.reshape(grid, (batch, specs, *grid.shape[1:])), None


def _fold_replicated(grid, axis, pad):
    """Adjoint of replicate padding by ``pad = (before, after)`` along ``axis``."""
    before, after = pad
    length = grid.shape[axis] - before - after

    def take(start, stop):
        index = [slice(None)] * len(grid.shape)
        index[axis] = slice(start, stop)
        return grid[tuple(index)]

    inner = take(before, before + length)
    parts = []
    if before:
        head = take(0, before)
        parts.append((0, ops.sum(head, axis=axis, keepdims=True)))
    if after:
        tail = take(before + length, before + length + after)
        parts.append((length - 1, ops.sum(tail, axis=axis, keepdims=True)))
    for position, extra in parts:
        pad_spec = [(0, 0)] * len(grid.shape)
        pad_spec[axis] = (position, length - 1 - position)
        inner = inner + ops.pad(extra, pad_spec)
    return inner


@keras.saving.register_keras_serializable(package="verinet")
class MaxPooling2D(keras.layers.MaxPooling2D, _PoolGeometry, SingleInputRule):
    """``keras.layers.MaxPooling2D`` with a sound CROWN relaxation.

    Per window, with ``j`` the input of largest lower bound: ``y >= x_j``
    below; above, ``y = x_j`` when ``l_j`` dominates every other upper bound,
    else the constant ``max_i u_i``.

    Example:
        >>> from verinet import layers
        >>> layer = layers.MaxPooling2D(2)
    """

    nonlinear = True

    def __init__(
        self, pool_size=(2, 2), strides=None, padding="valid", **kwargs
    ):  # pragma: no mutate block
        require_channels_last("MaxPooling2D", kwargs.get("data_format"))
        kwargs["data_format"] = "channels_last"  # not Keras's global default
        super().__init__(pool_size, strides=strides, padding=padding, **kwargs)

    def interval(self, lower, upper):
        # The window maximum by hand, not torch's max_pool2d: on CUDA its
        # float64 kernel fails ("misaligned address") on channels-last views.
        out_hw = tuple(self.compute_output_shape(lower.shape)[1:3])
        return tuple(ops.max(self._stacked(t, out_hw), axis=-1) for t in (lower, upper))

    def _stacked(self, t, out_hw):
        """Each window's elements along a last axis, padding read as -inf."""
        return ops.stack(self._windows(t, out_hw, float("-inf")), axis=-1)

    def _relaxation(self, lower, upper, out_hw):
        """Return ``(onehot, exact, top)``: chosen input, dominance, max upper."""
        low, up = self._stacked(lower, out_hw), self._stacked(upper, out_hw)
        choice = ops.argmax(low, axis=-1)
        onehot = ops.one_hot(choice, low.shape[-1], dtype=lower.dtype)
        best_low = ops.max(low, axis=-1)
        others = ops.where(onehot > 0, float("-inf"), up)
        exact = ops.cast(best_low >= ops.max(others, axis=-1), lower.dtype)
        return onehot, exact, ops.max(up, axis=-1)

    def backward(self, lA, uA, lower, upper):
        shape = tuple(lower.shape[1:])
        A_any = lA if lA is not None else uA
        onehot, exact, top = self._relaxation(lower, upper, A_any.shape[2:4])
        onehot, exact, top = onehot[:, None], exact[:, None], top[:, None]
        k = onehot.shape[-1]

        def side(A, lower_side):
            pos, neg = ops.maximum(A, 0.0), ops.minimum(A, 0.0)
            # Coefficients using the lower line x_j and the upper relaxation.
            low_part, up_part = (pos, neg) if lower_side else (neg, pos)
            coeff = low_part + up_part * exact
            parts = [coeff * onehot[..., i] for i in range(k)]
            bias = sum_spec(up_part * (1.0 - exact) * top)
            return self._scatter(parts, shape), bias

        lA_in, lbias = side(lA, True) if lA is not None else (None, None)
        uA_in, ubias = side(uA, False) if uA is not None else (None, None)
        return lA_in, uA_in, lbias, ubias


register(
    AveragePooling2D,
    converts_from=(keras.layers.AveragePooling2D,),
    from_stock=channels_last(AveragePooling2D),
    onnx_export="verinet.onnx.emitters:emit_average_pool",
    onnx_import=("AveragePool", "GlobalAveragePool"),
)
register(
    MaxPooling2D,
    converts_from=(keras.layers.MaxPooling2D,),
    from_stock=channels_last(MaxPooling2D),
    onnx_export="verinet.onnx.emitters:emit_max_pool",
    onnx_import=("MaxPool",),
)
