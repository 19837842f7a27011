"""Bound methods as composed objects: a hidden-layer strategy and an output
strategy.

========== ================== ===============
method     hidden layers      output
========== ================== ===============
IBP        ``IntervalHidden`` ``IntervalOutput``
CROWN-IBP  ``IntervalHidden`` ``CROWNOutput``
CROWN      ``CROWNHidden``    ``CROWNOutput``
========== ================== ===============

(alpha-CROWN, in ``alpha.py``, optimizes both jointly.) The strategies run
two passes over a ``BoundGraph``:

* ``interval_pass`` / ``crown_pass`` — bounds for every node, in topological
  order; ``crown_pass`` tightens the nodes that feed activations by
  back-substitution;
* ``backward_pass`` — back-substitution of linear bounds from one node to the
  input (CROWN), or only to the nearest nonlinear nodes, whose interval then
  concretizes them (IBP with the specification folded into the last linear
  layers).

Every method intersects its bounds with IBP's, so it is never looser.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from verinet.bounds.memory import CPU_CHUNK_BYTES, memory_budget, rows_in_budget
from verinet.bounds.patches import Patches, add_linear, numel, to_dense
from verinet.bounds.perturbation import concretize_box
from verinet.layers.base import AffineRule, add_optional

# Live coefficient tensors per stored one at the peak of a back-substitution
# step (lower and upper, their positive and negative parts, gathered slopes).
_PEAK_FACTOR = 8


def _identity_spec(reference):
    """``(batch, n, *shape)`` identity coefficients for a node's output."""
    batch, shape = reference.shape[0], tuple(reference.shape[1:])
    n = 1
    for d in shape:
        n *= d
    eye = ops.reshape(ops.eye(n, dtype=reference.dtype), (1, n, *shape))
    return ops.broadcast_to(eye, (batch, n, *shape))


def backward_pass(
    graph,
    start,
    lA,
    uA,
    bounds,
    x,
    perturbation,
    to_input=True,
    stats=None,
    alphas=None,
    offsets=None,
):
    """Bound ``A·node_start`` by back-substitution.

    Args:
        graph: the ``BoundGraph``.
        start: index of the node whose output ``lA``/``uA`` multiply.
        lA, uA: ``(batch, specs, *shape)`` coefficients (either may be None).
        bounds: interval bounds ``(lower, upper)`` for every node.
        x: the input centre.
        perturbation: the input set.
        to_input: ``True`` for CROWN (substitute through every layer);
            ``False`` to stop at nonlinear nodes and use their intervals.
        stats: optional dict; ``stats["peak"]`` is set to the largest number
            of coefficients held for one node, and ``stats["input_lA"]`` to
            the lower side's coefficients on the input; if it holds a
            ``"node_lA"`` dict, that gets each reached node's lower-side
            coefficients by node index.
        alphas: optional lower-line slopes for ReLU-family nodes (see
            ``_ReluFamilyRule.backward``): a dict ``{node index: (alpha_lower,
            alpha_upper)}``, or an object whose ``slopes_for(i, rule, lA, uA,
            lower, upper)`` returns that pair (or ``None``) when node ``i``
            is reached.
        offsets: optional ``{node index: tensor}`` added to the lower side's
            coefficients when the pass reaches that node (dense, shaped
            ``(batch, specs, *node shape)``): branch and bound's Lagrangian
            terms for split constraints (beta-CROWN). The caller answers for
            their soundness.

    Returns:
        ``(lower, upper)`` tensors ``(batch, specs)`` (``None`` where unasked).
    """
    pending = {start: (lA, uA)}
    lower = upper = None
    for i in range(start, -1, -1):
        if i not in pending:
            continue
        lA_i, uA_i = pending.pop(i)
        if offsets is not None and i in offsets and lA_i is not None:
            lA_i = to_dense(lA_i) + offsets[i]
        node = graph.nodes[i]
        if stats is not None:
            if "node_lA" in stats and lA_i is not None:
                stats["node_lA"][i] = lA_i
            distinct = {id(a): a for a in (lA_i, uA_i) if a is not None}
            held = sum(numel(a) for a in distinct.values())
            stats["peak"] = max(stats.get("peak", 0), held)
        if i > 0 and not node.rule.supports_patches:
            lA_i, uA_i = _dense_pair(lA_i, uA_i)
        stop_here = i == 0 or (not to_input and node.rule.nonlinear)
        if stop_here:
            if i == 0:
                if stats is not None and lA_i is not None:
                    stats["input_lA"] = lA_i
                lo = None if lA_i is None else perturbation.concretize(x, lA_i, -1)
                up = None if uA_i is None else perturbation.concretize(x, uA_i, +1)
            else:
                low_i, up_i = bounds[i]
                lo = None if lA_i is None else concretize_box(low_i, up_i, lA_i, -1)
                up = None if uA_i is None else concretize_box(low_i, up_i, uA_i, +1)
            lower, upper = add_optional(lower, lo), add_optional(upper, up)
            continue
        in_bounds = [bounds[j] for j in node.inputs]
        alpha = None
        if alphas is not None and getattr(node.rule, "piecewise_linear", False):
            ((low_j, up_j),) = in_bounds
            if isinstance(alphas, dict):
                alpha = alphas.get(i)
            else:
                alpha = alphas.slopes_for(i, node.rule, lA_i, uA_i, low_j, up_j)
        if alpha is not None:
            lA_j, uA_j, lbias, ubias = node.rule.backward(
                lA_i, uA_i, low_j, up_j, alpha=alpha
            )
            pairs = [(lA_j, uA_j)]
        else:
            pairs, lbias, ubias = node.rule.bound_backward(lA_i, uA_i, in_bounds)
        lower, upper = add_optional(lower, lbias), add_optional(upper, ubias)
        for j, (la, ua) in zip(node.inputs, pairs, strict=True):
            if j in pending:
                old_l, old_u = pending[j]
                pending[j] = (add_linear(old_l, la), add_linear(old_u, ua))
            else:
                pending[j] = (la, ua)
    return lower, upper


