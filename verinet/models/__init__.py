"""verinet models and conversion of stock Keras models."""

from verinet.models.convert import convert
from verinet.models.model import Model, Sequential

__all__ = ["Model", "Sequential", "convert"]
