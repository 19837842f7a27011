"""verinet's Keras models: ``Sequential`` and ``Model`` with ``certify()``."""

from __future__ import annotations

import keras

from verinet.models.robust import RobustTrainingMixin


class CertifyMixin:
    """Adds ``certify`` and ``bounds`` to a Keras model."""

    def certify(
        self,
        x,
        y,
        epsilon,
        method="crown",
        attack="pgd",
        norm="linf",
        input_range=None,
        batch_size=256,
        verbose="auto",
        **kwargs,
    ):
        """Prove or refute robustness per sample; see ``vn.certify``.

        Returns:
            A ``vn.CertificationReport``.

        Example:
            >>> report = model.certify(x_test, y_test, epsilon=0.05)
        """
        from verinet.certify import certify

        return certify(
            self,
            x,
            y,
            epsilon,
            method=method,
            attack=attack,
            norm=norm,
            input_range=input_range,
            batch_size=batch_size,
            verbose=verbose,
            **kwargs,
        )

    def bounds(self, x, epsilon, method="crown", **kwargs):
        """Output bounds over the perturbation set; see ``vn.compute_bounds``."""
        from verinet.bounds import compute_bounds

        return compute_bounds(self, x, epsilon, method=method, **kwargs)


@keras.saving.register_keras_serializable(package="verinet")
class Sequential(CertifyMixin, RobustTrainingMixin, keras.Sequential):
    """``keras.Sequential`` with ``compile(robust=...)`` and ``certify()``.

    Example:
        >>> import verinet as vn
        >>> from verinet import layers
        >>> model = vn.Sequential([layers.Input((8, 8, 1)), layers.Flatten(),
        ...                        layers.Dense(32), layers.ReLU(), layers.Dense(10)])
    """


@keras.saving.register_keras_serializable(package="verinet")
class Model(CertifyMixin, RobustTrainingMixin, keras.Model):
    """``keras.Model`` (functional or subclassed) with ``compile(robust=...)``
    and ``certify()``.

    Example:
        >>> inputs = layers.Input((16,))
        >>> h = layers.Dense(16)(inputs)
        >>> outputs = layers.Dense(10)(layers.Add()([inputs, layers.ReLU()(h)]))
        >>> model = vn.Model(inputs, outputs)
    """
