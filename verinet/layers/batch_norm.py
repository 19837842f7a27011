"""Bound-aware batch normalization (an affine map in inference)."""

import keras
from keras import ops

from verinet.errors import InvalidInputError
from verinet.layers._stock import from_config, refuse
from verinet.layers.base import cast_like
from verinet.layers.elementwise_affine import ElementwiseAffineRule
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class BatchNormalization(keras.layers.BatchNormalization, ElementwiseAffineRule):
    """``keras.layers.BatchNormalization`` bounded as the affine map of its
    moving statistics (inference mode), normalizing the last axis.

    ``vn.deploy`` folds it into the preceding Dense/Conv2D.

    Example:
        >>> from verinet import layers
        >>> bn = layers.BatchNormalization()
    """

    def __init__(self, axis=-1, **kwargs):  # pragma: no mutate block
        if axis not in (-1, [-1]) or kwargs.get("renorm") or kwargs.get("synchronized"):
            raise InvalidInputError(
                "verinet.layers.BatchNormalization normalizes the last axis "
                "(axis=-1) without renorm or synchronization."
            )
        super().__init__(axis=-1, **kwargs)

    def affine_params(self, reference):
        """Return the inference ``(scale, shift)`` per channel."""
        return self.affine_for_statistics(
            cast_like(self.moving_mean, reference),
            cast_like(self.moving_variance, reference),
            reference,
        )

    def affine_for_statistics(self, mean, variance, reference):
        """``(scale, shift)`` of normalizing with the given mean and variance."""
        scale = 1.0 / ops.sqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * cast_like(self.gamma, reference)
        shift = -mean * scale
        if self.center:
            shift = shift + cast_like(self.beta, reference)
        return scale, shift


def _from_stock(layer, config, input_shape):
    """Stock batch norm over the last axis, without renorm."""
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if isinstance(axis, int) and axis == len(input_shape) - 1:
        axis = -1
    if axis != -1:
        raise refuse(
            layer,
            f"axis={config['axis']!r}",
            "axis=-1 (the last, channels_last axis)",
        )
    if config.get("renorm"):
        raise refuse(layer, "renorm=True", "renorm=False")
    config["axis"] = -1
    config.pop("synchronized", None)  # training only; inference is the same
    return [from_config(BatchNormalization, layer, config)]


# ONNX BatchNormalization imports as an ElementwiseAffine (its inference map).
register(
    BatchNormalization,
    converts_from=(keras.layers.BatchNormalization,),
    from_stock=_from_stock,
    onnx_export="verinet.onnx.emitters:emit_affine",
)
