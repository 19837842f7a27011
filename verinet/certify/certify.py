"""``certify()``: sort every sample into verified, falsified or unknown."""

from __future__ import annotations

import hashlib
import time

import keras
import numpy as np
from keras import ops

from verinet import distributed
from verinet._validation import (
    check_batch_size,
    check_choice,
    check_number,
    check_x,
    check_y,
)
from verinet.attacks import FGSM, PGD, TargetedPGD
from verinet.bounds.api import (
    _model_dtype,
    _samples_in_budget,
    bound_batches,
    make_perturbation,
    margin_spec,
    resolve_method,
)
from verinet.bounds.graph import bound_model
from verinet.bounds.memory import no_grad
from verinet.bounds.methods import interval_pass
from verinet.bounds.perturbation import NORMS, LinfBall, f32_inside
from verinet.bounds.precision import ieee_float32
from verinet.certify.integrity import model_weights_sha256
from verinet.certify.radius import certified_radii, resolve_radius_max
from verinet.certify.report import CertificationReport
from verinet.complete.milp import check_milp_supported
from verinet.complete.stage import bab_stage, milp_stage
from verinet.errors import InvalidInputError, SoundnessError, UnsupportedLayerError

_ATTACKS = {"pgd": TargetedPGD, "fgsm": FGSM, None: None}
#: ``attack_options`` only the untargeted ``PGD`` takes; they select it.
_UNTARGETED_OPTIONS = frozenset({"loss", "random_start"})


def _make_attack(attack, model, epsilon, norm, input_range, options):
    """The attack object ``certify`` runs.

    ``"pgd"`` is ``TargetedPGD`` with its defaults (3 targets, 2 starts, 10
    steps), ``attack_options`` overriding them. Options that only the
    untargeted ``PGD`` takes (``loss``, ``random_start``) build that attack
    instead, with its former defaults (30 steps, 2 restarts). ``"fgsm"`` is
    ``FGSM``; an object passes through.
    """
    if attack is None or not isinstance(attack, str):
        return attack
    name = check_choice("attack", attack, tuple(k for k in _ATTACKS if k))
    options = dict(options or {})
    if name == "pgd" and _UNTARGETED_OPTIONS & options.keys():
        defaults = {"steps": 30, "restarts": 2}
        return PGD(
            model,
            epsilon,
            norm=norm,
            input_range=input_range,
            **{**defaults, **options},
        )
    return _ATTACKS[name](model, epsilon, norm=norm, input_range=input_range, **options)


_f32_inside = f32_inside  # the exact rounding, where certify's tests reach it


def _project(candidate, x, perturbation):
    """Counterexample candidates moved exactly into the perturbation set:
    ``(float32 points, inside mask)`` (see ``Perturbation.exact_points``)."""
    return perturbation.exact_points(candidate, x)


#: ``method`` values that run several stages and settle samples completely.
COMPLETE_METHODS = ("milp", "bab", "auto")
#: Per-sample seconds of the complete stage when ``timeout`` is not given.
DEFAULT_TIMEOUT = 10.0


