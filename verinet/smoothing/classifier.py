"""``SmoothedClassifier``: Cohen et al.'s PREDICT and CERTIFY over a Keras model."""

from __future__ import annotations

import time

import keras
import numpy as np
import torch

from verinet import distributed
from verinet._validation import check_int, check_number, check_x, check_y
from verinet.bounds.precision import ieee_float32
from verinet.errors import InvalidInputError
from verinet.smoothing.report import ABSTAIN, SmoothingReport
from verinet.smoothing.sampling import (
    ESTIMATION,
    SELECTION,
    count_predictions,
    model_device,
    model_dtype,
    sample_seeds,
)
from verinet.smoothing.statistics import (
    abstain_p_value,
    certified_radius,
    lower_confidence_bound,
)

__all__ = ["SmoothedClassifier"]


class SmoothedClassifier:
    """A Gaussian-smoothed classifier (Cohen, Rosenfeld & Kolter 2019).

    ``g(x) = argmax_c P(f(x + e) = c)`` with ``e ~ N(0, sigma^2 I)``, where
    the base classifier ``f`` is the Keras model's argmax. ``predict``
    evaluates ``g`` and ``certify`` proves, with probability ``1 - alpha``
    over the noise, that ``g`` is constant within an L2 ball. The noise is
    added in input units, without clipping to any input range. The base
    model is best trained on noisy inputs of the same ``sigma``:
    ``model.compile(..., robust="smoothing", sigma=sigma)``
    (``vn.objectives.GaussianNoise(sigma)``).

    Args:
        model: a Keras classifier returning ``(batch, classes)`` logits or
            probabilities.
        sigma: the noise's standard deviation: a finite number > 0.
        num_classes: the number of classes; read from the model's output
            shape when ``None`` (or, for a model without one, from its first
            output).

    Raises:
        InvalidInputError: for a model that is not a Keras model, a ``sigma``
            that is not a finite number > 0, a model whose output is not
            ``(batch, classes)``, or a ``num_classes`` that disagrees with it.

    Example:
        >>> smoothed = vn.smoothing.SmoothedClassifier(model, sigma=0.25)
        >>> smoothed.predict(x_test[:5], n=1000, seed=0)
        array([ 6,  9,  3, -1,  7])
        >>> report = smoothed.certify(x_test, y_test, n0=100, n=100_000)
        >>> report.certified_accuracy([0.0, 0.25, 0.5])
    """

    def __init__(self, model, sigma: float, num_classes: int | None = None):
        if not isinstance(model, keras.layers.Layer):
            raise InvalidInputError(
                "SmoothedClassifier needs a Keras model returning (batch, classes) "
                f"scores, got {type(model).__name__}."
            )
        self.model = model
        self.sigma = check_number("sigma", sigma, low=0, low_open=True)
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes, minimum=2)
        declared = _declared_classes(model)
        if num_classes is not None and declared is not None and declared != num_classes:
            raise InvalidInputError(
                f"num_classes={num_classes}, but model {model.name!r} has "
                f"{declared} outputs."
            )
        self.num_classes = num_classes or declared

    def __repr__(self) -> str:
        return (
            f"SmoothedClassifier(model={self.model.name!r}, sigma={self.sigma:g}, "
            f"num_classes={self.num_classes})"
        )

    # -- the two algorithms -------------------------------------------------

    def predict(
        self,
        x,
        n: int = 1000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        seed: int | None = None,
        verbose="auto",
    ) -> np.ndarray:
        """Cohen et al.'s PREDICT: the smoothed class of each sample, or -1.

        Draws ``n`` noisy copies per sample and takes the two most frequent
        classes of the base model; when a two-sided binomial test of their
        counts at 1/2 has a p-value above ``alpha``, the sample abstains
        (-1). A returned class is wrong (is not ``g(x)``) with probability at
        most ``alpha``.

        Args:
            x: inputs ``(samples, *input_shape)``.
            n: noisy copies per sample, ``>= 1``.
            alpha: the error probability, in ``(0, 1)``.
            batch_size: noisy copies per model call.
            seed: an int for reproducible noise (same seed, ``batch_size``
                and device give the same result; each sample's noise comes
                from the seed and its index, see ``sample_seeds``), ``None``
                for fresh noise.
            verbose: 0 silent, 1 a progress bar over the samples, ``"auto"``
                a bar when there is more than one sample.

        Under ``torchrun`` the samples are shared out across the ranks and
        every rank returns all predictions (see ``certify``).

        Returns:
            int64 array ``(samples,)``: classes, ``ABSTAIN`` (-1) where the
            test is inconclusive.

        Raises:
            InvalidInputError: for inputs of the wrong shape or with NaN or
                infinite values, or an out-of-range ``n``, ``alpha``,
                ``batch_size`` or ``seed``.

        Example:
            >>> smoothed.predict(x_test[:3], n=1000, seed=0)
            array([6, 9, -1])
        """
        x = check_x(self.model, x)
        n = check_int("n", n)
        alpha = _check_alpha(alpha)
        batch_size = check_int("batch_size", batch_size)
        seed = _shared_seed(_check_seed(seed))
        self._resolve_classes(x)
        mine = _my_samples(len(x))
        bar = _progress_bar(len(mine), verbose)
        counts = self._counts(
            x[mine],
            n,
            batch_size,
            sample_seeds(seed, mine, SELECTION),
            lambda drawn: bar.update(drawn // n),
        )
        (counts,) = distributed.gather_rows(len(x), mine, [counts])
        order = np.argsort(-counts, axis=1, kind="stable")
        predictions = np.full(len(x), ABSTAIN, dtype=np.int64)
        for i, (top, runner_up) in enumerate(order[:, :2]):
            if abstain_p_value(counts[i, top], counts[i, runner_up]) <= alpha:
                predictions[i] = top
        return predictions

    def certify(
        self,
        x,
        y,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        seed: int | None = None,
        verbose=1,
    ) -> SmoothingReport:
        """Cohen et al.'s CERTIFY: a class and a certified L2 radius per sample.

        ``n0`` noisy copies pick the candidate class ``cA`` (the most
        frequent); ``n`` fresh copies count it ``k`` times; ``pA_lower`` is
        the one-sided ``1 - alpha`` Clopper-Pearson lower bound on
        ``P(f(x + e) = cA)`` (the lower end of the two-sided exact interval
        at level ``1 - 2 * alpha``). When ``pA_lower > 1/2`` the sample gets
        ``cA`` and the radius ``sigma * Phi^-1(pA_lower)``; otherwise it
        abstains: prediction ``ABSTAIN`` (-1) and radius 0.0. With
        probability at least ``1 - alpha`` per sample, ``g`` predicts the
        returned class everywhere within the radius. The radius certifies
        the prediction whatever ``y`` says; ``report.certified_accuracy``
        compares with ``y``.

        Args:
            x: inputs ``(samples, *input_shape)``.
            y: integer labels ``(samples,)``.
            n0: selection copies per sample, ``>= 1``.
            n: estimation copies per sample, ``>= 1``.
            alpha: the failure probability of each certificate, in ``(0, 1)``.
            batch_size: noisy copies per model call.
            seed: an int for reproducible noise (same seed, ``batch_size``
                and device give the same report), ``None`` for fresh noise.
                Sample ``i``'s selection and estimation noise come from
                ``(seed, i)`` alone (``sample_seeds``), so they do not
                depend on the other samples or on which rank draws them.
            verbose: 0 silent, 1 a progress bar over the samples, ``"auto"``
                a bar when there is more than one sample.

        Under ``torchrun`` (``torch.distributed`` initialized with several
        ranks) rank ``r`` of ``N`` takes samples ``r, r + N, ...``; the
        counts are gathered and every rank returns the report one process
        gives (``seed=None``: rank 0's fresh seed is shared). Only rank 0
        shows a progress bar; ``report.seconds`` is the slowest rank's.

        Returns:
            A ``SmoothingReport``.

        Raises:
            InvalidInputError: for inputs of the wrong shape or with NaN or
                infinite values, labels that do not match them, or an
                out-of-range ``n0``, ``n``, ``alpha``, ``batch_size`` or
                ``seed``.

        Example:
            >>> report = smoothed.certify(x_test, y_test, n0=100, n=100_000)
            >>> report.radius[:3]
            array([0.61, 0.0, 0.37])
        """
        start = time.perf_counter()
        distributed.warn_if_not_initialized("SmoothedClassifier.certify")
        x = check_x(self.model, x)
        n0, n = check_int("n0", n0), check_int("n", n)
        alpha = _check_alpha(alpha)
        batch_size = check_int("batch_size", batch_size)
        seed = _shared_seed(_check_seed(seed))
        self._resolve_classes(x)
        labels = check_y(y, len(x), self.num_classes)
        mine = _my_samples(len(x))
        bar = _progress_bar(len(mine), verbose)
        # Two streams per sample: the estimation copies are independent of
        # the selection copies (progress counts both, in samples' worth).
        selection = self._counts(
            x[mine],
            n0,
            batch_size,
            sample_seeds(seed, mine, SELECTION),
            lambda d: bar.update(d // (n0 + n)),
        )
        candidate = selection.argmax(axis=1)
        counts = self._counts(
            x[mine],
            n,
            batch_size,
            sample_seeds(seed, mine, ESTIMATION),
            lambda d: bar.update((len(mine) * n0 + d) // (n0 + n)),
        )
        top_count = counts[np.arange(len(mine)), candidate]
        candidate, top_count = distributed.gather_rows(
            len(x), mine, [candidate, top_count]
        )
        p_lower = lower_confidence_bound(top_count, n, alpha)
        certified = p_lower > 0.5
        return SmoothingReport(
            prediction=np.where(certified, candidate, ABSTAIN),
            radius=certified_radius(p_lower, self.sigma),
            labels=labels,
            candidate=candidate,
            top_count=top_count,
            p_lower=p_lower,
            sigma=self.sigma,
            n=n,
            n0=n0,
            alpha=alpha,
            seconds=distributed.max_over_ranks(time.perf_counter() - start),
        )

    # -- sampling -------------------------------------------------------------

    def _resolve_classes(self, x: np.ndarray) -> None:
        """Read ``num_classes`` from one clean output when the model has no
        declared output shape."""
        if self.num_classes is not None:
            return
        with torch.no_grad():
            scores = self.model(x[:1], training=False)
        if len(scores.shape) != 2 or scores.shape[1] < 2:
            raise InvalidInputError(
                "SmoothedClassifier needs a model returning (batch, classes) "
                f"scores with classes >= 2; it returned shape {tuple(scores.shape)}."
            )
        self.num_classes = int(scores.shape[1])

    def _counts(self, x, n, batch_size, seeds, progress) -> np.ndarray:
        """Counts ``(samples, classes)`` of ``n`` noisy copies per sample,
        sample ``i``'s noise from ``seeds[i]``, as int64 numpy."""
        self._resolve_classes(x)
        inputs = torch.as_tensor(
            x, dtype=model_dtype(self.model), device=model_device(self.model)
        )
        with torch.no_grad(), ieee_float32():
            counts = count_predictions(
                self.model,
                inputs,
                self.sigma,
                n,
                self.num_classes,
                batch_size,
                seeds,
                progress,
            )
        return counts.cpu().numpy()


def _declared_classes(model) -> int | None:
    """The model's declared number of outputs, ``None`` if it declares none."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    shape = tuple(outputs[0].shape)
    if len(outputs) != 1 or len(shape) != 2 or (shape[1] or 2) < 2:
        raise InvalidInputError(
            f"SmoothedClassifier needs a classifier with one (batch, classes) "
            f"output, classes >= 2; model {model.name!r} outputs "
            f"{[tuple(o.shape) for o in outputs]}."
        )
    return shape[1]


def _check_alpha(alpha) -> float:
    return check_number("alpha", alpha, low=0, high=1, low_open=True, high_open=True)


def _check_seed(seed) -> int | None:
    return None if seed is None else check_int("seed", seed, minimum=0)


def _shared_seed(seed: int | None) -> int:
    """The base seed: as given, or fresh from the OS for ``None`` (rank 0's,
    under torchrun, so every rank draws from the same streams)."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    return distributed.broadcast(seed)


def _my_samples(count: int) -> np.ndarray:
    """This rank's sample indices: ``r, r + N, ...`` (all in one process)."""
    return np.asarray(distributed.shard(range(count)), dtype=np.int64)


def _progress_bar(samples: int, verbose) -> keras.utils.Progbar:
    show = samples > 1 if verbose == "auto" else bool(verbose)
    show = show and distributed.rank() == 0
    bar = keras.utils.Progbar(samples, verbose=1 if show else 0, unit_name="sample")
    if show:
        bar.update(0)
    return bar
