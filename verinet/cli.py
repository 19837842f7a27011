"""Command line: ``verinet demo``."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from verinet import demo

    demo.run(epochs=args.epochs, epsilons=args.epsilon)
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
