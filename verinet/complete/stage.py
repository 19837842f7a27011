"""The complete stages of ``certify``: settle samples the bounds left unknown,
by exact MILP (``milp_stage``) or branch and bound (``bab_stage``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from keras import ops

from verinet.bounds.memory import no_grad
from verinet.bounds.methods import crown_pass
from verinet.bounds.precision import float64_promotion
from verinet.complete.bab import relu_bab
from verinet.complete.milp import MILPEncoding


@dataclass
class CompleteOutcome:
    """What a complete stage found for the samples it was given.

    Attributes:
        margins: ``(k, classes)`` proven lower bounds of ``f_y - f_j``
            (``-inf`` where nothing was proven, ``+inf`` at ``j = y``).
        adversarial: ``(k, *input_shape)`` counterexamples (NaN where none).
        found: ``(k,)`` whether a counterexample was found.
        timed_out: ``(k,)`` whether the sample's time ran out.
        seconds: ``(k,)`` time spent on each sample.
    """

    margins: np.ndarray
    adversarial: np.ndarray
    found: np.ndarray
    timed_out: np.ndarray
    seconds: np.ndarray
    binaries: list = field(default_factory=list)


def node_bounds64(graph, x, perturbation):
    """CROWN bounds of every node for one sample, in float64 numpy arrays."""
    with float64_promotion(), no_grad():
        xb = ops.convert_to_tensor(np.asarray(x, dtype=np.float64), dtype="float64")
        bounds = crown_pass(graph, xb, perturbation)
        return [tuple(ops.convert_to_numpy(t) for t in pair) for pair in bounds]


def milp_stage(
    model,
    graph,
    x,
    y,
    perturbation,
    margins,
    timeout,
    deadline=None,
    progress=None,
) -> CompleteOutcome:
    """Solve the MILP of each sample for every margin not yet proven.

    Margins are tried from the least proven: a proven optimum above zero
    settles that class; a negative optimum is a candidate counterexample,
    kept only when the float32 model misclassifies the point after it is
    moved exactly into the perturbation set.

    Args:
        model: the Keras model the graph was built from.
        graph: its ``BoundGraph`` (every layer MILP-encodable).
        x: ``(k, *input_shape)`` float32 inputs; ``y``: ``(k,)`` labels.
        perturbation: the input set.
        margins: ``(k, classes)`` lower bounds proven so far.
        timeout: seconds per sample.
        deadline: optional ``time.perf_counter()`` value to stop at.
        progress: optional Keras ``Progbar`` advanced once per sample.

    Returns:
        A ``CompleteOutcome``.
    """
    k, classes = margins.shape
    out_margins = np.array(margins, dtype=np.float64)
    adversarial = np.full(x.shape, np.nan, dtype=np.float32)
    found = np.zeros(k, dtype=bool)
    timed_out = np.zeros(k, dtype=bool)
    seconds = np.zeros(k)
    binaries = []
    for s in range(k):
        started = time.perf_counter()
        stop = started + timeout
        if deadline is not None:
            stop = min(stop, deadline)
        if time.perf_counter() >= stop:
            timed_out[s] = True
            if progress is not None:
                progress.add(1)
            continue
        xs = x[s : s + 1]
        enc = MILPEncoding(graph, node_bounds64(graph, xs, perturbation))
        binaries.append(enc.binaries)
        open_classes = [
            j for j in np.argsort(margins[s]) if j != y[s] and margins[s, j] <= 0
        ]
        for j in open_classes:
            left = stop - time.perf_counter()
            if left <= 0:
                timed_out[s] = True
                break
            c = np.zeros(classes)
            c[y[s]], c[j] = 1.0, -1.0
            result = enc.solve(c, time_limit=left)
            out_margins[s, j] = max(out_margins[s, j], result.lower)
            if result.status == "timeout" and result.lower <= 0:
                timed_out[s] = True
            if result.value < 0 and result.point is not None:
                point = result.point.reshape(xs.shape)
                adv = _confirmed(model, point, xs, y[s], perturbation)
                if adv is not None:
                    adversarial[s], found[s] = adv, True
                    break
        seconds[s] = time.perf_counter() - started
        if progress is not None:
            progress.add(1)
    return CompleteOutcome(
        out_margins, adversarial, found, timed_out, seconds, binaries
    )


def _confirmed(model, point, x, label, perturbation):
    """The float32 point, exactly in the set, if the model misclassifies it."""
    candidate, inside = perturbation.exact_points(point.astype(np.float32), x)
    if not inside[0]:
        return None
    pred = ops.convert_to_numpy(model(candidate, training=False)).argmax(axis=1)
    return candidate[0] if pred[0] != label else None


def bab_stage(
    model,
    graph,
    x,
    y,
    perturbation,
    margins,
    timeout,
    deadline=None,
    progress=None,
    **options,
) -> CompleteOutcome:
    """Branch and bound (``relu_bab``) on each sample for the margins not yet
    proven; arguments as in ``milp_stage``, ``options`` go to ``relu_bab``."""
    k, classes = margins.shape
    out_margins = np.array(margins, dtype=np.float64)
    adversarial = np.full(x.shape, np.nan, dtype=np.float32)
    found = np.zeros(k, dtype=bool)
    timed_out = np.zeros(k, dtype=bool)
    seconds = np.zeros(k)
    for s in range(k):
        started = time.perf_counter()
        stop = (
            started + timeout if deadline is None else min(started + timeout, deadline)
        )
        open_classes = [j for j in range(classes) if j != y[s] and margins[s, j] <= 0]
        if open_classes and time.perf_counter() < stop:
            spec = np.zeros((len(open_classes), classes))
            spec[:, y[s]] = 1.0
            spec[np.arange(len(open_classes)), open_classes] = -1.0
            xs, label = x[s : s + 1], y[s]
            result = relu_bab(
                graph,
                xs,
                perturbation,
                spec,
                lambda point, xs=xs, label=label: _confirmed(
                    model, point, xs, label, perturbation
                ),
                stop - time.perf_counter(),
                **options,
            )
            if result.status == "verified":
                cols = np.asarray(open_classes)
                out_margins[s, cols] = np.maximum(out_margins[s, cols], result.lower)
            elif result.status == "falsified":
                adversarial[s], found[s] = result.counterexample, True
            else:
                timed_out[s] = True
        elif open_classes:
            timed_out[s] = True
        seconds[s] = time.perf_counter() - started
        if progress is not None:
            progress.add(1)
    return CompleteOutcome(out_margins, adversarial, found, timed_out, seconds)
