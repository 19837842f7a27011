"""Keep batch-norm moving statistics from clean data only."""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def frozen_moving_statistics(model):
    """Restore every BatchNormalization's moving mean/variance on exit.

    Used around forward passes on perturbed inputs in training mode, so the
    moving statistics (used in inference and certification) see clean data
    only.
    """
    saved = [
        (v, keras.ops.copy(v.value))
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)
