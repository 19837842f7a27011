"""``vn.verify``: decide a VNN-LIB property of an ONNX network.

The answer is ``"unsat"`` only when bounds prove that no input of any
region yields outputs meeting any spec; ``"sat"`` only with a counterexample
that onnxruntime itself confirms (in float32, on the file); ``"unknown"``
otherwise. The search is: concrete points (centre, random samples), bounds on
the whole box, a PGD attack, then input splitting (branch and bound on the
widest input) until every sub-box is proven or the time runs out. Every stage
checks the deadline (PGD before each of its steps), so once the time is up
the answer comes after at most one more model evaluation or batch of bounds.

Networks with more than ``INPUT_SPLIT_MAX`` inputs, where splitting the
input box gains little, go instead to branch and bound on ReLU splits
(beta-CROWN bounds in float64, the exact MILP at the leaves; see
``verinet.complete``) once the whole box is not proven.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from keras import ops

from verinet._validation import check_choice
from verinet.attacks.pgd import ascent
from verinet.bounds.api import resolve_method
from verinet.bounds.graph import BoundGraph
from verinet.bounds.perturbation import Box
from verinet.bounds.precision import float64_promotion, ieee_float32
from verinet.complete.bab import relu_bab, start_bounds
from verinet.complete.milp import check_milp_supported
from verinet.errors import InvalidInputError, UnsupportedLayerError, VnnlibError
from verinet.vnnlib.parser import Property, Region, read

STATUSES = ("sat", "unsat", "unknown")
#: Networks with at most this many inputs are verified by splitting the input
#: box; larger ones by branch and bound on ReLU splits (when every layer is
#: piecewise linear).
INPUT_SPLIT_MAX = 10
#: Sub-boxes kept waiting at most; beyond this the answer is "unknown".
MAX_OPEN_BOXES = 200_000


class VerificationResult(str):
    """The answer of ``verify``: a string ``"sat"``, ``"unsat"`` or
    ``"unknown"`` that also carries the evidence.

    Attributes:
        status: the same string.
        counterexample: for ``"sat"``, the input (ONNX input shape, float32)
            that onnxruntime confirmed; else ``None``.
        output: onnxruntime's output for it (flat), or ``None``.
        seconds: wall time.
        detail: a short explanation.

    Example:
        >>> result = vn.verify("net.onnx", "prop.vnnlib")
        >>> result == "sat", result.counterexample
    """

    def __new__(cls, status, counterexample=None, output=None, seconds=0.0, detail=""):
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}.")
        obj = super().__new__(cls, status)
        obj.status = status
        obj.counterexample = counterexample
        obj.output = output
        obj.seconds = seconds
        obj.detail = detail
        return obj

    def vnncomp(self) -> str:
        """The result in VNN-COMP's results-file format."""
        if self.status != "sat":
            return self.status + "\n"
        pairs = [f"(X_{i} {v!r})" for i, v in enumerate(_floats(self.counterexample))]
        pairs += [f"(Y_{j} {v!r})" for j, v in enumerate(_floats(self.output))]
        return "sat\n(" + "\n ".join(pairs) + ")\n"


def _floats(array):
    return [float(v) for v in np.asarray(array, dtype=np.float64).ravel()]


