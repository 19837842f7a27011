"""Double-precision bounds on backends where Keras narrows 64-bit results.

Keras's type promotion follows JAX's default and turns the float64 result of
an op like ``ops.matmul`` into float32 on every backend but TensorFlow. For
``dtype="float64"`` certification that would silently lose the precision the
user asked for, so bound computations in float64 run inside
``float64_promotion()``, which lets 64-bit floats promote to themselves.
"""

from __future__ import annotations

import contextlib
import threading

from keras.src.backend.common import dtypes as _dtypes

_lock = threading.RLock()
_torch_flags_lock = threading.Lock()


@contextlib.contextmanager
def float64_promotion(enabled: bool = True):
    """Keep float64 results float64 inside the block (no-op when disabled)."""
    if not enabled:
        yield
        return
    table = _dtypes.BIT64_TO_BIT32_DTYPE
    with _lock:
        saved = table.get("float64")
        table["float64"] = "float64"
        try:
            yield
        finally:
            table["float64"] = saved


# ---------------------------------------------------------------------------
# Full float32 (no TF32, no bfloat16) for bounds, attacks and verdicts
# ---------------------------------------------------------------------------
#
# torch keeps two sets of reduced-precision switches. The legacy ones are
# ``torch.set_float32_matmul_precision`` (an enum; ``torch.backends.cuda.
# matmul.allow_tf32`` reads and writes it too) and the boolean
# ``torch.backends.cudnn.allow_tf32``. Since torch 2.9 there is also a tree of
# ``fp32_precision`` settings: "generic"/"all" at the root, "cuda" and
# "mkldnn" below it ("all", then "matmul", "conv", "rnn"); a "none" node
# inherits from its parent. The legacy setters write both sets, the new ones
# only their node, and torch refuses to read a legacy flag (it raises "mix of
# the legacy and new APIs") when the two disagree: cuBLAS reads one for every
# handle it sets up. So the guard writes both sets, consistently, and puts
# back both exactly as it found them.

_FULL = "ieee"
_INHERIT = "none"
#: Parents before children: with its parents at "none", a node reads as its
#: own setting.
_FP32_NODES = (
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


def _has_fp32_precision_api(torch) -> bool:
    conv = getattr(torch.backends.cudnn, "conv", None)
    return hasattr(torch._C, "_set_fp32_precision_setter") and hasattr(
        conv, "fp32_precision"
    )


def _onednn_tf32_off(torch, undo) -> None:
    """oneDNN's TF32 switch (Intel GPUs) off; a no-op where it is not on."""
    getter = getattr(torch._C, "_get_onednn_allow_tf32", None)
    if getter is not None and getter() is True:
        undo.append(lambda: torch._C._set_onednn_allow_tf32(True))
        torch._C._set_onednn_allow_tf32(False)


def _enter_legacy_api(torch, undo) -> None:
    """torch < 2.9: the legacy switches are the only ones."""
    precision = torch.get_float32_matmul_precision()
    cudnn = bool(torch.backends.cudnn.allow_tf32)
    undo.append(lambda: torch.set_float32_matmul_precision(precision))
    torch.set_float32_matmul_precision("highest")
    undo.append(lambda: setattr(torch.backends.cudnn, "allow_tf32", cudnn))
    torch.backends.cudnn.allow_tf32 = False


def _enter_fp32_precision_api(torch, undo) -> None:
    """torch >= 2.9: both sets of switches, read and written consistently."""
    get = torch._C._get_fp32_precision_getter
    put = torch._C._set_fp32_precision_setter
    nodes = []
    for backend, op in _FP32_NODES:
        try:
            nodes.append((backend, op, get(backend, op)))
        except RuntimeError:  # a node this torch does not have
            continue
        if op == "all":  # children read as their own setting from now on
            put(backend, op, _INHERIT)

    def put_back_nodes():
        for backend, op, value in nodes:
            put(backend, op, value)

    # Every node goes back last, after the legacy setters (which overwrite
    # some nodes) have run: registered first, it runs last.
    undo.append(put_back_nodes)

    present = {(backend, op) for backend, op, _ in nodes}

    def full(*keys):
        for key in keys:
            if key in present:
                put(*key, _FULL)

    # The legacy matmul enum can be read once no matmul node says tf32/bf16.
    full(("cuda", "matmul"), ("mkldnn", "matmul"))
    precision = torch.get_float32_matmul_precision()
    # The legacy cuDNN boolean reads only when it agrees with conv and rnn:
    # with both full precision it reads False, or raises when it is True.
    full(("cuda", "conv"), ("cuda", "rnn"))
    try:
        cudnn = bool(torch._C._get_cudnn_allow_tf32())
    except RuntimeError:
        cudnn = True

    undo.append(lambda: torch.set_float32_matmul_precision(precision))
    undo.append(lambda: torch._C._set_cudnn_allow_tf32(cudnn))
    torch.set_float32_matmul_precision("highest")
    torch._C._set_cudnn_allow_tf32(False)
    full(*present)


@contextlib.contextmanager
def ieee_float32():
    """Compute float32 convolutions and matmuls in full float32 inside the block.

    On NVIDIA GPUs PyTorch may run float32 matmuls and convolutions in TF32
    (and on CPUs oneDNN matmuls in bfloat16 after
    ``torch.set_float32_matmul_precision("medium")``), whose short mantissa
    moves results by about 1e-3 relative: enough to turn a small positive
    certified margin into a wrong certificate. Bounds, attacks and verdicts
    are therefore computed in full float32; training is left as the user
    configured it.

    Inside the block every switch reads full precision through either API
    (``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32`` are False,
    ``torch.get_float32_matmul_precision()`` is ``"highest"``, every
    ``fp32_precision`` is ``"ieee"``); afterwards the user's own settings,
    legacy or new API, are back exactly as they were.
    """
    import torch

    undo = []
    with _torch_flags_lock:
        try:
            if _has_fp32_precision_api(torch):
                _enter_fp32_precision_api(torch, undo)
            else:
                _enter_legacy_api(torch, undo)
            _onednn_tf32_off(torch, undo)
        except BaseException:
            _run_undo(undo)
            raise
    try:
        yield
    finally:
        with _torch_flags_lock:
            _run_undo(undo)


def _run_undo(undo) -> None:
    while undo:
        undo.pop()()
