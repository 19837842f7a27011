"""Small models the tests share."""

import verinet as vn
from verinet import layers


def digits_mlp(bn: bool = False, hidden: int = 32):
    """Flatten, Dense(hidden), optional BatchNormalization, ReLU, Dense(10)
    on 8x8x1 digits."""
    stack = [layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(hidden)]
    if bn:
        stack.append(layers.BatchNormalization())
    stack += [layers.ReLU(), layers.Dense(10)]
    return vn.Sequential(stack)
