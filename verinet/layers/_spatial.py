"""Padding and window helpers shared by Conv2D and pooling bound rules.

All tensors are channels_last: ``(N, H, W, C)``.
"""

from keras import ops


def same_padding(size: int, window: int, stride: int, dilation: int = 1):
    """Keras's (TensorFlow's) 'same' padding: ``(before, after)`` for one axis."""
    effective = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def paddings(hw, window, strides, padding, dilation=(1, 1)):
    """Per-axis ``(before, after)`` paddings for 'valid' or 'same'."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    return tuple(
        same_padding(hw[i], window[i], strides[i], dilation[i]) for i in range(2)
    )


def pad_hw(x, pads, value=0.0):
    """Pad the two spatial axes of an ``(N, H, W, C)`` tensor."""
    if pads == ((0, 0), (0, 0)):
        return x
    return ops.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def crop_hw(x, pads, hw):
    """Undo ``pad_hw``: keep the ``hw`` interior of a padded tensor."""
    (top, _), (left, _) = pads
    return x[:, top : top + hw[0], left : left + hw[1], :]


def windows(x, pool, strides, out_hw):
    """Yield each window offset's strided view: ``(N, Ho, Wo, C)`` tensors."""
    for di in range(pool[0]):
        for dj in range(pool[1]):
            yield x[
                :,
                di : di + strides[0] * (out_hw[0] - 1) + 1 : strides[0],
                dj : dj + strides[1] * (out_hw[1] - 1) + 1 : strides[1],
                :,
            ]


def _upsample_axis(t, axis, stride, offset, size):
    """Place entries of ``t`` along ``axis`` at ``offset + stride*i``."""
    if stride > 1:
        zeros = ops.zeros_like(t)
        t = ops.stack([t] + [zeros] * (stride - 1), axis=axis + 1)
        shape = list(t.shape)
        shape[axis : axis + 2] = [shape[axis] * stride]
        t = ops.reshape(t, shape)
    length = t.shape[axis]
    after = size - offset - length
    pad = [(0, 0)] * len(t.shape)
    pad[axis] = (offset, max(after, 0))
    t = ops.pad(t, pad)
    if after < 0:
        index = [slice(None)] * len(t.shape)
        index[axis] = slice(0, size)
        t = t[tuple(index)]
    return t


def scatter_windows(parts, pool, strides, padded_hw):
    """Adjoint of ``windows``: sum each offset's part back onto the grid."""
    total = None
    parts = iter(parts)
    for di in range(pool[0]):
        for dj in range(pool[1]):
            t = next(parts)
            t = _upsample_axis(t, 1, strides[0], di, padded_hw[0])
            t = _upsample_axis(t, 2, strides[1], dj, padded_hw[1])
            total = t if total is None else total + t
    return total
