"""`Module`: the base class of every layer, with PyTorch's registration and state-dict rules.

Assigning a `Parameter` or a `Module` to an attribute registers it; `register_buffer` registers a
tensor that is saved in the state dict but not trained. Names in `state_dict()` are the dotted
attribute paths (`features.0.weight`), exactly as PyTorch writes them.

Example:
    >>> import modelkit.authoring as mk
    >>> class Affine(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = Parameter(mk.ones(3))
    ...         self.register_buffer("shift", mk.zeros(3))
    ...     def forward(self, x):
    ...         return x * self.scale + self.shift
    >>> list(Affine().state_dict())
    ['scale', 'shift']
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Callable, Iterator

from modelkit.authoring.nn.hooks import RemovableHandle, add_hook
from modelkit.authoring.nn.parameter import Parameter, Tensor, as_array, assign_array, \
    tensor_from_array

__all__ = ["Module", "register_module_forward_pre_hook", "register_module_forward_hook"]

_global_forward_pre_hooks: dict = OrderedDict()
_global_forward_hooks: dict = OrderedDict()


def register_module_forward_pre_hook(hook: Callable) -> RemovableHandle:
    """Call `hook(module, args)` before every module's forward (the tracer records module paths
    this way); a non-None result replaces the args.

    Example:
        >>> handle = register_module_forward_pre_hook(lambda module, args: None)
        >>> handle.remove()
    """
    return add_hook(_global_forward_pre_hooks, hook)


def register_module_forward_hook(hook: Callable) -> RemovableHandle:
    """Call `hook(module, args, output)` after every module's forward; a non-None result replaces
    the output.

    Example:
        >>> register_module_forward_hook(lambda module, args, output: None).remove()
    """
    return add_hook(_global_forward_hooks, hook)


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


def _size_text(shape) -> str:
    return f"modelkit.Size({list(shape)})"


class Module:
    """Base class for all layers; subclasses call `super().__init__()` and define `forward`."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  '"forward" function')

    # --- registration -------------------------------------------------------------------

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or None, a declared-but-absent slot such as `bias=False`)."""
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (modelkit.nn.Parameter or None required)")
        self._discard(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: state that is not trained (BatchNorm's running_mean). Non-persistent
        buffers are left out of the state dict."""
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer "
                            f"'{name}' (modelkit.Tensor or None required)")
        self._discard(name)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module under `name`."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module")
        self._discard(name)
        self._modules[name] = module

    register_module = add_module

    def _check_name(self, name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f'{kind} name can\'t contain "." or be empty, got {name!r}')

    def _discard(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self.__dict__.pop(name, None)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self.add_module(name, value)
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(modelkit.nn.Parameter or None expected)")
            self._parameters[name] = None
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (modelkit.nn.Module or None expected)")
            self._modules[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(modelkit.Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: parameters, buffers and children live in dicts.
        for store in ("_parameters", "_buffers", "_modules"):
            found = self.__dict__.get(store)
            if found is not None and name in found:
                return found[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # --- traversal ----------------------------------------------------------------------

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names ('' for self)."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                child_prefix = f"{prefix}.{name}" if prefix else name
                yield from child.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_members(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool):
        seen = set()
        owners = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for owner_prefix, owner in owners:
            for name, value in getattr(owner, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{owner_prefix}.{name}" if owner_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name; a shared parameter is listed once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def get_submodule(self, target: str) -> Module:
        """The descendant at a dotted path, e.g. `model.get_submodule("encoder.layers.0")`."""
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule '{part}' "
                                     f"(looking up '{target}')")
            module = module._modules[part]
        return module

    # --- state dict ---------------------------------------------------------------------

    def state_dict(self, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict:
        """Parameters and persistent buffers by dotted name, detached unless `keep_vars`."""
        destination = OrderedDict() if destination is None else destination
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = buffer if keep_vars else buffer.detach()
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _state_slots(self) -> dict[str, tuple[Module, str, str]]:
        """Every state-dict key -> (owning module, store name, attribute name)."""
        slots = {}
        for prefix, module in self.named_modules(remove_duplicate=False):
            head = prefix + "." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    slots[head + name] = (module, "_parameters", name)
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers:
                    slots[head + name] = (module, "_buffers", name)
        return slots

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy values from `state_dict` (tensors or numpy arrays) into this module's parameters
        and buffers, in place. Shape mismatches are always errors; with `strict`, missing and
        unexpected keys are too. One error lists every problem. Returns
        `(missing_keys, unexpected_keys)`."""
        slots = self._state_slots()
        missing = [key for key in slots if key not in state_dict]
        unexpected = [key for key in state_dict if key not in slots]
        mismatched = []
        for key in slots.keys() & state_dict.keys():
            module, store, name = slots[key]
            current = getattr(module, store)[name]
            given = tuple(as_array(state_dict[key]).shape)
            if given != tuple(current.shape):
                mismatched.append(
                    f"size mismatch for {key}: copying a param with shape {_size_text(given)} "
                    f"from checkpoint, the shape in current model is {_size_text(current.shape)}.")
        problems = list(mismatched)
        if strict:
            if unexpected:
                problems.insert(0, "Unexpected key(s) in state_dict: "
                                + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: "
                                + ", ".join(f'"{k}"' for k in missing) + ". ")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(problems))
        for key in slots.keys() & state_dict.keys():
            module, store, name = slots[key]
            target = getattr(module, store)[name]
            source = as_array(state_dict[key])
            if assign:
                replacement = tensor_from_array(source.astype(target.dtype.numpy, copy=True),
                                                target.device)
                if store == "_parameters":
                    replacement = Parameter(replacement, requires_grad=target.requires_grad)
                getattr(module, store)[name] = replacement
            else:
                assign_array(target, source)
        return _IncompatibleKeys(missing, unexpected)

    # --- modes and bulk changes ---------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Training mode (Dropout drops, BatchNorm uses batch statistics) for all submodules."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: `train(False)`."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's `.grad` (to None by default, as PyTorch 2 does)."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                assign_array(param.grad, 0)

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call `fn` on every submodule (children first) then on self, e.g. to re-initialise."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _apply_to_tensors(self, convert: Callable[[Tensor], Tensor]) -> Module:
        # Parameters keep their identity (as in PyTorch), so an optimizer made before
        # `model.to("cuda")` still holds the moved parameters.
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.array = convert(param.detach()).array
                    param._version[0] += 1
                    if param.grad is not None:
                        param.grad = convert(param.grad)
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = convert(buffer)
        return self

    def to(self, *args, **kwargs) -> Module:
        """Move parameters and buffers to a device and/or cast floating ones to a dtype, in
        place (returns self): `model.to("cuda")`, `model.to(mk.float64)`. Parameters stay the
        same objects (an optimizer made before still holds them); gradients move with them."""
        return self._apply_to_tensors(
            lambda t: t.to(*args, **kwargs) if t.dtype.is_floating_point
            else t.to(*[a for a in args if not _is_dtype(a)],
                      **{k: v for k, v in kwargs.items() if k != "dtype"}))

    def cpu(self) -> Module:
        return self.to("cpu")

    def float(self) -> Module:
        from modelkit.authoring import dtypes
        return self.to(dtypes.float32)

    def double(self) -> Module:
        from modelkit.authoring import dtypes
        return self.to(dtypes.float64)

    # --- hooks and calling --------------------------------------------------------------

    def register_forward_pre_hook(self, hook: Callable) -> RemovableHandle:
        """`hook(module, args)` runs before forward; a non-None result (a tuple, or one value)
        replaces the positional args."""
        return add_hook(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook: Callable) -> RemovableHandle:
        """`hook(module, args, output)` runs after forward; a non-None result replaces output."""
        return add_hook(self._forward_hooks, hook)

    def __call__(self, *args, **kwargs):
        for hook in (*_global_forward_pre_hooks.values(), *self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in (*_global_forward_hooks.values(), *self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    # --- printing -----------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in `repr`; layers override it."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        for name, child in self._modules.items():
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_text}")
        if not self._modules and len(lines) <= 1:
            return f"{self._get_name()}({lines[0] if lines else ''})"
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"


def _is_dtype(value) -> bool:
    from modelkit.authoring import dtypes
    return isinstance(value, dtypes.dtype)
