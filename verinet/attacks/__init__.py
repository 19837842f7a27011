"""Adversarial attacks: objects with one ``perturb(x, y)`` method."""

from verinet.attacks.pgd import FGSM, PGD

__all__ = ["FGSM", "PGD"]
