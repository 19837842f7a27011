"""2-D convolutions of channels-last tensors for the Conv2D bound rule.

On the torch backend these call ``torch.nn.functional`` directly on
permuted views: a channels-last ``(N, H, W, C)`` tensor seen as
``(N, C, H, W)`` is already in torch's channels-last memory format, which
oneDNN and cuDNN take without a copy. ``keras.ops.conv_transpose`` first
copies its input to contiguous channels-first memory and back; in CROWN-IBP
training, where the transposed convolutions of the backward pass are
differentiated too, that doubled their cost. Other backends use
``keras.ops``. The results are the same convolutions either way (the
Conv2D soundness and adjoint tests run on this path).
"""

from __future__ import annotations

import keras
from keras import ops

from verinet.layers._spatial import crop_hw, pad_hw


def _torch():
    if keras.backend.backend() != "torch":
        return None
    import torch.nn.functional as F

    return F


def _symmetric(pads) -> bool:
    return all(before == after for before, after in pads)


def conv2d(x, kernel, strides, pads):
    """Convolve ``(N, H, W, Cin)`` with a ``(kh, kw, Cin, Cout)`` kernel.

    ``pads`` are ``((top, bottom), (left, right))`` zero paddings (see
    ``_spatial.paddings``); torch takes symmetric ones inside the convolution.
    """
    F = _torch()
    if F is None or not _symmetric(pads):
        return ops.conv(pad_hw(x, pads), kernel, strides=strides)
    out = F.conv2d(
        x.permute(0, 3, 1, 2),
        kernel.permute(3, 2, 0, 1),
        stride=strides,
        padding=(pads[0][0], pads[1][0]),
    )
    return out.permute(0, 2, 3, 1)


def conv2d_transpose(A, kernel, strides, pads, in_hw):
    """The adjoint of ``conv2d``: ``(N, Ho, Wo, Cout)`` → ``(N, H, W, Cin)``.

    ``pads`` are the forward convolution's ``((top, bottom), (left, right))``
    and ``in_hw`` its input size: the adjoint of the padded convolution is
    the transposed convolution cropped back to ``in_hw``.
    """
    ho, wo = A.shape[1:3]
    padded = (in_hw[0] + sum(pads[0]), in_hw[1] + sum(pads[1]))
    kh, kw = kernel.shape[:2]
    out_pad = (
        padded[0] - ((ho - 1) * strides[0] + kh),
        padded[1] - ((wo - 1) * strides[1] + kw),
    )
    F = _torch()
    if F is not None and _symmetric(pads):
        out = F.conv_transpose2d(
            A.permute(0, 3, 1, 2),
            kernel.permute(3, 2, 0, 1),
            stride=strides,
            padding=(pads[0][0], pads[1][0]),
            output_padding=out_pad,
        )
        return out.permute(0, 2, 3, 1)
    out = ops.conv_transpose(
        A, kernel, strides=strides, padding="valid", output_padding=out_pad
    )
    return crop_hw(out, pads, in_hw)


_OVERLAP_ADD_MAX_CHANNELS = 4


def window_conv_transpose(A, kernel, strides):
    """The 'valid' transposed convolution of small windows ``(N, kh, kw, Cout)``
    → ``(N, (kh-1)*s + k, (kw-1)*s + k, Cin)`` (patches back through a Conv2D).

    On torch, windows larger than one pixel onto few channels (the first
    convolution of an image model) go through one matmul and an overlap-add
    of the ``kh * kw`` window entries: on the CPU 1.1-4.5x faster than
    torch's ``fold`` (whose col2im loops over the ``N`` windows, a kernel
    launch each on a GPU) and faster than ``conv_transpose2d``, which on an
    H200 was also slower than ``fold`` at batch 1024. With many channels the
    transposed convolution is used.
    """
    n, kh, kw, cout = A.shape
    kx, ky, cin, _ = kernel.shape
    out_hw = ((kh - 1) * strides[0] + kx, (kw - 1) * strides[1] + ky)
    if _torch() is None or kh * kw == 1 or cin > _OVERLAP_ADD_MAX_CHANNELS:
        return conv2d_transpose(A, kernel, strides, ((0, 0), (0, 0)), out_hw)
    # Every window entry times the whole kernel: (n, kh, kw, kx, ky, cin).
    blocks = A.reshape(n * kh * kw, cout) @ kernel.reshape(kx * ky * cin, cout).T
    blocks = blocks.reshape(n, kh, kw, kx, ky, cin)
    out = A.new_zeros((n, *out_hw, cin))
    (sx, sy) = strides
    for i in range(kh):
        for j in range(kw):
            out[:, i * sx : i * sx + kx, j * sy : j * sy + ky] += blocks[:, i, j]
    return out