class _Problem:
    """One network and property, with the tools to bound, attack and confirm."""

    def __init__(self, model, session, method, tolerance, dtype, complete=True):
        self.model = model
        self.complete = complete
        self.graph = BoundGraph(model)
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.shape = tuple(model.inputs[0].shape[1:])
        self.method = method
        self.tolerance = tolerance
        self.dtype = dtype
        self.relu_splits = _relu_splits_apply(self.graph, self.shape)

    # -- concrete evaluation ------------------------------------------------

    def outputs(self, x_flat: np.ndarray) -> np.ndarray:
        """Keras outputs (flat, float64) for flat inputs ``(k, n)``."""
        x = x_flat.reshape(-1, *self.shape).astype(np.float32)
        with torch.no_grad():
            y = self.model(x, training=False)
        return ops.convert_to_numpy(y).reshape(len(x), -1).astype(np.float64)

    def confirm(self, x_flat: np.ndarray, region: Region):
        """``(x, y)`` if onnxruntime confirms ``x`` as a counterexample."""
        x = _inside(np.asarray(x_flat, dtype=np.float64), region)
        if x is None:
            return None
        y = self.session.run(None, {self.input_name: x.reshape(1, *self.shape)})[0]
        y = np.asarray(y, dtype=np.float64).ravel()
        if any(spec.violated_by(y) for spec in region.specs):
            return x.reshape(self.shape), y
        return None

    def try_points(self, points: np.ndarray, region: Region):
        """Confirm the first of ``points`` whose Keras outputs look violating."""
        scores = _violation(self.outputs(points), region.specs)
        for k in np.argsort(scores.min(axis=1)):
            if scores[k].min() > 0:
                break
            found = self.confirm(points[k], region)
            if found is not None:
                return found
        return None

    # -- bounds -------------------------------------------------------------

    def proven(self, lower: np.ndarray, upper: np.ndarray, region: Region):
        """``(boxes, specs)`` booleans: spec impossible on box (by bounds)."""
        rows = [spec.A for spec in region.specs]
        A = np.concatenate(rows) if rows else np.zeros((0, 1))
        batch = len(lower)
        lo = ops.convert_to_tensor(lower.reshape(batch, *self.shape), dtype=self.dtype)
        up = ops.convert_to_tensor(upper.reshape(batch, *self.shape), dtype=self.dtype)
        C = ops.convert_to_tensor(
            np.broadcast_to(A, (batch, *A.shape)).copy(), dtype=self.dtype
        )
        with torch.no_grad(), float64_promotion(self.dtype == "float64"):
            low, _ = self.method.bounds(
                self.graph, (lo + up) / 2, Box(lo, up), C, lower=True, upper=False
            )
        low = ops.convert_to_numpy(low).astype(np.float64)
        result = np.zeros((batch, len(region.specs)), dtype=bool)
        start = 0
        for s, spec in enumerate(region.specs):
            k = len(spec.b)
            margin = self.tolerance * (1.0 + np.abs(spec.b))
            # A row that can never hold makes the whole conjunction impossible.
            impossible = low[:, start : start + k] > spec.b + margin
            result[:, s] = np.any(impossible, axis=1)
            start += k
        return result

    # -- attack -------------------------------------------------------------

    def pgd(self, region: Region, specs, steps=50, restarts=4, seed=0, deadline=None):
        """Projected sign-gradient descent on each spec's violation score.

        Gives up (``None``) once ``time.perf_counter()`` passes ``deadline``,
        checked before every step and every confirmation.
        """
        n = len(region.lower)
        lo = ops.convert_to_tensor(region.lower, dtype="float32")
        hi = ops.convert_to_tensor(region.upper, dtype="float32")
        generator = torch.Generator().manual_seed(seed)
        A, b, mask = _padded(specs)
        index = np.tile(np.arange(len(specs)), restarts)
        noise = torch.rand((len(index), n), generator=generator).to(lo.device)
        x = lo + (hi - lo) * noise
        x[: len(specs)] = (lo + hi) / 2
        step = (hi - lo) * 2.5 / (2 * steps)
        A_t, b_t, mask_t = (ops.convert_to_tensor(a[index]) for a in (A, b, mask))
        A_t, b_t = A_t.float(), b_t.float()

        def objective(z):
            y = self.model(z.reshape(-1, *self.shape), training=False)
            score = torch.einsum("bkm,bm->bk", A_t, y.reshape(len(z), -1)) - b_t
            score = torch.where(mask_t, score, torch.full_like(score, -torch.inf))
            worst = score.max(dim=1).values  # <= 0: every row of a spec holds
            return -worst, worst

        iterates = ascent(
            objective, x, None, Box(lo, hi), steps, step, stop=lambda: _past(deadline)
        )
        for z, worst in iterates:
            for k in torch.nonzero(worst <= 0).ravel().tolist():
                if _past(deadline):
                    return None
                found = self.confirm(z[k].cpu().numpy(), region)
                if found is not None:
                    return found
        return None


