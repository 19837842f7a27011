"""Offline data sets; nothing here downloads unless asked."""

from verinet.datasets.digits import digits
from verinet.datasets.fashion_mnist import fashion_mnist, read_idx

__all__ = ["digits", "fashion_mnist", "read_idx"]
