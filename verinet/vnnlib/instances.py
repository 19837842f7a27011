"""Run a VNN-COMP benchmark's ``instances.csv`` through ``vn.verify``."""

from __future__ import annotations

import csv
import math
import os
import tempfile

from verinet.errors import InvalidInputError, VerinetError

#: Columns of ``results.csv`` (those of VNN-COMP's results summaries).
RESULTS_HEADER = ("onnx", "vnnlib", "result", "seconds")


def _read_instances(csv_path: str):
    """``[(line_number, onnx, vnnlib, onnx_resolved, vnnlib_resolved, timeout)]``."""
    try:
        with open(csv_path, newline="") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot read the instances file {csv_path!r}: {exc.strerror or exc}."
        ) from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{csv_path!r} is not a text CSV file.") from None
    folder = os.path.dirname(os.path.abspath(csv_path))
    instances = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{csv_path!r} line {number}"
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise InvalidInputError(
                f"{where}: expected 'onnx_path,vnnlib_path,timeout_seconds', "
                f"got {line.strip()!r}."
            )
        onnx, vnnlib, timeout_text = fields
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        if not (math.isfinite(timeout) and timeout > 0):
            raise InvalidInputError(
                f"{where}: the timeout must be a positive number of seconds, "
                f"got {timeout_text!r}."
            )
        resolved = []
        for what, path in (("ONNX network", onnx), ("VNN-LIB property", vnnlib)):
            full = os.path.normpath(os.path.join(folder, os.path.expanduser(path)))
            if not os.path.isfile(full):
                raise InvalidInputError(
                    f"{where}: no {what} file at {full!r} (relative paths are "
                    f"relative to the CSV's folder {folder!r})."
                )
            resolved.append(full)
        instances.append((number, onnx, vnnlib, *resolved, timeout))
    if not instances:
        raise InvalidInputError(f"The instances file {csv_path!r} lists no instances.")
    return instances


def _stem(path: str) -> str:
    """File name without its extension(s) (``net.onnx.gz`` -> ``net``)."""
    name = os.path.basename(path)
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem = os.path.splitext(name)[0] or name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def _prepare_results_dir(results_dir: str) -> None:
    """Create ``results_dir`` if needed and check that files can be written."""
    if os.path.exists(results_dir) and not os.path.isdir(results_dir):
        raise InvalidInputError(
            f"The results directory {results_dir!r} is a file; give a directory."
        )
    try:
        os.makedirs(results_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".verinet-probe-", dir=results_dir)
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot write results to the directory {results_dir!r} "
            f"({exc.strerror or exc}). Choose a writable directory."
        ) from None
    os.close(fd)
    os.unlink(probe)


def run_instances(
    csv_path, results_dir=None, *, on_result=None, **verify_options
) -> list[dict]:
    """Verify every instance of a VNN-COMP-style ``instances.csv``.

    Each non-blank line is ``onnx_path,vnnlib_path,timeout_seconds``;
    relative paths are relative to the CSV's folder. The whole file is
    checked (fields, timeouts, that the files exist) before any instance
    runs; then ``vn.verify`` decides each instance in order, with that line's
    timeout.

    Args:
        csv_path: the instances file.
        results_dir: ``None``, or a directory (created if missing) that gets
            one VNN-COMP results file per instance (``result.vnncomp()``,
            named ``<line>_<onnx stem>_<vnnlib stem>.txt``, e.g.
            ``0001_net_prop.txt``) and ``results.csv`` with the header
            ``onnx,vnnlib,result,seconds``, a row written as each instance
            finishes.
        on_result: ``None``, or a function called with each row (the dict
            below) as soon as its instance finishes.
        **verify_options: passed to ``vn.verify`` (``method``, ``attack``,
            ``verbose``, ...); not ``timeout``, which each line gives.

    Returns:
        One dict per instance, in file order: ``"onnx"`` and ``"vnnlib"``
        (the paths as written in the CSV), ``"result"`` (the
        ``VerificationResult``, a ``str`` ``"sat"``/``"unsat"``/``"unknown"``
        with its evidence) and ``"seconds"`` (wall time of ``verify``).

    Raises:
        InvalidInputError: for a malformed line (naming its line number), a
            missing file, a ``timeout`` in ``verify_options``, or a results
            directory that cannot be written.
        VerinetError: from ``verify`` (e.g. a property that does not match
            its network); the message names the CSV line.

    Example:
        >>> rows = vn.vnnlib.run_instances("instances.csv", results_dir="out")
        >>> [(row["result"], row["seconds"]) for row in rows]
    """
    from verinet.vnnlib.verify import verify

    if "timeout" in verify_options:
        raise InvalidInputError(
            "run_instances takes each instance's timeout from its CSV line; "
            "do not pass timeout."
        )
    csv_path = os.fspath(csv_path)
    instances = _read_instances(csv_path)
    summary = None
    if results_dir is not None:
        results_dir = os.fspath(results_dir)
        _prepare_results_dir(results_dir)
        summary = open(  # noqa: SIM115 - closed in the finally below
            os.path.join(results_dir, "results.csv"), "w", newline=""
        )
    rows = []
    try:
        writer = None
        if summary is not None:
            writer = csv.writer(summary, lineterminator="\n")
            writer.writerow(RESULTS_HEADER)
            summary.flush()
        for number, onnx, vnnlib, onnx_full, vnnlib_full, timeout in instances:
            try:
                result = verify(
                    onnx_full, vnnlib_full, timeout=timeout, **verify_options
                )
            except VerinetError as exc:
                try:
                    error = type(exc)(f"{csv_path!r} line {number}: {exc}")
                except Exception:  # noqa: BLE001 - an error class with other args
                    raise exc from None
                raise error from exc
            row = {
                "onnx": onnx,
                "vnnlib": vnnlib,
                "result": result,
                "seconds": float(result.seconds),
            }
            rows.append(row)
            if summary is not None:
                name = f"{number:04d}_{_stem(onnx)}_{_stem(vnnlib)}.txt"
                with open(os.path.join(results_dir, name), "w") as handle:
                    handle.write(result.vnncomp())
                writer.writerow([onnx, vnnlib, result.status, f"{row['seconds']:.6f}"])
                summary.flush()
            if on_result is not None:
                on_result(row)
    finally:
        if summary is not None:
            summary.close()
    return rows