def _relu_splits_apply(graph, shape) -> bool:
    """Branch and bound on ReLU splits rather than input splitting: more
    than ``INPUT_SPLIT_MAX`` inputs and a network the MILP can encode."""
    if int(np.prod(shape)) <= INPUT_SPLIT_MAX:
        return False
    try:
        check_milp_supported(graph)
    except UnsupportedLayerError:
        return False
    return any(getattr(n.rule, "piecewise_linear", False) for n in graph.nodes[1:])


def _past(deadline) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _padded(specs):
    rows = max(len(s.b) for s in specs)
    m = specs[0].A.shape[1]
    A = np.zeros((len(specs), rows, m))
    b = np.zeros((len(specs), rows))
    mask = np.zeros((len(specs), rows), dtype=bool)
    for i, s in enumerate(specs):
        A[i, : len(s.b)], b[i, : len(s.b)], mask[i, : len(s.b)] = s.A, s.b, True
    return A, b, mask


def _violation(y: np.ndarray, specs) -> np.ndarray:
    """``(points, specs)``: max over rows of ``A y - b`` (<= 0: violated)."""
    out = np.empty((len(y), len(specs)))
    for s, spec in enumerate(specs):
        if len(spec.b) == 0:
            out[:, s] = -np.inf
        else:
            out[:, s] = np.max(y @ spec.A.T - spec.b, axis=1)
    return out


def _inside(x: np.ndarray, region: Region):
    """``x`` as float32 nudged into the box (strictness included), or None."""
    x32 = np.clip(x, region.lower, region.upper).astype(np.float32)
    for _ in range(4):
        if region.contains(x32):
            return x32
        x64 = x32.astype(np.float64)
        too_low = (x64 < region.lower) | (
            region.lower_is_strict & (x64 == region.lower)
        )
        too_high = (x64 > region.upper) | (
            region.upper_is_strict & (x64 == region.upper)
        )
        x32 = np.where(too_low, np.nextafter(x32, np.float32(np.inf)), x32)
        x32 = np.where(too_high, np.nextafter(x32, np.float32(-np.inf)), x32)
    return x32 if region.contains(x32) else None


_REGION_ANSWERS = {
    "sat": "sat: counterexample confirmed by onnxruntime",
    "unsat": "unsat: proven by bounds",
    "unknown": "unknown: not settled (time, box budget or a point bounds cannot split)",
}


class _Progress:
    """Status lines on stderr while ``verify`` works (stdout stays clean).

    Stage lines come at most once per ``interval`` seconds; the verdict of
    each region is always shown.
    """

    def __init__(self, verbose, regions: int, start: float, interval: float = 1.0):
        self.verbose = bool(verbose)
        self.regions = regions
        self.start = start
        self.interval = interval
        self.region = None  # index of the region being solved
        self._last = -float("inf")

    def say(self, message: str, force: bool = True) -> None:
        if not self.verbose:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        where = (
            "" if self.region is None else f"region {self.region + 1}/{self.regions}: "
        )
        print(
            f"verinet verify [{now - self.start:6.1f}s] {where}{message}",
            file=sys.stderr,
            flush=True,
        )

    def stage(self, message: str) -> None:
        self.say(message, force=False)


