"""Offline data sets; nothing here downloads."""

from verinet.datasets.digits import digits

__all__ = ["digits"]
