"""Weight initialization for certified training."""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="verinet")
class IBPInitializer(keras.initializers.Initializer):
    """IBP initialization (Shi et al. 2021): ``N(0, (sqrt(2 pi) / fan_in)^2)``.

    Keeps the width of interval bounds stable from layer to layer at
    initialization, which shortens the warm-up of IBP and CROWN-IBP training.
    Recommended for ``robust="ibp"`` and ``robust="crown-ibp"``; pass
    ``kernel_initializer="ibp"`` to ``layers.Dense`` or ``layers.Conv2D``.

    Args:
        seed: optional random seed.

    Example:
        >>> layer = layers.Dense(256, kernel_initializer="ibp")
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed) if seed is not None else None

    def __call__(self, shape, dtype=None):
        fan_in = math.prod(shape[:-1])
        std = math.sqrt(2.0 * math.pi) / fan_in
        seed = self._generator if self._generator is not None else None
        return keras.random.normal(shape, stddev=std, dtype=dtype, seed=seed)

    def get_config(self):
        return {"seed": self.seed}


def resolve_kernel_initializer(value):
    """Map the name ``"ibp"`` to ``IBPInitializer``; pass others through."""
    if isinstance(value, str) and value.lower() == "ibp":
        return IBPInitializer()
    return value