def _solve_region(
    problem: _Problem, region: Region, attack, deadline, batch, rng, progress=None
):
    """``("sat", (x, y))``, ``("unsat", None)`` or ``("unknown", None)``."""
    progress = progress or _Progress(0, 0, time.perf_counter())
    centre = (region.lower + region.upper) / 2
    if any(len(spec.b) == 0 for spec in region.specs):
        found = problem.confirm(centre, region)
        return ("sat", found) if found is not None else ("unknown", None)
    if _past(deadline):
        return "unknown", None
    progress.stage("trying the centre and 32 random points")
    samples = region.lower + (region.upper - region.lower) * rng.random(
        (32, len(centre))
    )
    found = problem.try_points(np.vstack([centre[None], samples]), region)
    if found is not None:
        return "sat", found
    queue = [(region.lower, region.upper)]
    attacked = attack is None
    gave_up = False
    settled = 0
    while queue:
        if _past(deadline) or len(queue) > MAX_OPEN_BOXES:
            return "unknown", None
        progress.stage(
            f"bounds: {settled} sub-boxes proven, {len(queue)} open, "
            f"{max(deadline - time.perf_counter(), 0.0):.0f}s left"
        )
        chunk, queue = queue[:batch], queue[batch:]
        lower = np.stack([lo for lo, _ in chunk])
        upper = np.stack([up for _, up in chunk])
        by_spec = problem.proven(lower, upper, region)
        proven = by_spec.all(axis=1)
        settled += int(proven.sum())
        if proven.all():
            continue
        if not attacked:
            attacked = True
            progress.stage("PGD attack")
            found = problem.pgd(region, list(region.specs), deadline=deadline)
            if found is not None:
                return "sat", found
            if _past(deadline):
                return "unknown", None
        if not problem.complete:  # bounds and attack only: no splitting
            return "unknown", None
        if problem.relu_splits and len(chunk) == 1:  # the whole box is open
            return _split_relus(problem, region, deadline, progress, by_spec[0])
        open_lo, open_up = lower[~proven], upper[~proven]
        found = problem.try_points((open_lo + open_up) / 2, region)
        if found is not None:
            return "sat", found
        for lo, up in zip(open_lo, open_up, strict=True):
            width = up - lo
            axis = int(np.argmax(width))
            if width[axis] <= 0:
                gave_up = True  # a single point that bounds cannot settle
                continue
            mid = (lo[axis] + up[axis]) / 2
            left_up, right_lo = up.copy(), lo.copy()
            left_up[axis], right_lo[axis] = mid, mid
            queue.extend([(lo, left_up), (right_lo, up)])
    return ("unknown", None) if gave_up else ("unsat", None)


def _split_relus(problem: _Problem, region: Region, deadline, progress, done):
    """Branch and bound on ReLU splits (``verinet.complete.relu_bab``), one
    spec of the region at a time (those the whole-box bounds left open,
    ``done`` marks the others): a spec is impossible on a domain once one
    of its rows is bounded above its right-hand side (with the tolerance),
    and the MILP settles the leaves. Every search starts from the same
    alpha-CROWN node bounds of the box, optimized for the open specs'
    rows together."""
    shape = (1, *problem.shape)
    box = Box(region.lower.reshape(shape), region.upper.reshape(shape))
    centre = ((region.lower + region.upper) / 2).reshape(shape)
    open_specs = [s for s in range(len(region.specs)) if not done[s]]
    progress.stage("alpha-CROWN bounds of the box for branch and bound")
    rows = np.concatenate([region.specs[s].A for s in open_specs])
    root = start_bounds(problem.graph, centre, box, rows)
    unknown = False
    for s in open_specs:
        spec = region.specs[s]
        if _past(deadline):
            return "unknown", None
        progress.stage(
            f"branch and bound on ReLU splits, spec {s + 1}/{len(region.specs)}"
        )
        result = relu_bab(
            problem.graph,
            centre,
            box,
            spec.A,
            lambda point: problem.confirm(point.ravel(), region),
            max(deadline - time.perf_counter(), 0.0),
            offset=spec.b + problem.tolerance * (1.0 + np.abs(spec.b)),
            mode="any",
            deadline=deadline,
            root_bounds=root,
            progress=lambda bounded, left, gap, s=s: progress.stage(
                f"branch and bound on ReLU splits, spec {s + 1}/"
                f"{len(region.specs)}: {bounded} domains bounded, {left} open, "
                f"worst bound {gap:+.4g}"
            ),
        )
        if result.status == "falsified":
            return "sat", result.counterexample
        unknown |= result.status != "verified"
    return ("unknown", None) if unknown else ("unsat", None)


def _flat_output(model):
    if len(model.outputs[0].shape) == 2:
        return model
    from verinet.layers import Flatten
    from verinet.models.model import Model

    return Model(
        model.inputs[0], Flatten()(model.outputs[0]), name=f"{model.name}_flat"
    )


