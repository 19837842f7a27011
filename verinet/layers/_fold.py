"""Batch-norm folding for layers whose kernel's last axis is the output channel."""

from __future__ import annotations

import numpy as np
from keras import ops

from verinet.errors import InvalidInputError


def fold_last_axis(layer, scale, shift) -> tuple[dict, list[np.ndarray]]:
    """Config and weights of ``layer`` followed by ``y * scale + shift``.

    For layers (``Dense``, ``Conv2D``) whose kernel's last axis is the output
    channel: the kernel's output channels are scaled and the bias becomes
    ``bias * scale + shift``, computed in float64 and stored in the kernel's
    dtype.

    Args:
        layer: a built layer with ``kernel``, ``bias`` and ``use_bias``.
        scale: one factor per output channel (or one for all).
        shift: one offset per output channel (or one for all).

    Returns:
        ``(config, weights)`` for a layer of ``layer``'s type with a bias.

    Raises:
        InvalidInputError: when ``scale`` or ``shift`` is not per channel.

    Example:
        >>> config, weights = fold_last_axis(dense, np.full(4, 2.0), np.zeros(4))
    """
    kernel = np.asarray(ops.convert_to_numpy(layer.kernel), dtype=np.float64)
    channels = kernel.shape[-1]
    scale, shift = (
        np.asarray(ops.convert_to_numpy(t), dtype=np.float64) for t in (scale, shift)
    )
    for name, t in (("scale", scale), ("shift", shift)):
        if t.shape not in ((), (channels,)):
            raise InvalidInputError(
                f"Folding into {layer.name!r}: {name} must hold one value per "
                f"output channel ({channels}), got shape {t.shape}."
            )
    bias = (
        np.asarray(ops.convert_to_numpy(layer.bias), dtype=np.float64)
        if layer.use_bias
        else np.zeros(channels)
    )
    dtype = ops.convert_to_numpy(layer.kernel).dtype
    weights = [(kernel * scale).astype(dtype), (bias * scale + shift).astype(dtype)]
    config = {**layer.get_config(), "use_bias": True}
    return config, weights
