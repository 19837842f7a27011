"""The result of ``certify()``: per-sample verdicts and summary figures."""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from verinet.bounds.perturbation import NORMS
from verinet.certify.integrity import (
    in_perturbation_set,
    little_endian_bytes,
    rows,
    write_atomic,
)
from verinet.errors import InvalidInputError

FORMAT = "verinet.CertificationReport/2"
#: The single-file JSON format of verinet 0.1 (arrays inline, no hashes).
FORMAT_V1 = "verinet.CertificationReport/1"

_VERDICTS = ("verified", "falsified", "unknown")
_INTEGERS = ("labels", "predictions")
_FLOATS = ("margin_lower", "adversarial_examples")
#: Every per-sample array, in the order they are hashed and stored.
_ARRAYS = (*_VERDICTS, *_INTEGERS, *_FLOATS, "inputs")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DTYPES = ("float32", "float64")


@dataclass(repr=False)
class CertificationReport:
    """Per-sample robustness verdicts.

    Every sample is exactly one of ``verified`` (a bound proves no input in
    the perturbation set changes the prediction), ``falsified`` (a real
    adversarial example was found, or the clean input is misclassified) or
    ``unknown`` (neither).

    Attributes:
        verified, falsified, unknown: boolean arrays ``(n,)``.
        margin_lower: ``(n, classes)`` lower bounds of ``f_y - f_j``
            (``+inf`` at ``j = y``).
        adversarial_examples: ``(n, *input_shape)``; the counterexample of
            each falsified sample, NaN elsewhere (a misclassified clean input
            is its own counterexample). Each lies in the perturbation set
            exactly (see ``verinet.certify.integrity.in_perturbation_set``).
            ``report.counterexamples()`` gives the falsified ones with their
            indices.
        labels, predictions: true labels and clean predictions ``(n,)``.
        epsilon, method, norm, input_range, attack: the settings.
        seconds: wall time of the certification.
        extra: free-form JSON-ready notes (e.g. ``"certificate_mismatch"``
            when the certified ONNX file's weights no longer match its
            metadata).
        dtype: the dtype the bounds were computed in (``None`` in reports
            of verinet 0.1).
        weights_sha256: ``model_weights_sha256`` of the certified Keras model
            (``None`` in reports of verinet 0.1); ``export_onnx`` checks it.
        onnx_weights_sha256: when the model was imported from an ONNX file
            (and not changed since), that file's ``weights_sha256``.
        inputs: the clean inputs ``(n, *input_shape)``, so that a loaded
            report can check its counterexamples (``None`` in reports of
            verinet 0.1).

    Example:
        >>> report = vn.certify(model, x_test, y_test, epsilon=0.05)
        >>> report
        CertificationReport(method='crown', norm='linf', epsilon=0.05, n=360,
        verified=301, falsified=12, unknown=47)
    """

    verified: np.ndarray
    falsified: np.ndarray
    unknown: np.ndarray
    margin_lower: np.ndarray
    adversarial_examples: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    epsilon: float
    method: str
    norm: str
    input_range: tuple | None = None
    attack: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    dtype: str | None = None
    weights_sha256: str | None = None
    onnx_weights_sha256: str | None = None
    inputs: np.ndarray | None = None

    def __post_init__(self):
        verdicts = [np.asarray(getattr(self, name)) for name in _VERDICTS]
        if len({v.shape for v in verdicts}) != 1 or verdicts[0].ndim != 1:
            raise AssertionError(
                "verified / falsified / unknown must be 1-D arrays of one length; "
                f"got shapes {[v.shape for v in verdicts]}."
            )
        total = sum(v.astype(int) for v in verdicts)
        if not np.all(total == 1):
            first = int(np.flatnonzero(total != 1)[0])
            raise AssertionError(
                "verified / falsified / unknown must be disjoint and cover every "
                f"sample; sample {first} has {int(total[first])} verdicts."
            )

    # -- figures -----------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return int(self.verified.shape[0])

    @property
    def clean_accuracy(self) -> float:
        """Fraction of clean inputs classified correctly."""
        return float(np.mean(self.predictions == self.labels))

    @property
    def verified_accuracy(self) -> float:
        """Fraction proven robust (a lower bound on robust accuracy)."""
        return float(np.mean(self.verified))

    @property
    def attack_accuracy(self) -> float:
        """Fraction the attack did not break (an upper bound on robust accuracy)."""
        return float(np.mean(~self.falsified))

    def counterexamples(self):
        """Return ``(indices, inputs)`` of the falsified samples."""
        index = np.flatnonzero(self.falsified)
        return index, self.adversarial_examples[index]

    def _figures(self) -> dict:
        """The summary figures, as written at the top of ``report.json``."""
        return {
            "samples": self.num_samples,
            "verified": int(np.sum(self.verified)),
            "falsified": int(np.sum(self.falsified)),
            "unknown": int(np.sum(self.unknown)),
            "clean_accuracy": self.clean_accuracy,
            "verified_accuracy": self.verified_accuracy,
            "attack_accuracy": self.attack_accuracy,
        }

    def _settings(self) -> str:
        text = f"{self.method}, {self.norm} epsilon={self.epsilon:g}"
        if self.input_range is not None:
            text += f", input_range={tuple(self.input_range)}"
        return text + (f", attack={self.attack}" if self.attack else ", no attack")

    # -- display -----------------------------------------------------------

    def __repr__(self) -> str:
        f = self._figures()
        return (
            f"CertificationReport(method={self.method!r}, norm={self.norm!r}, "
            f"epsilon={self.epsilon:g}, n={f['samples']}, verified={f['verified']}, "
            f"falsified={f['falsified']}, unknown={f['unknown']})"
        )

    def summary(self) -> str:
        """A short human-readable table."""
        n = self.num_samples
        rows = [
            f"Certification: {self._settings()}",
            f"  samples            {n}",
            f"  clean accuracy     {self.clean_accuracy:.4f}",
            f"  verified           {int(self.verified.sum()):>6}  "
            f"({self.verified_accuracy:.4f})",
            f"  falsified          {int(self.falsified.sum()):>6}  "
            f"({float(np.mean(self.falsified)):.4f})",
            f"  unknown            {int(self.unknown.sum()):>6}  "
            f"({float(np.mean(self.unknown)):.4f})",
            f"  attack accuracy    {self.attack_accuracy:.4f}",
            f"  time               {self.seconds:.2f} s",
        ]
        return "\n".join(rows)

    def _table_rows(self) -> list[tuple[str, str, str]]:
        f, n = self._figures(), max(self.num_samples, 1)
        rows = [(name, str(f[name]), f"{f[name] / n:.4f}") for name in _VERDICTS]
        rows.append(("clean accuracy", "", f"{f['clean_accuracy']:.4f}"))
        rows.append(("attack accuracy", "", f"{f['attack_accuracy']:.4f}"))
        return rows

    def _footer(self) -> str:
        text = f"{self.num_samples} samples, {self.seconds:.2f} s"
        if self.dtype:
            text += f", bounds in {self.dtype}"
        if self.weights_sha256:
            text += f", weights sha256 {self.weights_sha256[:12]}…"
        return text

    def to_markdown(self) -> str:
        """The summary as a Markdown table (what notebooks show).

        Returns:
            Markdown text: the settings, a table of verdict counts and
            fractions, and a line with the sample count and time.

        Example:
            >>> print(report.to_markdown())
        """
        lines = [
            f"**Certification**: {self._settings()}",
            "",
            "| | samples | fraction |",
            "|---|---:|---:|",
        ]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in self._table_rows()]
        return "\n".join([*lines, "", self._footer()])

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(a)}</th>"
            f"<td>{b}</td><td>{c}</td></tr>"
            for a, b, c in self._table_rows()
        )
        return (
            f"<div><b>Certification</b>: {html.escape(self._settings())}"
            "<table><thead><tr><th></th><th>samples</th><th>fraction</th></tr>"
            f"</thead><tbody>{cells}</tbody></table>"
            f"<small>{html.escape(self._footer())}</small></div>"
        )

    # -- consistency -------------------------------------------------------

    def validate(self) -> None:
        """Raise unless the report is internally consistent.

        Checked: known norm; finite ``epsilon >= 0``; ``input_range`` a
        finite ``(low, high)`` with ``low <= high``; per-sample arrays of one
        length with the right shapes and dtypes; labels and predictions
        within the classes; disjoint verdicts covering every sample; a
        verified sample is correctly classified with every margin lower
        bound ``> 0``; a misclassified sample is falsified; a falsified,
        correctly classified sample has a finite counterexample inside the
        perturbation set (exactly, against ``inputs`` when known); a sample
        that is not falsified has no counterexample; hashes are hex SHA-256.

        Raises:
            InvalidInputError: naming the first thing (and the first sample)
                that is wrong.

        Example:
            >>> report.validate()
        """
        _check_settings(self)
        n = _check_shapes(self)
        verified, falsified = self.verified, self.falsified
        correct = self.predictions == self.labels
        with np.errstate(invalid="ignore"):
            margins_ok = np.all(self.margin_lower > 0, axis=1)  # NaN fails
        _first(
            verified & ~correct,
            lambda i: (
                f"sample {i} is marked verified but is misclassified "
                f"(prediction {self.predictions[i]}, label {self.labels[i]})"
            ),
        )
        _first(
            verified & ~margins_ok,
            lambda i: (
                f"sample {i} is marked verified but its margin lower bounds "
                f"{self.margin_lower[i].tolist()} are not all > 0, so nothing proves it"
            ),
        )
        _first(
            ~correct & ~falsified,
            lambda i: (
                f"sample {i} is misclassified (prediction "
                f"{self.predictions[i]}, label {self.labels[i]}) but not falsified"
            ),
        )
        adversarial = rows(self.adversarial_examples)
        _first(
            ~falsified & ~np.all(np.isnan(adversarial), axis=1),
            lambda i: f"sample {i} is not falsified but has a counterexample",
        )
        _first(
            falsified & ~np.all(np.isfinite(adversarial), axis=1),
            lambda i: (
                f"sample {i} is marked falsified but its counterexample is "
                "missing (NaN) or not finite"
            ),
        )
        attacked = np.flatnonzero(falsified & correct)
        # Without the clean inputs (reports of verinet 0.1) only the input
        # range can be checked: each point is then its own centre.
        centres = self.inputs if self.inputs is not None else self.adversarial_examples
        inside = in_perturbation_set(
            self.adversarial_examples[attacked],
            centres[attacked],
            self.epsilon,
            self.norm,
            self.input_range,
        )
        outside = np.zeros(n, dtype=bool)
        outside[attacked[~inside]] = True
        where = "input_range" if self.inputs is None else "perturbation set"
        _first(
            outside,
            lambda i: (
                f"sample {i} is marked falsified but its counterexample lies "
                f"outside the {where} ({self.norm}, epsilon={self.epsilon!r}, "
                f"input_range={self.input_range})"
            ),
        )

    # -- hashing and serialisation ----------------------------------------

    def content_sha256(self) -> str:
        """SHA-256 of the report's content, whatever file layout holds it.

        Covers every field: the settings and notes as canonical JSON, then
        each per-sample array (bool, int64 or float64, NaN canonical) with
        its name and shape, as little-endian bytes. ``save`` writes it as
        ``report_sha256`` and ``export_onnx`` as ``verinet.report_sha256``,
        so a report file can be matched to an ONNX file.

        Returns:
            The hex digest.

        Example:
            >>> report.content_sha256() == json.load(open("report.json"))[
            ...     "report_sha256"]
        """
        digest = hashlib.sha256(f"{FORMAT}\n".encode())
        digest.update(json.dumps(self._scalars(), sort_keys=True).encode())
        for name in _ARRAYS:
            array = getattr(self, name)
            if array is None:
                digest.update(json.dumps([name, None]).encode())
                continue
            array = _canonical(name, array)
            digest.update(json.dumps([name, str(array.dtype), array.shape]).encode())
            digest.update(little_endian_bytes(array))
        return digest.hexdigest()

    def _scalars(self) -> dict:
        return {
            "epsilon": float(self.epsilon),
            "norm": self.norm,
            "input_range": None
            if self.input_range is None
            else [float(v) for v in self.input_range],
            "method": self.method,
            "dtype": self.dtype,
            "attack": self.attack,
            "weights_sha256": self.weights_sha256,
            "onnx_weights_sha256": self.onnx_weights_sha256,
            "seconds": float(self.seconds),
            "extra": self.extra,
        }

    def to_dict(self, arrays_file: str | None = None) -> dict:
        """A JSON-ready dictionary (format ``verinet.CertificationReport/2``).

        Keys, in order: ``format``, ``summary`` (sample and verdict counts,
        clean / verified / attack accuracy), the settings (``epsilon``,
        ``norm``, ``input_range``, ``method``, ``dtype``, ``attack``), the
        hashes (``weights_sha256``, ``onnx_weights_sha256``), ``seconds``,
        ``extra``, ``report_sha256`` (``content_sha256()``), then either the
        per-sample arrays, one key each (bools and ints as lists, floats as
        ``{"shape", "values"}`` with NaN and inf written as strings), or
        ``"arrays": {"file": arrays_file}``.

        Args:
            arrays_file: name of the ``.npz`` file holding the arrays, or
                ``None`` to put them inline.

        Returns:
            The dictionary.

        Example:
            >>> vn.CertificationReport.from_dict(report.to_dict())
        """
        data = {"format": FORMAT, "summary": self._figures()}
        data.update(self._scalars())
        data["report_sha256"] = self.content_sha256()
        if arrays_file is not None:
            data["arrays"] = {"file": arrays_file}
            return data
        for name in _ARRAYS:
            if getattr(self, name) is not None:
                data[name] = _encode(getattr(self, name))
        return data

    def to_json(self, arrays_file: str | None = None) -> str:
        """The report as indented JSON text (see ``to_dict``).

        Args:
            arrays_file: as in ``to_dict``; ``save`` passes the ``.npz`` name.

        Returns:
            The JSON text, each inline array on one line.

        Example:
            >>> text = report.to_json()
        """
        data = self.to_dict(arrays_file)
        arrays = {name: data.pop(name) for name in _ARRAYS if name in data}
        text = json.dumps(data, indent=2)
        if not arrays:
            return text + "\n"
        body = ",\n".join(
            f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in arrays.items()
        )
        head = text[: -len("\n}")]  # reopen the object to add the arrays
        return f"{head},\n{body}\n}}\n"

    def _npz_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {n: getattr(self, n) for n in _ARRAYS if getattr(self, n) is not None}
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def save(self, path) -> None:
        """Write the report as two files: ``report.json`` and ``report.npz``.

        Layout: ``path`` (e.g. ``report.json``) is indented JSON that starts
        with the format and the summary figures (counts and accuracies), then
        the settings, the weights hashes, ``report_sha256`` and
        ``"arrays": {"file": "report.npz"}``. The per-sample arrays
        (``verified``, ``falsified``, ``unknown``, ``labels``,
        ``predictions``, ``margin_lower``, ``adversarial_examples``,
        ``inputs``) are in that ``.npz`` beside it, named after ``path``
        with its extension replaced. Keep the two files together: ``load``
        reads both and checks that they belong together (``report_sha256``
        covers the arrays, so a ``.npz`` of another report is refused). Each
        file is written atomically (a temporary file, then a rename; the
        ``.npz`` first), with the usual permissions (``0o666`` less the umask
        for a new file; an existing file keeps its mode).

        Args:
            path: the JSON file to write (its extension must not be ``.npz``).

        Raises:
            FileWriteError: (an ``OSError``) naming ``path`` when it cannot be
                written (missing or read-only folder...); ``path`` is then
                left as it was.
            InvalidInputError: when ``path`` ends in ``.npz``.

        Example:
            >>> report.save("report.json")   # also writes report.npz
        """
        path = os.fspath(path)
        arrays_path = _arrays_path(path)
        text = self.to_json(arrays_file=os.path.basename(arrays_path))
        arrays = self._npz_bytes()
        write_atomic(arrays_path, arrays, f"{path!r} (its arrays, {arrays_path!r})")
        write_atomic(path, text.encode())

    @classmethod
    def from_dict(cls, data: dict) -> CertificationReport:
        """Build a report from ``to_dict()`` output, checking it.

        Reads format ``verinet.CertificationReport/2`` with inline arrays and
        the single-file format ``/1`` of verinet 0.1.

        Args:
            data: the dictionary.

        Returns:
            The report.

        Raises:
            InvalidInputError: when ``data`` is malformed or inconsistent
                (see ``validate``), naming what is wrong.

        Example:
            >>> vn.CertificationReport.from_dict(json.loads(text))
        """
        return _parse(cls, data, None, "The report")

    @classmethod
    def load(cls, path) -> CertificationReport:
        """Read a report written by ``save`` (or a single-file ``/1`` report).

        Args:
            path: the ``.json`` file; its ``.npz`` must be beside it.

        Returns:
            The report, checked with ``validate`` and against its
            ``report_sha256``.

        Raises:
            InvalidInputError: when a file is not a valid report, the ``.npz``
                is missing or belongs to another report, or the report is
                inconsistent.

        Example:
            >>> report = vn.CertificationReport.load("report.json")
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
            raise InvalidInputError(
                f"{path} is not a valid verinet certification report."
            )
        arrays = data.get("arrays") if data.get("format") == FORMAT else None
        if isinstance(arrays, dict) and "file" in arrays:
            return _parse(cls, data, _read_npz(path, arrays["file"]), where)
        return _parse(cls, data, None, where)


# -- parsing --------------------------------------------------------------------


def _arrays_path(path: str) -> str:
    stem, extension = os.path.splitext(path)
    if extension.lower() == ".npz":
        raise InvalidInputError(
            f"Report path {path!r} ends in .npz, the name of its arrays file; "
            "give a .json path, e.g. 'report.json'."
        )
    return stem + ".npz"


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
        fields = {name: _array(name, arrays[name]) for name in _ARRAYS[:-1]}
        inputs = arrays.get("inputs")
        input_range = data["input_range"]
        report = cls(
            **fields,
            inputs=None if inputs is None else _array("inputs", inputs),
            epsilon=_number("epsilon", data["epsilon"]),
            method=_text("method", data["method"]),
            norm=_text("norm", data["norm"]),
            input_range=None if input_range is None else tuple(input_range),
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
    if name in _VERDICTS and array.dtype != bool:
        raise ValueError(f"{name} must hold true/false values, got {array.dtype}")
    if name in _INTEGERS:
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, got {array.dtype}")
        array = array.astype(np.int64)
    if name not in _VERDICTS + _INTEGERS and array.dtype.kind != "f":
        raise ValueError(f"{name} must hold floats, got {array.dtype}")
    return array


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _check_settings(report) -> None:
    def bad(message):
        raise InvalidInputError(message)

    eps = report.epsilon
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)):
        bad(f"epsilon must be a number, got {eps!r}.")
    if not (math.isfinite(eps) and eps >= 0):
        bad(f"epsilon must be finite and >= 0, got {eps!r}.")
    if report.norm not in NORMS:
        bad(f"norm must be one of {', '.join(map(repr, NORMS))}, got {report.norm!r}.")
    rng = report.input_range
    if rng is not None:
        try:
            low, high = (float(v) for v in rng)
        except (TypeError, ValueError):
            bad(f"input_range must be null or [low, high], got {rng!r}.")
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            bad(f"input_range needs finite low <= high, got {rng!r}.")
    if not isinstance(report.method, str) or not report.method:
        bad(f"method must be a non-empty string, got {report.method!r}.")
    if report.attack is not None and not isinstance(report.attack, str):
        bad(f"attack must be a string or null, got {report.attack!r}.")
    if report.dtype is not None and report.dtype not in _DTYPES:
        bad(f"dtype must be one of {_DTYPES} or null, got {report.dtype!r}.")
    for name in ("weights_sha256", "onnx_weights_sha256"):
        value = getattr(report, name)
        if value is not None and not (
            isinstance(value, str) and _SHA256.fullmatch(value)
        ):
            bad(f"{name} must be 64 lower-case hex digits or null, got {value!r}.")
    if not isinstance(report.extra, dict):
        bad(f"extra must be a dict, got {type(report.extra).__name__}.")


def _check_shapes(report) -> int:
    """The number of samples, after checking every array's shape and dtype."""
    n = report.num_samples
    for name in _ARRAYS:
        array = getattr(report, name)
        if array is None and name == "inputs":
            continue
        array = np.asarray(array)
        kind = "b" if name in _VERDICTS else "iu" if name in _INTEGERS else "f"
        if array.dtype.kind not in kind:
            wanted = {"b": "bool", "iu": "integer", "f": "float"}[kind]
            raise InvalidInputError(
                f"{name} must be a {wanted} array, got dtype {array.dtype}."
            )
        if array.ndim < 1 or array.shape[0] != n:
            raise InvalidInputError(
                f"{name} has shape {array.shape}; every per-sample array needs "
                f"{n} rows (one per sample)."
            )
    classes = report.margin_lower.shape[1] if report.margin_lower.ndim == 2 else 0
    if classes < 1:
        raise InvalidInputError(
            f"margin_lower must be (samples, classes), got {report.margin_lower.shape}."
        )
    for name in _INTEGERS:
        values = getattr(report, name)
        _first(
            (values < 0) | (values >= classes),
            lambda i, name=name, values=values: (
                f"{name}[{i}] = {values[i]} is not a class index in [0, {classes})"
            ),
        )
    if report.adversarial_examples.ndim < 2:
        raise InvalidInputError(
            "adversarial_examples must be (samples, *input_shape), got "
            f"{report.adversarial_examples.shape}."
        )
    if report.inputs is not None and (
        report.inputs.shape != report.adversarial_examples.shape
    ):
        raise InvalidInputError(
            f"inputs has shape {report.inputs.shape} but adversarial_examples "
            f"{report.adversarial_examples.shape}; they must match."
        )
    return n


def _first(mask, message) -> None:
    """Raise naming the first sample where ``mask`` holds."""
    hits = np.flatnonzero(mask)
    if len(hits):
        raise InvalidInputError(
            message(int(hits[0])) + f" ({len(hits)} such sample(s) in all)."
        )


def _canonical(name: str, array) -> np.ndarray:
    """The array in the dtype it is hashed in (bool, int64 or float64)."""
    array = np.asarray(array)
    if name in _VERDICTS:
        return array.astype(bool)
    if name in _INTEGERS:
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
