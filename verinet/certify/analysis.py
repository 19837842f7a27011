"""``report.analyze()``: where a certification fails, and why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(repr=False)
class ReportAnalysis:
    """What a ``CertificationReport`` says, broken down.

    Attributes:
        per_class: ``{label: {"samples", "verified", "attacked",
            "misclassified", "unknown"}}`` counts per true label;
            ``attacked`` are correctly classified inputs the attack broke
            (real vulnerabilities at this radius), ``unknown`` the ones whose
            bound was too loose to decide.
        smallest_margin: ``(n,)`` each sample's smallest margin lower bound
            ``min_j (f_y - f_j)`` over the perturbation set (positive:
            verified), ``NaN`` for misclassified inputs.
        margin_histogram: ``(counts, edges)`` of ``smallest_margin`` over the
            correctly classified samples (``numpy.histogram``).
        least_certified: indices of the correctly classified samples the
            attack did not break, smallest margin bound first: the inputs
            closest to losing (or still lacking) their certificate.
        text: a short summary (also ``str(analysis)``).
    """

    per_class: dict
    smallest_margin: np.ndarray
    margin_histogram: tuple
    least_certified: np.ndarray
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"ReportAnalysis(classes={len(self.per_class)})\n{self.text}"

    def to_dict(self) -> dict:
        """JSON-ready: the counts, histogram, indices and text."""
        counts, edges = self.margin_histogram
        return {
            "per_class": {str(k): v for k, v in self.per_class.items()},
            "margin_histogram": {
                "counts": np.asarray(counts).tolist(),
                "edges": np.asarray(edges).tolist(),
            },
            "least_certified": np.asarray(self.least_certified).tolist(),
            "text": self.text,
        }


def _worst(per_class: dict, key: str):
    """``(label, count, samples)`` of the class with the most ``key``."""
    label = max(per_class, key=lambda k: (per_class[k][key], -k))
    return label, per_class[label][key], per_class[label]["samples"]


def analyze(report, top: int = 10, bins: int = 20) -> ReportAnalysis:
    """Break a report down per class, by margin, and list its weakest inputs.

    Args:
        report: a ``CertificationReport``.
        top: how many least certified inputs to list.
        bins: histogram bins of the smallest margin bounds.

    Returns:
        A ``ReportAnalysis``.
    """
    labels = np.asarray(report.labels)
    correct = np.asarray(report.predictions) == labels
    attacked = np.asarray(report.falsified) & correct
    margins = np.asarray(report.margin_lower, dtype=np.float64)
    smallest = np.where(correct, np.min(margins, axis=1), np.nan)
    per_class = {}
    for label in np.unique(labels).tolist():
        rows = labels == label
        per_class[int(label)] = {
            "samples": int(rows.sum()),
            "verified": int(np.sum(report.verified & rows)),
            "attacked": int(np.sum(attacked & rows)),
            "misclassified": int(np.sum(~correct & rows)),
            "unknown": int(np.sum(report.unknown & rows)),
        }
    finite = smallest[np.isfinite(smallest)]
    histogram = (
        np.histogram(finite, bins=bins)
        if finite.size
        else (
            np.zeros(bins, dtype=int),
            np.linspace(0.0, 1.0, bins + 1),
        )
    )
    candidates = np.flatnonzero(correct & ~attacked)
    order = candidates[np.argsort(smallest[candidates], kind="stable")]
    least = order[:top]

    from verinet.certify.report import _setting_text

    n = report.num_samples
    lines = [
        f"{n} samples at {report.norm} epsilon {_setting_text(report.epsilon)} "
        f"({report.method}):",
        f"  verified      {int(report.verified.sum()):>6}",
        f"  falsified     {int(report.falsified.sum()):>6}  "
        f"({int(attacked.sum())} broken by the attack: real vulnerabilities; "
        f"{int((~correct).sum())} misclassified)",
        f"  unknown       {int(report.unknown.sum()):>6}  (the bound was too loose "
        "and the attack found nothing: try a tighter method)",
    ]
    if per_class:
        for key, what in (("unknown", "unknown"), ("attacked", "broken by the attack")):
            label, count, samples = _worst(per_class, key)
            if count:
                lines.append(
                    f"  most {what}: class {label} ({count} of {samples} samples)"
                )
    if len(least):
        shown = ", ".join(f"{i} ({smallest[i]:+.3g})" for i in least[:5])
        lines.append(f"  least certified (smallest margin bound): {shown}")
    radii = report.certified_radius
    if radii is not None and correct.any():
        lines.append(
            f"  certified radius: median {np.median(radii[correct]):.4g} over "
            "correctly classified samples"
        )
    return ReportAnalysis(per_class, smallest, histogram, least, "\n".join(lines))
