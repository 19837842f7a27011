"""Counting the base model's predictions on Gaussian-noised copies of inputs."""

from __future__ import annotations

from collections.abc import Callable

import keras
import torch

from verinet.errors import InvalidInputError

__all__ = ["count_predictions", "model_device", "model_dtype", "noise_generator"]


def model_device(model) -> torch.device:
    """The device of the model's weights (Keras's default device if none)."""
    for weight in model.weights:
        return weight.value.device
    return keras.ops.convert_to_tensor(0.0).device


def model_dtype(model) -> torch.dtype:
    """The torch dtype the model computes in (``keras.config.floatx()`` if unset)."""
    name = getattr(model, "compute_dtype", None) or keras.config.floatx()
    return getattr(torch, keras.backend.standardize_dtype(name))


def noise_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A torch generator on ``device``: seeded, or fresh from the OS when ``None``."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def count_predictions(
    model,
    x: torch.Tensor,
    sigma: float,
    n: int,
    classes: int,
    batch_size: int,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """How often the model predicts each class on ``x + sigma * N(0, I)``.

    The ``len(x) * n`` noisy copies (``n`` per sample, sample after sample)
    are evaluated in batches of ``batch_size``; a batch may span samples.

    Args:
        model: a Keras classifier returning ``(batch, classes)`` scores.
        x: ``(samples, *input_shape)`` on the noise's device and dtype.
        sigma: the noise's standard deviation.
        n: noisy copies per sample.
        classes: the number of model outputs.
        batch_size: noisy copies per model call.
        generator: the source of the noise (on ``x``'s device).
        progress: called after each batch with the copies drawn so far.

    Returns:
        int64 counts ``(samples, classes)`` on ``x``'s device; each row sums
        to ``n``.

    Raises:
        InvalidInputError: when the model's output is not ``(batch, classes)``.
    """
    samples, shape = x.shape[0], tuple(x.shape[1:])
    total = samples * n
    counts = torch.zeros(samples * classes, dtype=torch.int64, device=x.device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        rows = torch.arange(start, stop, device=x.device) // n
        noise = torch.randn(
            (stop - start, *shape), generator=generator, device=x.device, dtype=x.dtype
        )
        scores = model(x[rows] + sigma * noise, training=False)
        if tuple(scores.shape) != (stop - start, classes):
            raise InvalidInputError(
                f"The base model must return (batch, {classes}) class scores; "
                f"it returned shape {tuple(scores.shape)}."
            )
        predicted = torch.argmax(scores, dim=1).to(x.device)
        counts += torch.bincount(rows * classes + predicted, minlength=counts.numel())
        if progress is not None:
            progress(stop)
    return counts.reshape(samples, classes)
