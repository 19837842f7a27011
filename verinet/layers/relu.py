"""Bound-aware ReLU and LeakyReLU."""

import keras
from keras import ops

from verinet.bounds.patches import coefficients, like, spread
from verinet.bounds.relaxations import leaky_relu_lines, leaky_relu_relaxation
from verinet.errors import InvalidInputError
from verinet.layers._stock import unsupported
from verinet.layers.base import ElementwiseRule, dot_spec, split_signs
from verinet.layers.registry import register


class _ReluFamilyRule(ElementwiseRule):
    """``max(x, a x)``: the generic rule, specialized to its zero lower offset.

    With ``lb = 0`` each side needs one slope per coefficient's sign and one
    offset: ``A_in = A * (slope by sign of A)``, bias ``sum(A+ ub)`` for the
    upper side and ``sum(A- ub)`` for the lower. Fewer tensor ops than the
    generic rule matters in training, where the backward pass is
    differentiated too.
    """

    piecewise_linear = True

    def _slope(self) -> float:
        return 0.0

    def relax(self, lower, upper):
        return leaky_relu_relaxation(lower, upper, self._slope())

    def backward(self, lA, uA, lower, upper, alpha=None):
        """CROWN back-substitution; ``alpha`` optionally sets the lower line.

        Args:
            alpha: ``(alpha_lower, alpha_upper)``, slopes of the lower line on
                unstable neurons for the ``lA`` and ``uA`` sides, each shaped
                like that side's coefficients (dense ``(batch, rows, *shape)``
                or a patches window) or ``None``. Any slope in
                ``[negative_slope, 1]`` is sound; others are clipped into that
                range. Stable neurons keep the exact line.
        """
        *lines, ub = leaky_relu_lines(lower, upper, self._slope())
        lA_in = uA_in = lbias = ubias = None
        shared = None  # spread lines and sign split, when both sides are one spec
        if lA is not None:
            lw, uw = (spread(t, lA) for t in lines)
            lw = self._alpha_line(
                lw, lower, upper, None if alpha is None else alpha[0], lA
            )
            pos, neg = split_signs(coefficients(lA))
            shared = (lw, uw, pos, neg) if uA is lA and alpha is None else None
            # Each entry is whole in pos or neg: products as exact as A * w.
            lA_in = like(lA, pos * lw + neg * uw)
            lbias = dot_spec(neg, ub, lA)
        if uA is not None:
            if shared is None:
                lw, uw = (spread(t, uA) for t in lines)
                lw = self._alpha_line(
                    lw, lower, upper, None if alpha is None else alpha[1], uA
                )
                pos, neg = split_signs(coefficients(uA))
            uA_in = like(uA, pos * uw + neg * lw)
            ubias = dot_spec(pos, ub, uA)
        return lA_in, uA_in, lbias, ubias

    def _alpha_line(self, lw, lower, upper, alpha, A):
        """The lower line's slope: ``alpha`` (clipped) on unstable neurons.

        ``lw`` and ``alpha`` are aligned with the rows of ``A`` (dense or
        patches windows, where entries outside the node are never unstable).
        """
        if alpha is None:
            return lw
        straddle = ops.cast(ops.logical_and(lower < 0, upper > 0), lw.dtype)
        unstable = spread(straddle, A) > 0
        return ops.where(unstable, ops.clip(alpha, self._slope(), 1.0), lw)


@keras.saving.register_keras_serializable(package="verinet")
class ReLU(keras.layers.ReLU, _ReluFamilyRule):
    """``max(x, 0)`` with the CROWN relaxation (chord above, adaptive below).

    Example:
        >>> from verinet import layers
        >>> act = layers.ReLU()
    """

    def __init__(
        self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs
    ):  # pragma: no mutate block
        if max_value is not None or negative_slope != 0.0 or threshold != 0.0:
            raise InvalidInputError(
                "verinet.layers.ReLU is the plain max(x, 0); use layers.LeakyReLU "
                "for a negative slope (max_value and threshold are not supported)."
            )
        super().__init__(**kwargs)

    def interval(self, lower, upper):
        return ops.relu(lower), ops.relu(upper)


@keras.saving.register_keras_serializable(package="verinet")
class LeakyReLU(keras.layers.LeakyReLU, _ReluFamilyRule):
    """``max(x, a*x)`` for ``0 <= a <= 1`` with its CROWN relaxation.

    Example:
        >>> from verinet import layers
        >>> act = layers.LeakyReLU(negative_slope=0.1)
    """

    def __init__(self, negative_slope=0.3, **kwargs):  # pragma: no mutate block
        if not 0.0 <= negative_slope <= 1.0:
            raise InvalidInputError(
                f"verinet.layers.LeakyReLU needs 0 <= negative_slope <= 1 "
                f"(got {negative_slope})."
            )
        super().__init__(negative_slope=negative_slope, **kwargs)

    def _slope(self) -> float:
        return float(self.negative_slope)

    def interval(self, lower, upper):
        return self.call(lower), self.call(upper)


def _relu_from_stock(layer, config, input_shape):
    """Stock ``ReLU``: the plain one, or a ``LeakyReLU`` for a negative slope."""
    if config.get("max_value") is None and config.get("threshold", 0.0) == 0.0:
        slope = config.get("negative_slope", 0.0)
        return [ReLU() if slope == 0.0 else LeakyReLU(slope)]
    raise unsupported(layer, " for max_value or threshold")


register(
    ReLU,
    converts_from=(keras.layers.ReLU,),
    from_stock=_relu_from_stock,
    onnx_export="verinet.onnx.emitters:emit_relu",
    onnx_import=("Relu",),
    activation="relu",
)
register(
    LeakyReLU,
    converts_from=(keras.layers.LeakyReLU,),
    onnx_export="verinet.onnx.emitters:emit_leaky_relu",
    onnx_import=("LeakyRelu",),
    # Keras's "leaky_relu" activation uses slope 0.2 (the layer's default is 0.3).
    activation="leaky_relu",
    activation_config={"negative_slope": 0.2},
)
