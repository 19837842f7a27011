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

Branching picks, per domain, the unstable neuron whose triangle relaxation
is the widest (``-l u / (u - l)``, the largest gap between the ReLU and its
upper line).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np
from keras import ops

from verinet.bounds.alpha import SlopeStore
from verinet.bounds.memory import no_grad
from verinet.bounds.methods import (
    IntervalOutput,
    crown_pass,
    interval_pass,
    output_pass,
)
from verinet.bounds.precision import float64_promotion
from verinet.complete.milp import MILPEncoding

#: A domain's bounds "cross" beyond rounding: it holds no input.
_EMPTY_TOL = 1e-9


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


def _split_nodes(graph) -> dict[int, str]:
    """Nodes whose neurons may be split: inputs of ReLU-family rules."""
    out = {}
    for node in graph.nodes[1:]:
        if getattr(node.rule, "piecewise_linear", False) and hasattr(
            node.rule, "_slope"
        ):
            (j,) = node.inputs
            out[j] = node.name
    return out


def _bound_domains(graph, x1, perturbation, spec, domains, iterations):
    """Lower bounds of ``spec`` on each domain (the batch axis), and every
    node's bounds per domain (numpy, float64).

    Node bounds are CROWN's with the split neurons narrowed; the output
    bound then optimizes, by projected gradient, the ReLU lower slopes
    (alpha) and one multiplier ``beta >= 0`` per split neuron and row, which
    adds ``-beta * s * z`` (``s`` the split's sign, so ``s z >= 0`` on the
    domain) to the coefficients at the split node: a Lagrangian relaxation
    of the split constraints, a valid lower bound for every ``beta >= 0``
    (beta-CROWN). The best bound seen per row is kept.
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
    with float64_promotion():
        with torch.no_grad():
            node_bounds = crown_pass(graph, xb, perturbation, clamp=clamp)
            C = ops.convert_to_tensor(
                np.repeat(spec[None], count, axis=0), dtype="float64"
            )
            ibp_low, _ = IntervalOutput().bounds(
                graph, node_bounds, xb, perturbation, C, True, False
            )
        split = {j: s for j, s in signs.items() if bool(ops.any(s != 0))}
        betas = {
            j: torch.zeros(
                (count, rows, s.shape[1]), dtype=torch.float64, requires_grad=True
            )
            for j, s in split.items()
        }
        store = SlopeStore()
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
                low, _ = output_pass(
                    graph,
                    C,
                    True,
                    False,
                    node_bounds,
                    xb,
                    perturbation,
                    alphas=store.for_pass("output"),
                    offsets=offsets,
                )
            low_d = low.detach()
            best = low_d if best is None else torch.maximum(best, low_d)
            params = store.params + list(betas.values())
            if step == iterations or not params or bool(torch.all(best > 0)):
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
    return ops.convert_to_numpy(low), bounds


def _empty(bounds, d) -> bool:
    for low, up in bounds[1:]:
        if np.any(low[d] > up[d] + _EMPTY_TOL * (1.0 + np.abs(up[d]))):
            return True
    return False


def _unstable(bounds, domain):
    """``(node, neuron, gap)`` of the domain's unsplit unstable neurons."""
    out = []
    for j, signs in domain.items():
        low, up = bounds[j]
        free = (low < 0) & (up > 0) & (signs == 0)
        for k in np.flatnonzero(free):
            gap = -low[k] * up[k] / (up[k] - low[k])
            out.append((j, int(k), float(gap)))
    return out


