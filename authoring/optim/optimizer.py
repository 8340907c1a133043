"""`Optimizer`: parameter groups, per-parameter state, `zero_grad`, and state dicts.

Updates run on the parameters' arrays in place (through their array module, so the same code
serves numpy and cupy); they are not recorded by autograd, as `torch.no_grad()` steps are not.

Example:
    >>> import modelkit.authoring as mk
    >>> w = mk.nn.Parameter(mk.ones(2))
    >>> opt = mk.optim.SGD([w], lr=0.5)
    >>> (w * w).sum().backward(); opt.step(); w
    Parameter containing:
    tensor([0., 0.], requires_grad=True)
"""

from __future__ import annotations

from typing import Callable, Iterable

from modelkit.authoring.device import move_array
from modelkit.authoring.grad_mode import enable_grad
from modelkit.authoring.nn.parameter import Tensor, as_array, tensor_from_array

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: subclasses set `defaults` through `__init__` and implement `update`."""

    def __init__(self, params: Iterable, defaults: dict):
        self.defaults = defaults
        self.state: dict = {}
        self.param_groups: list[dict] = []
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters (others take the defaults)."""
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {**self.defaults, **param_group, "params": params}
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient (to None by default, as PyTorch 2 does)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.array[...] = 0

    def step(self, closure: Callable | None = None):
        """One update of every parameter that has a gradient; `closure` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.array
                if group.get("maximize", False):
                    grad = -grad
                self.update(p.array, grad, self.state.setdefault(p, {}), group)
                p._version[0] += 1
        return loss

    def update(self, param, grad, state: dict, group: dict) -> None:
        """Update the array `param` in place from `grad`; `state` persists per parameter."""
        raise NotImplementedError(f"{type(self).__name__} does not define update")

    # --- state dicts: parameters are referred to by their position across all groups ---------

    def state_dict(self) -> dict:
        """`{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}`."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: {k: tensor_from_array(v.copy()) if hasattr(v, "shape") else v
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and per-parameter state saved by `state_dict`."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index = {}
        for saved, group in zip(saved_groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group ({len(saved['params'])} "
                                 f"vs {len(group['params'])} parameters)")
            by_index.update(zip(saved["params"], group["params"]))
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: move_array(as_array(v), p.device).astype(p.array.dtype)
                             if isinstance(v, Tensor) or hasattr(v, "shape") else v
                             for k, v in s.items()}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
