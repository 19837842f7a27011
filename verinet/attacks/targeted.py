"""Targeted margin PGD: the attack ``certify`` runs by default.

An untargeted margin attack follows whichever wrong class is highest right
now and can stall in front of a class it never tries. ``TargetedPGD``
instead pushes, for each sample, the ``k`` wrong classes that a first-order
estimate says can get closest to the true one, each from several starts (the
gradient's vertex of the ball, a random vertex, random points) and with a
decaying step. All (sample, target, start) runs are batched into one model
call per step; a sample leaves the batch as soon as one of its runs
misclassifies it.
"""

from __future__ import annotations

import math

import torch

from verinet._validation import check_choice, check_int
from verinet.attacks.pgd import BallAttack, _margin_loss
from verinet.bounds.perturbation import like_tensor

SCHEDULES = ("cosine", "step", "constant")


def _targeted_margin(logits, y, t):
    """``f_t - f_y`` per row: positive means ``t`` beats the true class."""
    return (logits.gather(1, t[:, None]) - logits.gather(1, y[:, None])).squeeze(1)


class TargetedPGD(BallAttack):
    """Targeted margin PGD over the most promising wrong classes, with restarts
    from vertices and random points of the ball.

    For each sample it picks ``targets`` wrong classes ``t`` and maximizes the
    margin ``f_t - f_y`` by projected gradient ascent (sign steps in L∞,
    normalized steps in L2). Targets are ranked by a first-order estimate of
    the largest margin reachable in the set: ``f_t - f_y`` at the clean input
    plus the gradient's dot product with the move to the gradient's vertex of
    the ball (projected into ``input_range``). Only the ``3 * targets`` wrong
    classes with the highest clean logits are ranked, so a model with many
    classes pays for a few gradients, not all of them.

    Each target runs ``restarts`` times, in parallel: restart 0 starts at that
    gradient vertex, restart 1 at a random vertex of the ball (L2: a random
    point of the sphere), later restarts at random points of the ball. Every
    run takes ``steps`` steps whose length follows ``schedule`` from
    ``step_size`` down. After every step the strongest point per sample
    (largest ``max_{j != y} f_j - f_y``, the clean input included) is kept;
    with ``early_exit`` a sample stops once that is positive (misclassified),
    and its example is the first adversarial point found. Every point stays in
    the perturbation set: L∞ or L2 ball intersected with ``input_range``.

    Args:
        model: a Keras model returning logits.
        epsilon: radius of the ball.
        targets: wrong classes attacked per sample (an int >= 1), or ``None``
            for all of them.
        restarts: starts per target (an int >= 1).
        steps: gradient steps per run (an int >= 1).
        step_size: first step length (default ``epsilon / 2``), a number > 0.
        schedule: step length over the run, ``"cosine"`` (half a cosine from
            ``step_size`` towards 0), ``"step"`` (halved at 1/2 and 3/4 of the
            steps) or ``"constant"``.
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` box the examples stay in.
        early_exit: stop attacking a sample once it is misclassified.
        seed: seed of the random starts, an int >= 0.
        max_rows: the most inputs per model call (memory grows with it), an
            int >= 1. A sample takes ``targets * restarts`` rows while
            attacked and up to ``3 * targets`` while its targets are ranked;
            samples are attacked in chunks that fit.

    Raises:
        InvalidInputError: for a bool, float or value below 1 as
            ``targets``, ``restarts``, ``steps`` or ``max_rows``, a
            ``step_size`` that is not a finite number > 0, an unknown
            ``schedule``, a bad ``seed`` or a bad threat model (epsilon,
            norm, input_range); the message names the argument and the value.

    Example:
        >>> attack = vn.attacks.TargetedPGD(model, epsilon=0.05, targets=3)
        >>> x_adv = attack.perturb(x_test, y_test)
    """

    def __init__(
        self,
        model,
        epsilon,
        targets: int | None = 3,
        restarts: int = 2,
        steps: int = 10,
        step_size: float | None = None,
        schedule: str = "cosine",
        norm: str = "linf",
        input_range=None,
        early_exit: bool = True,
        seed: int = 0,
        max_rows: int = 4096,
    ):
        self._threat_model(model, epsilon, norm, input_range, seed)
        option = self._option
        self.targets = (
            None if targets is None else check_int(option("targets"), targets)
        )
        self.restarts = check_int(option("restarts"), restarts)
        self.steps = check_int(option("steps"), steps)
        step_size = self._step_size(step_size)
        self.step_size = self.epsilon / 2 if step_size is None else step_size
        self.schedule = check_choice(option("schedule"), schedule, SCHEDULES)
        self.early_exit = bool(early_exit)
        self.max_rows = check_int(option("max_rows"), max_rows)

    # -- pieces ---------------------------------------------------------------

    def step_length(self, step: int) -> float:
        """Length of step ``step`` (0-based) of a run.

        Args:
            step: the step's index, ``0 <= step < steps``.

        Returns:
            The step length under ``schedule``.

        Example:
            >>> TargetedPGD(model, 0.1, steps=10).step_length(0)
            0.05
        """
        if self.schedule == "constant":
            return self.step_size
        if self.schedule == "step":
            halvings = int(step >= self.steps / 2) + int(step >= 3 * self.steps / 4)
            return self.step_size * 0.5**halvings
        return self.step_size * 0.5 * (1.0 + math.cos(math.pi * step / self.steps))

    def _direction(self, grad):
        """The steepest unit ascent direction: sign in L∞, normalized in L2."""
        return self.perturbation.direction(grad)

    def _random_vertex(self, x, generator):
        return self.perturbation.vertex(x, generator)

    def _starts(self, x, keep, vertex, generator):
        """``(restarts, len(keep), ...)`` start points of the rows ``keep``.

        Random starts are drawn for all rows of ``x`` and then selected, so a
        sample's starts do not depend on which other samples are attacked.
        """
        starts = [vertex]
        for restart in range(1, self.restarts):
            if restart == 1:
                starts.append(self._random_vertex(x, generator)[keep])
            else:
                starts.append(self._random_point(x, generator)[keep])
        return torch.stack(starts)

    def _pick_targets(self, x, y, logits, k):
        """``(targets, vertices)``: ``(n, k)`` classes and their gradient vertices."""
        n, classes = logits.shape
        wrong = logits.detach().clone()
        wrong.scatter_(1, y[:, None], float("-inf"))
        m = min(classes - 1, 3 * k)
        candidates = wrong.topk(m, dim=1).indices  # (n, m), by clean logit
        rows = torch.arange(n, device=x.device).repeat_interleave(m)
        t = candidates.reshape(-1)
        x_rows = x[rows].clone().requires_grad_(True)
        value = _targeted_margin(self.model(x_rows, training=False), y[rows], t)
        grad = torch.autograd.grad(value.sum(), x_rows)[0]
        with torch.no_grad():
            x_rows = x_rows.detach()
            eps = like_tensor(self.epsilon, x_rows)
            vertex = self._project(x_rows + eps * self._direction(grad), x_rows)
            if k == m:
                order = torch.arange(m, device=x.device).expand(n, m)
            else:
                reach = value.detach() + (grad * (vertex - x_rows)).flatten(1).sum(1)
                order = reach.view(n, m).topk(k, dim=1).indices
            pick = (order + torch.arange(n, device=x.device)[:, None] * m).reshape(-1)
        return t[pick].view(n, k), vertex[pick]

    # -- the search -------------------------------------------------------------

    @staticmethod
    def _keep_strongest(x_adv, score, sample, best, best_loss):
        """Store each sample's strongest row if it beats ``best_loss``."""
        n = best_loss.shape[0]
        strongest = torch.full(
            (n,), float("-inf"), device=score.device, dtype=score.dtype
        )
        strongest.scatter_reduce_(0, sample, score, reduce="amax")
        better = strongest > best_loss
        if better.any():
            # Of the rows reaching a sample's maximum, the first one wins.
            rows = torch.arange(len(sample), device=score.device)
            winner = better[sample] & (score == strongest[sample])
            first = torch.full((n,), len(sample), device=score.device)
            first.scatter_reduce_(0, sample[winner], rows[winner], reduce="amin")
            improved = torch.nonzero(better).squeeze(1)
            best[improved] = x_adv[first[improved]]
        return torch.where(better, strongest, best_loss)

    def _search(self, x, y, generator, best, best_loss):
        with torch.no_grad():
            logits = self.model(x, training=False)
            best_loss = _margin_loss(logits, y)  # the clean input counts too
        classes = logits.shape[1]
        if classes < 2:
            return best
        k = classes - 1 if self.targets is None else min(self.targets, classes - 1)
        per_sample = max(k * self.restarts, min(classes - 1, 3 * k))
        chunk = max(1, self.max_rows // per_sample)
        for begin in range(0, x.shape[0], chunk):
            part = torch.arange(begin, min(begin + chunk, x.shape[0]), device=x.device)
            best_loss = self._attack_part(
                x, y, part, logits, k, generator, best, best_loss
            )
        return best

    def _attack_part(self, x, y, part, logits, k, generator, best, best_loss):
        """Attack the samples ``part``; updates ``best``, returns ``best_loss``."""
        todo = part[best_loss[part] <= 0] if self.early_exit else part
        if len(todo) == 0:
            return best_loss
        targets, vertex = self._pick_targets(x[todo], y[todo], logits[todo], k)
        # Rows are (restart, sample, target), restart-major. Random starts are
        # drawn for every sample of ``part``, attacked or not.
        sample = todo.repeat_interleave(k).repeat(self.restarts)
        target = targets.reshape(-1).repeat(self.restarts)
        keep = (todo - part[0])[:, None] * k + torch.arange(k, device=x.device)
        x_part = x[part].repeat_interleave(k, dim=0)
        x_adv = self._starts(x_part, keep.reshape(-1), vertex, generator)
        x_adv = x_adv.flatten(0, 1)
        centre, label = x[sample], y[sample]
        for step in range(self.steps + 1):
            last = step == self.steps  # evaluated, not stepped from
            x_adv.requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits = self.model(x_adv, training=False)
            if not last:
                objective = _targeted_margin(logits, label, target)
                grad = torch.autograd.grad(objective.sum(), x_adv)[0]
            with torch.no_grad():
                x_adv = x_adv.detach()
                score = _margin_loss(logits.detach(), label)
                best_loss = self._keep_strongest(x_adv, score, sample, best, best_loss)
                if last:
                    break
                if self.early_exit:
                    alive = best_loss[sample] <= 0
                    if not alive.any():
                        break
                    if not alive.all():
                        sample, target = sample[alive], target[alive]
                        centre, label = centre[alive], label[alive]
                        x_adv, grad = x_adv[alive], grad[alive]
                length = like_tensor(self.step_length(step), x_adv)
                moved = x_adv + length * self._direction(grad)
                x_adv = self._project(moved, centre)
        return best_loss
