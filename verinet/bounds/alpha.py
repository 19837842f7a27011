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

Intermediate bounds are CROWN's (computed once, in patches form where it
applies); the slopes are optimized for the output specification.
"""

from __future__ import annotations

import keras
from keras import ops

from verinet._validation import check_int, check_number
from verinet.bounds.methods import (
    _BackwardMethod,
    _spec_or_identity,
    ibp_spec_bounds,
    interval_pass,
    output_pass,
)
from verinet.bounds.relaxations import leaky_relu_lines
from verinet.errors import InvalidInputError


class AlphaCROWN(_BackwardMethod):
    """alpha-CROWN: CROWN whose ReLU lower slopes are optimized per output row.

    Args:
        iterations: projected-gradient steps (0 gives CROWN's bounds).
        lr: Adam's step size for the slopes.
        lr_decay: the step size is multiplied by this after every step.
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
        lr: float = 0.5,
        lr_decay: float = 0.98,
        patches: bool = True,
    ):
        super().__init__(patches=patches)
        self.iterations = check_int("iterations", iterations, minimum=0)
        self.lr = check_number("lr", lr, low=0.0, low_open=True)
        self.lr_decay = check_number(
            "lr_decay", lr_decay, low=0.0, high=1.0, low_open=True
        )

    def __repr__(self):
        return (
            f"AlphaCROWN(iterations={self.iterations}, lr={self.lr}, "
            f"lr_decay={self.lr_decay}, patches={self.patches})"
        )

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        if keras.backend.backend() != "torch":
            raise InvalidInputError("alpha-CROWN needs Keras's torch backend.")
        import torch

        with torch.no_grad():
            node_bounds = interval_pass(
                graph, x, perturbation, refine=True, patches=self.patches
            )
            ibp_low, ibp_up = ibp_spec_bounds(
                graph, node_bounds, x, perturbation, C, lower, upper
            )
        spec = _spec_or_identity(node_bounds[graph.output][0], C)
        alphas, params, floors = self._initial_slopes(
            graph, node_bounds, spec, lower, upper
        )
        best_low = best_up = None
        optimizer = scheduler = None
        if params:
            optimizer = torch.optim.Adam(params, lr=self.lr)
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, self.lr_decay)
        steps = self.iterations if params else 0
        for step in range(steps + 1):
            with torch.enable_grad():
                low, up = output_pass(
                    graph,
                    spec,
                    lower,
                    upper,
                    node_bounds,
                    x,
                    perturbation,
                    alphas=alphas,
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
            if step == steps:
                break
            grads = torch.autograd.grad(loss, params)
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                for p, floor in zip(params, floors, strict=True):
                    p.clamp_(floor, 1.0)
        low = None if best_low is None else ops.maximum(best_low, ibp_low)
        up = None if best_up is None else ops.minimum(best_up, ibp_up)
        return low, up

    def _initial_slopes(self, graph, node_bounds, spec, lower, upper):
        """CROWN's lower slopes, one copy per (sample, row), for each side.

        Returns:
            ``({node: (alpha_lower, alpha_upper)}, parameters, their floors)``.
        """
        import torch

        alphas, params, floors = {}, [], []
        rows = spec.shape[1]
        for i, node in enumerate(graph.nodes[1:], start=1):
            if not getattr(node.rule, "piecewise_linear", False):
                continue
            low_in, up_in = node_bounds[node.inputs[0]]
            slope = node.rule._slope()
            lw, _, _ = leaky_relu_lines(low_in, up_in, slope)
            start = ops.broadcast_to(lw[:, None], (lw.shape[0], rows, *lw.shape[1:]))
            sides = []
            for wanted in (lower, upper):
                if not wanted:
                    sides.append(None)
                    continue
                p = torch.nn.Parameter(start.detach().clone())
                params.append(p)
                floors.append(slope)
                sides.append(p)
            alphas[i] = tuple(sides)
        return alphas, params, floors

    def floats_per_sample(self, graph, sizes, specs):
        # Autograd keeps every step of the output pass, and the slopes (with
        # Adam's two moments) are (specs, node) per ReLU layer.
        return 4 * super().floats_per_sample(graph, sizes, specs) + 8 * specs * sum(
            sizes
        )
