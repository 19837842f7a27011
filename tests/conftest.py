"""Test setup: Keras's torch backend, seeded randomness, shared fixtures."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("verinet", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("verinet")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the cores: one torch thread each avoids oversubscription.
    import torch

    torch.set_num_threads(1)
