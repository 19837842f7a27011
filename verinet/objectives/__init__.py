"""Robust training objectives for ``compile(robust=...)``."""

from verinet.errors import InvalidInputError
from verinet.objectives.adversarial import PGD, TRADES
from verinet.objectives.base import Context, Objective
from verinet.objectives.certified import CROWNIBP, IBP
from verinet.objectives.standard import GaussianNoise, Standard

OBJECTIVES = {
    "standard": Standard,
    "pgd": PGD,
    "trades": TRADES,
    "ibp": IBP,
    "crown": CROWNIBP,
    "crown-ibp": CROWNIBP,
    "smoothing": GaussianNoise,
}


def get(robust, **options) -> Objective:
    """Resolve ``compile``'s ``robust`` argument to an objective object.

    Args:
        robust: a name from ``OBJECTIVES`` or an ``Objective``.
        **options: constructor arguments for a named objective
            (e.g. ``beta=6.0`` for ``"trades"``).

    Raises:
        InvalidInputError: for an unknown name or options given with an object.
    """
    if isinstance(robust, Objective):
        if options:
            raise InvalidInputError(
                f"Options {sorted(options)} go to the objective's constructor; "
                f"robust={robust!r} is already built."
            )
        return robust
    key = robust.lower() if isinstance(robust, str) else robust
    if key not in OBJECTIVES:
        raise InvalidInputError(
            f"Unknown robust objective {robust!r}; choose one of "
            f"{', '.join(repr(k) for k in OBJECTIVES)} or pass a vn.objectives object."
        )
    try:
        return OBJECTIVES[key](**options)
    except TypeError as exc:
        raise InvalidInputError(f"Bad options for robust={robust!r}: {exc}") from exc


__all__ = [
    "CROWNIBP",
    "IBP",
    "OBJECTIVES",
    "PGD",
    "TRADES",
    "Context",
    "GaussianNoise",
    "Objective",
    "Standard",
    "get",
]
