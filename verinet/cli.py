"""Command line: ``verinet demo | export | certify | verify``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

_DATASETS = ("digits", "fashion_mnist")
#: Example file names for the outputs, used in error messages.
_DEFAULT_NAMES = {
    "report": "report.json",
    "ONNX model": "model.onnx",
    "results file": "results.txt",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; a required option says so instead.

    An option whose help already names its default (``default: ...``) is left
    as written, which is how options defaulting to ``None`` explain what that
    means.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default:" in text or not action.option_strings:
            return text
        if action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        return super()._get_help_string(action)


def _check_output(path: str, what: str) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    The file is written at the end of a run (atomically: a temporary file in
    the same folder, then a rename), so the folder must exist and accept new
    files, and the path must not be a folder.
    """
    from verinet.errors import InvalidInputError

    folder = os.path.dirname(os.path.abspath(path)) or os.sep
    if os.path.isdir(path):
        raise InvalidInputError(
            f"The {what} path {path!r} is a directory: give a file name, e.g. "
            f"{os.path.join(path, _DEFAULT_NAMES[what])!r}."
        )
    if not os.path.isdir(folder):
        raise InvalidInputError(
            f"Cannot write the {what} to {path!r}: the directory {folder!r} does "
            "not exist. Create it first or choose another path."
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".verinet-probe-", dir=folder)
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot write the {what} to {path!r}: the directory {folder!r} is "
            f"not writable ({exc.strerror or exc}). Choose a writable path."
        ) from None
    os.close(fd)
    os.unlink(probe)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InvalidInputError(
            f"Cannot write the {what} to {path!r}: the file exists and is not "
            "writable. Choose another path or change its permissions."
        )


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, refused with a clear message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_int_or_all(text: str) -> int | None:
    """argparse type: a positive integer, or ``all`` (no limit) as ``None``."""
    if text.strip().lower() == "all":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or 'all' for every sample)") from None


def _demo(args) -> int:
    from verinet import demo

    if args.output:
        from verinet.errors import InvalidInputError

        try:
            os.makedirs(args.output, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(
                f"Cannot create the demo output folder {args.output!r} "
                f"({exc.strerror or exc}). Choose another --output."
            ) from None
        _check_output(os.path.join(args.output, "report.json"), "report")
    demo.run(
        epochs=args.epochs,
        epsilon=args.epsilon,
        output=args.output,
        verbose=0 if args.quiet else 1,
    )
    return 0


def _load_model(path: str):
    """A ``.keras`` model or an ``.onnx`` file as a bound-aware Keras model."""
    from verinet.errors import InvalidInputError

    if not os.path.isfile(path):
        raise InvalidInputError(f"No model file at {path!r}.")
    if path.lower().endswith(".onnx"):
        from verinet.onnx import from_onnx

        return from_onnx(path)
    if path.lower().endswith((".keras", ".h5")):
        from verinet.saving import load_model

        return load_model(path, compile=False)
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
        _say("verinet: data is channels_last; transposing it to the model's NCHW.")
        return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)) and len(shape) == 1:
        return x.reshape(len(x), -1)
    raise InvalidInputError(
        f"The data has shape {x.shape[1:]} per sample, the model takes {tuple(shape)}."
    )


def _say(*args, **kwargs) -> None:
    """``print`` on rank 0 only (every process prints outside torchrun)."""
    from verinet import distributed

    if distributed.rank() == 0:
        print(*args, **kwargs)


def _certify(args) -> int:
    """``verinet certify``; under ``torchrun`` the ranks share the samples
    (the process group is created here from torchrun's environment) and
    rank 0 alone prints and writes the report."""
    from verinet import distributed

    created = distributed.init()
    try:
        return _certify_run(args)
    finally:
        if created:
            distributed.shutdown()


def _certify_run(args) -> int:
    from verinet import distributed
    from verinet.certify import certify

    _check_output(args.output, "report")

    model = _load_model(args.model)
    x, y, data_range = _load_data(args.data)
    x = _fit_layout(x, model.inputs[0].shape[1:])
    if args.limit is not None:
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
        batch_size=args.batch_size,
        verbose=0 if args.quiet else 1,
        timeout=args.timeout,
        time_budget=args.time_budget,
    )
    report.extra["model"] = os.path.abspath(args.model)
    if distributed.rank() == 0:
        print(report.summary())
        report.save(args.output)
        print(f"Report written to {args.output}")
    return 0


