"""Bound-rule interfaces every zoo layer implements.

A bound rule works on tensors shaped like the layer's inputs (batch first).
CROWN coefficients ``A`` are shaped ``(batch, specs, *node_shape)`` (dense)
or are a ``verinet.bounds.patches.Patches`` (rules with
``supports_patches = True`` only), and the bias terms ``(batch, specs)``.
Either of ``lA``/``uA`` may be ``None`` when only one side of the bound is
wanted. Rules never store bounds on ``self``.
"""

from __future__ import annotations

from keras import ops

from verinet.bounds.patches import Patches, coefficients, like, spread


class BoundRule:
    """A layer (or part of one) that states how to bound its output.

    Subclasses implement ``bound_interval`` (IBP) and ``bound_backward``
    (CROWN back-substitution). ``nonlinear`` tells the engine that the rule
    needs bounds on its inputs before it can be relaxed.
    """

    nonlinear = False
    # Whether ``bound_backward`` accepts coefficients in patches form; the
    # engine turns them dense first for rules that don't.
    supports_patches = False

    def bound_interval(self, inputs):
        """Interval bounds of the output.

        Args:
            inputs: list of ``(lower, upper)`` pairs, one per layer input.

        Returns:
            ``(lower, upper)`` of the layer output.
        """
        raise NotImplementedError

    def bound_backward(self, lA, uA, inputs):
        """Move linear bounds from this layer's output to its inputs.

        Args:
            lA: coefficients of the lower bound on the output, or ``None``.
            uA: coefficients of the upper bound on the output, or ``None``.
            inputs: list of ``(lower, upper)`` input bounds (used by
                nonlinear rules for their relaxation).

        Returns:
            ``(pairs, lbias, ubias)``: ``pairs`` is a list of ``(lA_i, uA_i)``
            per input; biases are ``(batch, specs)`` tensors or ``None``.
        """
        raise NotImplementedError


class SingleInputRule(BoundRule):
    """A rule with one input: implement ``interval`` and ``backward``."""

    def interval(self, lower, upper):
        raise NotImplementedError

    def backward(self, lA, uA, lower, upper):
        """Return ``(lA_in, uA_in, lbias, ubias)``."""
        raise NotImplementedError

    def bound_interval(self, inputs):
        ((lower, upper),) = inputs
        return self.interval(lower, upper)

    def bound_backward(self, lA, uA, inputs):
        ((lower, upper),) = inputs
        lA_in, uA_in, lbias, ubias = self.backward(lA, uA, lower, upper)
        return [(lA_in, uA_in)], lbias, ubias


class AffineRule(SingleInputRule):
    """An affine map ``y = M x + b``: one ``backward_affine`` serves both sides."""

    def backward_affine(self, A, input_shape):
        """Return ``(A @ M, A · b)`` for coefficients ``A`` on the output.

        ``input_shape`` is the layer input's shape without the batch axis.
        """
        raise NotImplementedError

    def backward(self, lA, uA, lower, upper):
        shape = tuple(lower.shape[1:])
        lA_in, lbias = (None, None) if lA is None else self.backward_affine(lA, shape)
        if uA is lA:  # the same coefficients (an identity spec): reuse the work
            return lA_in, lA_in, lbias, lbias
        uA_in, ubias = (None, None) if uA is None else self.backward_affine(uA, shape)
        return lA_in, uA_in, lbias, ubias


class ElementwiseRule(SingleInputRule):
    """An elementwise activation: state ``relax`` and the generic rule applies it.

    ``relax(lower, upper)`` returns ``(lw, lb, uw, ub)`` with
    ``lw*x + lb <= f(x) <= uw*x + ub`` for every ``lower <= x <= upper``.
    """

    nonlinear = True
    supports_patches = True
    # True for ReLU-like rules: exact (linear) once the input's sign is known.
    piecewise_linear = False

    def relax(self, lower, upper):
        raise NotImplementedError

    def backward(self, lA, uA, lower, upper):
        lw, lb, uw, ub = self.relax(lower, upper)
        lA_in = uA_in = lbias = ubias = None
        signs = None
        if lA is not None:
            signs = pos, neg = split_signs(coefficients(lA))
            lA_in = like(lA, pos * spread(lw, lA) + neg * spread(uw, lA))
            lbias = dot_spec(pos, lb, lA) + dot_spec(neg, ub, lA)
        if uA is not None:
            pos, neg = signs if uA is lA else split_signs(coefficients(uA))
            uA_in = like(uA, pos * spread(uw, uA) + neg * spread(lw, uA))
            ubias = dot_spec(pos, ub, uA) + dot_spec(neg, lb, uA)
        return lA_in, uA_in, lbias, ubias


class IdentityRule(AffineRule):
    """Identity in bounds (dropout, input layers)."""

    supports_patches = True

    def interval(self, lower, upper):
        return lower, upper

    def backward_affine(self, A, input_shape):
        return A, None


def sum_spec(t):
    """Sum a ``(batch, specs, ...)`` tensor down to ``(batch, specs)``."""
    return ops.sum(ops.reshape(t, (t.shape[0], t.shape[1], -1)), axis=-1)


def dot_spec(coeffs, t, A):
    """``sum_spec(coeffs * spread(t, A))`` without the product tensor.

    ``coeffs`` has ``A``'s form; ``t`` is per element ``(b, *shape)``. Dense
    rows take a matrix product (one for the whole batch when the rows are
    shared, batch 1); patches rows the elementwise product.
    """
    if isinstance(A, Patches):
        return sum_spec(coeffs * A.unfold(t))
    flat = ops.reshape(t, (t.shape[0], -1))
    if coeffs.shape[0] == 1:  # rows shared by the batch: one matrix product
        rows = ops.reshape(coeffs, (coeffs.shape[1], -1))
        return ops.transpose(ops.matmul(rows, ops.transpose(flat)))
    # Plain 2-D and batched products only: a broadcast product may round
    # differently depending on whether gradients are recorded.
    rows = ops.reshape(coeffs, (coeffs.shape[0], coeffs.shape[1], -1))
    return ops.squeeze(ops.matmul(rows, flat[:, :, None]), axis=-1)


def split_signs(A):
    """``(max(A, 0), A - max(A, 0))``: each entry of ``A`` lands whole in one
    part, and the other part's entry is an exact zero."""
    pos = ops.relu(A)
    return pos, A - pos


def center_radius(lower, upper):
    """Return the midpoint and half-width of an interval."""
    # Halving is exact, and a product is cheaper than a division.
    return (lower + upper) * 0.5, (upper - lower) * 0.5


def cast_like(weight, reference):
    """Cast a layer weight to the dtype of a bound tensor."""
    return ops.cast(weight, reference.dtype)


def add_optional(a, b):
    """Add two tensors where either may be ``None``."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b
