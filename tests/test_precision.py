"""Bounds and verdicts run in full float32 even where TF32 is switched on."""

import numpy as np
import pytest
import torch

import verinet as vn
from verinet import layers as L
from verinet.bounds.precision import ieee_float32

# ---------------------------------------------------------------------------
# torch's reduced-precision switches, read independently of verinet
# ---------------------------------------------------------------------------
#
# torch >= 2.9 has two APIs: the legacy switches (the matmul-precision enum
# behind set_float32_matmul_precision and cuda.matmul.allow_tf32, and the
# cudnn.allow_tf32 boolean) and a tree of fp32_precision nodes, where "none"
# inherits from the parent. torch has no raw getters (nodes read resolved,
# legacy flags raise when they disagree with the nodes), so the helpers
# below read raw values by clearing parents and by making the nodes agree,
# and put everything back.

NEW_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")
NODES = (
    ("generic", "all"),
    ("cuda", "all"),
    ("cuda", "matmul"),
    ("cuda", "conv"),
    ("cuda", "rnn"),
    ("mkldnn", "all"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
)
LEGACY_READS = {
    "cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
    "cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
    "float32_matmul_precision": torch.get_float32_matmul_precision,
}
FULL_LEGACY = {
    "cuda.matmul.allow_tf32": False,
    "cudnn.allow_tf32": False,
    "float32_matmul_precision": "highest",
}


def _get(backend, op):
    return torch._C._get_fp32_precision_getter(backend, op)


def _put(backend, op, value):
    torch._C._set_fp32_precision_setter(backend, op, value)


def _resolved():
    """Every fp32_precision node as torch resolves it (what kernels use)."""
    return {f"{b}.{o}": _get(b, o) for b, o in NODES} if NEW_API else {}


def _legacy():
    """The legacy flags as torch reports them, or "raises" where it refuses."""
    out = {}
    for name, read in LEGACY_READS.items():
        try:
            out[name] = read()
        except RuntimeError as error:
            assert "legacy and new API" in str(error), error
            out[name] = "raises"
    return out


def _observed():
    return {**_legacy(), **_resolved()}


def _raw_nodes():
    """Each node's own setting ("none" where it inherits)."""
    raw = {}
    for backend, op in NODES:  # parents first
        raw[backend, op] = _get(backend, op)
        if op == "all":
            _put(backend, op, "none")
    for key, value in raw.items():
        _put(*key, value)
    return raw


def _snapshot():
    """torch's complete float32 precision state, raw, left as found."""
    if not NEW_API:
        return _legacy()
    raw = _raw_nodes()
    try:
        _put("cuda", "matmul", "ieee")
        _put("mkldnn", "matmul", "ieee")
        precision = torch.get_float32_matmul_precision()
        _put("cuda", "conv", "ieee")
        _put("cuda", "rnn", "ieee")
        try:
            cudnn = torch._C._get_cudnn_allow_tf32()
        except RuntimeError:
            cudnn = True
    finally:
        for key, value in raw.items():
            _put(*key, value)
    return {"nodes": raw, "precision": precision, "cudnn": cudnn}


def _restore(snapshot):
    if not NEW_API:
        torch.set_float32_matmul_precision(snapshot["float32_matmul_precision"])
        torch.backends.cudnn.allow_tf32 = snapshot["cudnn.allow_tf32"]
        return
    torch.set_float32_matmul_precision(snapshot["precision"])
    torch._C._set_cudnn_allow_tf32(snapshot["cudnn"])
    for key, value in snapshot["nodes"].items():
        _put(*key, value)


@pytest.fixture
def torch_defaults():
    """torch's own defaults (cuDNN convolutions in TF32) for the test; the
    session's state back after it."""
    saved = _snapshot()
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    if NEW_API:
        for backend, op in NODES:
            if (backend, op) not in (("cuda", "conv"), ("cuda", "rnn")):
                _put(backend, op, "none")
    yield
    _restore(saved)
    assert _snapshot() == saved


def _full_precision_inside():
    """Inside the guard: every switch full precision, through either API."""
    assert _legacy() == FULL_LEGACY
    assert set(_resolved().values()) <= {"ieee"}


def _set(path, value):
    """``torch.backends.<path> = value``."""
    *parents, name = path.split(".")
    obj = torch.backends
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, name, value)


