"""Adversarial attacks: objects with one ``perturb(x, y)`` method.

``TargetedPGD`` is the attack ``certify`` runs by default (``attack="pgd"``);
``PGD`` is untargeted projected gradient descent (also used for adversarial
training) and ``FGSM`` its one-step special case.
"""

from verinet.attacks.pgd import FGSM, PGD
from verinet.attacks.targeted import TargetedPGD

__all__ = ["FGSM", "PGD", "TargetedPGD"]