def certify(
    model,
    x,
    y,
    epsilon,
    method="crown",
    attack="pgd",
    norm="linf",
    input_range=None,
    batch_size=256,
    verbose="auto",
    dtype=None,
    attack_options=None,
    timeout=None,
    time_budget=None,
    radius: bool = False,
    radius_max: float | None = None,
) -> CertificationReport:
    """Prove or refute robustness of each sample.

    A sample is **verified** when the bound method proves every input within
    ``epsilon`` keeps the correct label, **falsified** when the clean input is
    misclassified or the attack finds a real adversarial example (returned in
    the report), and **unknown** otherwise. The attack runs on verified
    samples too: if it ever breaks one, the bound is wrong and
    ``SoundnessError`` is raised.

    ``method="auto"`` runs stages, each only on the samples still unknown:
    the attack, IBP, CROWN, alpha-CROWN, then (on piecewise-linear networks
    under an L-inf ball) a complete stage: the exact MILP of each sample on
    small networks (up to 500 values), branch and bound on ReLU splits
    (beta-CROWN bounds, MILP at the leaves) on larger ones.
    ``method="milp"`` / ``"bab"`` is the attack, CROWN, then that complete
    stage. A complete stage settles a sample unless its ``timeout`` runs
    out. ``report.extra["settled_by"]`` names
    the stage that settled each sample (``"clean"`` for a misclassified
    input, ``None`` for unknown) and ``report.extra["stage_seconds"]`` the
    time of each stage.

    Every returned counterexample is a float32 point inside the perturbation
    set exactly (no tolerance; see ``in_perturbation_set``): the attack's
    output is projected into the set, and kept only if the model still
    misclassifies the projected point. The report records the SHA-256 of
    ``model``'s weights (``report.weights_sha256``), the bound dtype and the
    clean inputs, and passes ``report.validate()``.

    Under ``torchrun`` (``torch.distributed`` initialized with several
    ranks) the work is shared out: rank ``r`` of ``N`` attacks and bounds
    batches ``r, r + N, ...`` (exactly the batches one process would, so the
    attack, which reseeds for every batch, finds the same points), each
    later stage's samples are split the same way (whole bound chunks; single
    samples for the complete stage), and the results are gathered, so every
    rank returns the report one process gives. Every rank must pass the
    same model and data (checked). ``report.seconds`` and the stage times
    are the slowest rank's; only rank 0 shows progress bars (over its own
    share). See ``vn.distributed``.

    Args:
        model: a Keras model of verinet layers, or a stock Keras model that
            ``vn.convert`` can map.
        x: inputs ``(n, *input_shape)``.
        y: integer labels ``(n,)``.
        epsilon: perturbation radius in input units; with ``norm="linf"``
            also an array broadcastable to the input shape (one radius per
            feature; the report keeps it); or a ``vn.bounds.LinfBall`` /
            ``L2Ball`` carrying its own norm and input range.
        method: ``"ibp"``, ``"crown"``, ``"crown-ibp"``, ``"alpha-crown"``, a
            method object, or the complete ``"milp"``, ``"bab"``, ``"auto"``.
        attack: ``"pgd"``, ``"fgsm"``, an attack object with
            ``perturb(x, y)``, or ``None``.
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` valid input box (with
            ``norm="linf"`` either side may be a per-feature array).
        batch_size: samples bounded at a time.
        verbose: ``"auto"``, 0 or 1 (a Keras progress bar).
        dtype: ``"float32"`` or ``"float64"`` for the bounds.
        attack_options: keyword arguments for the attack (e.g. ``steps``).
        timeout: seconds the complete stage may spend on one sample
            (complete methods only; default 10).
        time_budget: seconds for the whole call (complete methods only;
            default no limit): stages that would start after it leave
            their samples unknown.
        radius: also find each sample's certified radius by bisection
            (``report.certified_radius``): the largest radius in
            ``[0, radius_max]`` the bound method proves (for ``"auto"`` and
            the complete methods: the last bound stage, alpha-CROWN or
            CROWN), to ``radius_max / 4096``, with one bound pass per step
            for each batch. Samples verified at ``epsilon`` search from
            ``epsilon`` up; the others below it. Needs one ``epsilon``
            number (not a per-feature array).
        radius_max: the largest radius searched (default ``4 * epsilon``,
            or the input range's width when ``epsilon`` is 0).

    Returns:
        A ``CertificationReport``.

    Example:
        >>> report = vn.certify(model, x_test, y_test, epsilon=0.05)
        >>> print(report.summary())
        >>> report = vn.certify(model, x_test, y_test, 0.05, method="auto")
    """
    start = time.perf_counter()
    distributed.warn_if_not_initialized("certify")
    x = check_x(model, x).astype(np.float32, copy=False)
    classes = model.outputs[0].shape[-1]
    y = check_y(y, len(x), classes)
    perturbation = make_perturbation(epsilon, norm, input_range, x, x.shape[1:])
    weights = model_weights_sha256(model)
    if distributed.is_distributed():
        distributed.check_same("model weights", weights)
        distributed.check_same("x and y", _digest(x, y))
    origin = getattr(model, "_verinet_onnx_origin", None)
    bound_dtype = _model_dtype(model, dtype)
    model, graph = bound_model(model)  # converted once, one graph
    stages, method_name = _stages(method, graph, perturbation, timeout, time_budget)
    if radius:
        if np.ndim(perturbation.epsilon) > 0:
            raise InvalidInputError(
                "radius=True bisects one radius per sample; epsilon is a "
                "per-feature array. Pass one number."
            )
        radius_max = resolve_radius_max(
            radius_max, perturbation.epsilon, perturbation.input_range
        )
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = None if time_budget is None else start + time_budget
    bound_method = stages[0]
    attacker = _make_attack(
        attack,
        model,
        perturbation.epsilon,
        perturbation.norm,
        perturbation.input_range,
        attack_options,
    )
    batch_size = check_batch_size(batch_size) or len(x)
    batches = range(0, len(x), batch_size)
    # Rank r of N: batches r, r + N, ... (all of them in one process).
    mine = distributed.shard(batches)
    index = np.concatenate(
        [np.arange(o, min(o + batch_size, len(x))) for o in mine] + [[]]
    ).astype(np.int64)
    show = (len(batches) > 1) if verbose == "auto" else bool(verbose)
    show = show and distributed.rank() == 0
    bar = keras.utils.Progbar(len(index), verbose=1 if show else 0, unit_name="sample")
    if show:
        bar.update(0)  # the bar shows at once, not after the first batch

    margins, predictions, adversarial, broken = [], [], [], []
    seconds = {"attack": 0.0, bound_method.name: 0.0}
    with ieee_float32():  # no TF32 in bounds, attacks or verdicts
        for offset in mine:
            xb, yb = x[offset : offset + batch_size], y[offset : offset + batch_size]
            logits = ops.convert_to_numpy(model(xb, training=False))
            predictions.append(logits.argmax(axis=1))
            tick = time.perf_counter()
            low, _ = bound_batches(
                model,
                xb,
                perturbation,
                bound_method,
                margin_spec(yb, classes),
                upper=False,
                dtype=dtype,
                graph=graph,
            )
            low[np.arange(len(yb)), yb] = np.inf
            margins.append(low)
            seconds[bound_method.name] += time.perf_counter() - tick
            tick = time.perf_counter()
            adv = np.full_like(xb, np.nan)
            hit = np.zeros(len(xb), dtype=bool)
            if attacker is not None:
                candidate = np.asarray(attacker.perturb(xb, yb), dtype=np.float32)
                # Exactly inside the set, then checked again on the model.
                candidate, inside = _project(candidate, xb, perturbation)
                adv_logits = model(candidate, training=False)
                adv_pred = ops.convert_to_numpy(adv_logits).argmax(axis=1)
                hit = (adv_pred != yb) & inside
                adv[hit] = candidate[hit]
            adversarial.append(adv)
            broken.append(hit)
            seconds["attack"] += time.perf_counter() - tick
            bar.add(len(xb))

        predictions, margin_lower, adversarial, attacked = distributed.gather_rows(
            len(x),
            index,
            [
                _join(predictions, (0,), np.int64),
                _join(margins, (0, classes), np.float32),
                _join(adversarial, (0, *x.shape[1:]), np.float32),
                _join(broken, (0,), bool),
            ],
        )
        correct = predictions == y
        settled_by = np.full(len(x), None, dtype=object)
        settled_by[attacked] = "attack"
        settled_by[~correct] = "clean"
        proven = correct & np.all(margin_lower > 0, axis=1)
        settled_by[proven] = bound_method.name
        for stage in stages[1:]:
            todo = np.flatnonzero(correct & ~attacked & ~proven)
            tick = time.perf_counter()
            seconds.setdefault(stage.name, 0.0)
            if not len(todo) or distributed.any_rank(
                deadline is not None and tick >= deadline
            ):
                continue
            if isinstance(stage, _CompleteStage):
                found = stage.run(
                    model,
                    graph,
                    x,
                    y,
                    todo,
                    perturbation,
                    margin_lower,
                    adversarial,
                    timeout,
                    deadline,
                    verbose,
                )
                attacked[todo[found]] = True
                settled_by[todo[found]] = stage.name
            else:
                low = _bound_stage(
                    model, graph, x, y, todo, perturbation, stage, classes, dtype
                )
                margin_lower[todo] = np.maximum(margin_lower[todo], low)
            newly = correct & np.all(margin_lower > 0, axis=1) & ~proven
            settled_by[newly] = stage.name
            proven |= newly
            seconds[stage.name] += time.perf_counter() - tick

    if np.any(proven & attacked):
        bad = np.flatnonzero(proven & attacked)
        raise SoundnessError(
            f"Soundness bug: {settled_by[bad[0]]} verified samples "
            f"{bad[:10].tolist()} but the attack found adversarial examples for "
            "them. Please report it with the model and inputs."
        )
    # Each stage's time: the slowest rank's (every rank has the same stages).
    every = distributed.all_gather(seconds)
    seconds = {name: max(times[name] for times in every) for name in seconds}
    misclassified = ~correct
    adversarial[misclassified] = x[misclassified]
    falsified = misclassified | attacked
    verified = proven
    unknown = ~(verified | falsified)
    settled_by[unknown] = None
    report = CertificationReport(
        verified=verified,
        falsified=falsified,
        unknown=unknown,
        margin_lower=margin_lower,
        adversarial_examples=adversarial,
        labels=y,
        predictions=predictions,
        epsilon=perturbation.epsilon,
        method=method_name,
        norm=perturbation.norm,
        input_range=perturbation.input_range,
        attack=attack
        if isinstance(attack, str) or attack is None
        else type(attack).__name__,
        seconds=distributed.max_over_ranks(time.perf_counter() - start),
        dtype=bound_dtype,
        weights_sha256=weights,
        inputs=np.array(x, dtype=np.float32),
    )
    if radius:
        tick = time.perf_counter()
        bounds_only = [s for s in stages if not isinstance(s, _CompleteStage)]
        radii = np.zeros(len(x))  # misclassified inputs: 0
        right = np.flatnonzero(correct)
        radii[right] = _radius_stage(
            model,
            graph,
            x[right],
            y[right],
            bounds_only[-1],
            perturbation,
            radius_max,
            verified[right],
            batch_size,
            dtype,
        )
        _check_radii(radii, x, adversarial, attacked & correct, perturbation.norm)
        report.extra["certified_radius"] = radii.tolist()
        report.extra["radius_max"] = radius_max
        report.extra["radius_method"] = bounds_only[-1].name
        report.extra["radius_seconds"] = round(
            distributed.max_over_ranks(time.perf_counter() - tick), 6
        )
        report.seconds = distributed.max_over_ranks(time.perf_counter() - start)
    if len(stages) > 1:
        report.extra["settled_by"] = settled_by.tolist()
        report.extra["stage_seconds"] = {k: round(v, 6) for k, v in seconds.items()}
    _record_origin(report, origin)
    try:
        report.validate()
    except InvalidInputError as exc:
        raise SoundnessError(
            f"verinet bug: certify produced an inconsistent report ({exc}). "
            "Please report it with the model and inputs."
        ) from exc
    return report


