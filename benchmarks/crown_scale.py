"""verinet's CROWN (and alpha-CROWN) against auto_LiRPA's on random-weight networks.

Bounds the outputs of three randomly initialised models over an L-inf ball
clipped to the input range (0, 1), around random uniform inputs in [0, 1]:

* ``mlp``: 64 -> Dense 256 -> ReLU -> Dense 256 -> ReLU -> Dense 10
  (batch 64, epsilon 0.02);
* ``fmnist-cnn``: 28x28x1 -> Conv2D 16 4x4/2 'same' -> ReLU -> Conv2D 32 4x4/2
  'same' -> ReLU -> Flatten -> Dense 100 -> ReLU -> Dense 10 (batch 64,
  epsilon 0.02);
* ``cnn7`` (CIFAR): 32x32x3 -> [Conv2D 64 3x3 'same', BN, ReLU] x2 ->
  [ZeroPadding2D 1, Conv2D 128 4x4/2 'valid', BN, ReLU] -> [Conv2D 128 3x3
  'same', BN, ReLU] x2 -> Flatten -> Dense 512 -> BN -> ReLU -> Dense 10
  (batch 1, epsilon 2/255).

Weights use Keras's default initialisation and every BatchNormalization gets
random moving mean and variance, gamma and beta (so it is not the identity),
all from ``--seed``; every method of a model sees the same weights and inputs.

Methods:

* ``verinet-crown``: ``vn.bounds.CROWN()``, patches form through convolutions;
* ``verinet-crown-dense``: ``vn.bounds.CROWN(patches=False)``, the dense form
  (same bounds, far more memory: skipped on ``cnn7`` unless ``--dense-cnn7``,
  which needs tens of GiB);
* ``auto_LiRPA-crown``: auto_LiRPA's ``compute_bounds(method="CROWN")`` with
  its default bound options (``conv_mode="patches"``), on a ``torch.nn``
  twin of the Keras model (NCHW, same weights; its outputs are checked against
  Keras's before anything is timed). It runs under ``torch.no_grad()``, as
  verinet's bounds do. auto_LiRPA is optional: without it the script says so
  and reports verinet only;
* ``verinet-alpha-crown``: ``vn.bounds.AlphaCROWN(iterations=N, lr=0.25)``
  (its defaults otherwise: Adam, learning-rate decay 0.98, the lower ReLU
  slopes optimized for the output and for the hidden layers' bounds), N from
  ``--alpha-iterations`` (default 20);
* ``auto_LiRPA-alpha-crown``: auto_LiRPA's alpha-CROWN,
  ``compute_bounds(method="CROWN-Optimized", bound_lower=True,
  bound_upper=True)`` on a ``BoundedModule`` built with ``bound_opts=
  {"optimize_bound_args": {"iteration": N}}`` and its other defaults (Adam,
  ``lr_alpha`` 0.5, ``lr_decay`` 0.98, ``keep_best``; it optimizes the lower
  and the upper bounds in two separate runs of N iterations). Its
  optimization needs gradients, so it does not run under ``torch.no_grad()``
  (as in auto_LiRPA's examples).

The two alpha-CROWN methods are slow and not run by default: select them with
``--methods``.

Each (model, method) pair runs in a fresh process (multiprocessing 'spawn'), so
its peak resident set size (``ru_maxrss``) belongs to that measurement alone;
"base RSS" is the peak before the first bound (interpreter, torch, Keras, the
model, its torch twin and auto_LiRPA's ``BoundedModule`` where used) and
"dRSS" is the growth caused by bounding. With CUDA, peak
``torch.cuda.max_memory_allocated()`` is reported too.

In each process one call bounds one batch to warm up, then ``--repeats`` calls
are timed with ``time.perf_counter`` and the median is reported. A call goes
from a numpy batch to numpy bounds, so conversions are included on both sides.
"vs auto_LiRPA" is auto_LiRPA's time divided by the method's (above 1: verinet
is faster), against ``auto_LiRPA-alpha-crown`` for ``verinet-alpha-crown`` and
against ``auto_LiRPA-crown`` for the CROWN methods; "width" is the mean
``upper - lower``, "width ratio" the method's mean width over that auto_LiRPA
method's (1 when both compute the same CROWN bounds; alpha-CROWN's optimized
bounds differ), "vs CROWN width" an alpha-CROWN method's mean width over the
same library's CROWN (blank unless that CROWN row is in the run) and "max
|diff|" the largest difference between the method's bounds and auto_LiRPA's.

Run from the repository root (auto_LiRPA importable, e.g. on ``PYTHONPATH``)::

    KERAS_BACKEND=torch .venv/bin/python benchmarks/crown_scale.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/crown_scale.py --quick
    KERAS_BACKEND=torch .venv/bin/python benchmarks/crown_scale.py \\
        --models fmnist-cnn mlp --repeats 3
    KERAS_BACKEND=torch .venv/bin/python benchmarks/crown_scale.py \\
        --models cnn7 --quick
    KERAS_BACKEND=torch .venv/bin/python benchmarks/crown_scale.py \\
        --models fmnist-cnn --batch 8 --quick --methods verinet-crown
    KERAS_BACKEND=torch .venv/bin/python benchmarks/crown_scale.py \\
        --models fmnist-cnn --batch 8 --repeats 1 --methods verinet-crown \\
        verinet-alpha-crown auto_LiRPA-crown auto_LiRPA-alpha-crown

Torch uses one thread per process by default (``--threads``), the setting the
published comparison uses. On two busy CPU cores ``--models fmnist-cnn mlp
--repeats 3`` took about four minutes (two of them the dense CNN row);
``--models cnn7 --quick`` about seventeen: one batch-1 CROWN call took about
3.5 minutes with either library, and auto_LiRPA's peaked above 12 GiB of RSS
growth where verinet's stayed under 0.5 GiB. On a busy machine timings are
pessimistic; the script prints the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

INPUT_RANGE = (0.0, 1.0)
MODELS = ("mlp", "fmnist-cnn", "cnn7")
METHODS = (
    "verinet-crown",
    "verinet-crown-dense",
    "verinet-alpha-crown",
    "auto_LiRPA-crown",
    "auto_LiRPA-alpha-crown",
)
DEFAULT_METHODS = ("verinet-crown", "verinet-crown-dense", "auto_LiRPA-crown")
AUTO_LIRPA = ("auto_LiRPA-crown", "auto_LiRPA-alpha-crown")
# The auto_LiRPA method each verinet method is compared with.
REFERENCE = {
    "verinet-crown": "auto_LiRPA-crown",
    "verinet-crown-dense": "auto_LiRPA-crown",
    "verinet-alpha-crown": "auto_LiRPA-alpha-crown",
}
# The same library's CROWN, for an alpha-CROWN method's width ratio.
CROWN_OF = {
    "verinet-alpha-crown": "verinet-crown",
    "auto_LiRPA-alpha-crown": "auto_LiRPA-crown",
}
INPUT_SHAPES = {"mlp": (64,), "fmnist-cnn": (28, 28, 1), "cnn7": (32, 32, 3)}
TWIN_TOLERANCE = 1e-4


def build_model(name: str, seed: int) -> Any:
    """One benchmark model with random weights (and random BN statistics).

    Args:
        name: one of ``MODELS``.
        seed: seeds Keras's initialisers and the BatchNormalization values.

    Returns:
        A ``keras.Sequential`` of verinet layers.
    """
    import keras
    import numpy as np

    from verinet import layers

    keras.utils.set_random_seed(seed)
    if name == "mlp":
        body = [
            layers.Dense(256),
            layers.ReLU(),
            layers.Dense(256),
            layers.ReLU(),
            layers.Dense(10),
        ]
    elif name == "fmnist-cnn":
        body = [
            layers.Conv2D(16, 4, strides=2, padding="same"),
            layers.ReLU(),
            layers.Conv2D(32, 4, strides=2, padding="same"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(100),
            layers.ReLU(),
            layers.Dense(10),
        ]
    elif name == "cnn7":

        def block(*conv):
            return [*conv, layers.BatchNormalization(), layers.ReLU()]

        body = [
            *block(layers.Conv2D(64, 3, padding="same")),
            *block(layers.Conv2D(64, 3, padding="same")),
            *block(
                layers.ZeroPadding2D(1),
                layers.Conv2D(128, 4, strides=2, padding="valid"),
            ),
            *block(layers.Conv2D(128, 3, padding="same")),
            *block(layers.Conv2D(128, 3, padding="same")),
            layers.Flatten(),
            *block(layers.Dense(512)),
            layers.Dense(10),
        ]
    else:
        raise ValueError(f"unknown model {name!r}")
    model = keras.Sequential([layers.Input(INPUT_SHAPES[name]), *body], name=name)
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            (n,) = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.1, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    return model


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of Keras's 'same' along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_twin(model: Any) -> Any:
    """A ``torch.nn.Sequential`` (NCHW) computing what the Keras model does.

    Convolution kernels are transposed to (out, in, h, w), Dense kernels to
    (out, in); the Dense after a Flatten has its input rows permuted from
    Keras's (h, w, c) order to torch's (c, h, w), so the twin needs nothing
    but Conv2d, Linear, BatchNorm, ReLU, ZeroPad2d and Flatten. Keras's 'same'
    padding puts any odd extra row or column after; even padding goes into the
    Conv2d, uneven padding into a ZeroPad2d before it (the models here only
    need even padding: 4x4 stride 2 on 28x28 or 14x14 pads 1 on each side).
    """
    import keras
    from torch import nn

    def tensor(variable):
        return variable.value.detach().cpu().clone()

    modules = []
    pad = [0, 0, 0, 0]  # left, right, top, bottom still to apply
    flattened = None  # (h, w, c) of the last Flatten's input
    for layer in model.layers:
        if getattr(layer, "activation", keras.activations.linear) not in (
            keras.activations.linear,
            None,
        ):
            raise ValueError(f"{layer.name}: fused activations are not mirrored")
        if isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            pad = [pad[0] + left, pad[1] + right, pad[2] + top, pad[3] + bottom]
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.input.shape
            kh, kw, cin, cout = layer.kernel.shape
            sh, sw = layer.strides
            if layer.padding == "same":
                top, bottom = _same_padding(h, kh, sh)
                left, right = _same_padding(w, kw, sw)
                pad = [pad[0] + left, pad[1] + right, pad[2] + top, pad[3] + bottom]
            symmetric = pad[0] == pad[1] and pad[2] == pad[3]
            if not symmetric:
                modules.append(nn.ZeroPad2d(tuple(pad)))
            conv = nn.Conv2d(
                cin,
                cout,
                (kh, kw),
                stride=(sh, sw),
                padding=(pad[2], pad[0]) if symmetric else 0,
                dilation=tuple(layer.dilation_rate),
                groups=layer.groups,
                bias=layer.use_bias,
            )
            conv.weight.data = tensor(layer.kernel).permute(3, 2, 0, 1).contiguous()
            if layer.use_bias:
                conv.bias.data = tensor(layer.bias)
            modules.append(conv)
            pad = [0, 0, 0, 0]
        elif isinstance(layer, keras.layers.BatchNormalization):
            (n,) = layer.gamma.shape
            images = len(layer.input.shape) == 4
            bn = (nn.BatchNorm2d if images else nn.BatchNorm1d)(n, eps=layer.epsilon)
            bn.weight.data = tensor(layer.gamma)
            bn.bias.data = tensor(layer.beta)
            bn.running_mean.data = tensor(layer.moving_mean)
            bn.running_var.data = tensor(layer.moving_variance)
            modules.append(bn)
        elif isinstance(layer, keras.layers.ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, keras.layers.Flatten):
            shape = tuple(layer.input.shape[1:])
            flattened = shape if len(shape) == 3 else None
            modules.append(nn.Flatten())
        elif isinstance(layer, keras.layers.Dense):
            fan_in, units = layer.kernel.shape
            weight = tensor(layer.kernel).T  # (out, in), rows (h, w, c)
            if flattened is not None:
                h, w, c = flattened
                weight = weight.reshape(units, h, w, c).permute(0, 3, 1, 2)
                weight = weight.reshape(units, fan_in)
                flattened = None
            dense = nn.Linear(fan_in, units, bias=layer.use_bias)
            dense.weight.data = weight.contiguous()
            if layer.use_bias:
                dense.bias.data = tensor(layer.bias)
            modules.append(dense)
        else:
            raise ValueError(f"no torch twin for {type(layer).__name__}")
    return nn.Sequential(*modules).eval()


def to_nchw(x: Any) -> Any:
    """Images from NHWC to NCHW (vectors unchanged)."""
    return x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x


def _rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _verinet_runner(
    model: Any,
    x: Any,
    eps: float,
    method: str,
    memory_mb: float | None,
    alpha_iterations: int = 20,
):
    """A ``() -> (lower, upper)`` bounding ``x`` with verinet."""
    import contextlib

    import verinet as vn

    if method == "verinet-alpha-crown":
        bound = vn.bounds.AlphaCROWN(iterations=alpha_iterations, lr=0.25)
    else:
        bound = vn.bounds.CROWN(patches=method != "verinet-crown-dense")

    def run():
        budget = (
            contextlib.nullcontext()
            if memory_mb is None
            else vn.bounds.memory_limit(memory_mb)
        )
        with budget:
            return vn.compute_bounds(
                model, x, eps, method=bound, input_range=INPUT_RANGE
            )

    return run


def _auto_lirpa_runner(
    model: Any,
    x: Any,
    eps: float,
    device: str,
    method: str = "auto_LiRPA-crown",
    alpha_iterations: int = 20,
):
    """A ``() -> (lower, upper)`` bounding ``x`` with auto_LiRPA on a torch twin.

    ``auto_LiRPA-crown`` runs CROWN under ``torch.no_grad()``;
    ``auto_LiRPA-alpha-crown`` runs alpha-CROWN (``CROWN-Optimized``, lower
    and upper bounds) with ``alpha_iterations`` iterations, with gradients.

    Raises:
        AssertionError: when the twin's outputs differ from Keras's.
    """
    import numpy as np
    import torch

    # auto_LiRPA scripts helpers with torch.jit.script on import and as bounds
    # run, which newer torch reports as deprecated each time; its import also
    # changes the warning filters, so its warnings are recorded (and dropped)
    # and the filters restored.
    with warnings.catch_warnings(record=True):
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm
    warnings.filterwarnings(
        "ignore", "`torch.jit.script` is deprecated", DeprecationWarning
    )

    from verinet.bounds.precision import ieee_float32

    twin = torch_twin(model).to(device)
    x_torch = to_nchw(x)
    # Full float32 for the twin check and auto_LiRPA's bounds, as verinet's
    # bounds run: torch lets cuDNN convolutions use TF32 by default on GPUs.
    with torch.no_grad(), ieee_float32():
        ref = np.asarray(model(x, training=False).detach().cpu())
        out = twin(torch.from_numpy(x_torch).to(device)).cpu().numpy()
    diff = float(np.max(np.abs(out - ref)))
    assert diff < TWIN_TOLERANCE, f"torch twin differs from Keras by {diff:.3g}"
    probe = torch.zeros((1, *x_torch.shape[1:]), device=device)
    alpha = method == "auto_LiRPA-alpha-crown"
    # Only the number of iterations is set; auto_LiRPA's other defaults
    # (optimizer, lr_alpha, lr_decay, keep_best, ...) are kept.
    options = {"optimize_bound_args": {"iteration": alpha_iterations}}
    bounded = BoundedModule(
        twin, probe, bound_opts=options if alpha else None, device=device
    )
    low_in, high_in = INPUT_RANGE

    def run():
        with ieee_float32():
            center = torch.from_numpy(x_torch).to(device)
            ptb = PerturbationLpNorm(
                norm=float("inf"),
                eps=eps,
                x_L=torch.clamp(center - eps, low_in, high_in),
                x_U=torch.clamp(center + eps, low_in, high_in),
            )
            bounded_x = (BoundedTensor(center, ptb),)
            if alpha:
                # The slopes are optimized by gradient descent: no torch.no_grad().
                lower, upper = bounded.compute_bounds(
                    x=bounded_x,
                    method="CROWN-Optimized",
                    bound_lower=True,
                    bound_upper=True,
                )
            else:
                with torch.no_grad():
                    lower, upper = bounded.compute_bounds(x=bounded_x, method="CROWN")
            return lower.detach().cpu().numpy(), upper.detach().cpu().numpy()

    return run


def measure(
    model_name: str,
    method: str,
    batch: int,
    eps: float,
    repeats: int,
    seed: int = 0,
    threads: int | None = 1,
    device: str = "cpu",
    memory_mb: float | None = None,
    alpha_iterations: int = 20,
) -> dict[str, Any]:
    """Time one (model, method) pair; meant to run in its own process.

    Returns:
        A dict with the timings (seconds per batch), peak memory figures and
        the bounds of the batch.
    """
    os.environ["KERAS_TORCH_DEVICE"] = device
    import keras
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    model = build_model(model_name, seed)
    rng = np.random.default_rng(seed)
    shape = INPUT_SHAPES[model_name]
    x = rng.uniform(*INPUT_RANGE, (batch, *shape)).astype("float32")
    if method in AUTO_LIRPA:
        run = _auto_lirpa_runner(model, x, eps, device, method, alpha_iterations)
    else:
        run = _verinet_runner(model, x, eps, method, memory_mb, alpha_iterations)

    base_rss = _rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run()  # warm-up
    warm = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        lower, upper = run()
        times.append(time.perf_counter() - start)

    lower = np.asarray(lower, dtype="float64").reshape(batch, -1)
    upper = np.asarray(upper, dtype="float64").reshape(batch, -1)
    if not (np.all(np.isfinite(lower)) and np.all(lower <= upper + 1e-5)):
        raise RuntimeError(f"{model_name}/{method}: invalid bounds")
    lirpa = sys.modules.get("auto_LiRPA")
    return {
        "model": model_name,
        "method": method,
        "auto_LiRPA": None if lirpa is None else lirpa.__version__,
        "batch": batch,
        "eps": eps,
        "times": times,
        "warmup": warm,
        "base_rss": base_rss,
        "peak_rss": _rss_mib(),
        "gpu_peak": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "lower": lower,
        "upper": upper,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "keras": keras.__version__,
    }


def run_isolated(*args: Any) -> dict[str, Any]:
    """``measure(*args)`` in a fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(measure, *args).result()