def relu_bab(
    model,
    graph,
    x,
    label,
    spec,
    perturbation,
    timeout,
    batch: int = 64,
    leaf_milp: int = 12,
    iterations: int = 20,
    deadline=None,
) -> BaBResult:
    """Prove ``spec @ f(x') > 0`` (every row) over the perturbation set, or
    find an input that breaks it.

    Args:
        model: the Keras model (confirms counterexamples in float32).
        graph: its ``BoundGraph`` (MILP-encodable: see
            ``check_milp_supported``).
        x: ``(1, *input_shape)`` float32 input.
        label: its label; a counterexample is an input the model does not
            classify as ``label``.
        spec: ``(rows, classes)`` rows ``e_y - e_j`` to prove positive.
        perturbation: the input set (L-inf ball or box).
        timeout: seconds.
        batch: domains bounded per CROWN call.
        leaf_milp: a domain with at most this many unstable neurons goes to
            the exact MILP.
        iterations: gradient steps on the slopes and split multipliers
            per batch of domains (0: CROWN on the narrowed bounds only).
        deadline: optional ``time.perf_counter()`` value to stop at.

    Returns:
        A ``BaBResult``.
    """
    started = time.perf_counter()
    stop = started + timeout if deadline is None else min(started + timeout, deadline)
    spec = np.asarray(spec, dtype=np.float64)
    rows = spec.shape[0]
    nodes = _split_nodes(graph)
    shapes = _node_shapes(graph, x, perturbation)
    root = {j: np.zeros(int(np.prod(shapes[j])), dtype=np.int8) for j in nodes}
    proven = np.full(rows, np.inf)
    queue = [(0.0, 0, root)]  # (worst lower bound, tie-break, domain)
    counter = bounded = 0
    unresolved = False
    while queue:
        if time.perf_counter() >= stop:
            return BaBResult(
                "unknown", np.full(rows, -np.inf), None, bounded, _since(started)
            )
        take = [heapq.heappop(queue)[2] for _ in range(min(batch, len(queue)))]
        lower, bounds = _bound_domains(graph, x, perturbation, spec, take, iterations)
        bounded += len(take)
        for d, domain in enumerate(take):
            if _empty(bounds, d) or np.all(lower[d] > 0):
                if not _empty(bounds, d):
                    proven = np.minimum(proven, lower[d])
                continue
            free = _unstable([(lo[d], up[d]) for lo, up in bounds], domain)
            if len(free) <= leaf_milp:
                settled = _leaf(
                    model, graph, x, label, spec, perturbation, bounds, shapes, d, stop
                )
                kind, value = settled
                if kind == "unknown":
                    # Not provable here; keep searching the other domains
                    # for a counterexample.
                    unresolved = True
                    continue
                if kind == "falsified":
                    return BaBResult(
                        "falsified",
                        np.full(rows, -np.inf),
                        value,
                        bounded,
                        _since(started),
                    )
                if kind == "proven":
                    proven = np.minimum(proven, np.maximum(lower[d], value))
                continue
            j, k, _ = max(free, key=lambda t: t[2])
            for sign in (1, -1):
                child = {n: s.copy() for n, s in domain.items()}
                child[j][k] = sign
                counter += 1
                heapq.heappush(queue, (float(np.min(lower[d])), counter, child))
    status = "unknown" if unresolved else "verified"
    lower = np.full(rows, -np.inf) if unresolved else proven
    return BaBResult(status, lower, None, bounded, _since(started))


def _since(started) -> float:
    return time.perf_counter() - started


def _node_shapes(graph, x, perturbation) -> list[tuple]:
    """Each node's output shape (no batch axis)."""
    with float64_promotion(), no_grad():
        xb = ops.convert_to_tensor(np.asarray(x, dtype=np.float64), dtype="float64")
        return [
            tuple(low.shape[1:]) for low, _ in interval_pass(graph, xb, perturbation)
        ]


def _leaf(model, graph, x, label, spec, perturbation, bounds, shapes, d, stop):
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
    out = np.empty(spec.shape[0])
    for r, c in enumerate(spec):
        left = stop - time.perf_counter()
        if left <= 0:
            return "unknown", None
        result = enc.solve(c, time_limit=left)
        if result.status == "infeasible":
            return "empty", None  # the narrowed bounds admit no input
        out[r] = result.lower
        if result.lower > 0:
            continue
        if result.value < 0 and result.point is not None:
            point = result.point.reshape(x.shape).astype(np.float32)
            candidate, inside = perturbation.exact_points(point, x)
            pred = ops.convert_to_numpy(model(candidate, training=False)).argmax(axis=1)
            if inside[0] and pred[0] != label:
                return "falsified", candidate[0]
        return "unknown", None
    return "proven", out