class _CompleteStage:
    """Settle each sample still unknown: the exact MILP (``"milp"``) or
    branch and bound on ReLU splits (``"bab"``; see ``verinet.complete``)."""

    def __init__(self, name: str):
        self.name = name

    def run(
        self,
        model,
        graph,
        x,
        y,
        todo,
        perturbation,
        margin_lower,
        adversarial,
        timeout,
        deadline,
        verbose,
    ):
        """Tighten ``margin_lower`` and fill ``adversarial`` for ``todo`` in
        place; return the mask (over ``todo``) of counterexamples found.

        Under torchrun each rank solves ``todo[rank::world_size]``."""
        show = verbose == 1 or verbose is True or (verbose == "auto" and len(todo) > 1)
        show = show and distributed.rank() == 0
        part = np.asarray(distributed.shard(range(len(todo))), dtype=np.int64)
        mine = todo[part]
        bar = keras.utils.Progbar(
            len(mine), verbose=1 if show else 0, unit_name=f"sample ({self.name})"
        )
        solve = milp_stage if self.name == "milp" else bab_stage
        outcome = solve(
            model,
            graph,
            x[mine],
            y[mine],
            perturbation,
            margin_lower[mine],
            timeout,
            deadline,
            bar,
        )
        margins, found, points = distributed.gather_rows(
            len(todo), part, [outcome.margins, outcome.found, outcome.adversarial]
        )
        margin_lower[todo] = np.maximum(margin_lower[todo], margins)
        adversarial[todo[found]] = points[found]
        return found


