"""The result of ``certify()``: per-sample verdicts and summary figures."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from verinet.errors import InvalidInputError

_ARRAYS = ("verified", "falsified", "unknown", "margin_lower", "labels", "predictions")


@dataclass
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
            is its own counterexample). ``report.counterexamples()`` gives the
            falsified ones with their indices.
        labels, predictions: true labels and clean predictions ``(n,)``.
        epsilon, method, norm, input_range, attack: the settings.
        seconds: wall time of the certification.
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

    def __post_init__(self):
        total = self.verified.astype(int) + self.falsified + self.unknown
        if not np.all(total == 1):
            raise AssertionError(
                "verified / falsified / unknown must be disjoint and cover "
                "every sample."
            )

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

    def summary(self) -> str:
        """A short human-readable table."""
        n = self.num_samples
        rows = [
            f"Certification: {self.method}, {self.norm} epsilon={self.epsilon:g}"
            + (f", input_range={tuple(self.input_range)}" if self.input_range else "")
            + (f", attack={self.attack}" if self.attack else ", no attack"),
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

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (NaN and inf written as strings)."""
        data = {name: getattr(self, name).tolist() for name in _ARRAYS}
        data["margin_lower"] = _encode(self.margin_lower)
        data["adversarial_examples"] = _encode(self.adversarial_examples)
        data.update(
            epsilon=self.epsilon,
            method=self.method,
            norm=self.norm,
            input_range=None if self.input_range is None else list(self.input_range),
            attack=self.attack,
            seconds=self.seconds,
            extra=self.extra,
            clean_accuracy=self.clean_accuracy,
            verified_accuracy=self.verified_accuracy,
            attack_accuracy=self.attack_accuracy,
            format="verinet.CertificationReport/1",
        )
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path) -> None:
        """Write the report as JSON atomically (a temp file, then a rename)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self.to_json())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def from_dict(cls, data: dict) -> CertificationReport:
        try:
            if data.get("format") != "verinet.CertificationReport/1":
                raise KeyError("format")
            return cls(
                verified=np.asarray(data["verified"], dtype=bool),
                falsified=np.asarray(data["falsified"], dtype=bool),
                unknown=np.asarray(data["unknown"], dtype=bool),
                margin_lower=_decode(data["margin_lower"]),
                adversarial_examples=_decode(data["adversarial_examples"]),
                labels=np.asarray(data["labels"], dtype=np.int64),
                predictions=np.asarray(data["predictions"], dtype=np.int64),
                epsilon=float(data["epsilon"]),
                method=str(data["method"]),
                norm=str(data["norm"]),
                input_range=None
                if data["input_range"] is None
                else tuple(data["input_range"]),
                attack=data["attack"],
                seconds=float(data["seconds"]),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise InvalidInputError(
                f"Not a valid verinet certification report: {exc}"
            ) from exc

    @classmethod
    def load(cls, path) -> CertificationReport:
        """Read a report written by ``save``.

        Raises:
            InvalidInputError: when the file is not a valid report.
        """
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"{path} is not a valid report (bad JSON: {exc})."
            ) from exc
        if not isinstance(data, dict):
            raise InvalidInputError(
                f"{path} is not a valid verinet certification report."
            )
        return cls.from_dict(data)


def _encode(array: np.ndarray) -> dict:
    flat = [
        x if np.isfinite(x) else str(x)
        for x in np.asarray(array, float).ravel().tolist()
    ]
    return {"shape": list(array.shape), "values": flat}


def _decode(data: dict) -> np.ndarray:
    values = np.asarray([float(v) for v in data["values"]], dtype=np.float64)
    return values.reshape(data["shape"])
