"""Counting the base model's predictions on Gaussian-noised copies of inputs."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import torch

from verinet.errors import InvalidInputError

__all__ = [
    "ESTIMATION",
    "SELECTION",
    "count_predictions",
    "model_device",
    "model_dtype",
    "noise_generator",
    "sample_seeds",
]


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


#: The independent noise streams of one sample: PREDICT's and CERTIFY's
#: selection copies draw from ``SELECTION``, the estimation copies from
#: ``ESTIMATION``.
SELECTION, ESTIMATION = 0, 1


def sample_seeds(seed: int, indices, stream: int) -> list[int]:
    """One torch seed per sample, from ``(seed, stream, sample index)``.

    Each sample's noise depends only on the seed, the stream and its index
    in the whole data set, not on which other samples share its batches or
    which rank draws it (see ``vn.distributed``).

    Args:
        seed: the base seed, an int >= 0.
        indices: the samples' indices in the data set.
        stream: ``SELECTION`` or ``ESTIMATION``.

    Returns:
        64-bit seeds, one per index.

    Example:
        >>> sample_seeds(0, range(2), SELECTION)
        [15793235383387715774, 8649202198168436674]
    """
    seeds = []
    for i in indices:
        state = np.random.SeedSequence([seed, stream, int(i)]).generate_state(
            1, np.uint64
        )
        seeds.append(int(state[0]))
    return seeds


def _noisy_batches(x, sigma, n, batch_size, seeds, generator):
    """``(rows, noisy inputs)`` for the ``len(x) * n`` copies, sample after
    sample, in batches of ``batch_size`` that may span samples. Sample
    ``i``'s noise comes from ``seeds[i]``, drawn in pieces of ``batch_size``
    copies counted from its own first copy."""
    shape = tuple(x.shape[1:])
    rows, noise, filled = [], [], 0
    for i, seed in enumerate(seeds):
        generator.manual_seed(seed)
        for start in range(0, n, batch_size):
            draw = torch.randn(
                (min(batch_size, n - start), *shape),
                generator=generator,
                device=x.device,
                dtype=x.dtype,
            )
            while len(draw):
                take = min(batch_size - filled, len(draw))
                rows.append(torch.full((take,), i, device=x.device))
                noise.append(draw[:take])
                draw, filled = draw[take:], filled + take
                if filled == batch_size:
                    yield _batch(x, sigma, rows, noise)
                    rows, noise, filled = [], [], 0
    if filled:
        yield _batch(x, sigma, rows, noise)


def _batch(x, sigma, rows, noise):
    rows = torch.cat(rows)
    return rows, x[rows] + sigma * torch.cat(noise)


def count_predictions(
    model,
    x: torch.Tensor,
    sigma: float,
    n: int,
    classes: int,
    batch_size: int,
    seeds,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """How often the model predicts each class on ``x + sigma * N(0, I)``.

    The ``len(x) * n`` noisy copies (``n`` per sample, sample after sample)
    are evaluated in batches of ``batch_size``; a batch may span samples.
    Sample ``i``'s noise is drawn from a generator seeded with ``seeds[i]``
    (``sample_seeds``), so it does not depend on the other samples.

    Args:
        model: a Keras classifier returning ``(batch, classes)`` scores.
        x: ``(samples, *input_shape)`` on the noise's device and dtype.
        sigma: the noise's standard deviation.
        n: noisy copies per sample.
        classes: the number of model outputs.
        batch_size: noisy copies per model call.
        seeds: one torch seed per sample.
        progress: called after each batch with the copies drawn so far.

    Returns:
        int64 counts ``(samples, classes)`` on ``x``'s device; each row sums
        to ``n``.

    Raises:
        InvalidInputError: when the model's output is not ``(batch, classes)``.
    """
    samples = x.shape[0]
    counts = torch.zeros(samples * classes, dtype=torch.int64, device=x.device)
    generator = torch.Generator(device=x.device)
    drawn = 0
    for rows, inputs in _noisy_batches(x, sigma, n, batch_size, seeds, generator):
        scores = model(inputs, training=False)
        if tuple(scores.shape) != (len(rows), classes):
            raise InvalidInputError(
                f"The base model must return (batch, {classes}) class scores; "
                f"it returned shape {tuple(scores.shape)}."
            )
        predicted = torch.argmax(scores, dim=1).to(x.device)
        counts += torch.bincount(rows * classes + predicted, minlength=counts.numel())
        drawn += len(rows)
        if progress is not None:
            progress(drawn)
    return counts.reshape(samples, classes)
