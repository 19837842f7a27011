"""Keras callbacks for robust training: ``CertifyEvery``.

Example:
    >>> model.fit(x, y, epochs=20, callbacks=[
    ...     vn.callbacks.CertifyEvery(x_val, y_val, method="crown", every=2)])
"""

from verinet.callbacks.certify_every import CertifyEvery

__all__ = ["CertifyEvery"]
