"""Learning-rate schedules for large-batch training, stepped once per optimizer step.

Self-contained: imports only torch. All three are closed-form in the step count ``last_epoch``
(PyTorch's name for it), so a scheduler restored with ``load_state_dict`` continues the same
curve.

GradualWarmupScheduler (Goyal et al. 2017), with base LR b, multiplier k and T warm-up steps::

    lr(t) = b * (1 + (k - 1) * t / T)      for t <= T   (b at t = 0, k * b at t = T)
    then after_scheduler, whose starting LR is k * b, stepped once per step; or k * b held.

PolynomialLRDecay, with starting LR b, end LR e, power p and T decay steps::

    lr(t) = (b - e) * (1 - t / T) ** p + e  for t <= T, then e

MultiStepDecay (He et al. 2016's schedule), with starting LR b, factor g and milestones m_1 < m_2 < ...::

    lr(t) = b * g ** (number of milestones m_i <= t)
"""

from torch.optim.lr_scheduler import LRScheduler

__all__ = ["GradualWarmupScheduler", "MultiStepDecay", "PolynomialLRDecay"]


class PolynomialLRDecay(LRScheduler):
    """Decay each group's LR polynomially to ``end_learning_rate`` over ``max_decay_steps`` steps."""

    def __init__(self, optimizer, max_decay_steps, end_learning_rate=0.0001, power=1.0, last_epoch=-1):
        if not (isinstance(max_decay_steps, int) and max_decay_steps >= 1):
            raise ValueError(f"PolynomialLRDecay: max_decay_steps must be an int >= 1, got {max_decay_steps!r}")
        if end_learning_rate < 0 or power < 0:
            raise ValueError("PolynomialLRDecay: end_learning_rate and power must be >= 0")
        self.max_decay_steps = max_decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = min(self.last_epoch, self.max_decay_steps)
        fraction = (1.0 - t / self.max_decay_steps) ** self.power
        return [(base - self.end_learning_rate) * fraction + self.end_learning_rate
                for base in self.base_lrs]


class MultiStepDecay(LRScheduler):
    """Multiply each group's LR by ``gamma`` at each of ``milestones`` (steps of this scheduler).

    Unlike ``torch.optim.lr_scheduler.MultiStepLR``, which multiplies the current LR, the LR is
    computed from the step count alone, so it stays right after ``load_state_dict`` and when a
    warm-up scheduler hands over to it."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        if not all(isinstance(m, int) and m >= 1 for m in milestones) or milestones != sorted(set(milestones)):
            raise ValueError(f"MultiStepDecay: milestones must be increasing ints >= 1, got {milestones!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"MultiStepDecay: gamma must be in (0, 1], got {gamma!r}")
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * self.gamma ** sum(m <= self.last_epoch for m in self.milestones) for base in self.base_lrs]


class GradualWarmupScheduler(LRScheduler):
    """Raise each group's LR linearly from its base to ``multiplier`` times it over
    ``total_epoch`` steps, then hand over to ``after_scheduler``.

    ``after_scheduler`` must be built on the same optimizer before this scheduler; its base LRs
    become ``multiplier`` times the warm-up's, and it is saved and restored with this one.
    """

    def __init__(self, optimizer, multiplier, total_epoch, after_scheduler=None, last_epoch=-1):
        if not multiplier >= 1.0:
            raise ValueError(f"GradualWarmupScheduler: multiplier must be >= 1, got {multiplier!r}")
        if not (isinstance(total_epoch, int) and total_epoch >= 0):
            raise ValueError(f"GradualWarmupScheduler: total_epoch must be an int >= 0, got {total_epoch!r}")
        if after_scheduler is not None and after_scheduler.optimizer is not optimizer:
            raise ValueError("GradualWarmupScheduler: after_scheduler must use the same optimizer")
        self.multiplier = multiplier
        self.total_epoch = total_epoch
        self.after_scheduler = after_scheduler
        super().__init__(optimizer, last_epoch)
        if after_scheduler is not None:
            after_scheduler.base_lrs = [base * multiplier for base in self.base_lrs]

    def get_lr(self):
        t = self.last_epoch
        if t >= self.total_epoch:
            return [base * self.multiplier for base in self.base_lrs]
        return [base * (1.0 + (self.multiplier - 1.0) * t / self.total_epoch) for base in self.base_lrs]

    def step(self, epoch=None):
        if self.after_scheduler is None or self.last_epoch < self.total_epoch:
            return super().step(epoch)
        # Past the warm-up: the after-scheduler owns the LR from here on.
        self.last_epoch += 1
        self.after_scheduler.step()
        self._last_lr = self.after_scheduler.get_last_lr()

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "after_scheduler")}
        if self.after_scheduler is not None:
            state["after_scheduler"] = self.after_scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        after = state.pop("after_scheduler", None)
        self.__dict__.update(state)
        if after is not None:
            self.after_scheduler.load_state_dict(after)
