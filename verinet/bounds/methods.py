"""Bound algorithms as small composed objects: IBP, CROWN and CROWN-IBP.

All three share two passes over a ``BoundGraph``:

* ``interval_pass`` — interval bounds for every node, in topological order,
  optionally refining chosen nodes with a backward (CROWN) pass;
* ``backward_pass`` — back-substitution of linear bounds from one node to the
  input (CROWN), or only to the nearest nonlinear nodes, whose interval then
  concretizes them (IBP with the specification folded into the last linear
  layers).

Every method intersects its bounds with IBP's, so it is never looser.
"""

from __future__ import annotations

from keras import ops

from verinet.bounds.perturbation import concretize_box
from verinet.layers.base import AffineRule, add_optional


def _identity_spec(reference):
    """``(batch, n, *shape)`` identity coefficients for a node's output."""
    batch, shape = reference.shape[0], tuple(reference.shape[1:])
    n = 1
    for d in shape:
        n *= d
    eye = ops.reshape(ops.eye(n, dtype=reference.dtype), (1, n, *shape))
    return ops.broadcast_to(eye, (batch, n, *shape))


def backward_pass(graph, start, lA, uA, bounds, x, perturbation, to_input=True):
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

    Returns:
        ``(lower, upper)`` tensors ``(batch, specs)`` (``None`` where unasked).
    """
    pending = {start: (lA, uA)}
    lower = upper = None
    for i in range(start, -1, -1):
        if i not in pending:
            continue
        lA_i, uA_i = pending.pop(i)
        node = graph.nodes[i]
        stop_here = i == 0 or (not to_input and node.rule.nonlinear)
        if stop_here:
            if i == 0:
                lo = None if lA_i is None else perturbation.concretize(x, lA_i, -1)
                up = None if uA_i is None else perturbation.concretize(x, uA_i, +1)
            else:
                low_i, up_i = bounds[i]
                lo = None if lA_i is None else concretize_box(low_i, up_i, lA_i, -1)
                up = None if uA_i is None else concretize_box(low_i, up_i, uA_i, +1)
            lower, upper = add_optional(lower, lo), add_optional(upper, up)
            continue
        in_bounds = [bounds[j] for j in node.inputs]
        pairs, lbias, ubias = node.rule.bound_backward(lA_i, uA_i, in_bounds)
        lower, upper = add_optional(lower, lbias), add_optional(upper, ubias)
        for j, (la, ua) in zip(node.inputs, pairs, strict=True):
            if j in pending:
                old_l, old_u = pending[j]
                pending[j] = (add_optional(old_l, la), add_optional(old_u, ua))
            else:
                pending[j] = (la, ua)
    return lower, upper


def _needs_bounds(graph):
    """Nodes whose output feeds a nonlinear rule (their bounds matter)."""
    needed = set()
    for node in graph.nodes[1:]:
        if node.rule.nonlinear:
            needed.update(node.inputs)
    needed.discard(0)
    return needed


def interval_pass(graph, x, perturbation, refine=False):
    """Interval bounds for every node.

    Args:
        refine: when ``True``, nodes feeding nonlinear rules get CROWN bounds
            (intersected with their interval), computed in topological order
            so later relaxations use the tighter bounds.

    Returns:
        A list of ``(lower, upper)`` per node.
    """
    bounds = [perturbation.box(x)]
    needed = _needs_bounds(graph) if refine else set()
    piecewise = _feeds_only_piecewise_linear(graph) if refine else set()
    for i, node in enumerate(graph.nodes[1:], start=1):
        low, up = node.rule.bound_interval([bounds[j] for j in node.inputs])
        if i in needed and not _is_exact(graph, i, perturbation):
            low, up = _refine(
                graph, i, low, up, bounds, x, perturbation, i in piecewise
            )
        bounds.append((low, up))
    return bounds


def _refine(graph, i, low, up, bounds, x, perturbation, unstable_only):
    """Tighten node ``i``'s interval by a CROWN pass to the input.

    With ``unstable_only`` (the node feeds only ReLU-like rules, whose
    relaxation is exact once the sign is known) only neurons whose interval
    straddles zero in some sample are bounded again.
    """
    batch, shape = low.shape[0], tuple(low.shape[1:])
    flat_low, flat_up = ops.reshape(low, (batch, -1)), ops.reshape(up, (batch, -1))
    n = flat_low.shape[1]
    select = None
    if unstable_only:
        straddle = ops.any(ops.logical_and(flat_low < 0, flat_up > 0), axis=0)
        index = ops.convert_to_numpy(straddle).nonzero()[0]
        if len(index) == 0:
            return low, up
        if len(index) < n:
            select = ops.take(ops.eye(n, dtype=low.dtype), index, axis=0)  # (k, n)
    if select is None:
        spec = _identity_spec(low)
    else:
        rows = ops.reshape(select, (1, select.shape[0], *shape))
        spec = ops.broadcast_to(rows, (batch, select.shape[0], *shape))
    c_low, c_up = backward_pass(graph, i, spec, spec, bounds + [None], x, perturbation)
    if select is not None:
        hit = ops.sum(select, axis=0) > 0
        c_low = ops.where(hit, ops.matmul(c_low, select), flat_low)
        c_up = ops.where(hit, ops.matmul(c_up, select), flat_up)
    low = ops.maximum(low, ops.reshape(c_low, low.shape))
    up = ops.minimum(up, ops.reshape(c_up, up.shape))
    return low, up


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


class BoundMethod:
    """Base class: ``bounds(graph, x, perturbation, C)`` → ``(lower, upper)``."""

    name = "base"

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        """Bound ``C @ f(x')`` (or ``f(x')``) over the perturbation set.

        Returns:
            ``(lower, upper)`` tensors ``(batch, specs)``; a side not asked
            for is ``None``.
        """
        raise NotImplementedError

    def floats_per_sample(self, graph, sizes, specs) -> int:
        """Rough count of floats one sample's bounds hold at their peak.

        Args:
            graph: the ``BoundGraph``.
            sizes: number of elements of each node's output.
            specs: rows of the specification (outputs when ``C`` is None).
        """
        return 4 * sum(sizes)

    def __repr__(self):
        return f"{type(self).__name__}()"


class IBP(BoundMethod):
    """Interval bound propagation (Gowal et al. 2018).

    With a specification ``C`` the last linear layers are folded into it
    before the interval is applied, which is tighter than ``C`` times the
    output interval.
    """

    name = "ibp"

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        node_bounds = interval_pass(graph, x, perturbation)
        return ibp_spec_bounds(graph, node_bounds, x, perturbation, C, lower, upper)


def ibp_spec_bounds(graph, node_bounds, x, perturbation, C, lower=True, upper=True):
    """IBP bounds of ``C @ output`` from node intervals, folding ``C`` into the
    linear layers after the last nonlinear ones."""
    out = node_bounds[graph.output][0]
    spec = _spec_or_identity(out, C)
    return backward_pass(
        graph,
        graph.output,
        spec if lower else None,
        spec if upper else None,
        node_bounds,
        x,
        perturbation,
        to_input=False,
    )


class _BackwardMethod(BoundMethod):
    """CROWN at the output over intermediate bounds from ``refine``."""

    refine = True

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        node_bounds = interval_pass(graph, x, perturbation, refine=self.refine)
        ibp_low, ibp_up = ibp_spec_bounds(
            graph, node_bounds, x, perturbation, C, lower, upper
        )
        out = node_bounds[graph.output][0]
        spec = _spec_or_identity(out, C)
        low, up = backward_pass(
            graph,
            graph.output,
            spec if lower else None,
            spec if upper else None,
            node_bounds,
            x,
            perturbation,
        )
        low = None if low is None else ops.maximum(low, ibp_low)
        up = None if up is None else ops.minimum(up, ibp_up)
        return low, up

    def floats_per_sample(self, graph, sizes, specs):
        # Back-substitution holds (specs, node) coefficient tensors, a few at a
        # time (lower, upper, their positive and negative parts).
        widest = max(sizes)
        peak = specs * widest
        if self.refine:
            for i in _needs_bounds(graph):
                peak = max(peak, sizes[i] * max(sizes[: i + 1]))
        return 8 * peak + 4 * sum(sizes)


class CROWN(_BackwardMethod):
    """CROWN (Zhang et al. 2018): backward linear relaxation everywhere.

    Intermediate bounds come from CROWN too (intersected with IBP's), which
    costs one backward pass per layer that feeds an activation.
    """

    name = "crown"
    refine = True


class CROWNIBP(_BackwardMethod):
    """CROWN-IBP (Zhang et al. 2020): IBP intermediate bounds, CROWN output."""

    name = "crown-ibp"
    refine = False


METHODS = {"ibp": IBP, "crown": CROWN, "crown-ibp": CROWNIBP}