#: ``method="auto"`` solves the MILP of networks with at most this many
#: values (every node's outputs for one sample), branch and bound up to
#: ``_BAB_AUTO_LIMIT``, and stops at alpha-CROWN beyond.
_MILP_AUTO_LIMIT = 500
_BAB_AUTO_LIMIT = 200_000


def _check_radii(radii, x, adversarial, attacked, norm) -> None:
    """A proven radius must fall short of every counterexample's distance."""
    index = np.flatnonzero(attacked)
    if not len(index):
        return
    delta = (adversarial[index] - x[index]).reshape(len(index), -1)
    delta = delta.astype(np.float64)
    if norm == "linf":
        distance = np.max(np.abs(delta), axis=1)
    else:
        distance = np.sqrt(np.sum(delta * delta, axis=1))
    bad = index[radii[index] >= distance]
    if len(bad):
        raise SoundnessError(
            f"Soundness bug: certified radii {radii[bad[:5]].tolist()} of samples "
            f"{bad[:10].tolist()} reach their counterexamples. Please report it "
            "with the model and inputs."
        )


def _join(parts: list, empty: tuple, dtype) -> np.ndarray:
    """The batches' arrays end to end (an empty array of ``empty`` shape
    for a rank without batches)."""
    return np.concatenate(parts) if parts else np.zeros(empty, dtype=dtype)


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    """A short hash of the inputs and labels, to compare across ranks."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (x, y):
        digest.update(str((array.shape, array.dtype)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _bound_stage(model, graph, x, y, todo, perturbation, method, classes, dtype):
    """Lower margin bounds of the samples ``todo`` by a bound ``method``:
    in the chunks ``bound_batches`` would bound in one process (as many as
    fit the memory budget), rank ``r`` of ``N`` taking chunks ``r, r + N,
    ...``; returns ``(len(todo), classes)`` on every rank."""
    probe = todo[:1]
    fits = _samples_in_budget(
        graph,
        method,
        x[probe],
        perturbation,
        margin_spec(y[probe], classes),
        _model_dtype(model, dtype),
    )
    size, starts, index = distributed.shard_chunks(len(todo), min(len(todo), fits))
    lows = []
    for begin in starts:
        part = todo[begin : begin + size]
        low, _ = bound_batches(
            model,
            x[part],
            perturbation,
            method,
            margin_spec(y[part], classes),
            upper=False,
            dtype=dtype,
            batch_size=size,
            graph=graph,
        )
        low[np.arange(len(part)), y[part]] = np.inf
        lows.append(low)
    (low,) = distributed.gather_rows(
        len(todo), index, [_join(lows, (0, classes), np.float32)]
    )
    return low


def _radius_stage(
    model, graph, x, y, method, perturbation, radius_max, proven, batch_size, dtype
):
    """``certified_radii`` of every sample, in the batches it would use in
    one process, rank ``r`` of ``N`` taking batches ``r, r + N, ...``."""
    if not len(x):
        return np.zeros(0)
    probe = NORMS[perturbation.norm](radius_max, perturbation.input_range)
    fits = _samples_in_budget(graph, method, x, probe, None, _model_dtype(model, dtype))
    size, starts, index = distributed.shard_chunks(
        len(x), max(1, min(batch_size or len(x), fits))
    )
    radii = [
        certified_radii(
            model,
            graph,
            x[begin : begin + size],
            y[begin : begin + size],
            method,
            perturbation.norm,
            perturbation.input_range,
            radius_max,
            proven_at=float(perturbation.epsilon),
            proven=proven[begin : begin + size],
            batch_size=size,
            dtype=dtype,
        )
        for begin in starts
    ]
    (radii,) = distributed.gather_rows(len(x), index, [_join(radii, (0,), np.float64)])
    return radii


def _values(graph) -> int:
    """How many values the graph's nodes hold for one sample."""
    probe = np.zeros((1, *graph.input_shape), dtype=np.float32)
    with no_grad():
        bounds = interval_pass(graph, ops.convert_to_tensor(probe), LinfBall(0.0))
    return sum(int(np.prod(low.shape[1:])) for low, _ in bounds[1:])


