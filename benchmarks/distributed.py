"""Sharded certification under torchrun: throughput with 1 and 2 processes.

Trains a small Fashion-MNIST CNN (Conv2D 8 4x4/2, ReLU, Conv2D 16 4x4/2,
ReLU, Dense 100, ReLU, Dense 10; standard training) once, then certifies
test images with ``vn.certify`` under ``torchrun --nproc_per_node N`` (gloo,
CPU, one torch thread per process unless ``--threads`` says otherwise) for
each N in ``--procs``, with CROWN (+ the default PGD attack) and with
branch and bound (``method="bab"``: the attack, CROWN, then branch and bound
on the samples still unknown, ``--timeout`` seconds each). Each run warms up
on a few samples, then times one ``certify`` call (``report.seconds``: the
slowest rank's wall time). Prints samples/s, the scaling ratio against one
process, each rank's CPU seconds in the call (how the work was split, apart
from contention for cores), and whether the verdicts equal the one-process
run's. Falls back
to the digits data (8x8, a 64-256-256-10 MLP) without Fashion-MNIST.

Run:
    KERAS_BACKEND=torch .venv/bin/python benchmarks/distributed.py
    ... --crown-samples 128 --bab-samples 32 --timeout 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

HERE = os.path.abspath(__file__)


def build(args, folder):
    """Train the model and write ``model.keras`` and ``data.npz``."""
    import keras
    import numpy as np

    import verinet as vn

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from complete import small_cnn

    from verinet.demo import build_mlp

    keras.utils.set_random_seed(0)
    try:
        (x, y), (xt, yt) = vn.datasets.fashion_mnist()
        name = "Fashion-MNIST CNN (8 4x4/2, 16 4x4/2, 100, 10)"
        model = small_cnn()
    except vn.InvalidInputError:
        (x, y), (xt, yt) = vn.datasets.digits()
        name = "digits MLP 64-256-256-10"
        model = build_mlp()
    model.compile("adam")
    tick = time.perf_counter()
    model.fit(x[: args.train], y[: args.train], epochs=2, batch_size=128, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(xt, verbose=0), 1) == yt))
    model.save(os.path.join(folder, "model.keras"))
    np.savez(os.path.join(folder, "data.npz"), x=xt, y=yt)
    print(
        f"{name}: trained on {args.train} images in {time.perf_counter() - tick:.1f}"
        f" s, test accuracy {accuracy:.3f}",
        flush=True,
    )
    return name


def worker(args) -> None:
    """One rank: warm up, then time one certify call; rank 0 writes JSON."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import verinet as vn

    vn.distributed.init("gloo")
    data = np.load(os.path.join(args.worker, "data.npz"))
    x, y = data["x"][: args.samples], data["y"][: args.samples]
    model = vn.load_model(os.path.join(args.worker, "model.keras"), compile=False)
    options = dict(
        method=args.method,
        input_range=(0.0, 1.0),
        batch_size=args.batch_size,
        verbose=0,
    )
    if args.method == "bab":
        options["timeout"] = args.timeout
    vn.certify(model, x[:4], y[:4], args.epsilon, **options)  # warm-up
    if vn.distributed.is_distributed():
        torch.distributed.barrier()
    cpu = time.process_time()
    report = vn.certify(model, x, y, args.epsilon, **options)
    cpu = vn.distributed.all_gather(time.process_time() - cpu)
    if vn.distributed.rank() == 0:
        out = {
            "seconds": report.seconds,
            "cpu_seconds": cpu,
            "summary": report.to_dict()["summary"],
            "verified": report.verified.tolist(),
            "falsified": report.falsified.tolist(),
            "ranks": vn.distributed.world_size(),
        }
        with open(os.path.join(args.worker, f"{args.tag}.json"), "w") as handle:
            json.dump(out, handle)
    vn.distributed.shutdown()


def launch(folder, procs, method, samples, epsilon, args):
    """Run ``procs`` ranks on one certification; return (result, launch s)."""
    tag = f"{method}-{procs}"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(procs),
        HERE,
        "--worker",
        folder,
        "--tag",
        tag,
        "--method",
        method,
        "--samples",
        str(samples),
        "--epsilon",
        str(epsilon),
        "--batch-size",
        str(args.batch_size),
        "--timeout",
        str(args.timeout),
        "--threads",
        str(args.threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    tick = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall = time.perf_counter() - tick
    with open(os.path.join(folder, f"{tag}.json")) as handle:
        return json.load(handle), wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crown-samples", type=int, default=256)
    parser.add_argument("--crown-epsilon", type=float, default=0.02)
    parser.add_argument("--bab-samples", type=int, default=64)
    parser.add_argument("--bab-epsilon", type=float, default=0.03)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", type=int, default=10000)
    # Internal: one rank of a torchrun launch.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--epsilon", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        name = build(args, folder)
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = float("nan")
        print(
            f"{name}; batch_size {args.batch_size}, {args.threads} torch thread(s) "
            f"per process, gloo on CPU, load average {load:.2f} before the runs\n"
        )
        runs = [
            ("crown", args.crown_samples, args.crown_epsilon),
            ("bab", args.bab_samples, args.bab_epsilon),
        ]
        header = (
            "| method | processes | samples | seconds | samples/s | ms/sample "
            "| scaling | CPU s per rank | launch s | verified / falsified / unknown "
            "| same verdicts |"
        )
        rows = [header, "|" + "---|" * 11]
        for method, samples, epsilon in runs:
            base = None
            for procs in args.procs:
                result, wall = launch(folder, procs, method, samples, epsilon, args)
                s = result["summary"]
                rate = samples / result["seconds"]
                base = base or (result, rate)
                same = (
                    result["verified"] == base[0]["verified"]
                    and result["falsified"] == base[0]["falsified"]
                )
                rows.append(
                    f"| {method} (eps {epsilon}) | {procs} | {samples} "
                    f"| {result['seconds']:.2f} | {rate:.2f} "
                    f"| {1000 / rate:.1f} | {rate / base[1]:.2f}x "
                    f"| {' + '.join(f'{c:.2f}' for c in result['cpu_seconds'])} "
                    f"| {wall:.1f} "
                    f"| {s['verified']} / {s['falsified']} / {s['unknown']} "
                    f"| {'yes' if same else 'NO'} |"
                )
                print(rows[-1], flush=True)
        print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