def _export(args) -> int:
    _check_output(args.output, "ONNX model")
    from verinet.certify import CertificationReport
    from verinet.onnx import export_onnx

    model = _load_model(args.model)
    report = CertificationReport.load(args.report) if args.report else None
    meta = export_onnx(
        model,
        args.output,
        report=report,
        opset=args.opset,
        allow_unhashed_report=args.allow_unhashed_report,
    )
    print(f"Exported the deployed model to {args.output}")
    print(f"  weights sha256 {meta['verinet.weights_sha256']}")
    if report is not None:
        from verinet.certify.report import _setting_text as report_setting_text

        print(
            f"  certificate: {report.method}, {report.norm} "
            f"epsilon={report_setting_text(report.epsilon)}, "
            f"verified accuracy {report.verified_accuracy:.4f} "
            f"(report weights: {meta.get('verinet.report_weights', 'unchecked')})"
        )
    return 0


def _verify(args) -> int:
    parser = args.verify_parser
    single = args.model is not None or args.property is not None
    if args.instances is not None:
        if single:
            parser.error("give either MODEL and PROPERTY or --instances FILE, not both")
        if args.results:
            parser.error(
                "--results is for one instance; use --results-dir with --instances"
            )
        return _verify_instances(args)
    if args.model is None or args.property is None:
        parser.error(
            "give MODEL and PROPERTY (one instance) or --instances FILE (a "
            "VNN-COMP instances.csv)"
        )
    if args.results_dir is not None:
        parser.error("--results-dir needs --instances; use --results for one instance")
    if args.results:
        _check_output(args.results, "results file")
    from verinet.vnnlib import verify

    result = verify(
        args.model,
        args.property,
        method=args.method,
        attack=None if args.attack == "none" else args.attack,
        timeout=args.timeout,
        verbose=0 if args.quiet else 1,
        complete=not args.bounds_only,
    )
    if args.results:
        with open(args.results, "w") as handle:
            handle.write(result.vnncomp())
    print(result.status, flush=True)  # the last line of stdout, as VNN-COMP expects
    return 0