def _dense_pair(lA, uA):
    """Both sides dense, converting shared coefficients once."""
    dense_l = to_dense(lA)
    return dense_l, dense_l if uA is lA else to_dense(uA)


def _needs_bounds(graph):
    """Nodes whose output feeds a nonlinear rule (their bounds matter)."""
    needed = set()
    for node in graph.nodes[1:]:
        if node.rule.nonlinear:
            needed.update(node.inputs)
    needed.discard(0)
    return needed


def interval_pass(graph, x, perturbation):
    """Interval (IBP) bounds for every node, in topological order.

    Returns:
        A list of ``(lower, upper)`` per node.
    """
    return _node_pass(graph, x, perturbation, None)


def crown_pass(graph, x, perturbation, patches=True, plan=None, costs=None, clamp=None):
    """Bounds for every node, those feeding activations tightened by CROWN.

    Each node that feeds a nonlinear rule gets CROWN bounds (intersected with
    its interval), in topological order so later relaxations use the tighter
    bounds.

    Args:
        patches: let the rows use the patches form where it applies
            (``False``: dense coefficients only; the same bounds, more memory).
        plan: optional dict that receives, for each refined node, the chunks
            of flat neuron indices it was bounded in (see ``refine_rows``).
        costs: optional dict that receives, for each refined node, the most
            coefficients one of its rows held at once.
        clamp: optional ``clamp(i, lower, upper) -> (lower, upper)`` applied
            to each node's bounds before later nodes read them (branch and
            bound narrows split neurons with it); it must only shrink them
            to a set that still holds every input it is asked about.

    Returns:
        A list of ``(lower, upper)`` per node.
    """
    needed = _needs_bounds(graph)
    piecewise = _feeds_only_piecewise_linear(graph)

    def refine(i, low, up, bounds):
        low, up = _refine(i, low, up, bounds)
        return (low, up) if clamp is None else clamp(i, low, up)

    def _refine(i, low, up, bounds):
        if i not in needed or _is_exact(graph, i, perturbation):
            return low, up
        index = _rows_to_refine(low, up, i in piecewise)
        if not len(index):
            return low, up
        chunks = [] if plan is None else plan.setdefault(i, [])
        return refine_rows(
            graph,
            i,
            low,
            up,
            bounds,
            x,
            perturbation,
            index,
            chunks,
            patches,
            costs=costs,
        )

    return _node_pass(graph, x, perturbation, refine)


