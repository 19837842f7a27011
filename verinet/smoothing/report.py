"""The result of ``SmoothedClassifier.certify``: predictions and L2 radii."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verinet.errors import InvalidInputError

__all__ = ["ABSTAIN", "FORMAT", "SmoothingReport"]

ABSTAIN = -1
"""The prediction of a sample on which the smoothed classifier abstains."""

FORMAT = "verinet.SmoothingReport/1"

_ARRAYS = ("prediction", "radius", "labels", "candidate", "top_count", "p_lower")


@dataclass(repr=False)
class SmoothingReport:
    """Per-sample randomized-smoothing certificates (Cohen et al.'s CERTIFY).

    With probability at least ``1 - alpha`` (per sample, over the noise),
    the smoothed classifier predicts ``prediction[i]`` everywhere in the L2
    ball of radius ``radius[i]`` around sample ``i``. The radius certifies
    the prediction, whatever the label; ``certified_accuracy`` compares with
    ``labels``.

    Attributes:
        prediction: ``(n_samples,)`` int64, the certified class, or
            ``ABSTAIN`` (-1) where the lower bound on the top class's
            probability is not above 1/2.
        radius: ``(n_samples,)`` float64, the certified L2 radius of the
            prediction; 0.0 where it abstains.
        labels: ``(n_samples,)`` int64, the true labels.
        candidate: ``(n_samples,)`` int64, the class the ``n0`` selection
            draws picked (also where the sample then abstains).
        top_count: ``(n_samples,)`` int64, how many of the ``n`` estimation
            draws the base model gave ``candidate``.
        p_lower: ``(n_samples,)`` float64, the one-sided ``1 - alpha``
            Clopper-Pearson lower bound on that class's probability.
        sigma: the noise's standard deviation, in input units.
        n0, n: selection and estimation draws per sample.
        alpha: the failure probability of each certificate.
        seconds: wall time of the certification.

    Example:
        >>> report = smoothed.certify(x_test, y_test, n=100_000)
        >>> report.certified_accuracy([0.0, 0.25, 0.5])
        array([0.82, 0.71, 0.55])
    """

    prediction: np.ndarray
    radius: np.ndarray
    labels: np.ndarray
    candidate: np.ndarray
    top_count: np.ndarray
    p_lower: np.ndarray
    sigma: float
    n: int
    n0: int
    alpha: float
    seconds: float = 0.0

    def __post_init__(self):
        for name in _ARRAYS:
            dtype = np.float64 if name in ("radius", "p_lower") else np.int64
            setattr(self, name, np.asarray(getattr(self, name), dtype=dtype))
        shapes = {getattr(self, name).shape for name in _ARRAYS}
        if len(shapes) != 1 or self.prediction.ndim != 1:
            raise InvalidInputError(
                f"SmoothingReport's arrays {', '.join(_ARRAYS)} must be 1-D of "
                f"one length; got shapes {sorted(shapes)}."
            )

    # -- figures -----------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def seconds_per_sample(self) -> float:
        """Wall time per certified sample."""
        return self.seconds / max(self.num_samples, 1)

    @property
    def abstained(self) -> np.ndarray:
        """Boolean ``(n_samples,)``: where the smoothed classifier abstains."""
        return self.prediction == ABSTAIN

    def certified_accuracy(self, radii):
        """Fraction of samples predicted correctly with a radius ``>= r``.

        Abstentions never count (their prediction is -1), so
        ``certified_accuracy(0.0)`` is the smoothed classifier's accuracy.

        Args:
            radii: one L2 radius (a number) or an array of radii, each
                ``>= 0`` (``inf`` allowed).

        Returns:
            A float for a number, else a float64 array shaped like
            ``radii``; non-increasing in the radius.

        Raises:
            InvalidInputError: for a radius that is negative, NaN or not a
                number.

        Example:
            >>> report.certified_accuracy(0.5)
            0.55
        """
        try:
            r = np.asarray(radii, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"radii must be a number or an array of numbers, got {radii!r}."
            ) from exc
        if np.any(np.isnan(r)) or np.any(r < 0):
            raise InvalidInputError(f"radii must be >= 0 (not NaN), got {radii!r}.")
        if self.num_samples == 0:
            result = np.zeros(r.shape)
        else:
            correct = self.prediction == self.labels
            ok = correct[:, None] & (self.radius[:, None] >= r.reshape(-1)[None, :])
            result = ok.mean(axis=0).reshape(r.shape)
        return float(result) if r.ndim == 0 else result

    def plot(self, **kwargs):
        """Draw certified accuracy against the L2 radius (see
        ``vn.plot.smoothing_certified_accuracy``).

        Args:
            **kwargs: ``radii`` and ``ax``, passed on.

        Returns:
            The ``matplotlib.figure.Figure``.

        Example:
            >>> report.plot().savefig("smoothing.png")
        """
        from verinet.plot import smoothing_certified_accuracy

        return smoothing_certified_accuracy(self, **kwargs)

    # -- display -----------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"SmoothingReport(sigma={self.sigma:g}, n={self.n}, n0={self.n0}, "
            f"alpha={self.alpha:g}, samples={self.num_samples}, "
            f"abstained={int(self.abstained.sum())}, "
            f"accuracy={self.certified_accuracy(0.0):.4f})"
        )

    def summary(self, radii=(0.0, 0.25, 0.5, 0.75, 1.0)) -> str:
        """A short table: certified accuracy at each radius, and the time.

        Args:
            radii: the L2 radii to list.

        Returns:
            The text.

        Example:
            >>> print(report.summary())
        """
        rows = [
            f"Randomized smoothing: sigma={self.sigma:g}, n0={self.n0}, "
            f"n={self.n}, alpha={self.alpha:g}",
            f"  samples            {self.num_samples}",
            f"  abstained          {int(self.abstained.sum())}",
        ]
        for r in radii:
            rows.append(
                f"  certified @ {float(r):<6g} {self.certified_accuracy(float(r)):.4f}"
            )
        rows.append(
            f"  time               {self.seconds:.2f} s "
            f"({self.seconds_per_sample:.3f} s/sample)"
        )
        return "\n".join(rows)

    # -- serialisation -----------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (format ``verinet.SmoothingReport/1``).

        Keys: ``format``, ``summary`` (samples, abstained, accuracy),
        the settings (``sigma``, ``n0``, ``n``, ``alpha``), ``seconds``,
        ``seconds_per_sample``, then each per-sample array as a list.

        Returns:
            The dictionary (``json.dumps`` writes it as is).

        Example:
            >>> json.dumps(report.to_dict())
        """
        return {
            "format": FORMAT,
            "summary": {
                "samples": self.num_samples,
                "abstained": int(self.abstained.sum()),
                "accuracy": self.certified_accuracy(0.0),
            },
            "sigma": float(self.sigma),
            "n0": int(self.n0),
            "n": int(self.n),
            "alpha": float(self.alpha),
            "seconds": float(self.seconds),
            "seconds_per_sample": self.seconds_per_sample,
            **{name: getattr(self, name).tolist() for name in _ARRAYS},
        }

    @classmethod
    def from_dict(cls, data: dict) -> SmoothingReport:
        """Rebuild a report from ``to_dict()`` output.

        Args:
            data: the dictionary.

        Returns:
            The report.

        Raises:
            InvalidInputError: for another format or missing keys.

        Example:
            >>> vn.smoothing.SmoothingReport.from_dict(report.to_dict())
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data)
            raise InvalidInputError(f"Not a {FORMAT} dictionary (format {found!r}).")
        keys = (*_ARRAYS, "sigma", "n", "n0", "alpha", "seconds")
        missing = [k for k in keys if k not in data]
        if missing:
            raise InvalidInputError(f"SmoothingReport dictionary lacks {missing}.")
        return cls(**{k: data[k] for k in keys})
