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
    "crown-ibp": CROWNIBP,
    "smoothing": GaussianNoise,
}
# Other spellings accepted by ``get``; ``"crown"`` in ``compile`` has always
# meant CROWN-IBP training (``certify(method="crown")`` is full CROWN).
ALIASES = {"crown": "crown-ibp"}


def get(robust, **options) -> Objective:
    """Resolve ``compile``'s ``robust`` argument to an objective object.

    Args:
        robust: a name from ``OBJECTIVES`` (or ``ALIASES``, e.g. ``"crown"``
            for ``"crown-ibp"``) or an ``Objective``.
        **options: constructor arguments for a named objective
            (e.g. ``beta=6.0`` for ``"trades"``).

    Returns:
        The objective; its ``name`` is the canonical one (``"crown-ibp"``).

    Raises:
        InvalidInputError: for an unknown name, unknown or invalid options, or
            options given with an object.

    Example:
        >>> vn.objectives.get("crown").name
        'crown-ibp'
    """
    if isinstance(robust, Objective):
        if options:
            raise InvalidInputError(
                f"Options {sorted(options)} go to the objective's constructor; "
                f"robust={robust!r} is already built."
            )
        return robust
    key = robust.lower() if isinstance(robust, str) else robust
    key = ALIASES.get(key, key) if isinstance(key, str) else None
    if key not in OBJECTIVES:
        raise InvalidInputError(
            f"Unknown robust objective {robust!r}; choose one of "
            f'{", ".join(repr(k) for k in OBJECTIVES)} ("crown" is accepted '
            'for "crown-ibp") or pass a vn.objectives object.'
        )
    try:
        return OBJECTIVES[key](**options)
    except TypeError as exc:
        raise InvalidInputError(f"Bad options for robust={robust!r}: {exc}") from exc


__all__ = [
    "ALIASES",
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