def _node_pass(graph, x, perturbation, refine):
    bounds = [perturbation.box(x)]
    for i, node in enumerate(graph.nodes[1:], start=1):
        low, up = node.rule.bound_interval([bounds[j] for j in node.inputs])
        if refine is not None:
            low, up = refine(i, low, up, bounds)
        bounds.append((low, up))
    return bounds


def _rows_to_refine(low, up, unstable_only):
    """Flat indices of the neurons to bound again: all of them, or with
    ``unstable_only`` (the node feeds only ReLU-like rules, exact once the
    sign is known) those whose interval straddles zero in some sample."""
    flat_low = ops.reshape(low, (low.shape[0], -1))
    if not unstable_only:
        return np.arange(flat_low.shape[1])
    flat_up = ops.reshape(up, (up.shape[0], -1))
    straddle = ops.any(ops.logical_and(flat_low < 0, flat_up > 0), axis=0)
    return ops.convert_to_numpy(straddle).nonzero()[0]


def refine_rows(
    graph,
    i,
    low,
    up,
    bounds,
    x,
    perturbation,
    index,
    chunks,
    patches=True,
    alphas_for=None,
    costs=None,
):
    """Tighten node ``i``'s interval by CROWN passes to the input for the
    neurons ``index``, intersected with ``(low, up)``.

    Args:
        chunks: a list of index arrays: filled with the chunks used when
            empty, replayed when given (so slopes keep their shapes).
        alphas_for: optional ``chunk number -> alphas`` for ``backward_pass``.
    """
    c_low, c_up = bound_rows(
        graph,
        i,
        low,
        index,
        bounds + [None],
        x,
        perturbation,
        patches,
        chunks,
        alphas_for,
        costs,
    )
    # Scatter the rows back: unbounded neurons read -inf / +inf.
    batch, n = low.shape[0], int(np.prod(low.shape[1:]))
    slot = np.full(n, len(index))
    slot[index] = np.arange(len(index))
    slot = ops.convert_to_tensor(slot, dtype="int64")
    inf = ops.full((batch, 1), float("inf"), dtype=low.dtype)
    c_low = ops.take(ops.concatenate([c_low, -inf], axis=1), slot, axis=1)
    c_up = ops.take(ops.concatenate([c_up, inf], axis=1), slot, axis=1)
    low = ops.maximum(low, ops.reshape(c_low, low.shape))
    up = ops.minimum(up, ops.reshape(c_up, up.shape))
    return low, up


def _unit_rows(graph, i, index, reference, patches):
    """Specification rows ``e_k`` (``k`` in ``index``) over node ``i``'s output,
    in patches form when the node is an image and its rule knows that form."""
    shape = tuple(reference.shape[1:])
    if patches and len(shape) == 3 and graph.nodes[i].rule.supports_patches:
        return Patches.identity(shape, index, reference.dtype)
    n = int(np.prod(shape))
    rows = ops.take(
        ops.eye(n, dtype=reference.dtype), ops.convert_to_tensor(index), axis=0
    )
    # One copy for the whole batch: the rules broadcast it, so the layers up
    # to the first activation are not multiplied once per sample.
    return ops.reshape(rows, (1, len(index), *shape))


