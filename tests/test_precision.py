"""Bounds and verdicts run in full float32 even where TF32 is switched on."""

import numpy as np
import pytest

import verinet as vn
from verinet import layers as L
from verinet.bounds.precision import _tf32_switches, ieee_float32


def _state():
    return [getattr(obj, name) for obj, name, _ in _tf32_switches()]


def _tf32_on():
    """Turn every TF32 switch on, as a user chasing GPU speed would."""
    for obj, name, value in _tf32_switches():
        setattr(obj, name, "tf32" if isinstance(value, str) else True)


@pytest.fixture
def tf32_on():
    saved = _state()
    _tf32_on()
    yield
    for (obj, name, _), value in zip(_tf32_switches(), saved, strict=True):
        setattr(obj, name, value)


def test_ieee_float32_switches_off_and_restores(tf32_on):
    before = _state()
    with ieee_float32():
        assert _state() == [value for _, _, value in _tf32_switches()]
    assert _state() == before
    with pytest.raises(RuntimeError), ieee_float32():
        raise RuntimeError("boom")
    assert _state() == before


class _Recorder:
    """An attack that records the TF32 switches it runs under."""

    def __init__(self):
        self.seen = []

    def perturb(self, x, y):
        self.seen.append(_state())
        return np.asarray(x)


def test_certify_runs_attack_and_bounds_without_tf32(tf32_on):
    model = vn.Sequential([L.Input((4,)), L.Dense(8), L.ReLU(), L.Dense(3)])
    x = np.random.default_rng(0).uniform(0, 1, (5, 4)).astype("float32")
    recorder = _Recorder()
    vn.certify(model, x, np.zeros(5, int), 0.01, attack=recorder, verbose=0)
    ieee = [value for _, _, value in _tf32_switches()]
    assert recorder.seen == [ieee]
    assert _state() != ieee  # the user's setting is back afterwards
