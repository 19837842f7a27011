"""scikit-learn's bundled 8x8 digits: the embedded default data set."""

from __future__ import annotations

import numpy as np


def digits():
    """Load the digits data bundled with scikit-learn (no download).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: float32 pixels scaled to
        ``[0, 1]`` shaped ``(n, 8, 8, 1)`` and int64 labels 0-9, split 80/20
        with ``train_test_split(test_size=0.2, stratify=y, random_state=0)``.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
        >>> x_train.shape
        (1437, 8, 8, 1)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    return (x_train, y_train), (x_test, y_test)