def bound_rows(
    graph,
    i,
    reference,
    index,
    bounds,
    x,
    perturbation,
    patches=True,
    chunks=None,
    alphas_for=None,
    costs=None,
):
    """CROWN bounds of the neurons ``index`` (flat) of node ``i``, in chunks of
    rows sized to the memory budget.

    Args:
        reference: a tensor shaped like node ``i``'s output (batch first).
        patches: start from the patches form where it applies.
        chunks: as in ``refine_rows`` (``None``: not recorded).
        alphas_for, costs: as in ``refine_rows``.

    Returns:
        ``(lower, upper)`` tensors ``(batch, len(index))``.

    Raises:
        MemoryBudgetError: when a single row does not fit the budget.
    """
    lows, ups = [], []
    replay = bool(chunks)
    parts = iter(chunks) if replay else None
    itemsize = np.dtype(keras.backend.standardize_dtype(reference.dtype)).itemsize
    name = f"the neurons of layer {graph.nodes[i].name!r}"
    on_cpu = "cuda" not in str(getattr(reference, "device", "cpu"))
    # One row first, to measure what a row costs; unless dense rows of every
    # node up to ``i`` (an upper bound) fit at once anyway.
    start, chunk = 0, 1
    if not isinstance(_unit_rows(graph, i, index[:1], reference, patches), Patches):
        sizes = [int(np.prod(b[0].shape[1:])) for b in bounds[:i] if b is not None]
        widest = max([int(np.prod(reference.shape[1:])), *sizes])
        dense_row = _PEAK_FACTOR * itemsize * reference.shape[0] * widest
        room = min(memory_budget(), CPU_CHUNK_BYTES) if on_cpu else memory_budget()
        if dense_row * len(index) <= room:
            chunk = len(index)
    while start < len(index):
        part = next(parts) if replay else index[start : start + chunk]
        if not replay and chunks is not None:
            chunks.append(part)
        spec = _unit_rows(graph, i, part, reference, patches)
        stats = {}
        alphas = None if alphas_for is None else alphas_for(len(lows))
        low, up = backward_pass(
            graph, i, spec, spec, bounds, x, perturbation, stats=stats, alphas=alphas
        )
        lows.append(low)
        ups.append(up)
        start += len(part)
        per_row = _PEAK_FACTOR * itemsize * stats["peak"] // len(part)
        if costs is not None:
            costs[i] = max(costs.get(i, 0), -(-stats["peak"] // len(part)))
        if not replay:
            chunk = rows_in_budget(per_row, len(index) - start, name, on_cpu)
    if len(lows) == 1:
        return lows[0], ups[0]
    return ops.concatenate(lows, axis=1), ops.concatenate(ups, axis=1)


def _feeds_only_piecewise_linear(graph):
    """Nodes all of whose readers are ReLU-like rules."""
    readers = graph.consumers()
    return {
        i
        for i, users in enumerate(readers)
        if users
        and all(getattr(graph.nodes[u].rule, "piecewise_linear", False) for u in users)
    }


def _is_exact(graph, i, perturbation):
    """An affine layer right on a box input: its interval is already exact."""
    node = graph.nodes[i]
    return (
        perturbation.norm == "linf"
        and node.inputs == (0,)
        and isinstance(node.rule, AffineRule)
    )


def _spec_or_identity(output, C):
    if C is None:
        return _identity_spec(output)
    return ops.cast(C, output.dtype)


def output_pass(graph, spec, lower, upper, node_bounds, x, perturbation, **options):
    """Back-substitution of ``spec`` from the output, for the sides asked;
    ``options`` go to ``backward_pass`` (``to_input``, ``alphas``)."""
    return backward_pass(
        graph,
        graph.output,
        spec if lower else None,
        spec if upper else None,
        node_bounds,
        x,
        perturbation,
        **options,
    )


class IntervalHidden:
    """Hidden layers bounded by interval arithmetic (IBP): cheap, loose."""

    name = "ibp"

    def node_bounds(self, graph, x, perturbation):
        """``(lower, upper)`` of every node."""
        return interval_pass(graph, x, perturbation)

    def __repr__(self):
        return "IntervalHidden()"


class CROWNHidden:
    """Hidden layers that feed activations bounded by CROWN (one row per
    unstable neuron, in patches form behind convolutions).

    Args:
        patches: use the patches form where it applies (``False``: dense
            coefficients, the same bounds with more memory).
    """

    name = "crown"

    def __init__(self, patches: bool = True):
        self.patches = bool(patches)

    def node_bounds(self, graph, x, perturbation):
        """``(lower, upper)`` of every node."""
        return crown_pass(graph, x, perturbation, self.patches)

    def __repr__(self):
        return f"CROWNHidden(patches={self.patches})"


class IntervalOutput:
    """The specification folded into the last linear layers, then bounded by
    the intervals of the nodes they read (IBP's output bound)."""

    name = "ibp"

    def bounds(self, graph, node_bounds, x, perturbation, spec, lower=True, upper=True):
        """``(lower, upper)`` of ``spec @ output`` (``None`` where unasked)."""
        return output_pass(
            graph, spec, lower, upper, node_bounds, x, perturbation, to_input=False
        )

    def __repr__(self):
        return "IntervalOutput()"


class CROWNOutput:
    """The specification back-substituted through every layer to the input
    (CROWN's output bound), relaxing activations on the given node bounds."""

    name = "crown"

    def bounds(self, graph, node_bounds, x, perturbation, spec, lower=True, upper=True):
        """``(lower, upper)`` of ``spec @ output`` (``None`` where unasked)."""
        return output_pass(graph, spec, lower, upper, node_bounds, x, perturbation)

    def __repr__(self):
        return "CROWNOutput()"


class BoundMethod:
    """A bound method: a strategy for the hidden layers and one for the output.

    ``bounds(graph, x, perturbation, C)`` → ``(lower, upper)``. The result is
    intersected with IBP's output bound on the same node bounds, so a method
    is never looser than IBP.

    Args:
        hidden: ``IntervalHidden()`` or ``CROWNHidden(...)``.
        output: ``IntervalOutput()`` or ``CROWNOutput()``.
        name: the name reports and messages use.

    Example:
        >>> crown_ibp = vn.bounds.BoundMethod(
        ...     vn.bounds.IntervalHidden(), vn.bounds.CROWNOutput(), "crown-ibp")
    """

    name = "base"

    def __init__(self, hidden=None, output=None, name: str | None = None):
        self.hidden = IntervalHidden() if hidden is None else hidden
        self.output = IntervalOutput() if output is None else output
        if name is not None:
            self.name = name

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        """Bound ``C @ f(x')`` (or ``f(x')``) over the perturbation set.

        Returns:
            ``(lower, upper)`` tensors ``(batch, specs)``; a side not asked
            for is ``None``.
        """
        node_bounds = self.hidden.node_bounds(graph, x, perturbation)
        spec = _spec_or_identity(node_bounds[graph.output][0], C)
        args = (graph, node_bounds, x, perturbation, spec, lower, upper)
        low, up = self.output.bounds(*args)
        if isinstance(self.output, IntervalOutput):
            return low, up
        ibp_low, ibp_up = IntervalOutput().bounds(*args)
        low = None if low is None else ops.maximum(low, ibp_low)
        up = None if up is None else ops.minimum(up, ibp_up)
        return low, up

    def floats_per_sample(self, graph, sizes, specs) -> int:
        """Rough count of floats one sample's bounds hold at their peak.

        Args:
            graph: the ``BoundGraph``.
            sizes: number of elements of each node's output.
            specs: rows of the specification (outputs when ``C`` is None).
        """
        if isinstance(self.output, IntervalOutput):
            return 4 * sum(sizes)
        # The output pass holds (specs, node) coefficient tensors, a few at a
        # time; hidden layers' rows are chunked to fit the budget.
        return _PEAK_FACTOR * max(specs, 1) * max(sizes) + 4 * sum(sizes)

    def __repr__(self):
        return f"{type(self).__name__}({self.hidden!r}, {self.output!r})"


class IBP(BoundMethod):
    """Interval bound propagation (Gowal et al. 2018).

    With a specification ``C`` the last linear layers are folded into it
    before the interval is applied, which is tighter than ``C`` times the
    output interval.
    """

    name = "ibp"

    def __init__(self):
        super().__init__(IntervalHidden(), IntervalOutput())

    def __repr__(self):
        return "IBP()"


def ibp_spec_bounds(graph, node_bounds, x, perturbation, C, lower=True, upper=True):
    """IBP bounds of ``C @ output`` from node intervals (``IntervalOutput``)."""
    spec = _spec_or_identity(node_bounds[graph.output][0], C)
    return IntervalOutput().bounds(
        graph, node_bounds, x, perturbation, spec, lower, upper
    )


class CROWN(BoundMethod):
    """CROWN (Zhang et al. 2018): backward linear relaxation everywhere.

    Hidden-layer bounds come from CROWN too (intersected with IBP's), which
    costs one backward pass per layer that feeds an activation.

    Args:
        patches: back-substitute through convolutions in patches form (the
            default); ``False`` keeps dense coefficients, for comparison.
    """

    name = "crown"

    def __init__(self, patches: bool = True):
        super().__init__(CROWNHidden(patches), CROWNOutput())

    @property
    def patches(self) -> bool:
        return self.hidden.patches

    def __repr__(self):
        return f"CROWN(patches={self.patches})"


class CROWNIBP(BoundMethod):
    """CROWN-IBP (Zhang et al. 2020): IBP hidden-layer bounds, CROWN output."""

    name = "crown-ibp"

    def __init__(self):
        super().__init__(IntervalHidden(), CROWNOutput())

    def __repr__(self):
        return "CROWNIBP()"


METHODS = {"ibp": IBP, "crown": CROWN, "crown-ibp": CROWNIBP}
