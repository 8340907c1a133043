"""Learning-rate schedulers with PyTorch's semantics (`torch.optim.lr_scheduler`).

A scheduler records each group's `initial_lr`, sets the epoch-0 learning rate at construction,
and moves one step per `step()` call. Each schedule is a closed form of (base_lr, step), so
`state_dict()` is just `last_epoch` plus the base rates.

Example:
    >>> import modelkit.authoring as mk
    >>> opt = mk.optim.SGD([mk.nn.Parameter(mk.zeros(1))], lr=0.1)
    >>> sched = StepLR(opt, step_size=2, gamma=0.5)
    >>> [round(sched.get_last_lr()[0], 4) for _ in range(4) if not sched.step()]
    [0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Sequence

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "LambdaLR", "OneCycleLR"]


class LRScheduler:
    """Base class: subclasses define `lr_at(base_lr, group_index, step)`."""

    def __init__(self, optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            missing = [i for i, g in enumerate(optimizer.param_groups) if "initial_lr" not in g]
            if missing:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups {missing} "
                               f"when resuming an optimizer (last_epoch={last_epoch})")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr: float, group_index: int, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not define lr_at")

    def get_last_lr(self) -> list[float]:
        """The learning rates the last `step()` set, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch (or one batch, for OneCycleLR) and write the new rates."""
        self.last_epoch += 1
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr_at(self.base_lrs[i], i, self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything but the optimizer (and callables, which cannot be saved)."""
        return {k: v for k, v in self.__dict__.items()
                if k != "optimizer" and not callable(v) and k != "lr_lambdas"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """Multiply the rate by `gamma` every `step_size` epochs.

    Example:
        >>> StepLR.__name__
        'StepLR'
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, group_index, step):
        return base_lr * self.gamma ** (step // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiply the rate by `gamma` at each epoch listed in `milestones`."""

    def __init__(self, optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, group_index, step):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class ExponentialLR(LRScheduler):
    """Multiply the rate by `gamma` every epoch."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, group_index, step):
        return base_lr * self.gamma ** step


class CosineAnnealingLR(LRScheduler):
    """Cosine from the base rate down to `eta_min` over `T_max` epochs (SGDR without restarts)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, group_index, step):
        cosine = (1 + math.cos(math.pi * step / self.T_max)) / 2
        return self.eta_min + (base_lr - self.eta_min) * cosine


class LambdaLR(LRScheduler):
    """The base rate times `lr_lambda(epoch)`; one function, or one per parameter group."""

    def __init__(self, optimizer, lr_lambda: Callable[[int], float] | Sequence[Callable],
                 last_epoch: int = -1):
        groups = len(optimizer.param_groups)
        if callable(lr_lambda):
            self.lr_lambdas = [lr_lambda] * groups
        else:
            if len(lr_lambda) != groups:
                raise ValueError(f"LambdaLR expected {groups} lr_lambdas (one per parameter "
                                 f"group), got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, group_index, step):
        return base_lr * self.lr_lambdas[group_index](step)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, https://arxiv.org/abs/1708.07120), stepped per batch.

    The rate rises from max_lr/div_factor to max_lr over the first `pct_start` of the steps, then
    anneals to max_lr/(div_factor*final_div_factor); momentum (or Adam's beta1) moves inversely
    when `cycle_momentum`.
    """

    def __init__(self, optimizer, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        if total_steps <= 0:
            raise ValueError(f"OneCycleLR expected total_steps > 0, got {total_steps}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps = total_steps
        self.anneal_strategy = anneal_strategy
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        self.max_lrs = max_lrs
        self.phases = self._phases(pct_start, three_phase, div_factor, final_div_factor)
        self.cycle_momentum = cycle_momentum
        self.use_beta1 = "betas" in groups[0]
        self.momenta = (max_momentum, base_momentum)
        if last_epoch == -1:
            for group, top in zip(groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"], group["min_lr"] = top, top / div_factor / final_div_factor
        if cycle_momentum and not self.use_beta1 and "momentum" not in groups[0]:
            raise ValueError("optimizer must support momentum or beta1 with cycle_momentum enabled")
        super().__init__(optimizer, last_epoch)

    def _phases(self, pct_start, three_phase, div_factor, final_div_factor):
        # Each phase: (last step of the phase, start factor, end factor, momentum start, end),
        # factors relative to max_lr, momentum given as 0 = max_momentum, 1 = base_momentum.
        up = float(pct_start * self.total_steps) - 1
        low, final = 1 / div_factor, 1 / (div_factor * final_div_factor)
        if three_phase:
            return [(up, low, 1.0, 0, 1), (2 * up, 1.0, low, 1, 0),
                    (self.total_steps - 1, low, final, 0, 0)]
        return [(up, low, 1.0, 0, 1), (self.total_steps - 1, 1.0, final, 1, 0)]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _position(self, step):
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {step} times, more than total_steps="
                             f"{self.total_steps}")
        phase_start = 0.0
        for i, (end_step, lr0, lr1, m0, m1) in enumerate(self.phases):
            if step <= end_step or i == len(self.phases) - 1:
                pct = (step - phase_start) / (end_step - phase_start)
                return pct, lr0, lr1, m0, m1
            phase_start = end_step

    def lr_at(self, base_lr, group_index, step):
        pct, lr0, lr1, _, _ = self._position(step)
        top = self.max_lrs[group_index]
        return self._anneal(lr0 * top, lr1 * top, pct)

    def step(self) -> None:
        super().step()
        if not self.cycle_momentum:
            return
        pct, _, _, m0, m1 = self._position(self.last_epoch)
        momentum = self._anneal(self.momenta[m0], self.momenta[m1], pct)
        for group in self.optimizer.param_groups:
            if self.use_beta1:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
