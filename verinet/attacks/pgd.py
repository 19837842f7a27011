"""Gradient attacks: projected gradient descent (PGD) and FGSM.

An attack is an object holding its settings with one method, ``perturb``,
that returns adversarial inputs inside the perturbation set. Attacks are
independent of training and certification. They use torch autograd (Keras's
torch backend) for input gradients. ``BallAttack`` holds what every attack
here shares (projection onto the set, random starts, numpy/torch entry
points); ``TargetedPGD`` in ``targeted.py`` builds on it too.
"""

from __future__ import annotations

import numpy as np
import torch
from keras import ops

from verinet._validation import (
    check_choice,
    check_epsilon,
    check_feature_epsilon,
    check_feature_range,
    check_input_range,
    check_int,
    check_number,
)
from verinet.bounds.perturbation import NORMS, like_tensor, unpack_ball
from verinet.errors import InvalidInputError


def _margin_loss(logits, y):
    """``max_{j != y} f_j - f_y`` per sample: positive means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - true


def _ce_loss(logits, y):
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


_LOSSES = {"margin": _margin_loss, "ce": _ce_loss}


def ascent(objective, x, centre, perturbation, steps, step_size, stop=None):
    """Projected steepest ascent: the one gradient loop of PGD and of
    ``vn.verify``'s counterexample search.

    Evaluates ``objective`` at ``x`` and at ``steps`` further iterates, each
    ``step_size`` along the norm's steepest-ascent direction of the previous
    iterate's gradient, projected into ``perturbation`` around ``centre``.
    The last iterate is only evaluated (no gradient is taken there).

    Args:
        objective: ``objective(z) -> (value, aux)``: per-row values to
            increase (their sum is differentiated) and whatever the caller
            wants back for this iterate (e.g. the logits).
        x: the start, a torch tensor.
        centre: the perturbation's centre (ignored by a ``Box``).
        perturbation: a ``vn.bounds`` perturbation (projection and step).
        steps: the number of steps.
        step_size: a number, or a tensor broadcasting against ``x``.
        stop: optional ``stop() -> bool``, checked before each evaluation;
            the loop ends once it returns ``True``.

    Yields:
        ``(iterate, aux)`` for each evaluation, the iterate detached.
        Leaving the loop early skips the remaining gradients.

    Example:
        >>> for z, logits in ascent(objective, x, x, ball, 10, 0.01):
        ...     keep_the_best(z, logits)
    """
    for step in range(steps + 1):
        if stop is not None and stop():
            return
        last = step == steps
        x = x.detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            value, aux = objective(x)
        yield x.detach(), aux
        if last:
            return
        (grad,) = torch.autograd.grad(value.sum(), x)
        with torch.no_grad():
            moved = x.detach() + step_size * perturbation.direction(grad)
            x = perturbation.project(moved, centre)


class BallAttack:
    """Shared parts of the gradient attacks: the threat model and the entry points.

    A subclass sets ``model``, ``epsilon``, ``norm``, ``input_range`` and
    ``seed`` (see ``_threat_model``) and implements ``_search(x, y,
    generator, best, best_loss)``, which returns the examples as a tensor on
    the model's device. This class projects onto the perturbation set,
    draws random starts and converts numpy or torch inputs.

    The threat model's errors name the argument (``epsilon must be ...``);
    an attack's own options name the attack too (``PGD steps must be ...``,
    see ``_option``), as the training objectives' options do, so an error
    from ``certify(attack_options=...)`` says which attack refused it.
    """

    def _threat_model(self, model, epsilon, norm, input_range, seed):
        self.model = model
        epsilon, norm, input_range = unpack_ball(epsilon, norm, input_range)
        self.norm = check_choice("norm", norm, ("linf", "l2"))
        per_feature = np.ndim(epsilon) > 0 or (
            input_range is not None and any(np.ndim(v) > 0 for v in input_range)
        )
        if per_feature:
            self._per_feature_threat_model(model, epsilon, input_range)
        else:
            self.epsilon = check_epsilon(epsilon)
            self.input_range = check_input_range(input_range)
        self.perturbation = NORMS[self.norm](self.epsilon, self.input_range)
        self.seed = check_int(self._option("seed"), seed, minimum=0)

    def _per_feature_threat_model(self, model, epsilon, input_range):
        """An L-inf epsilon or input range given per feature (arrays
        broadcastable to the model's input shape)."""
        shape = (
            tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
        )
        if self.norm != "linf" or shape is None or None in shape:
            raise InvalidInputError(
                "A per-feature epsilon or input_range (an array) needs norm='linf' "
                "and a model with a known input shape."
            )
        self.epsilon = check_feature_epsilon(epsilon, shape)
        self.input_range = check_feature_range(input_range, shape)

    def _option(self, name: str) -> str:
        """``name`` as this attack's errors call it, e.g. ``"PGD steps"``."""
        return f"{type(self).__name__} {name}"

    def _step_size(self, step_size):
        """``None`` (the attack's default) or a finite step length > 0."""
        return check_number(
            self._option("step_size"), step_size, low=0, low_open=True, allow_none=True
        )

    def _project(self, x_adv, x):
        return self.perturbation.project(x_adv, x)

    def _random_point(self, x, generator):
        """A random point of the ball around each row of ``x`` (projected)."""
        return self.perturbation.sample(x, generator)

    def perturb_tensor(self, x, y):
        """Attack torch tensors; returns a detached tensor like ``x``.

        The attack runs on the model's device; the result is moved back to
        ``x``'s device.
        """
        device = x.device
        x = ops.convert_to_tensor(x.detach())  # the Keras device
        y = ops.convert_to_tensor(y).long()
        return self._perturb_on_device(x, y).to(device)

    def _perturb_on_device(self, x, y):
        generator = torch.Generator().manual_seed(self.seed)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        if np.all(self.epsilon == 0):
            return best
        with torch.enable_grad():  # also inside Keras's no-grad evaluation
            return self._search(x, y, generator, best, best_loss)

    def _search(self, x, y, generator, best, best_loss):
        raise NotImplementedError

    def perturb(self, x, y):
        """Return adversarial inputs for ``(x, y)``.

        Args:
            x: inputs (numpy array or torch tensor).
            y: integer labels.

        Returns:
            Adversarial inputs of the same kind, shape and dtype as ``x``.
        """
        if isinstance(x, torch.Tensor):
            return self.perturb_tensor(x, torch.as_tensor(y))
        x_np = np.asarray(x)
        check_feature_range(self.input_range, x_np.shape[1:], x_np)
        x_t = ops.convert_to_tensor(np.asarray(x, dtype="float32"))
        y_t = ops.convert_to_tensor(np.asarray(y), dtype="int64")
        return ops.convert_to_numpy(self.perturb_tensor(x_t, y_t)).astype(
            np.asarray(x).dtype
        )

    def __call__(self, x, y):
        """Same as ``perturb(x, y)``."""
        return self.perturb(x, y)


class PGD(BallAttack):
    """Projected gradient descent (Madry et al. 2018) in an L∞ or L2 ball.

    Untargeted: each step follows the gradient of one loss. For finding
    counterexamples (``certify``'s default attack) ``TargetedPGD`` is
    stronger at a lower cost.

    Args:
        model: a Keras model returning logits.
        epsilon: radius of the ball, a finite number >= 0.
        steps: gradient steps per restart, an int >= 1.
        step_size: step length, a finite number > 0 (default
            ``2.5 * epsilon / steps``).
        restarts: random restarts, an int >= 1; the strongest example per
            sample is kept.
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` box the examples stay in.
        loss: ``"margin"`` (best for finding counterexamples), ``"ce"``, or a
            callable ``loss(logits, y)`` returning per-sample values to maximize.
        random_start: start each restart at a random point of the ball.
        seed: seed of the random starts, an int >= 0.

    Raises:
        InvalidInputError: for a bool, float or value below 1 as ``steps`` or
            ``restarts``, a ``step_size`` that is not a finite number > 0, a
            bad ``seed``, or a bad threat model (epsilon, norm, input_range)
            or ``loss``; the message names the argument and the value.

    Example:
        >>> attack = vn.attacks.PGD(model, epsilon=0.1, steps=20)
        >>> x_adv = attack.perturb(x_test, y_test)
    """

    def __init__(
        self,
        model,
        epsilon,
        steps=20,
        step_size=None,
        restarts=1,
        norm="linf",
        input_range=None,
        loss="margin",
        random_start=True,
        seed=0,
    ):
        self._threat_model(model, epsilon, norm, input_range, seed)
        self.steps = check_int(self._option("steps"), steps)
        step_size = self._step_size(step_size)
        self.step_size = (
            2.5 * self.epsilon / self.steps if step_size is None else step_size
        )
        self.restarts = check_int(self._option("restarts"), restarts)
        self.loss = (
            loss
            if callable(loss)
            else _LOSSES[check_choice(self._option("loss"), loss, tuple(_LOSSES))]
        )
        self.random_start = random_start

    def _start(self, x, generator):
        if not self.random_start:
            return x.clone()
        return self._random_point(x, generator)

    def _search(self, x, y, generator, best, best_loss):
        def objective(z):
            logits = self.model(z, training=False)
            return self.loss(logits, y), logits

        for _ in range(self.restarts):
            start = self._start(x, generator)
            step = like_tensor(self.step_size, x)
            iterates = ascent(objective, start, x, self.perturbation, self.steps, step)
            for x_adv, logits in iterates:
                with torch.no_grad():
                    score = _margin_loss(logits, y)
                    better = score > best_loss
                    best[better] = x_adv[better]
                    best_loss = torch.where(better, score, best_loss)
        return best


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one full step.

    One step of length ``epsilon`` from the clean input, by construction: it
    takes no ``steps``, ``step_size`` or ``restarts``.

    Args:
        model: a Keras model returning logits.
        epsilon: radius of the ball (and the step length), a finite
            number >= 0.
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` box the examples stay in.
        loss: ``"ce"`` (the default), ``"margin"`` or a callable, as in
            ``PGD``.

    Raises:
        InvalidInputError: for a bad threat model (epsilon, norm,
            input_range) or ``loss``.

    Example:
        >>> x_adv = vn.attacks.FGSM(model, epsilon=0.1).perturb(x_test, y_test)
    """

    def __init__(self, model, epsilon, norm="linf", input_range=None, loss="ce"):
        super().__init__(
            model,
            epsilon,
            steps=1,
            restarts=1,
            norm=norm,
            input_range=input_range,
            loss=loss,
            random_start=False,
        )
        self.step_size = self.epsilon  # one full step (0 at epsilon 0)
