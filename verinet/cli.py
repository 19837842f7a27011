"""Command line: ``verinet demo | export | certify | verify``."""

from __future__ import annotations

import argparse
import os
import sys

_DATASETS = ("digits", "fashion_mnist")


def _demo(args) -> int:
    from verinet import demo

    demo.run(epochs=args.epochs, epsilons=args.epsilon)
    return 0


def _load_model(path: str):
    """A ``.keras`` model or an ``.onnx`` file as a bound-aware Keras model."""
    from verinet.errors import InvalidInputError

    if not os.path.isfile(path):
        raise InvalidInputError(f"No model file at {path!r}.")
    if path.lower().endswith(".onnx"):
        from verinet.deploy import from_onnx

        return from_onnx(path)
    if path.lower().endswith((".keras", ".h5")):
        import keras

        import verinet.models  # noqa: F401 - registers verinet's classes

        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds
            raise InvalidInputError(
                f"Cannot load Keras model {path!r}: {exc}"
            ) from None
    raise InvalidInputError(
        f"{path!r}: expected a .keras (or .h5) Keras model or an .onnx file."
    )


def _load_data(spec: str):
    """``(x, y, input_range)`` for a data set name or an ``.npz`` file."""
    import numpy as np

    from verinet.errors import InvalidInputError

    if spec == "digits":
        from verinet.datasets import digits

        _, (x, y) = digits()
        return x, y, (0.0, 1.0)
    if spec == "fashion_mnist":
        from verinet.datasets import fashion_mnist

        _, (x, y) = fashion_mnist()  # local copies only; never downloads
        return x, y, (0.0, 1.0)
    if spec.endswith(".npz") and os.path.isfile(spec):
        with np.load(spec) as data:
            for xk, yk in (("x", "y"), ("x_test", "y_test")):
                if xk in data and yk in data:
                    return data[xk].astype(np.float32), data[yk], None
        raise InvalidInputError(
            f"{spec!r} needs arrays 'x' and 'y' (or x_test, y_test)."
        )
    raise InvalidInputError(
        f"Unknown data {spec!r}: use one of {', '.join(_DATASETS)} or an .npz file "
        "with arrays x and y."
    )


def _fit_layout(x, shape):
    """Match channels_last data to a model taking ``shape`` (e.g. NCHW)."""
    import numpy as np

    from verinet.errors import InvalidInputError

    if tuple(x.shape[1:]) == tuple(shape):
        return x
    if x.ndim == 4 and tuple(np.transpose(x, (0, 3, 1, 2)).shape[1:]) == tuple(shape):
        print("verinet: data is channels_last; transposing it to the model's NCHW.")
        return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)) and len(shape) == 1:
        return x.reshape(len(x), -1)
    raise InvalidInputError(
        f"The data has shape {x.shape[1:]} per sample, the model takes {tuple(shape)}."
    )


def _certify(args) -> int:
    from verinet.certify import certify

    model = _load_model(args.model)
    x, y, data_range = _load_data(args.data)
    x = _fit_layout(x, model.inputs[0].shape[1:])
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    input_range = None if args.no_input_range else (args.input_range or data_range)
    report = certify(
        model,
        x,
        y,
        args.epsilon,
        method=args.method,
        attack=None if args.attack == "none" else args.attack,
        norm=args.norm,
        input_range=input_range,
        verbose=0,
    )
    report.extra["model"] = os.path.abspath(args.model)
    print(report.summary())
    report.save(args.output)
    print(f"Report written to {args.output}")
    return 0


def _export(args) -> int:
    from verinet.certify import CertificationReport
    from verinet.deploy import export_onnx

    model = _load_model(args.model)
    report = CertificationReport.load(args.report) if args.report else None
    meta = export_onnx(model, args.output, report=report, opset=args.opset)
    print(f"Exported the deployed model to {args.output}")
    print(f"  weights sha256 {meta['verinet.weights_sha256']}")
    if report is not None:
        print(
            f"  certificate: {report.method}, {report.norm} "
            f"epsilon={report.epsilon:g}, "
            f"verified accuracy {report.verified_accuracy:.4f}"
        )
    return 0


def _verify(args) -> int:
    from verinet.vnnlib import verify

    result = verify(
        args.model,
        args.property,
        method=args.method,
        attack=None if args.attack == "none" else args.attack,
        timeout=args.timeout,
    )
    print(result.status)
    if args.results:
        with open(args.results, "w") as handle:
            handle.write(result.vnncomp())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verinet",
        description=(
            "Train robust Keras models, certify them, deploy what was certified."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train on the embedded digits data and certify the test split"
    )
    demo.add_argument("--epochs", type=int, default=20, help="training epochs (20)")
    demo.add_argument(
        "--epsilon",
        type=float,
        nargs="+",
        default=[0.01, 0.03],
        help="L-infinity radii to certify at (0.01 0.03)",
    )
    demo.set_defaults(run=_demo)

    export = commands.add_parser(
        "export",
        help="deploy a Keras model (fold batch norm) and export it as checked ONNX",
        description=(
            "Fold batch norm, drop dropout, write ONNX (checked against "
            "onnxruntime), with the certificate's figures in the metadata."
        ),
    )
    export.add_argument("model", help="the .keras model file")
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument(
        "--report", help="report.json from `verinet certify` to record in the metadata"
    )
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (18)")
    export.set_defaults(run=_export)

    cert = commands.add_parser(
        "certify",
        help="certify a .keras or .onnx model on a data set; write report.json",
        description=(
            "Sort each sample into verified / falsified / unknown, print the "
            "summary and save the report."
        ),
    )
    cert.add_argument("model", help="a .keras model or an .onnx file")
    cert.add_argument(
        "--data",
        default="digits",
        help="'digits' or 'fashion_mnist' (test split), or an .npz with x, y",
    )
    cert.add_argument("--epsilon", type=float, required=True, help="radius")
    cert.add_argument(
        "--method", default="crown", choices=("ibp", "crown", "crown-ibp")
    )
    cert.add_argument("--attack", default="pgd", choices=("pgd", "fgsm", "none"))
    cert.add_argument("--norm", default="linf", choices=("linf", "l2"))
    cert.add_argument(
        "--input-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="valid input box (default: the data set's, [0, 1] for digits)",
    )
    cert.add_argument(
        "--no-input-range", action="store_true", help="do not clip to an input box"
    )
    cert.add_argument("--limit", type=int, default=0, help="certify the first N only")
    cert.add_argument(
        "-o", "--output", default="report.json", help="report path (report.json)"
    )
    cert.set_defaults(run=_certify)

    ver = commands.add_parser(
        "verify",
        help="decide a VNN-LIB property of an ONNX network: sat / unsat / unknown",
        description=(
            "Prints 'unsat' (proven), 'sat' (counterexample confirmed by "
            "onnxruntime) or 'unknown', as VNN-COMP tools do."
        ),
    )
    ver.add_argument("model", help="the .onnx network")
    ver.add_argument("property", help="the .vnnlib property")
    ver.add_argument("--method", default="crown", choices=("ibp", "crown", "crown-ibp"))
    ver.add_argument("--attack", default="pgd", choices=("pgd", "none"))
    ver.add_argument("--timeout", type=float, default=60.0, help="seconds (60)")
    ver.add_argument(
        "--results", help="also write a VNN-COMP results file (with counterexample)"
    )
    ver.set_defaults(run=_verify)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``verinet`` command."""
    args = build_parser().parse_args(argv)
    from verinet.errors import VerinetError

    try:
        return args.run(args)
    except VerinetError as exc:
        print(f"verinet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
