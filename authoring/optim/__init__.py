"""Optimizers and learning-rate schedulers, as `torch.optim`.

Example:
    >>> import modelkit.authoring as mk
    >>> opt = mk.optim.AdamW(mk.nn.Linear(2, 1).parameters(), lr=1e-3)
    >>> len(opt.param_groups[0]["params"])
    2
"""

from modelkit.authoring.optim import lr_scheduler
from modelkit.authoring.optim.adam import Adam, AdamW
from modelkit.authoring.optim.optimizer import Optimizer
from modelkit.authoring.optim.rmsprop import RMSprop
from modelkit.authoring.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler"]