def _verify_instances(args) -> int:
    """``verinet verify --instances FILE``: one line per instance, a summary."""
    from verinet.vnnlib import run_instances

    def show(row):
        print(
            f"{row['result'].status} {row['seconds']:.2f} {row['onnx']} "
            f"{row['vnnlib']}",
            flush=True,
        )

    rows = run_instances(
        args.instances,
        results_dir=args.results_dir,
        on_result=show,
        method=args.method,
        attack=None if args.attack == "none" else args.attack,
        verbose=0 if args.quiet else 1,
        complete=not args.bounds_only,
    )
    counts = {status: 0 for status in ("sat", "unsat", "unknown")}
    for row in rows:
        counts[row["result"].status] += 1
    print(
        f"{len(rows)} instance{'s' if len(rows) != 1 else ''}: "
        f"{counts['sat']} sat, {counts['unsat']} unsat, {counts['unknown']} unknown",
        flush=True,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``verinet`` argument parser with its four subcommands.

    Returns:
        An ``argparse.ArgumentParser``; ``parse_args`` sets ``run`` to the
        subcommand's function.

    Example:
        >>> args = build_parser().parse_args(["certify", "m.onnx", "--epsilon", "0.1"])
    """
    parser = argparse.ArgumentParser(
        prog="verinet",
        description=(
            "Train robust Keras models, certify them, deploy what was certified."
        ),
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a standard and a CROWN-IBP model on the embedded digits "
        "data, certify both, export the robust one to ONNX and certify the file",
        description=(
            "The whole loop on the digits data: trains a standard and a "
            "CROWN-IBP model, certifies both (CROWN bounds and the PGD "
            "attack), prints them side by side, deploys and exports the robust "
            "one to ONNX, certifies the file, and writes report.json, "
            "report.md and the figures to the output folder."
        ),
        formatter_class=_HelpFormatter,
    )
    demo.add_argument(
        "--epochs", type=int, default=20, help="training epochs of each model"
    )
    demo.add_argument(
        "--epsilon",
        type=float,
        default=0.05,
        help="L-infinity radius to train the robust model for and certify at",
    )
    demo.add_argument(
        "--output",
        default="demo-output",
        help="folder for the reports, the ONNX file and the figures",
    )
    demo.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or output"
    )
    demo.set_defaults(run=_demo)

    export = commands.add_parser(
        "export",
        help="deploy a Keras model (fold batch norm) and export it as checked ONNX",
        description=(
            "Fold batch norm, drop dropout, write ONNX (checked against "
            "onnxruntime), with the certificate's figures in the metadata."
        ),
        formatter_class=_HelpFormatter,
    )
    export.add_argument("model", help="the .keras model file")
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument(
        "--report",
        help="report.json from `verinet certify` to record in the metadata "
        "(default: none, no certificate recorded)",
    )
    export.add_argument(
        "--allow-unhashed-report",
        action="store_true",
        help="accept a report that records no weights hash (written by verinet "
        "0.1), whose weights cannot be checked (default: refuse it)",
    )
    export.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default: 18, or 20 where a tanh-approximate GeLU needs it)",
    )
    export.set_defaults(run=_export)

    cert = commands.add_parser(
        "certify",
        help="certify a .keras or .onnx model on a data set; write report.json",
        description=(
            "Sort each sample into verified / falsified / unknown, print the "
            "summary and save the report. Under torchrun (torchrun "
            "--nproc_per_node N -m verinet certify ...) the processes share "
            "the samples and rank 0 writes the report."
        ),
        formatter_class=_HelpFormatter,
    )
    cert.add_argument("model", help="a .keras model or an .onnx file")
    cert.add_argument(
        "--data",
        default="digits",
        help="'digits' or 'fashion_mnist' (test split), or an .npz with x, y",
    )
    cert.add_argument("--epsilon", type=float, required=True, help="radius")
    cert.add_argument(
        "--method",
        default="crown",
        choices=("ibp", "crown", "crown-ibp", "alpha-crown", "milp", "bab", "auto"),
        help="bound method, or a complete one: milp (exact MILP), bab (branch "
        "and bound on ReLU splits), auto (attack, IBP, CROWN, alpha-CROWN, then "
        "MILP or branch and bound on the samples still unknown)",
    )
    cert.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="complete methods: seconds per sample (default: 10)",
    )
    cert.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="complete methods: seconds for the whole run (default: no limit)",
    )
    cert.add_argument(
        "--attack",
        default="pgd",
        choices=("pgd", "fgsm", "none"),
        help="attack that looks for counterexamples",
    )
    cert.add_argument(
        "--norm", default="linf", choices=("linf", "l2"), help="perturbation norm"
    )
    cert.add_argument(
        "--input-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="valid input box (default: the data set's, [0, 1] for digits and "
        "fashion_mnist, none for .npz)",
    )
    cert.add_argument(
        "--no-input-range", action="store_true", help="do not clip to an input box"
    )
    cert.add_argument(
        "--limit",
        type=_positive_int_or_all,
        default="all",
        metavar="N",
        help="certify the first N samples only (a positive integer, or 'all')",
    )
    cert.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        metavar="N",
        help="samples bounded and attacked at a time (the progress bar moves "
        "once per batch; smaller batches use less memory)",
    )
    cert.add_argument("-o", "--output", default="report.json", help="report path")
    cert.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar while certifying"
    )
    cert.set_defaults(run=_certify)

    ver = commands.add_parser(
        "verify",
        help="decide a VNN-LIB property of an ONNX network: sat / unsat / unknown",
        description=(
            "Prints 'unsat' (proven), 'sat' (counterexample confirmed by "
            "onnxruntime) or 'unknown' as the last line of stdout, as VNN-COMP "
            "tools do; progress goes to stderr. With --instances, runs every "
            "line of a VNN-COMP instances.csv instead."
        ),
        formatter_class=_HelpFormatter,
    )
    ver.add_argument("model", nargs="?", help="the .onnx network (or use --instances)")
    ver.add_argument(
        "property", nargs="?", help="the .vnnlib property (or use --instances)"
    )
    ver.add_argument(
        "--instances",
        metavar="FILE",
        help="a VNN-COMP instances.csv (lines 'onnx,vnnlib,timeout'; paths "
        "relative to its folder) to verify instead of MODEL PROPERTY; prints "
        "'result seconds onnx vnnlib' per instance and a summary line "
        "(default: none, verify MODEL PROPERTY)",
    )
    ver.add_argument(
        "--results-dir",
        metavar="DIR",
        help="with --instances: write a VNN-COMP results file per instance and "
        "results.csv there (default: none, not written)",
    )
    ver.add_argument(
        "--method",
        default="crown",
        choices=("ibp", "crown", "crown-ibp", "alpha-crown"),
        help="bound method",
    )
    ver.add_argument(
        "--attack",
        default="pgd",
        choices=("pgd", "none"),
        help="attack that looks for counterexamples",
    )
    ver.add_argument(
        "--bounds-only",
        action="store_true",
        help="one bound pass over the whole box and the attack, no input or "
        "ReLU splitting: quick, answers 'unknown' more often (default: split "
        "until settled or the timeout)",
    )
    ver.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds (with --instances, each line's timeout is used instead)",
    )
    ver.add_argument(
        "--results",
        help="also write a VNN-COMP results file (with counterexample) "
        "(default: none, not written)",
    )
    ver.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines on stderr"
    )
    ver.set_defaults(run=_verify, verify_parser=ver)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``verinet`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a usage or input error (the
        message goes to stderr, without a traceback).

    Example:
        >>> main(["certify", "model.onnx", "--epsilon", "0.05", "--limit", "100"])
        0
    """
    args = build_parser().parse_args(argv)
    from verinet.errors import VerinetError

    try:
        return args.run(args)
    except VerinetError as exc:
        print(f"verinet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
