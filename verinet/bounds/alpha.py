"""alpha-CROWN: CROWN with optimized lower-relaxation slopes.

CROWN bounds an unstable ReLU-family neuron ``max(x, a x)`` (``l < 0 < u``)
from below by a line ``alpha * x`` through the origin; *every*
``alpha`` in ``[a, 1]`` gives a sound bound, and CROWN picks one by a rule of
thumb. alpha-CROWN (Xu et al., 2021) treats the slopes as variables, one per
(sample, specification row, neuron), and tightens the output bound by
projected gradient steps (Adam, then clipping into ``[a, 1]``). Each
iteration's bound is sound, so the best one seen is kept per row; the first
iteration uses CROWN's slopes, so the result is never looser than CROWN, and
it is intersected with IBP like every method.

The hidden layers' bounds are optimized the same way, with slopes of their
own for each layer's rows (in patches form where it applies): each
iteration bounds them again, intersected with CROWN's, and the output bound's
gradient reaches their slopes through the relaxations they feed.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from verinet._validation import check_int, check_number
from verinet.bounds.memory import memory_budget
from verinet.bounds.methods import (
    CROWN,
    _spec_or_identity,
    crown_pass,
    ibp_spec_bounds,
    output_pass,
    refine_rows,
)
from verinet.bounds.patches import coefficients, spread
from verinet.bounds.relaxations import leaky_relu_lines
from verinet.errors import InvalidInputError


class SlopeStore:
    """Slope variables created the first time a back-substitution reaches a
    ReLU-family node, one set per pass (the output, or one chunk of one
    intermediate node's rows), starting from CROWN's slopes.

    ``for_pass(key)`` gives the object ``backward_pass`` takes as ``alphas``.

    Args:
        start: optional ``{(pass key, node): (lower slopes, upper slopes)}``
            to start from instead of CROWN's (e.g. a branch-and-bound
            domain's parent's optimized slopes); arrays shaped like the
            coefficients, ``None`` for a side not bounded. Any value is
            sound: slopes are clipped into ``[a, 1]`` before use.
    """

    def __init__(self, start: dict | None = None):
        self.slopes: dict = {}
        self.floors: list[float] = []
        self.params: list = []
        self.start = start or {}

    def for_pass(self, key):
        return _PassSlopes(self, key)

    def _make(self, rule, A, lower, upper, given=None):
        import torch

        if A is None:
            return None
        floor = rule._slope()
        zeros = ops.zeros_like(coefficients(A))
        if given is not None and tuple(given.shape) == tuple(zeros.shape):
            start = ops.clip(ops.cast(given, zeros.dtype), floor, 1.0) + zeros
        else:
            lw, _, _ = leaky_relu_lines(lower, upper, floor)
            start = spread(lw, A) + zeros
        p = torch.nn.Parameter(ops.convert_to_tensor(start).detach().clone())
        self.params.append(p)
        self.floors.append(floor)
        return p


class _PassSlopes:
    def __init__(self, store, key):
        self.store, self.key = store, key

    def slopes_for(self, i, rule, lA, uA, lower, upper):
        key = (self.key, i)
        if key not in self.store.slopes:
            given = self.store.start.get(key, (None, None))
            self.store.slopes[key] = (
                self.store._make(rule, lA, lower, upper, given[0]),
                self.store._make(rule, uA, lower, upper, given[1]),
            )
        return self.store.slopes[key]


class AlphaCROWN(CROWN):
    """alpha-CROWN: CROWN whose ReLU lower slopes are optimized.

    Args:
        iterations: projected-gradient steps (0 gives CROWN's bounds).
        lr: Adam's step size for the slopes.
        lr_decay: the step size is multiplied by this after every step.
        intermediate: also optimize the slopes used to bound the hidden layers
            (each layer's rows get their own), as far as the memory budget
            allows holding their autograd graph; the rest keep CROWN's
            bounds. ``False``: only the output specification's slopes.
        patches: as in ``CROWN`` (the intermediate bounds' form).

    Example:
        >>> method = vn.bounds.AlphaCROWN(iterations=20)
        >>> lower, upper = vn.compute_bounds(model, x, 0.02, method=method)
        >>> report = model.certify(x, y, epsilon=0.02, method="alpha-crown")
    """

    name = "alpha-crown"

    def __init__(
        self,
        iterations: int = 20,
        lr: float = 0.25,
        lr_decay: float = 0.98,
        intermediate: bool = True,
        patches: bool = True,
    ):
        super().__init__(patches=patches)
        self.iterations = check_int("iterations", iterations, minimum=0)
        self.lr = check_number("lr", lr, low=0.0, low_open=True)
        self.lr_decay = check_number(
            "lr_decay", lr_decay, low=0.0, high=1.0, low_open=True
        )
        self.intermediate = bool(intermediate)

    def __repr__(self):
        return (
            f"AlphaCROWN(iterations={self.iterations}, lr={self.lr}, "
            f"lr_decay={self.lr_decay}, intermediate={self.intermediate}, "
            f"patches={self.patches})"
        )

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        low, up, _ = self._optimize(graph, x, perturbation, C, lower, upper, False)
        return low, up

    def node_bounds(self, graph, x, perturbation, C=None):
        """Every node's bounds, the hidden layers' under optimized slopes.

        The slopes are optimized for the lower bound of ``C @ output`` (the
        identity if ``None``); each step's node bounds are valid, so the
        tightest seen for each neuron (intersected with CROWN's) is kept.
        Branch and bound starts from these.

        Returns:
            A list of ``(lower, upper)`` tensors per node.

        Example:
            >>> bounds = vn.bounds.AlphaCROWN().node_bounds(graph, x, ball)
        """
        return self._optimize(graph, x, perturbation, C, True, False, True)[2]

    def _optimize(self, graph, x, perturbation, C, lower, upper, track_nodes):
        """``(lower, upper, node bounds)``: the output bounds and, with
        ``track_nodes``, the tightest node bounds seen over the steps
        (``None`` otherwise)."""
        if keras.backend.backend() != "torch":
            raise InvalidInputError("alpha-CROWN needs Keras's torch backend.")
        import torch

        plan, costs = {}, {}
        with torch.no_grad():
            reference = crown_pass(graph, x, perturbation, self.patches, plan, costs)
            ibp_low, ibp_up = ibp_spec_bounds(
                graph, reference, x, perturbation, C, lower, upper
            )
        spec = _spec_or_identity(reference[graph.output][0], C)
        optimized = (
            self._affordable(plan, costs, reference) if self.intermediate else set()
        )
        store = SlopeStore()
        best_low = best_up = None
        optimizer = scheduler = None
        tightest = list(reference) if track_nodes else None
        for step in range(self.iterations + 1):
            with torch.enable_grad():
                node_bounds = reference
                if optimized:
                    node_bounds = self._hidden_bounds(
                        graph, x, perturbation, reference, plan, optimized, store
                    )
                    if track_nodes:
                        tightest = [
                            (
                                ops.maximum(t_low, n_low.detach()),
                                ops.minimum(t_up, n_up.detach()),
                            )
                            for (t_low, t_up), (n_low, n_up) in zip(
                                tightest, node_bounds, strict=True
                            )
                        ]
                low, up = output_pass(
                    graph,
                    spec,
                    lower,
                    upper,
                    node_bounds,
                    x,
                    perturbation,
                    alphas=store.for_pass("output"),
                )
                loss = (0.0 if up is None else up.sum()) - (
                    0.0 if low is None else low.sum()
                )
            if low is not None:
                low_d = low.detach()
                best_low = low_d if best_low is None else torch.maximum(best_low, low_d)
            if up is not None:
                up_d = up.detach()
                best_up = up_d if best_up is None else torch.minimum(best_up, up_d)
            if step == self.iterations or not store.params:
                break
            if optimizer is None:
                optimizer = torch.optim.Adam(store.params, lr=self.lr)
                scheduler = torch.optim.lr_scheduler.ExponentialLR(
                    optimizer, self.lr_decay
                )
            grads = torch.autograd.grad(loss, store.params, allow_unused=True)
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(store.params, grads, strict=True):
                p.grad = g
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                for p, floor in zip(store.params, store.floors, strict=True):
                    p.clamp_(floor, 1.0)
        low = None if best_low is None else ops.maximum(best_low, ibp_low)
        up = None if best_up is None else ops.minimum(best_up, ibp_up)
        return low, up, tightest

    def _affordable(self, plan, costs, reference):
        """Refined nodes whose optimization graph fits the memory budget,
        preferring those nearest the output."""
        budget, used, chosen = memory_budget(), 0, set()
        for i in sorted(plan, reverse=True):
            rows = sum(len(c) for c in plan[i])
            itemsize = np.dtype(
                keras.backend.standardize_dtype(reference[i][0].dtype)
            ).itemsize
            # Autograd keeps a few tensors of each step of the pass (at most
            # ``i`` steps), each at most the largest a row reached in CROWN.
            cost = 3 * i * rows * costs[i] * itemsize
            if used + cost <= budget:
                chosen.add(i)
                used += cost
        return chosen

    def _hidden_bounds(self, graph, x, perturbation, reference, plan, optimized, store):
        """Node bounds with the optimized nodes bounded again under their own
        slopes (intersected with CROWN's, which stay valid)."""
        bounds = [perturbation.box(x)]
        for i, node in enumerate(graph.nodes[1:], start=1):
            low, up = node.rule.bound_interval([bounds[j] for j in node.inputs])
            if i in plan:
                ref_low, ref_up = reference[i]
                low, up = ops.maximum(low, ref_low), ops.minimum(up, ref_up)
                if i in optimized:
                    index = np.concatenate(plan[i])
                    low, up = refine_rows(
                        graph,
                        i,
                        low,
                        up,
                        bounds,
                        x,
                        perturbation,
                        index,
                        plan[i],
                        self.patches,
                        alphas_for=lambda c, i=i: store.for_pass((i, c)),
                    )
            bounds.append((low, up))
        return bounds

    def floats_per_sample(self, graph, sizes, specs):
        # Autograd keeps every step of the output pass, and the slopes (with
        # Adam's two moments) are (specs, node) per ReLU layer.
        return 4 * super().floats_per_sample(graph, sizes, specs) + 8 * specs * sum(
            sizes
        )
