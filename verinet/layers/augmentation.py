"""Stock Keras layers that are the identity at inference.

Data augmentation (``keras.layers.RandomFlip``, ``RandomTranslation``, ...)
and noise layers (``GaussianNoise``, ``SpatialDropout2D``, ...) change their
input only while training. A model is certified and deployed in inference,
so the bound graph reads these layers as the identity and ``vn.deploy``
leaves them out; training with them keeps augmenting the clean inputs.

Only these exact classes qualify (not subclasses, which may do anything at
inference). ``RandomCrop`` is not one: at inference it crops or resizes.
"""

from __future__ import annotations

import keras

_NAMES = (
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
)

# The classes this Keras version has (older versions lack some).
INFERENCE_IDENTITY: frozenset[type] = frozenset(
    getattr(keras.layers, name) for name in _NAMES if hasattr(keras.layers, name)
)


def is_inference_identity(layer) -> bool:
    """Whether ``layer`` is one of the stock layers that pass their input
    through unchanged at inference (see ``INFERENCE_IDENTITY``).

    Example:
        >>> is_inference_identity(keras.layers.RandomFlip())
        True
    """
    return type(layer) in INFERENCE_IDENTITY
