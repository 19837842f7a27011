"""Throughput and peak memory of verinet's bound methods.

Measures how many input samples per second ``vn.compute_bounds`` bounds with
``ibp``, ``crown-ibp`` and ``crown`` (L-inf ball, epsilon 0.01, input range
(0, 1)) on two randomly initialised models fed random uniform inputs in [0, 1]:

* ``mlp``: the digits MLP, 64 -> Dense 256 -> ReLU -> Dense 256 -> ReLU -> Dense 10;
* ``cnn``: 28x28x1 -> Conv2D 16 4x4/2 'same' -> ReLU -> Conv2D 32 4x4/2 'same'
  -> ReLU -> Flatten -> Dense 100 -> ReLU -> Dense 10.

Each (model, method) pair runs in a fresh process (multiprocessing 'spawn'), so
its peak resident set size (``ru_maxrss``) belongs to that measurement alone;
"base RSS" is the peak before the first bound (interpreter, torch, Keras, model
and data) and "dRSS" is the growth caused by bounding. With CUDA, peak
``torch.cuda.max_memory_allocated()`` is reported too.

In each process one call warms up; its duration sets how many batches one timed
repetition bounds (enough to last ``--min-time`` seconds, between 1 and 64
batches), then ``--repeats`` repetitions are timed with ``time.perf_counter``
and the median is reported. A repetition is one ``compute_bounds`` call over
all its samples with ``batch_size`` set, so numpy conversion is included.
"vs IBP" is the method's throughput divided by IBP's on the same model;
"width" is the mean ``upper - lower`` (a sanity check that tighter methods are
really doing more work).

Run from the repository root::

    KERAS_BACKEND=torch .venv/bin/python benchmarks/bounds.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/bounds.py --quick
    KERAS_BACKEND=torch .venv/bin/python benchmarks/bounds.py --repeats 5 \\
        --models cnn --methods crown --crown-cnn-batch 4

Batch sizes are 64 for every method (``--crown-cnn-batch`` sets another for
CROWN on the CNN). CROWN's intermediate bounds back-substitute one row per
unstable hidden neuron (up to 1568 behind the second convolution) in patches
form, chunked to the memory budget (``vn.bounds.memory_limit``), so memory no
longer grows with the square of the layer size. ``alpha-crown`` can be
selected with ``--methods`` (it is not in the default set).

The default run takes one to two minutes on two idle CPU cores; ``--quick``
(one repetition, shorter timed calls) about one.
On a busy machine several torch threads spin against each other and timings
become erratic; the script prints the load average and ``--threads 1`` helps.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("KERAS_BACKEND", "torch")

EPSILON = 0.01
INPUT_RANGE = (0.0, 1.0)
METHODS = ("ibp", "crown-ibp", "crown")
EXTRA_METHODS = ("alpha-crown",)
MODELS = ("mlp", "cnn")
INPUT_SHAPES = {"mlp": (64,), "cnn": (28, 28, 1)}
MAX_BATCHES = 64
WIDTH_SAMPLES = 4  # same leading inputs for every method of a model


def build_model(name):
    """The benchmark models, with Keras's default (random) initialisation."""
    import keras

    from verinet import layers

    if name == "mlp":
        body = [
            layers.Dense(256),
            layers.ReLU(),
            layers.Dense(256),
            layers.ReLU(),
            layers.Dense(10),
        ]
    elif name == "cnn":
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
    else:
        raise ValueError(f"unknown model {name!r}")
    return keras.Sequential([layers.Input(INPUT_SHAPES[name]), *body], name=name)


def _rss_mib():
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def measure(model_name, method, batch, repeats, min_time, seed=0, threads=None):
    """Time one (model, method) pair; meant to run in its own process.

    Returns:
        A dict with the timings (seconds per repetition), the samples per
        repetition, peak memory figures and the mean bound width.
    """
    import keras
    import numpy as np
    import torch

    import verinet as vn

    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    keras.utils.set_random_seed(seed)
    model = build_model(model_name)
    rng = np.random.default_rng(seed)
    shape = INPUT_SHAPES[model_name]
    pool = rng.uniform(0.0, 1.0, (batch * MAX_BATCHES, *shape)).astype("float32")

    def run(n):
        return vn.compute_bounds(
            model,
            pool[:n],
            EPSILON,
            method=method,
            norm="linf",
            input_range=INPUT_RANGE,
            batch_size=batch,
        )

    base_rss = _rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    start = time.perf_counter()
    lower, upper = run(batch)  # warm-up
    warm = time.perf_counter() - start
    batches = min(MAX_BATCHES, max(1, math.ceil(min_time / max(warm, 1e-9))))
    samples = batch * batches

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        lower, upper = run(samples)
        times.append(time.perf_counter() - start)

    if not (np.all(np.isfinite(lower)) and np.all(lower <= upper + 1e-5)):
        raise RuntimeError(f"{model_name}/{method}: invalid bounds")
    return {
        "model": model_name,
        "method": method,
        "batch": batch,
        "samples": samples,
        "times": times,
        "warmup": warm,
        "base_rss": base_rss,
        "peak_rss": _rss_mib(),
        "gpu_peak": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "width": float(np.mean((upper - lower)[:WIDTH_SAMPLES])),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "keras": keras.__version__,
    }