def _rate(value: float) -> str:
    """Samples per second: one decimal, or three significant digits below 10."""
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def format_table(results: list[dict[str, Any]], cuda: bool) -> str:
    """The results as a markdown table, failures listed below it."""
    import numpy as np

    header = [
        "model",
        "method",
        "batch",
        "ms/batch",
        "samples/s",
        "vs auto_LiRPA",
        "width",
        "width ratio",
        "vs CROWN width",
        "max |diff|",
        "base RSS MiB",
        "dRSS MiB",
    ]
    if cuda:
        header.append("GPU peak MiB")
    done = {(r["model"], r["method"]): r for r in results if "error" not in r}

    def mean_width(r):
        return float(np.mean(r["upper"] - r["lower"]))

    def peer(r, method):
        """The successful row of ``method`` on r's model and batch, or None."""
        other = done.get((r["model"], method))
        return other if other is not None and other["batch"] == r["batch"] else None

    rows = []
    for r in results:
        if "error" in r:
            failed = [r["model"], r["method"], str(r["batch"]), "FAILED"]
            rows.append(failed + ["-"] * (len(header) - len(failed)))
            continue
        width = mean_width(r)
        speed = width_ratio = diff = "-"
        other = peer(r, REFERENCE.get(r["method"]))
        if r["method"] in AUTO_LIRPA:
            speed = width_ratio = "ref"
        elif other is not None:
            speed = f"{other['median'] / r['median']:.2f}x"
            width_ratio = f"{width / mean_width(other):.6f}"
            gap = max(
                np.max(np.abs(r["lower"] - other["lower"])),
                np.max(np.abs(r["upper"] - other["upper"])),
            )
            diff = f"{gap:.2g}"
        crown = peer(r, CROWN_OF.get(r["method"]))
        vs_crown = "" if crown is None else f"{width / mean_width(crown):.6f}"
        row = [
            r["model"],
            r["method"],
            str(r["batch"]),
            f"{1000 * r['median']:,.1f}",
            _rate(r["batch"] / r["median"]),
            speed,
            f"{width:.5g}",
            width_ratio,
            vs_crown,
            diff,
            f"{r['base_rss']:.0f}",
            f"{r['peak_rss'] - r['base_rss']:+.0f}",
        ]
        if cuda:
            row.append(f"{r['gpu_peak']:.1f}")
        rows.append(row)
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = set(range(2, len(header)))

    def line(cells):
        padded = (
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2)
        for i, w in enumerate(widths)
    )
    out = [line(header), rule + "|"]
    out += [line(row) for row in rows]
    errors = [r for r in results if "error" in r]
    out += [f"\n{r['model']}/{r['method']}: {r['error']}" for r in errors]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="verinet's CROWN vs auto_LiRPA's: time, tightness, peak memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls (None: 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: one timed call"
    )
    parser.add_argument(
        "--batch", type=int, default=64, help="batch for mlp and fmnist-cnn"
    )
    parser.add_argument("--cnn7-batch", type=int, default=1, help="batch for cnn7")
    parser.add_argument(
        "--eps", type=float, default=0.02, help="L-inf radius for mlp and fmnist-cnn"
    )
    parser.add_argument(
        "--cnn7-eps", type=float, default=2 / 255, help="L-inf radius for cnn7"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        help="the alpha-CROWN methods are slow and only run when listed",
    )
    parser.add_argument(
        "--alpha-iterations",
        type=int,
        default=20,
        help="optimization iterations of both alpha-CROWN methods",
    )
    parser.add_argument(
        "--dense-cnn7",
        action="store_true",
        help="also run verinet-crown-dense on cnn7 (tens of GiB)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads per process"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=None,
        help="verinet's bound memory budget in MiB (vn.bounds.memory_limit);"
        " None: verinet's own",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="skip the per-measurement subprocess (RSS peaks then accumulate)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if (
        min(
            args.repeats,
            args.batch,
            args.cnn7_batch,
            args.threads,
            args.alpha_iterations,
        )
        < 1
    ):
        parser.error(
            "--repeats, --threads, --alpha-iterations and batch sizes must be positive"
        )
    if min(args.eps, args.cnn7_eps) <= 0:
        parser.error("epsilons must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected measurements and print the table."""
    args = parse_args(argv)
    methods = [m for m in METHODS if m in args.methods]
    lirpa = [m for m in methods if m in AUTO_LIRPA]
    if lirpa and importlib.util.find_spec("auto_LiRPA") is None:
        print("auto_LiRPA not installed: reporting verinet only\n")
        methods = [m for m in methods if m not in AUTO_LIRPA]
    models = [m for m in MODELS if m in args.models]
    runner = measure if args.in_process else run_isolated
    results = []
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for model in models:
        cnn7 = model == "cnn7"
        batch = args.cnn7_batch if cnn7 else args.batch
        eps = args.cnn7_eps if cnn7 else args.eps
        for method in methods:
            if cnn7 and method == "verinet-crown-dense" and not args.dense_cnn7:
                print(f"  {model:>10} {method:<22} skipped (needs --dense-cnn7)")
                continue
            print(
                f"  {model:>10} {method:<22} batch {batch:<3} ...", end="", flush=True
            )
            task = (model, method, batch, eps, args.repeats, args.seed)
            try:
                r = runner(
                    *task,
                    args.threads,
                    args.device,
                    args.memory_mb,
                    args.alpha_iterations,
                )
            except Exception as exc:  # a crashed or killed child too
                r = {"model": model, "method": method, "batch": batch}
                r["error"] = f"{type(exc).__name__}: {exc}"
                print(f" {r['error']}", flush=True)
                results.append(r)
                continue
            r["median"] = statistics.median(r["times"])
            spread = ", ".join(f"{t:.3f}" for t in r["times"])
            print(
                f" warm-up {r['warmup']:.2f}s, calls [{spread}] s,"
                f" dRSS {r['peak_rss'] - r['base_rss']:+.0f} MiB",
                flush=True,
            )
            results.append(r)
    total = time.perf_counter() - start

    ok = [r for r in results if "error" not in r]
    cuda = any(r["gpu_peak"] is not None for r in ok)
    if ok:
        env = ok[0]
        versions = {r["auto_LiRPA"] for r in ok if r["auto_LiRPA"]}
        lirpa = "".join(f", auto_LiRPA {v}" for v in sorted(versions))
        print(
            f"\nCROWN bounds benchmark: torch {env['torch']}, keras {env['keras']}"
            f"{lirpa}, device {env['device']}, {env['threads']} torch thread(s),"
            f" {platform.machine()} {os.cpu_count()} CPUs"
        )
    print(
        f"epsilon {args.eps} (mlp, fmnist-cnn), {args.cnn7_eps:.5g} (cnn7), linf,"
        f" input range {INPUT_RANGE}; median of {args.repeats} call(s),"
        f" {'in-process' if args.in_process else 'spawned'} measurements,"
        f" total {total:.1f}s\n"
    )
    print(format_table(results, cuda))
    load_after = os.getloadavg()[0]
    print(f"\n1-min load average: {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > 1.5 * (os.cpu_count() or 1) / 2:
        print("warning: the machine was busy; timings are likely pessimistic")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
