"""Bounds and verdicts run in full float32 even where TF32 is switched on."""

import numpy as np
import pytest
import torch

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


# ---------------------------------------------------------------------------
# The user's own TF32 switches, read back through torch (not through verinet)
# ---------------------------------------------------------------------------


def _torch_tf32_flags():
    """The TF32 switches of cuBLAS matmuls and cuDNN convolutions as torch
    reports them: its per-backend ``fp32_precision`` API where torch has it
    (torch >= 2.9; reading the legacy ``allow_tf32`` there can raise once
    both APIs were used), else the legacy ``allow_tf32`` booleans."""
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return {"matmul": matmul.fp32_precision, "conv": conv.fp32_precision}
    return {"matmul": matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}


def _tf32_is_off(flags):
    return all(value in ("ieee", False) for value in flags.values())


def _fp32_precision_attributes():
    """Every ``fp32_precision`` attribute torch has, parents first."""
    found = []
    for path in (
        "",
        "cuda.matmul",
        "cudnn",
        "cudnn.conv",
        "cudnn.rnn",
        "mkldnn",
        "mkldnn.matmul",
        "mkldnn.conv",
        "mkldnn.rnn",
    ):
        obj = torch.backends
        for part in filter(None, path.split(".")):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, "fp32_precision"):
            found.append(obj)
    return found


@pytest.fixture
def user_tf32():
    """TF32 switched on the way users do it: the legacy flags and
    ``set_float32_matmul_precision("high")``; everything restored after."""
    precision = torch.get_float32_matmul_precision()
    new_api = [(obj, obj.fp32_precision) for obj in _fp32_precision_attributes()]
    legacy = []
    if not new_api:  # torch < 2.9: only the legacy switches exist
        legacy = [
            (obj, obj.allow_tf32)
            for obj in (torch.backends.cuda.matmul, torch.backends.cudnn)
        ]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    on = _torch_tf32_flags()
    assert not _tf32_is_off(on), on  # the test would prove nothing otherwise
    yield on
    torch.set_float32_matmul_precision(precision)
    for obj, value in new_api:
        obj.fp32_precision = value
    for obj, value in legacy:
        obj.allow_tf32 = value
    assert torch.get_float32_matmul_precision() == precision
    assert [obj.fp32_precision for obj, _ in new_api] == [v for _, v in new_api]


def _spy_method(name, seen):
    """The bound method ``name`` recording the TF32 flags while it bounds."""
    from verinet.bounds.api import resolve_method

    method = resolve_method(name)

    class Spy(type(method)):
        def bounds(self, *args, **kwargs):
            seen.append(_torch_tf32_flags())
            return super().bounds(*args, **kwargs)

    return Spy()


def _conv_model():
    return vn.Sequential(
        [
            L.Input((5, 5, 2)),
            L.Conv2D(3, 3),
            L.ReLU(),
            L.Flatten(),
            L.Dense(4),
            L.ReLU(),
            L.Dense(3),
        ]
    )


@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp"])
def test_compute_bounds_runs_without_user_tf32(user_tf32, method):
    model = _conv_model()
    x = np.random.default_rng(0).uniform(0, 1, (3, 5, 5, 2)).astype("float32")
    seen = []
    lower, upper = vn.compute_bounds(model, x, 0.05, method=_spy_method(method, seen))
    assert seen and all(_tf32_is_off(flags) for flags in seen), seen
    assert np.all(lower <= upper)
    # The user's setting is back afterwards.
    assert _torch_tf32_flags() == user_tf32
    assert torch.get_float32_matmul_precision() == "high"


def test_certify_bounds_attack_and_forward_run_without_user_tf32(
    user_tf32, monkeypatch
):
    model = _conv_model()
    x = np.random.default_rng(1).uniform(0, 1, (4, 5, 5, 2)).astype("float32")
    bounds_seen, forward_seen = [], []
    dense = model.layers[-1]
    forward = dense.call

    def spying_call(*args, **kwargs):
        forward_seen.append(_torch_tf32_flags())
        return forward(*args, **kwargs)

    monkeypatch.setattr(dense, "call", spying_call)
    report = vn.certify(
        model,
        x,
        np.zeros(4, int),
        0.01,
        method=_spy_method("crown", bounds_seen),
        attack_options={"steps": 2, "restarts": 1},
        verbose=0,
    )
    assert report.num_samples == 4
    assert bounds_seen and all(_tf32_is_off(flags) for flags in bounds_seen)
    # Clean predictions and the PGD attack run through the model's forward.
    assert forward_seen and all(_tf32_is_off(flags) for flags in forward_seen)
    assert _torch_tf32_flags() == user_tf32
    assert torch.get_float32_matmul_precision() == "high"


_NEW_TF32_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


@pytest.mark.xfail(
    _NEW_TF32_API,
    raises=RuntimeError,
    strict=True,
    reason="known bug: on torch >= 2.9 ieee_float32() sets only the new "
    "fp32_precision API, so after the user's legacy allow_tf32 = True (or "
    "set_float32_matmul_precision('high')) torch's cuBLAS TF32 query raises "
    "'mix of the legacy and new APIs'; cuBLAS asks it for every handle, so "
    "on a GPU bounds and certify would raise there.",
)
def test_guard_leaves_torch_tf32_state_consistent(user_tf32):
    with ieee_float32():
        # torch._C._get_cublas_allow_tf32: what cuBLAS consults on a GPU.
        assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is True