# Each way a user turns reduced precision on (torch's defaults included:
# cuDNN convolutions in TF32).
LEGACY_WAYS = {
    "torch defaults": [],
    "legacy allow_tf32 flags": [
        ("cuda.matmul.allow_tf32", True),
        ("cudnn.allow_tf32", True),
    ],
    "legacy matmul flag only": [
        ("cudnn.allow_tf32", False),
        ("cuda.matmul.allow_tf32", True),
    ],
    "set_float32_matmul_precision high": [("precision", "high")],
    "set_float32_matmul_precision medium": [("precision", "medium")],
}
NEW_API_WAYS = {
    "new api cuda matmul and conv": [
        ("cuda.matmul.fp32_precision", "tf32"),
        ("cudnn.conv.fp32_precision", "tf32"),
    ],
    "new api generic root": [("fp32_precision", "tf32")],
    "new api mkldnn matmul bf16": [("mkldnn.matmul.fp32_precision", "bf16")],
    "new api cudnn all": [("cudnn.fp32_precision", "tf32")],
    "legacy then new api (mixed)": [
        ("cuda.matmul.allow_tf32", True),
        ("cuda.matmul.fp32_precision", "ieee"),
        ("cudnn.allow_tf32", False),
        ("cudnn.conv.fp32_precision", "tf32"),
    ],
}
WAYS = {**LEGACY_WAYS, **(NEW_API_WAYS if NEW_API else {})}


def _turn_on(steps):
    for path, value in steps:
        if path == "precision":
            torch.set_float32_matmul_precision(value)
        else:
            _set(path, value)


@pytest.mark.parametrize("way", list(WAYS))
def test_guard_is_full_precision_inside_and_restores_exactly(torch_defaults, way):
    _turn_on(WAYS[way])
    before, observed = _snapshot(), _observed()
    assert observed != {**FULL_LEGACY, **dict.fromkeys(_resolved(), "ieee")}
    with ieee_float32():
        _full_precision_inside()
        with ieee_float32():  # nested, as certify inside a user's guard
            _full_precision_inside()
        _full_precision_inside()
    assert _snapshot() == before
    assert _observed() == observed
    # And after an exception in the block.
    with pytest.raises(KeyError), ieee_float32():
        _full_precision_inside()
        raise KeyError("boom")
    assert _snapshot() == before
    assert _observed() == observed


@pytest.mark.skipif(not NEW_API, reason="torch < 2.9 has no fp32_precision tree")
def test_inherited_settings_stay_inherited(torch_defaults):
    # A user who sets only the root: every node follows it, before and after.
    torch.backends.fp32_precision = "tf32"
    with ieee_float32():
        pass
    torch.backends.fp32_precision = "ieee"
    assert _get("cuda", "matmul") == _get("mkldnn", "conv") == "ieee"


def test_guard_leaves_torch_tf32_state_consistent(torch_defaults):
    # After the legacy API, as before torch 2.9, the new API's nodes disagree
    # with the legacy flags unless the guard writes both: cuBLAS reads the
    # legacy flag (torch._C._get_cublas_allow_tf32) for every handle.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    with ieee_float32():
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "highest"
    assert torch.backends.cuda.matmul.allow_tf32 is True
    assert torch.backends.cudnn.allow_tf32 is True
    assert torch.get_float32_matmul_precision() == "high"


# ---------------------------------------------------------------------------
# verinet's entry points run under the guard
# ---------------------------------------------------------------------------


def _torch_tf32_flags():
    """The switches that matter as torch reports them: the fp32_precision
    nodes of cuBLAS matmuls, cuDNN convolutions and oneDNN matmuls (torch >=
    2.9), and the legacy flags (which raise if the two APIs disagree)."""
    flags = {name: read() for name, read in LEGACY_READS.items()}
    if NEW_API:
        for backend, op in (("cuda", "matmul"), ("cuda", "conv"), ("mkldnn", "matmul")):
            flags[f"{backend}.{op}"] = _get(backend, op)
    return flags


def _tf32_is_off(flags):
    return all(value in ("ieee", False, "highest") for value in flags.values())


class _Recorder:
    """An attack that records the switches it runs under."""

    def __init__(self):
        self.seen = []

    def perturb(self, x, y):
        self.seen.append(_torch_tf32_flags())
        return np.asarray(x)


@pytest.fixture
def user_tf32(torch_defaults):
    """TF32 switched on the way users do it: the legacy flags and
    ``set_float32_matmul_precision("high")``."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    on = _torch_tf32_flags()
    assert not _tf32_is_off(on), on  # the test would prove nothing otherwise
    return on


def test_certify_runs_attack_and_bounds_without_tf32(user_tf32):
    model = vn.Sequential([L.Input((4,)), L.Dense(8), L.ReLU(), L.Dense(3)])
    x = np.random.default_rng(0).uniform(0, 1, (5, 4)).astype("float32")
    recorder = _Recorder()
    vn.certify(model, x, np.zeros(5, int), 0.01, attack=recorder, verbose=0)
    assert len(recorder.seen) == 1 and _tf32_is_off(recorder.seen[0])
    assert _torch_tf32_flags() == user_tf32  # the user's setting is back


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