def _stages(method, graph, perturbation, timeout, time_budget):
    """The bound stages (and complete stage) ``certify`` runs, and the
    method name its report records."""
    name = method.lower() if isinstance(method, str) else None
    if name not in COMPLETE_METHODS:
        if timeout is not None or time_budget is not None:
            raise InvalidInputError(
                "timeout and time_budget apply to the complete methods "
                f"{COMPLETE_METHODS}; method={method!r} bounds every sample once."
            )
        bound_method = resolve_method(method)
        return [bound_method], bound_method.name
    check_number("timeout", timeout, low=0, low_open=True, allow_none=True)
    check_number("time_budget", time_budget, low=0, low_open=True, allow_none=True)
    if name in ("milp", "bab"):
        if perturbation.norm != "linf":
            raise InvalidInputError(
                f"method={name!r} encodes an L-inf ball or a box exactly; an L2 "
                "ball is not linear. Use method='auto' or 'alpha-crown'."
            )
        check_milp_supported(graph)
        return [resolve_method("crown"), _CompleteStage(name)], name
    stages = [resolve_method(m) for m in ("ibp", "crown", "alpha-crown")]
    values = _values(graph)
    if perturbation.norm == "linf" and values <= _BAB_AUTO_LIMIT:
        try:
            check_milp_supported(graph)
        except UnsupportedLayerError:
            return stages, "auto"  # smooth activations: the bound stages only
        stages.append(_CompleteStage("milp" if values <= _MILP_AUTO_LIMIT else "bab"))
    return stages, "auto"


def _record_origin(report: CertificationReport, origin) -> None:
    """Note the ONNX file a model was imported from (see ``vn.from_onnx``).

    Only while the model still has the weights it was imported with: then
    the report also belongs to that file (``onnx_weights_sha256``), and a
    file whose weights no longer match its metadata is noted in
    ``report.extra["certificate_mismatch"]``.
    """
    if origin is None or origin.keras_sha256 != report.weights_sha256:
        return
    report.onnx_weights_sha256 = origin.onnx_sha256
    if origin.mismatch is not None:
        report.extra["certificate_mismatch"] = origin.mismatch