def run_isolated(*args):
    """``measure(*args)`` in a fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(measure, *args).result()


def batch_for(model, method, args):
    if model == "cnn" and method == "crown":
        return args.crown_cnn_batch
    return args.batch


def format_table(results, cuda):
    header = [
        "model",
        "method",
        "batch",
        "samples/s",
        "ms/sample",
        "peak RSS MiB",
        "base RSS",
        "dRSS",
        "vs IBP",
        "width",
    ]
    if cuda:
        header.append("GPU peak MiB")
    ibp = {
        r["model"]: r["rate"]
        for r in results
        if r["method"] == "ibp" and "error" not in r
    }
    rows = []
    for r in results:
        if "error" in r:
            failed = [r["model"], r["method"], str(r["batch"]), "FAILED"]
            rows.append(failed + ["-"] * (len(header) - len(failed)))
            continue
        ratio = r["rate"] / ibp[r["model"]] if r["model"] in ibp else None
        row = [
            r["model"],
            r["method"],
            str(r["batch"]),
            f"{r['rate']:,.1f}",
            f"{1000 / r['rate']:.3f}",
            f"{r['peak_rss']:.0f}",
            f"{r['base_rss']:.0f}",
            f"{r['peak_rss'] - r['base_rss']:+.0f}",
            "-" if ratio is None else f"{ratio:.4f}x",
            f"{r['width']:.4g}",
        ]
        if cuda:
            row.append(f"{r['gpu_peak']:.1f}")
        rows.append(row)
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = set(range(2, len(header)))

    def line(cells):
        return " | ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    errors = [r for r in results if "error" in r]
    out += [f"{r['model']}/{r['method']}: {r['error']}" for r in errors]
    return "\n".join(out)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Bounds per second and peak memory of IBP, CROWN-IBP and CROWN."
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repetitions (default 3)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one repetition, shorter timed calls",
    )
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--crown-cnn-batch",
        type=int,
        default=None,
        help="batch size for CROWN on the CNN (default: --batch)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds one timed repetition should last (default 0.3, 0.1 quick)",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS + EXTRA_METHODS, default=list(METHODS)
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads"
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
    if args.crown_cnn_batch is None:
        args.crown_cnn_batch = args.batch
    if args.min_time is None:
        args.min_time = 0.1 if args.quick else 0.3
    if args.repeats < 1 or args.batch < 1 or args.crown_cnn_batch < 1:
        parser.error("--repeats and batch sizes must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    methods = [m for m in METHODS if m in args.methods]
    models = [m for m in MODELS if m in args.models]
    runner = measure if args.in_process else run_isolated
    results = []
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for model in models:
        for method in methods:
            batch = batch_for(model, method, args)
            print(f"  {model:>4} {method:<9} batch {batch:<3} ...", end="", flush=True)
            task = (model, method, batch, args.repeats, args.min_time)
            try:
                r = runner(*task, args.seed, args.threads)
            except Exception as exc:  # a crashed or killed child too
                r = {"model": model, "method": method, "batch": batch}
                r["error"] = f"{type(exc).__name__}: {exc}"
                print(f" {r['error']}", flush=True)
                results.append(r)
                continue
            r["rate"] = r["samples"] / statistics.median(r["times"])
            spread = ", ".join(f"{t:.3f}" for t in r["times"])
            print(
                f" {r['samples']} samples/rep, warm-up {r['warmup']:.2f}s,"
                f" reps [{spread}] s",
                flush=True,
            )
            results.append(r)
    total = time.perf_counter() - start

    ok = [r for r in results if "error" not in r]
    cuda = any(r["gpu_peak"] is not None for r in ok)
    if ok:
        env = ok[0]
        print(
            f"\nverinet bounds benchmark: torch {env['torch']}, keras {env['keras']},"
            f" device {env['device']}, {env['threads']} torch threads,"
            f" {platform.machine()} {os.cpu_count()} CPUs"
        )
    print(
        f"epsilon {EPSILON} (linf), input range {INPUT_RANGE}, median of"
        f" {args.repeats} rep(s), {'in-process' if args.in_process else 'spawned'}"
        f" measurements, total {total:.1f}s\n"
    )
    print(format_table(results, cuda))
    load_after = os.getloadavg()[0]
    print(f"\n1-min load average: {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > 1.5 * (os.cpu_count() or 1) / 2:
        hint = "" if args.threads == 1 else " and erratic with several threads"
        print(
            f"warning: the machine was busy; timings are likely pessimistic{hint}"
            f"{'' if args.threads == 1 else ' (try --threads 1)'}"
        )
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
