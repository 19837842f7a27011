"""Test setup: Keras's torch backend, seeded randomness, shared fixtures."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest
from hypothesis import settings

# `make test` runs the same examples every time (derandomized); `make fuzz`
# selects the "fuzz" profile: many more, freshly random examples.
settings.register_profile("verinet", deadline=None, max_examples=25, derandomize=True)
settings.register_profile(
    "fuzz",
    deadline=None,
    max_examples=int(os.environ.get("VERINET_FUZZ_EXAMPLES", "500")),
    derandomize=False,
    print_blob=True,
)
settings.load_profile(os.environ.get("VERINET_HYPOTHESIS_PROFILE", "verinet"))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # The tests' tensors are small: extra torch threads only contend, and
    # pytest-xdist workers already share the cores.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _ieee_float32():
    # Tests compare models against sampled outputs, numpy and onnxruntime in
    # float32; on a GPU, TF32 convolutions would add ~1e-3 noise to the model.
    from verinet.bounds.precision import ieee_float32

    with ieee_float32():
        yield
