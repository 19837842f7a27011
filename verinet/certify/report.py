"""The result of ``certify()``: per-sample verdicts and summary figures.

``CertificationReport`` holds the verdicts and shows them (``summary``,
``to_markdown``, notebook HTML). Its consistency checks live in
``verinet.certify.report_checks``; its file layout (``report.json`` +
``report.npz``, the JSON encoding, the content hash) in
``verinet.certify.report_files``.
"""

from __future__ import annotations

import html

# ``json`` and ``os`` stay reachable as ``report.json`` / ``report.os``: tests
# patch ``json.dumps`` and ``os.replace`` through this module.
import json  # noqa: F401
import os  # noqa: F401
from dataclasses import dataclass, field

import numpy as np

from verinet.certify import report_checks, report_files
from verinet.certify.report_checks import VERDICTS as _VERDICTS
from verinet.certify.report_files import FORMAT, FORMAT_V1

__all__ = ["FORMAT", "FORMAT_V1", "CertificationReport"]


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
    epsilon: float | np.ndarray
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

    def analyze(self, top: int = 10, bins: int = 20):
        """Break the verdicts down: per class, by margin, weakest inputs.

        Falsified samples are real vulnerabilities (the attack broke them or
        the clean input is misclassified); unknown ones lack a certificate
        because the bound was too loose (a tighter method, or complete
        verification, may settle them).

        Args:
            top: how many least certified inputs to list.
            bins: histogram bins of the smallest margin bounds.

        Returns:
            A ``ReportAnalysis``: ``per_class`` counts (verified, attacked,
            misclassified, unknown), ``smallest_margin`` per sample,
            ``margin_histogram`` (counts, edges), ``least_certified``
            indices and ``text`` (what ``print`` shows).

        Example:
            >>> print(report.analyze())
            >>> report.analyze().per_class[3]["unknown"]
        """
        from verinet.certify.analysis import analyze

        return analyze(self, top=top, bins=bins)

    @property
    def certified_radius(self) -> np.ndarray | None:
        """Per sample, the largest radius the bounds proved (``certify(...,
        radius=True)``; ``None`` otherwise). ``0.0`` where none was proven;
        capped at ``extra["radius_max"]``."""
        radii = self.extra.get("certified_radius")
        return None if radii is None else np.asarray(radii, dtype=np.float64)

    def certified_accuracy(self, radii):
        """Fraction of samples classified correctly with a certified radius
        of at least ``r``, for each ``r`` in ``radii`` (needs ``certify(...,
        radius=True)``; misclassified inputs never count).

        Args:
            radii: a number or a sequence of numbers ``>= 0``.

        Returns:
            A float for a number, else a numpy array of the same length.

        Raises:
            InvalidInputError: when the report has no certified radii, or for
                negative or NaN radii.

        Example:
            >>> report = vn.certify(model, x, y, 0.05, radius=True)
            >>> report.certified_accuracy([0.0, 0.05, 0.1])
        """
        from verinet.errors import InvalidInputError

        radius = self.certified_radius
        if radius is None:
            raise InvalidInputError(
                "This report has no certified radii: certify with radius=True."
            )
        r = np.asarray(radii, dtype=np.float64)
        if np.any(np.isnan(r)) or np.any(r < 0):
            raise InvalidInputError(f"radii must be numbers >= 0, got {radii!r}.")
        correct = self.predictions == self.labels
        ok = correct[:, None] & (radius[:, None] >= r.reshape(1, -1))
        result = ok.mean(axis=0)
        return float(result[0]) if r.ndim == 0 else result

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
        text = f"{self.method}, {self.norm} epsilon={_setting_text(self.epsilon)}"
        if self.input_range is not None:
            low, high = (_setting_text(v) for v in self.input_range)
            text += f", input_range=({low}, {high})"
        return text + (f", attack={self.attack}" if self.attack else ", no attack")

    def plot(self, kind: str = "verdicts", **kwargs):
        """Draw the report with matplotlib (see ``vn.plot``).

        Args:
            kind: ``"verdicts"`` (``vn.plot.verdicts_per_class``: stacked
                bars of the verdicts per class), ``"margins"``
                (``vn.plot.margin_histogram``: the smallest margin bounds) or
                ``"counterexamples"`` (``vn.plot.counterexamples``: clean
                inputs beside the attack's counterexamples).
            **kwargs: passed on to that function (``ax``, ``bins``,
                ``model``, ``count``, ``class_names``, ``fig``...).

        Returns:
            The ``matplotlib.figure.Figure``.

        Raises:
            InvalidInputError: for an unknown ``kind``, and whatever the
                plotting function refuses.

        Example:
            >>> report.plot("margins", bins=40).savefig("margins.png")
        """
        from verinet import plot
        from verinet.errors import InvalidInputError

        kinds = {
            "verdicts": plot.verdicts_per_class,
            "margins": plot.margin_histogram,
            "counterexamples": plot.counterexamples,
        }
        if kind not in kinds:
            raise InvalidInputError(
                f"Unknown plot kind {kind!r}; choose one of "
                f"{', '.join(map(repr, kinds))}."
            )
        return kinds[kind](self, **kwargs)

    # -- display -----------------------------------------------------------

    def __repr__(self) -> str:
        f = self._figures()
        return (
            f"CertificationReport(method={self.method!r}, norm={self.norm!r}, "
            f"epsilon={_setting_text(self.epsilon)}, n={f['samples']}, "
            f"verified={f['verified']}, "
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
        report_checks.validate(self)

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
        return report_files.content_sha256(self)

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
        return report_files.to_dict(self, arrays_file)

    def to_json(self, arrays_file: str | None = None) -> str:
        """The report as indented JSON text (see ``to_dict``).

        Args:
            arrays_file: as in ``to_dict``; ``save`` passes the ``.npz`` name.

        Returns:
            The JSON text, each inline array on one line.

        Example:
            >>> text = report.to_json()
        """
        return report_files.to_json(self, arrays_file)

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
        report_files.save(self, path)

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
        return report_files.from_dict(cls, data)

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
        return report_files.load(cls, path)


def _setting_text(value) -> str:
    """A number as ``%g``; a per-feature array by its range."""
    if np.ndim(value) == 0:
        return f"{float(value):g}"
    array = np.asarray(value)
    return f"per-feature [{array.min():g}, {array.max():g}]"
