"""Branch and bound on ReLU splits.

A *domain* fixes the phase of some unstable ReLU-family neurons: active
(pre-activation ``z >= 0``) or inactive (``z <= 0``). Every input of the
perturbation set lies in one of the two children of a split, so proving the
property on every leaf proves it on the set. Many domains are bounded in one
CROWN call (the domains are the batch axis): each split narrows the bounds
of its neuron to ``[max(l, 0), u]`` or ``[l, min(u, 0)]`` before later
layers are bounded, so their relaxations tighten. A domain whose bounds
cross (``lower > upper`` somewhere) is empty and dropped; a domain with few
unstable neurons left is handed to the exact MILP (``milp.py``) with its
narrowed bounds, which settles it: proven, or a candidate counterexample
that the float32 model must confirm.

Every domain starts from the whole set's node bounds (alpha-CROWN's) with
its split neurons narrowed, so it keeps nothing but its split signs and the
slopes and split multipliers its parent's bound optimized (in half and
single precision, the multipliers only at its split neurons): children
start their few gradient steps from those (a warm start, as beta-CROWN
does).

Branching picks, per domain, the unstable neuron with the largest BaBSR
score: the intercept ``-l u / (u - l)`` of its upper line (the largest gap
between the ReLU and that line) weighted by how much the output bound pays
for it (the negative part of its coefficient in the output's lower bound);
ties, e.g. all zero, go to the widest gap.

Counterexamples are searched for along the way: after every batch the
input-box vertex minimizing each domain's lower line is run through the
model, and PGD starts from those of the worst domains (within a tenth of
the time); a point counts only once ``confirm`` accepts it.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np
from keras import ops

from verinet._validation import check_choice, check_int
from verinet.bounds.alpha import SlopeStore
from verinet.bounds.memory import no_grad
from verinet.bounds.methods import (
    IntervalOutput,
    crown_pass,
    interval_pass,
    output_pass,
)
from verinet.bounds.patches import to_dense
from verinet.bounds.perturbation import Box
from verinet.bounds.precision import float64_promotion
from verinet.complete.milp import MILPEncoding

#: A domain's bounds "cross" beyond rounding: it holds no input.
_EMPTY_TOL = 1e-9

#: At most this share of branch and bound's time goes to PGD from the
#: worst domains' vertices.
ATTACK_SHARE = 0.1


@dataclass
class BaBResult:
    """The outcome of branch and bound on one sample.

    Attributes:
        status: ``"verified"``, ``"falsified"`` or ``"unknown"`` (time ran
            out, or a leaf's candidate was not confirmed).
        lower: ``(rows,)`` proven lower bounds of each specification row
            (the least over the leaves; ``-inf`` unless verified).
        counterexample: the input that breaks the property (float32, the
            sample's shape) when falsified.
        domains: how many domains were bounded.
        seconds: wall time.
    """

    status: str
    lower: np.ndarray
    counterexample: np.ndarray | None
    domains: int
    seconds: float


def _split_nodes(graph) -> dict[int, int]:
    """Nodes whose neurons may be split (inputs of ReLU-family rules), each
    with the index of the activation node it feeds."""
    out = {}
    for i, node in enumerate(graph.nodes):
        if (
            i
            and getattr(node.rule, "piecewise_linear", False)
            and hasattr(node.rule, "_slope")
        ):
            (j,) = node.inputs
            out[j] = i
    return out


def _bound_domains(
    graph,
    x1,
    perturbation,
    spec,
    domains,
    iterations,
    offset=None,
    mode="all",
    inherited=None,
    warm=None,
):
    """Lower bounds of ``spec`` on each domain (the batch axis), every
    node's bounds per domain (numpy, float64), for each domain and row
    the input-box vertex where the row's lower line is least
    ``(domains, rows, inputs)``, the branching scores, and each domain's
    optimized slopes and split multipliers (its children start from them).

    Node bounds are CROWN's with the split neurons narrowed, or, with
    ``inherited`` (the whole set's node bounds: a list of flat
    ``(lower, upper, shape)`` per node), those with the domain's split
    neurons narrowed: a domain is a subset of the set, so they still hold,
    and only the output is bounded again (as beta-CROWN does). A domain's
    bounds are thus its parent's narrowed at the new split, and nothing
    per domain but its splits needs keeping. The output
    bound then optimizes, by projected gradient, the ReLU lower slopes
    (alpha) and one multiplier ``beta >= 0`` per split neuron and row, which
    adds ``-beta * s * z`` (``s`` the split's sign, so ``s z >= 0`` on the
    domain) to the coefficients at the split node: a Lagrangian relaxation
    of the split constraints, a valid lower bound for every ``beta >= 0``
    (beta-CROWN). The best bound seen per row is kept. With ``warm`` (per
    domain, the state its parent returned) the slopes and multipliers start
    where the parent's optimization left them, as beta-CROWN does, so few
    steps per batch suffice.
    """
    import torch

    count = len(domains)
    xb = ops.convert_to_tensor(
        np.repeat(np.asarray(x1, dtype=np.float64), count, axis=0), dtype="float64"
    )
    signs = {
        j: ops.convert_to_tensor(
            np.stack([d[j] for d in domains]).astype(np.float64), dtype="float64"
        )
        for j in domains[0]
    }

    def clamp(i, low, up):
        if i not in signs:
            return low, up
        sign = ops.reshape(signs[i], low.shape)
        low = ops.where(sign > 0, ops.maximum(low, 0.0), low)
        up = ops.where(sign < 0, ops.minimum(up, 0.0), up)
        return low, up

    rows = spec.shape[0]
    target = ops.convert_to_tensor(
        np.zeros(rows) if offset is None else np.asarray(offset, dtype=np.float64),
        dtype="float64",
    )
    pert = _repeat(perturbation, count)
    with float64_promotion():
        with torch.no_grad():
            if inherited is None:
                node_bounds = crown_pass(graph, xb, pert, clamp=clamp)
            else:
                node_bounds = _stack_bounds(inherited, count, clamp)
            C = ops.convert_to_tensor(
                np.repeat(spec[None], count, axis=0), dtype="float64"
            )
            ibp_low, _ = IntervalOutput().bounds(
                graph, node_bounds, xb, pert, C, True, False
            )
        split = {j: s for j, s in signs.items() if bool(ops.any(s != 0))}
        start_alpha, start_beta = _warm_start(warm, count)
        betas = {
            j: torch.tensor(
                start_beta[j]
                if j in start_beta
                else np.zeros((count, rows, s.shape[1])),
                dtype=torch.float64,
                device=s.device,
                requires_grad=True,
            )
            for j, s in split.items()
        }
        store = SlopeStore(start_alpha)
        best = None
        optimizer = None
        for step in range(iterations + 1):
            with torch.enable_grad():
                offsets = {
                    j: ops.reshape(
                        -betas[j] * ops.expand_dims(split[j], 1),
                        (count, rows, *node_bounds[j][0].shape[1:]),
                    )
                    for j in betas
                }
                stats = {"node_lA": {}}
                low, _ = output_pass(
                    graph,
                    C,
                    True,
                    False,
                    node_bounds,
                    xb,
                    pert,
                    alphas=store.for_pass("output"),
                    offsets=offsets,
                    stats=stats,
                )
            low_d = low.detach()
            best = low_d if best is None else torch.maximum(best, low_d)
            params = store.params + list(betas.values())
            slack = best - target
            done = (
                torch.all(slack > 0)
                if mode == "all"
                else torch.all(torch.any(slack > 0, dim=1))
            )
            if step == iterations or not params or bool(done):
                break
            if optimizer is None:
                optimizer = torch.optim.Adam(
                    [
                        {"params": store.params, "lr": 0.2},
                        {"params": list(betas.values()), "lr": 0.1},
                    ]
                )
            loss = -low.sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
            with torch.no_grad():
                for p, floor in zip(store.params, store.floors, strict=True):
                    p.clamp_(floor, 1.0)
                for p in betas.values():
                    p.clamp_(min=0.0)
        low = ops.maximum(best, ibp_low)
        bounds = [
            tuple(ops.convert_to_numpy(t).reshape(count, -1) for t in pair)
            for pair in node_bounds
        ]
        # Each row's lower line is least at a vertex of the input box: the
        # points to try as counterexamples.
        box_lo, box_hi = (
            ops.convert_to_numpy(t).reshape(count, 1, -1) for t in node_bounds[0]
        )
        A = ops.convert_to_numpy(to_dense(stats["input_lA"]).detach())
        A = A.reshape(count, rows, -1)
        corners = np.where(A >= 0, box_lo, box_hi)
        scores = _branch_scores(graph, stats["node_lA"], bounds, count, rows)
        states = _split_state(store, betas, count)
    return ops.convert_to_numpy(low), bounds, corners, scores, states


def _warm_start(warm, count):
    """Stacked starting slopes ``{key: (lower, upper)}`` and multipliers
    ``{node: (domains, rows, neurons)}`` of a batch of domains from each
    one's parent state; empty (CROWN's slopes, zero multipliers) unless
    every domain has one."""
    if not warm or any(w is None for w in warm):
        return {}, {}
    alphas = {
        key: tuple(
            None
            if pair[side] is None
            else np.stack([w["alpha"][key][side] for w in warm])
            for side in (0, 1)
        )
        for key, pair in warm[0]["alpha"].items()
    }
    betas = {}
    for j in set().union(*(w["beta"] for w in warm)):
        shape = next(w["beta"][j][2] for w in warm if j in w["beta"])
        dense = np.zeros((count, *shape))
        for d, w in enumerate(warm):
            if j in w["beta"]:
                cols, values, _ = w["beta"][j]
                dense[d][:, cols] = values
        # A multiplier must be >= 0 for the bound to hold.
        betas[j] = np.maximum(dense, 0.0)
    return alphas, betas


def _split_state(store, betas, count):
    """Per domain, its optimized slopes (float16) and split multipliers
    (float32, only at the split neurons): they are only starting points,
    any value is sound once clipped, so open domains hold little."""

    def per_domain(tensor):
        if tensor is None:
            return [None] * count
        array = ops.convert_to_numpy(tensor.detach())
        # one array per domain, not views that keep the batch alive
        return [row.astype(np.float16) for row in array]

    def sparse(b):  # (rows, neurons): nonzero only at split neurons
        cols = np.flatnonzero(np.any(b != 0, axis=0))
        return cols, b[:, cols].astype(np.float32), b.shape

    alphas = {
        key: list(zip(*(per_domain(p) for p in pair), strict=True))
        for key, pair in store.slopes.items()
    }
    beta = {j: ops.convert_to_numpy(b.detach()) for j, b in betas.items()}
    return [
        {
            "alpha": {key: pairs[d] for key, pairs in alphas.items()},
            "beta": {j: sparse(b[d]) for j, b in beta.items()},
        }
        for d in range(count)
    ]


def _branch_scores(graph, node_lA, bounds, count, rows):
    """Per split node ``j``, ``(domains, neurons)`` scores of splitting each
    neuron (BaBSR's intercept score): the output bound pays for an unstable
    neuron's upper line through the negative part of the coefficient on the
    activation's output, times the line's intercept ``-l u / (u - l)``."""
    scores = {}
    for j, i in _split_nodes(graph).items():
        if i not in node_lA:
            continue
        A = ops.convert_to_numpy(to_dense(node_lA[i]).detach()).reshape(count, rows, -1)
        low, up = bounds[j]
        unstable = (low < 0) & (up > 0)
        width = np.where(unstable, up - low, 1.0)
        intercept = np.where(unstable, -low * up / width, 0.0)
        scores[j] = np.sum(np.maximum(-A, 0.0), axis=1) * intercept
    return scores


def _stack_bounds(inherited, count, clamp):
    """Node bounds of ``count`` domains from the flat ``(lower, upper,
    shape)`` of each node, split neurons narrowed by ``clamp``."""
    out = []
    for i, (low, up, shape) in enumerate(inherited):
        pair = (
            ops.convert_to_tensor(
                np.broadcast_to(side.reshape(1, *shape), (count, *shape)),
                dtype="float64",
            )
            for side in (low, up)
        )
        out.append(clamp(i, *pair))
    return out


def _try_corners(graph, x, spec, offset, mode, confirm, corners):
    """Run the model on the domains' bound-minimizing vertices; confirm the
    first that breaks the property (cheap: one forward pass per batch)."""
    points = corners.reshape(-1, *x.shape[1:])
    with no_grad():
        out = ops.convert_to_numpy(graph.model(points.astype(np.float32)))
    slack = out.reshape(len(points), -1) @ spec.T - offset
    broken = np.any(slack < 0, axis=1) if mode == "all" else np.all(slack <= 0, axis=1)
    for k in np.flatnonzero(broken)[:8]:
        found = confirm(points[k : k + 1].astype(np.float64))
        if found is not None:
            return found
    return None


def _attack_worst(
    graph, x, spec, offset, mode, confirm, corners, slack, box, stop=None, k=8
):
    """PGD from the bound-minimizing vertices of the ``k`` domains whose
    bounds are worst (where a counterexample most likely hides), on the
    float32 model over the input box ``(lower, upper)``; confirms the first
    iterate that breaks the property; ``stop()`` ends it early."""
    import torch

    from verinet.attacks.pgd import ascent

    worst = np.min(slack, axis=1) if mode == "all" else np.max(slack, axis=1)
    take = np.argsort(worst)[:k]
    pick = np.argmin if mode == "all" else np.argmax
    rows = pick(slack[take], axis=1)
    start = corners[take, rows].reshape(len(take), *x.shape[1:])

    def tensor(array):  # on the model's device
        return ops.convert_to_tensor(np.asarray(array, dtype=np.float32))

    lower, upper = (tensor(np.reshape(t, (1, *x.shape[1:]))) for t in box)
    C, b = tensor(spec.T), tensor(offset)

    def objective(z):
        out = graph.model(z, training=False).reshape(len(z), -1) @ C - b
        # "all" breaks where a row is below zero, "any" where every row is
        score = out.min(dim=1).values if mode == "all" else out.max(dim=1).values
        return -score, score

    steps, size = 10, (upper - lower) / 8
    start = tensor(start)
    iterates = ascent(objective, start, None, Box(lower, upper), steps, size, stop)
    for z, score in iterates:
        broken = score < 0 if mode == "all" else score <= 0
        for i in torch.nonzero(broken).ravel().tolist()[:4]:
            found = confirm(z[i : i + 1].cpu().numpy().astype(np.float64))
            if found is not None:
                return found
    return None


def _repeat(perturbation, count):
    """The perturbation for ``count`` copies of one sample: a ``Box`` holds
    its bounds per sample, so they are repeated; balls follow the centre."""
    if isinstance(perturbation, Box):
        lower, upper = (
            np.repeat(
                np.asarray(ops.convert_to_numpy(t), dtype=np.float64), count, axis=0
            )
            for t in (perturbation.lower, perturbation.upper)
        )
        return Box(
            ops.convert_to_tensor(lower, dtype="float64"),
            ops.convert_to_tensor(upper, dtype="float64"),
        )
    return perturbation


def _empty(bounds) -> np.ndarray:
    """Per domain, whether its node bounds cross somewhere (it holds no
    input)."""
    empty = np.zeros(len(bounds[0][0]), dtype=bool)
    for low, up in bounds[1:]:
        empty |= np.any(low > up + _EMPTY_TOL * (1.0 + np.abs(up)), axis=1)
    return empty


def _pick_neurons(bounds, domains, scores):
    """Per domain, how many unsplit unstable neurons it has and the one to
    split, ``(node, index)``: the largest branching score, ties (e.g. all
    zero) to the widest gap ``-l u / (u - l)`` between the ReLU and its
    upper line; ``None`` without any."""
    count = len(domains)
    nodes = list(domains[0])
    free, score, gap = [], [], []
    for j in nodes:
        low, up = bounds[j]
        signs = np.stack([d[j] for d in domains])
        open_ = (low < 0) & (up > 0) & (signs == 0)
        free.append(open_)
        width = np.where(open_, up - low, 1.0)
        gap.append(np.where(open_, -low * up / width, -np.inf))
        part = scores[j] if j in scores else np.zeros(low.shape)
        score.append(np.where(open_, part, -np.inf))
    free, score, gap = (np.concatenate(a, axis=1) for a in (free, score, gap))
    count_free = free.sum(axis=1)
    top = score.max(axis=1, keepdims=True)
    flat = np.argmax(np.where(free & (score == top), gap, -np.inf), axis=1)
    ends = np.cumsum([bounds[j][0].shape[1] for j in nodes])
    picks = []
    for d in range(count):
        if not count_free[d]:
            picks.append(None)
            continue
        n = int(np.searchsorted(ends, flat[d], side="right"))
        picks.append((nodes[n], int(flat[d] - (ends[n - 1] if n else 0))))
    return count_free, picks


def relu_bab(
    graph,
    x,
    perturbation,
    spec,
    confirm,
    timeout,
    offset=None,
    mode: str = "all",
    batch: int = 512,
    leaf_milp: int = 12,
    iterations: int = 3,
    root_iterations: int = 20,
    deadline=None,
    root_bounds=None,
    progress=None,
) -> BaBResult:
    """Prove ``spec @ f(x') - offset > 0`` over the perturbation set (every
    row with ``mode="all"``, at least one row with ``mode="any"``), or find
    an input where it fails.

    Args:
        graph: the model's ``BoundGraph`` (MILP-encodable: see
            ``check_milp_supported``).
        x: ``(1, *input_shape)`` input (the ball's centre; a ``Box`` ignores
            it but for its shape).
        perturbation: the input set (L-inf ball, or a ``Box`` of batch 1).
        spec: ``(rows, outputs)`` coefficients.
        confirm: ``confirm(point)`` with a float64 point ``(1, *input_shape)``
            that may break the property (a leaf MILP's solution, a domain's
            bound-minimizing vertex, a PGD iterate): the counterexample it
            confirms (inside the set, on the float32 model), or ``None``.
        timeout: seconds.
        offset: ``(rows,)`` right-hand sides (default 0).
        mode: ``"all"`` (certify's margins) or ``"any"`` (a VNN-LIB
            conjunction is impossible once one of its rows is).
        batch: domains bounded per bound call, fewer when a batch's
            coefficients would not fit in ``vn.bounds.memory_budget()``
            (see ``vn.bounds.memory_limit``).
        leaf_milp: a domain with at most this many unstable neurons goes to
            the exact MILP.
        iterations: gradient steps on the slopes and split multipliers
            per batch of domains (0: CROWN on the narrowed bounds only);
            each domain starts from its parent's, so a few suffice.
        root_iterations: steps for the whole set (the first domain, which
            has no parent to start from), and alpha-CROWN's steps for the
            default ``root_bounds``.
        deadline: optional ``time.perf_counter()`` value to stop at.
        root_bounds: every node's bounds ``(lower, upper)`` on the whole
            set, shaped ``(1, *node shape)`` (default: alpha-CROWN's, its
            hidden-layer slopes optimized for ``spec`` over
            ``root_iterations`` steps); every domain starts from them.
        progress: optional ``progress(bounded, open, worst)`` called after
            every batch: domains bounded so far, domains queued, and the
            worst queued domain's bound less the offset (its parent's: how
            far from proven the search is; ``inf`` once none is queued).

    Returns:
        A ``BaBResult`` (``lower`` is meaningful for ``mode="all"``).
    """
    started = time.perf_counter()
    batch = check_int("batch", batch)
    leaf_milp = check_int("leaf_milp", leaf_milp, minimum=0)
    iterations = check_int("iterations", iterations, minimum=0)
    root_iterations = check_int("root_iterations", root_iterations, minimum=0)
    mode = check_choice("mode", mode, ("all", "any"))
    stop = started + timeout if deadline is None else min(started + timeout, deadline)
    spec = np.asarray(spec, dtype=np.float64)
    rows = spec.shape[0]
    offset = np.zeros(rows) if offset is None else np.asarray(offset, dtype=np.float64)
    settle = np.all if mode == "all" else np.any
    worst = np.min if mode == "all" else np.max
    nodes = _split_nodes(graph)
    shapes = _node_shapes(graph, x, perturbation)
    batch = _batch_in_budget(batch, rows, shapes)
    root = {j: np.zeros(int(np.prod(shapes[j])), dtype=np.int8) for j in nodes}
    proven = np.full(rows, np.inf)
    if time.perf_counter() >= stop:
        return BaBResult("unknown", np.full(rows, -np.inf), None, 0, _since(started))
    if root_bounds is None:
        root_bounds = start_bounds(graph, x, perturbation, spec, root_iterations)
    start = [
        (
            np.asarray(lo, dtype=np.float64).reshape(-1),
            np.asarray(up, dtype=np.float64).reshape(-1),
            shape,
        )
        for (lo, up), shape in zip(root_bounds, shapes, strict=True)
    ]
    # (how far from proven, tie-break, domain, the parent's slopes and
    # multipliers)
    queue = [(0.0, 0, root, None)]
    counter = bounded = 0
    attacking = 0.0  # seconds spent on PGD from the worst domains
    searching = time.perf_counter()
    unresolved = False

    def answer(status, counterexample=None):
        lower = proven if status == "verified" else np.full(rows, -np.inf)
        return BaBResult(status, lower, counterexample, bounded, _since(started))

    while queue:
        if time.perf_counter() >= stop:
            return answer("unknown")
        popped = [heapq.heappop(queue) for _ in range(min(batch, len(queue)))]
        take = [entry[2] for entry in popped]
        lower, bounds, corners, scores, states = _bound_domains(
            graph,
            x,
            perturbation,
            spec,
            take,
            iterations if popped[0][3] is not None else root_iterations,
            offset,
            mode,
            inherited=start,
            warm=[entry[3] for entry in popped],
        )
        slack = lower - offset
        empty = _empty(bounds)
        open_ = ~empty & ~settle(slack > 0, axis=1)
        found = _try_corners(graph, x, spec, offset, mode, confirm, corners)
        if (
            found is None
            and open_.any()
            and attacking <= ATTACK_SHARE * _since(searching)
        ):
            # PGD on the worst open domains, kept to a small share of the time
            box = (bounds[0][0][0], bounds[0][1][0])
            began = time.perf_counter()
            found = _attack_worst(
                graph,
                x,
                spec,
                offset,
                mode,
                confirm,
                corners[open_],
                slack[open_],
                box,
                lambda: time.perf_counter() >= stop,
            )
            attacking += _since(began)
        if found is not None:
            return answer("falsified", found)
        bounded += len(take)
        count_free, picks = _pick_neurons(bounds, take, scores)
        for d, domain in enumerate(take):
            if empty[d]:
                continue
            if settle(slack[d] > 0):
                proven = np.minimum(proven, lower[d])
                continue
            if count_free[d] <= leaf_milp:
                kind, value = _leaf(
                    graph, x, spec, offset, mode, confirm, bounds, shapes, d, stop
                )
                if kind == "unknown":
                    # Not provable here; keep searching the other domains
                    # for a counterexample.
                    unresolved = True
                elif kind == "falsified":
                    return answer("falsified", value)
                elif kind == "proven" and value is not None:
                    proven = np.minimum(proven, np.maximum(lower[d], value))
                continue
            j, k = picks[d]
            for sign in (1, -1):
                child = {n: s.copy() for n, s in domain.items()}
                child[j][k] = sign
                counter += 1
                entry = (float(worst(slack[d])), counter, child, states[d])
                heapq.heappush(queue, entry)
        if progress is not None:
            # a queued domain's bound is (at least) its parent's
            progress(bounded, len(queue), queue[0][0] if queue else np.inf)
    return answer("unknown" if unresolved else "verified")


def _batch_in_budget(batch, rows, shapes) -> int:
    """``batch`` or fewer domains, so that one batch's coefficients (every
    node's, per row, with room for the gradient steps' autograd graph)
    fit in ``memory_budget()``."""
    from verinet.bounds.memory import memory_budget

    values = sum(int(np.prod(shape)) for shape in shapes)
    per_domain = _AUTOGRAD_COPIES * 8 * rows * values
    return max(1, min(batch, memory_budget() // max(per_domain, 1)))


#: Float64 coefficient tensors a domain's bound holds per node and row at
#: once, counting the autograd graph of its gradient steps (a safe guess).
_AUTOGRAD_COPIES = 4


def start_bounds(graph, x, perturbation, spec, iterations=20):
    """alpha-CROWN's node bounds of the whole set (float64 numpy), its
    slopes optimized for the rows of ``spec`` ``(rows, outputs)``: where
    ``relu_bab`` starts (pass them as its ``root_bounds`` to share them
    between searches on one set)."""
    from verinet.bounds.alpha import AlphaCROWN

    with float64_promotion(), no_grad():
        xb = ops.convert_to_tensor(np.asarray(x, dtype=np.float64), dtype="float64")
        C = ops.convert_to_tensor(spec[None], dtype="float64")
        bounds = AlphaCROWN(iterations=iterations).node_bounds(
            graph, xb, perturbation, C
        )
        return [tuple(ops.convert_to_numpy(t) for t in pair) for pair in bounds]


def _since(started) -> float:
    return time.perf_counter() - started


def _node_shapes(graph, x, perturbation) -> list[tuple]:
    """Each node's output shape (no batch axis)."""
    with float64_promotion(), no_grad():
        xb = ops.convert_to_tensor(np.asarray(x, dtype=np.float64), dtype="float64")
        return [
            tuple(low.shape[1:]) for low, _ in interval_pass(graph, xb, perturbation)
        ]