def verify(
    onnx_path,
    vnnlib_path,
    method="crown",
    attack="pgd",
    timeout: float = 60.0,
    batch_size: int = 64,
    tolerance: float = 1e-5,
    seed: int = 0,
    verbose: int = 0,
    complete: bool = True,
) -> VerificationResult:
    """Decide a VNN-LIB property of an ONNX network.

    Args:
        onnx_path: the network (imported with ``vn.from_onnx``, which checks
            it against onnxruntime).
        vnnlib_path: the property file, or a ``Property`` from
            ``vn.vnnlib.read``. ``X_i`` index the ONNX input flattened in
            row-major order, ``Y_j`` the flattened output.
        method: bound method, ``"crown"``, ``"alpha-crown"``, ``"crown-ibp"``,
            ``"ibp"`` or an object.
        attack: ``"pgd"`` or ``None`` (concrete samples are always tried).
        timeout: seconds before answering ``"unknown"``.
        batch_size: sub-boxes bounded at once during input splitting.
        tolerance: a spec counts as impossible only if its bound clears the
            right-hand side by ``tolerance * (1 + |b|)``, guarding against
            float rounding between the bound (float64) and the network
            (float32).
        seed: seed of the random samples and attack starts.
        verbose: 0 (the default) is silent; 1 prints status lines to stderr
            (each stage, at most once a second, and each region's answer),
            as ``verinet verify`` does. stdout is never written to.
        complete: ``True`` (the default) keeps working on a box the bounds
            cannot settle: branch and bound on ReLU splits for networks with
            more than ``INPUT_SPLIT_MAX`` inputs that the MILP encodes,
            input splitting otherwise. ``False`` stops after one bound pass
            over the whole box and the attack (a quick, incomplete check
            that answers ``"unknown"`` more often).

    Returns:
        A ``VerificationResult`` (a ``str``): ``"unsat"`` (the property holds,
        proven), ``"sat"`` (with ``.counterexample``, confirmed by
        onnxruntime) or ``"unknown"``.

    Raises:
        VnnlibError: for a malformed property or one whose variable counts
            do not match the network.

    Example:
        >>> result = vn.verify("net.onnx", "prop.vnnlib", timeout=30)
        >>> print(result)
        unsat
    """
    import onnxruntime as ort

    from verinet.onnx import from_onnx, load_onnx

    start = time.perf_counter()
    deadline = start + float(timeout)
    if attack is not None:
        attack = check_choice("attack", attack, ("pgd",))
    if int(batch_size) < 1 or not tolerance >= 0:
        raise InvalidInputError("batch_size must be >= 1 and tolerance >= 0.")
    prop = vnnlib_path if isinstance(vnnlib_path, Property) else read(vnnlib_path)
    proto = load_onnx(onnx_path)
    model = _flat_output(from_onnx(proto))
    n_in = int(np.prod(model.inputs[0].shape[1:]))
    n_out = int(model.outputs[0].shape[-1])
    if (prop.num_inputs, prop.num_outputs) != (n_in, n_out):
        raise VnnlibError(
            f"The property declares {prop.num_inputs} inputs and {prop.num_outputs} "
            f"outputs; the network {os.fspath(onnx_path)!r} has {n_in} and {n_out}."
        )
    session = ort.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    problem = _Problem(
        model,
        session,
        resolve_method(method),
        float(tolerance),
        "float64",
        complete=bool(complete),
    )
    rng = np.random.default_rng(seed)
    progress = _Progress(verbose, len(prop.regions), start)
    name = "the network" if hasattr(onnx_path, "graph") else os.fspath(onnx_path)
    progress.say(
        f"{name}: {n_in} inputs, {n_out} outputs; {len(prop.regions)} input region(s); "
        f"timeout {float(timeout):g}s"
    )
    unknown = False
    for index, region in enumerate(prop.regions):
        progress.region = index
        with ieee_float32():  # no TF32 in bounds or the attack on GPUs
            status, found = _solve_region(
                problem, region, attack, deadline, int(batch_size), rng, progress
            )
        progress.say(_REGION_ANSWERS[status])
        if status == "sat":
            x, y = found
            return VerificationResult(
                "sat", x, y, time.perf_counter() - start, "counterexample found"
            )
        unknown |= status == "unknown"
    seconds = time.perf_counter() - start
    if unknown:
        return VerificationResult("unknown", seconds=seconds, detail="not settled")
    return VerificationResult("unsat", seconds=seconds, detail="proven by bounds")
