"""Execute the tutorials as notebooks and write them, with their outputs and
figures, to ``docs/tutorials/`` (what ``make tutorials`` runs).

Each ``tutorials/NN_*.py`` (a jupytext percent-format script) is converted
to a notebook with jupytext and executed top to bottom by nbclient on the
``python3`` kernel, in full mode (``VERINET_TUTORIAL_FAST`` unset) unless
``--fast`` is given. The kernel runs in a scratch folder, so the files a
tutorial writes (ONNX files, reports) do not land in the repository.

Usage:
    python tutorials/build.py                  # all tutorials, full mode
    python tutorials/build.py 01 05            # the tutorials whose names start so
    python tutorials/build.py --fast -o /tmp/nb

Needs ``jupytext``, ``nbclient`` and ``ipykernel``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE.parent / "docs" / "tutorials"


def tutorials(prefixes: list[str]) -> list[Path]:
    """The tutorial scripts, in order; only those matching a prefix if any."""
    found = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def build(path: Path, output: Path, timeout: int) -> float:
    """Execute one tutorial and write ``output/<name>.ipynb``; return seconds."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = jupytext.read(path)
    # The scripts start with a ruff directive (a cell's last bare name is how
    # a notebook shows a figure; ruff's B018 calls it useless): not for readers.
    notebook.cells = [cell for cell in notebook.cells if not _lint_only(cell)]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata.pop("jupytext", None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verinet-tutorial-") as scratch:
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": scratch}},
            # Quiet the kernel's start-up warnings on this process's stderr.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        ).execute()
    seconds = time.perf_counter() - start
    nbformat.write(notebook, output / f"{path.stem}.ipynb")
    return seconds


def _lint_only(cell) -> bool:
    """Whether a cell holds nothing but ``# ruff: ...`` directives."""
    lines = [line for line in cell.source.splitlines() if line.strip()]
    return cell.cell_type == "code" and all(
        line.startswith("# ruff:") for line in lines
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="name prefixes, e.g. 01 06")
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="output folder"
    )
    parser.add_argument(
        "--fast", action="store_true", help="run in fast mode (VERINET_TUTORIAL_FAST=1)"
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds per cell (default 900)"
    )
    args = parser.parse_args(argv)

    # The kernel inherits this environment.
    os.environ["KERAS_BACKEND"] = "torch"
    os.environ.pop("MPLBACKEND", None)  # the notebooks select the inline backend
    # The tutorials' networks are tiny: one torch thread is faster than
    # several, which only contend with each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.fast:
        os.environ["VERINET_TUTORIAL_FAST"] = "1"
    else:
        os.environ.pop("VERINET_TUTORIAL_FAST", None)

    paths = tutorials(args.names)
    if not paths:
        print(f"no tutorial matches {args.names}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        seconds = build(path, args.output, args.timeout)
        total += seconds
        print(f"{seconds:.0f} s")
    print(f"wrote {len(paths)} notebooks to {args.output} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