def _leaf(graph, x, spec, offset, mode, confirm, bounds, shapes, d, stop):
    """Settle one domain exactly with the MILP over its narrowed bounds.

    Returns ``(kind, value)``: ``("proven", (rows,) lower bounds)``,
    ``("empty", None)``, ``("falsified", counterexample)`` or
    ``("unknown", None)`` when time ran out or a candidate was not
    confirmed.
    """
    node_bounds = [
        (lo[d : d + 1].reshape(1, *s), up[d : d + 1].reshape(1, *s))
        for (lo, up), s in zip(bounds, shapes, strict=True)
    ]
    enc = MILPEncoding(graph, node_bounds)
    if mode == "any":
        # The least largest row slack: above zero (less the safety margin)
        # no input meets the conjunction spec·y <= offset; below, its
        # minimizer is the most violating candidate.
        result = enc.solve_max(spec, offset, time_limit=stop - time.perf_counter())
        if result.status == "infeasible":
            return "empty", None
        if result.lower > 0:
            return "proven", None
        if result.value < 0 and result.point is not None:
            found = confirm(result.point.reshape(x.shape))
            if found is not None:
                return "falsified", found
        return "unknown", None
    out = np.empty(spec.shape[0])
    for r, c in enumerate(spec):
        left = stop - time.perf_counter()
        if left <= 0:
            return "unknown", None
        result = enc.solve(c, time_limit=left)
        if result.status == "infeasible":
            return "empty", None  # the narrowed bounds admit no input
        out[r] = result.lower
        if result.lower > offset[r]:
            continue
        if result.value < offset[r] and result.point is not None:
            found = confirm(result.point.reshape(x.shape))
            if found is not None:
                return "falsified", found
        return "unknown", None
    return "proven", out
