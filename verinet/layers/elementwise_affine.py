"""Shared rule for layers that are ``y = x * scale + shift`` elementwise."""

from keras import ops

from verinet.bounds.patches import Patches
from verinet.layers.base import AffineRule, center_radius, sum_spec


class ElementwiseAffineRule(AffineRule):
    """An affine map that scales and shifts each element (broadcasting).

    Subclasses return ``(scale, shift)`` from ``affine_params(reference)``,
    cast to the reference tensor's dtype and broadcastable to a batch of
    outputs.
    """

    supports_patches = True

    def affine_params(self, reference):
        raise NotImplementedError

    def interval(self, lower, upper):
        scale, shift = self.affine_params(lower)
        center, radius = center_radius(lower, upper)
        mid = center * scale + shift
        rad = radius * ops.abs(scale)
        return mid - rad, mid + rad

    def backward_affine(self, A, input_shape):
        if isinstance(A, Patches):
            return self._backward_patches(A)
        scale, shift = self.affine_params(A)
        # The parameters broadcast against (batch, ...); A has a spec axis too.
        scale = ops.expand_dims(scale, 1) if len(ops.shape(scale)) > 1 else scale
        shift = ops.expand_dims(shift, 1) if len(ops.shape(shift)) > 1 else shift
        bias = sum_spec(A * shift)
        return A * scale, bias

    def _backward_patches(self, P):
        scale, shift = self.affine_params(P.coeffs)
        if len(ops.shape(scale)) > 1 or len(ops.shape(shift)) > 1:
            # Per-position parameters: gather them at each row's window.
            full = (1, *P.shape)
            scale = P.unfold(ops.broadcast_to(scale, full))
            shift = P.unfold(ops.broadcast_to(shift, full))
        # Entries outside the node are zero, so the plain sum is the bias.
        bias = sum_spec(P.coeffs * shift)
        return P.replace(P.coeffs * scale), bias
