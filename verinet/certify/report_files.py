"""How a ``CertificationReport`` is written and read: the JSON encoding, the
``report.json`` + ``report.npz`` file layout and its content hash.

- Format ``verinet.CertificationReport/2`` (``FORMAT``): ``report.json``
  holds the summary figures, the settings, the weights hashes and
  ``report_sha256``; the per-sample arrays are in ``report.npz`` beside it
  (or inline, from ``to_dict``).
- Format ``/1`` (``FORMAT_V1``), the single JSON file of verinet 0.1, is
  still read.
- ``content_sha256`` covers the settings and every array, whatever layout
  holds them, so a ``.npz`` of another report is refused on ``load``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from verinet.certify.integrity import little_endian_bytes, write_atomic
from verinet.certify.report_checks import ARRAYS, INTEGERS, VERDICTS
from verinet.errors import InvalidInputError

if TYPE_CHECKING:
    from verinet.certify.report import CertificationReport

FORMAT = "verinet.CertificationReport/2"
#: The single-file JSON format of verinet 0.1 (arrays inline, no hashes).
FORMAT_V1 = "verinet.CertificationReport/1"


# -- writing --------------------------------------------------------------------


def content_sha256(report: CertificationReport) -> str:
    """SHA-256 of a report's content (see ``CertificationReport.content_sha256``).

    Args:
        report: a ``CertificationReport``.

    Returns:
        The hex digest.

    Example:
        >>> content_sha256(report) == report.content_sha256()
        True
    """
    digest = hashlib.sha256(f"{FORMAT}\n".encode())
    digest.update(json.dumps(_scalars(report), sort_keys=True).encode())
    for name in ARRAYS:
        array = getattr(report, name)
        if array is None:
            digest.update(json.dumps([name, None]).encode())
            continue
        array = _canonical(name, array)
        digest.update(json.dumps([name, str(array.dtype), array.shape]).encode())
        digest.update(little_endian_bytes(array))
    return digest.hexdigest()


def to_dict(report: CertificationReport, arrays_file: str | None = None) -> dict:
    """A report as a JSON-ready dictionary (see ``CertificationReport.to_dict``).

    Args:
        report: a ``CertificationReport``.
        arrays_file: name of the ``.npz`` file holding the arrays, or
            ``None`` to put them inline.

    Returns:
        The dictionary, format ``FORMAT``.

    Example:
        >>> to_dict(report)["format"]
        'verinet.CertificationReport/2'
    """
    data = {"format": FORMAT, "summary": report._figures()}
    data.update(_scalars(report))
    data["report_sha256"] = report.content_sha256()
    if arrays_file is not None:
        data["arrays"] = {"file": arrays_file}
        return data
    for name in ARRAYS:
        if getattr(report, name) is not None:
            data[name] = _encode(getattr(report, name))
    return data


def to_json(report: CertificationReport, arrays_file: str | None = None) -> str:
    """A report as indented JSON text, each inline array on one line.

    Args:
        report: a ``CertificationReport``.
        arrays_file: as in ``to_dict``.

    Returns:
        The JSON text of ``report.to_dict(arrays_file)``.

    Example:
        >>> text = to_json(report)
    """
    data = report.to_dict(arrays_file)
    arrays = {name: data.pop(name) for name in ARRAYS if name in data}
    text = json.dumps(data, indent=2)
    if not arrays:
        return text + "\n"
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in arrays.items())
    head = text[: -len("\n}")]  # reopen the object to add the arrays
    return f"{head},\n{body}\n}}\n"


def save(report: CertificationReport, path: str | os.PathLike) -> None:
    """Write ``report`` to ``path`` and its arrays to the ``.npz`` beside it.

    See ``CertificationReport.save`` for the layout and guarantees.

    Args:
        report: a ``CertificationReport``.
        path: the JSON file to write (its extension must not be ``.npz``).

    Returns:
        ``None``.

    Raises:
        FileWriteError: naming ``path`` when it cannot be written.
        InvalidInputError: when ``path`` ends in ``.npz``.

    Example:
        >>> save(report, "report.json")   # also writes report.npz
    """
    path = os.fspath(path)
    arrays_path = _arrays_path(path)
    text = report.to_json(arrays_file=os.path.basename(arrays_path))
    arrays = _npz_bytes(report)
    write_atomic(arrays_path, arrays, f"{path!r} (its arrays, {arrays_path!r})")
    write_atomic(path, text.encode())


def _scalars(report) -> dict:
    return {
        "epsilon": _setting_json(report.epsilon),
        "norm": report.norm,
        "input_range": None
        if report.input_range is None
        else [_setting_json(v) for v in report.input_range],
        "method": report.method,
        "dtype": report.dtype,
        "attack": report.attack,
        "weights_sha256": report.weights_sha256,
        "onnx_weights_sha256": report.onnx_weights_sha256,
        "seconds": float(report.seconds),
        "extra": report.extra,
    }


def _npz_bytes(report) -> bytes:
    buffer = io.BytesIO()
    arrays = {n: getattr(report, n) for n in ARRAYS if getattr(report, n) is not None}
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _arrays_path(path: str) -> str:
    stem, extension = os.path.splitext(path)
    if extension.lower() == ".npz":
        raise InvalidInputError(
            f"Report path {path!r} ends in .npz, the name of its arrays file; "
            "give a .json path, e.g. 'report.json'."
        )
    return stem + ".npz"


def _canonical(name: str, array) -> np.ndarray:
    """The array in the dtype it is hashed in (bool, int64 or float64)."""
    array = np.asarray(array)
    if name in VERDICTS:
        return array.astype(bool)
    if name in INTEGERS:
        return array.astype(np.int64)
    array = array.astype(np.float64)
    return np.where(np.isnan(array), np.nan, array)


def _encode(array: np.ndarray):
    """An array as JSON: a list for bools and ints, else shape and values."""
    array = np.asarray(array)
    if array.dtype == bool or array.dtype.kind in "iu":
        return array.tolist()
    flat = [
        x if math.isfinite(x) else str(x)
        for x in np.asarray(array, float).ravel().tolist()
    ]
    return {"shape": list(array.shape), "values": flat}


# -- reading --------------------------------------------------------------------


def from_dict(cls: type[CertificationReport], data: dict) -> CertificationReport:
    """A checked report of class ``cls`` from ``to_dict()`` output.

    Args:
        cls: ``CertificationReport`` (or a subclass).
        data: the dictionary, format ``/2`` with inline arrays or ``/1``.

    Returns:
        The report.

    Raises:
        InvalidInputError: when ``data`` is malformed or inconsistent.

    Example:
        >>> from_dict(vn.CertificationReport, report.to_dict())
    """
    return _parse(cls, data, None, "The report")


def load(
    cls: type[CertificationReport], path: str | os.PathLike
) -> CertificationReport:
    """Read a report of class ``cls`` written by ``save`` (or a ``/1`` file).

    Args:
        cls: ``CertificationReport`` (or a subclass).
        path: the ``.json`` file; its ``.npz`` must be beside it.

    Returns:
        The report, checked with ``validate`` and against its
        ``report_sha256``.

    Raises:
        InvalidInputError: when a file is not a valid report, the ``.npz``
            is missing or belongs to another report, or the report is
            inconsistent.

    Example:
        >>> report = load(vn.CertificationReport, "report.json")
    """
    path = os.fspath(path)
    where = repr(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{path} is not a valid report (bad JSON: {exc})."
        ) from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} is not a valid verinet certification report.")
    arrays = data.get("arrays") if data.get("format") == FORMAT else None
    if isinstance(arrays, dict) and "file" in arrays:
        return _parse(cls, data, _read_npz(path, arrays["file"]), where)
    return _parse(cls, data, None, where)


def _read_npz(path: str, name) -> dict:
    if not isinstance(name, str) or os.path.basename(name) != name or not name:
        raise InvalidInputError(
            f"{path!r} names its arrays file {name!r}; expected a file name "
            "beside it, e.g. 'report.npz'."
        )
    arrays_path = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    if not os.path.isfile(arrays_path):
        raise InvalidInputError(
            f"{path!r} keeps its per-sample arrays in {name!r}, which is not "
            f"beside it ({arrays_path!r} is missing); copy both files together."
        )
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInputError(
            f"{arrays_path!r} (the arrays of {path!r}) is not a readable .npz "
            f"file: {exc}"
        ) from None


def _parse(cls, data, arrays, where: str) -> CertificationReport:
    """A checked report from ``data`` (and the ``.npz`` arrays, if any)."""
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in (FORMAT, FORMAT_V1):
        raise InvalidInputError(
            f"{where} is not a verinet certification report: its format is "
            f"{fmt!r}, expected {FORMAT!r} (or {FORMAT_V1!r})."
        )
    try:
        if arrays is None:
            if "arrays" in data:
                raise ValueError(
                    "its arrays are in a separate .npz file; read it with "
                    "CertificationReport.load(path)"
                )
            arrays = data
        fields = {name: _array(name, arrays[name]) for name in ARRAYS[:-1]}
        inputs = arrays.get("inputs")
        input_range = data["input_range"]
        report = cls(
            **fields,
            inputs=None if inputs is None else _array("inputs", inputs),
            epsilon=_setting("epsilon", data["epsilon"]),
            method=_text("method", data["method"]),
            norm=_text("norm", data["norm"]),
            input_range=None
            if input_range is None
            else tuple(_setting("input_range", v) for v in input_range),
            attack=data["attack"],
            seconds=_number("seconds", data["seconds"]),
            extra=data.get("extra", {}),
            dtype=data.get("dtype"),
            weights_sha256=data.get("weights_sha256"),
            onnx_weights_sha256=data.get("onnx_weights_sha256"),
        )
        if not isinstance(report.extra, dict):
            raise ValueError(f"extra must be an object, got {report.extra!r}")
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InvalidInputError(
            f"{where} is not a valid verinet certification report: {detail}."
        ) from exc
    try:
        report.validate()
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where} is inconsistent: {exc}") from None
    _check_figures(report, data, where)
    stored = data.get("report_sha256")
    if fmt == FORMAT and stored != report.content_sha256():
        raise InvalidInputError(
            f"{where} does not match its content: it records report_sha256 "
            f"{str(stored)[:12]}… but its settings and arrays hash to "
            f"{report.content_sha256()[:12]}… (was a file edited, or the .npz "
            "of another report put beside it?). Certify and save again."
        )
    return report


def _check_figures(report, data, where):
    """The summary figures written in the file must be the arrays' own."""
    figures = report._figures()
    if data["format"] == FORMAT_V1:  # only the accuracies, beside the arrays
        accuracies = ("clean_accuracy", "verified_accuracy", "attack_accuracy")
        stored = {key: data[key] for key in accuracies if key in data}
    else:
        stored = data.get("summary", {})
    if not isinstance(stored, dict):
        raise InvalidInputError(f"{where}: summary must be an object.")
    for key, value in figures.items():
        if key not in stored:
            continue
        claimed = stored[key]
        if not isinstance(claimed, (int, float)) or isinstance(claimed, bool):
            same = False
        elif isinstance(value, int):
            same = claimed == value
        else:
            same = math.isclose(claimed, value, rel_tol=0, abs_tol=1e-12)
        if not same:
            raise InvalidInputError(
                f"{where} is inconsistent: its summary says {key} = {claimed!r} "
                f"but its per-sample arrays give {value!r}."
            )


def _array(name: str, value) -> np.ndarray:
    if isinstance(value, dict):  # {"shape", "values"} with NaN/inf as strings
        array = np.asarray([float(v) for v in value["values"]], dtype=np.float64)
        array = array.reshape(value["shape"])
    else:
        array = np.asarray(value)
    if name in VERDICTS and array.dtype != bool:
        raise ValueError(f"{name} must hold true/false values, got {array.dtype}")
    if name in INTEGERS:
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, got {array.dtype}")
        array = array.astype(np.int64)
    if name not in VERDICTS + INTEGERS and array.dtype.kind != "f":
        raise ValueError(f"{name} must hold floats, got {array.dtype}")
    return array


def _setting_json(value):
    """A number, or a per-feature array as nested lists."""
    if np.ndim(value) == 0:
        return float(value)
    return np.asarray(value, dtype=np.float64).tolist()


def _setting(name: str, value):
    """A number, or nested lists of numbers (a per-feature array)."""
    if isinstance(value, list):
        array = np.asarray(value, dtype=np.float64)
        if array.dtype == object or array.ndim == 0:
            raise ValueError(f"{name} must be a number or an array of numbers")
        return array
    return _number(name, value)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value
