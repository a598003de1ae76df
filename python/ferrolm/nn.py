"""Composable modules: a small `Module` base for models written in Python, plus the Rust
layers (Linear, Embedding, LayerNorm)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ferrolm._core import Embedding, LayerNorm, Linear, Tensor, dropout, load_safetensors, save_safetensors


class Module:
    """Base class for Python models: parameters are found by walking attributes.

    Attributes that are leaf Tensors with ``requires_grad`` (they stay parameters when frozen
    after they are assigned: ``requires_grad = False`` keeps them saved and loaded, as PyTorch's
    frozen parameters are; results such as a cached activation are not parameters), modules
    (Python or Rust layers), models
    (anything with ``named_parameters()``: a GPT or BERT backbone, say), or lists, tuples and
    dicts of them are registered automatically, named like PyTorch's state dicts. ``save`` and
    ``load_weights`` write and read them as ``model.safetensors`` (so ``train()`` can checkpoint
    a Module).

    >>> import ferrolm as fl
    >>> class Mlp(Module):
    ...     def __init__(self):
    ...         self.fc1 = fl.Linear(4, 8, seed=1)
    ...         self.fc2 = fl.Linear(8, 2, seed=2)
    ...     def forward(self, x):
    ...         return self.fc2(fl.functional.gelu(self.fc1(x)))
    >>> [name for name, _ in Mlp().named_parameters()]
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """

    #: Set by `train()` / `eval()` on this module and every submodule, for a `forward` to read
    #: (e.g. to pass a dropout seed only while training); the Rust layers have no modes.
    training: bool = True

    def __setattr__(self, name: str, value: Any) -> None:
        # Leaves that require grad when assigned (alone, or in lists and dicts) are parameters,
        # and stay parameters when frozen later; results (a cached activation) are not.
        assigned = {t.uid for t in _tensors_in(value) if t.requires_grad and t.is_leaf}
        if assigned:
            self.__dict__.setdefault("_parameter_uids", set()).update(assigned)
        super().__setattr__(name, value)

    def __deepcopy__(self, memo: dict) -> "Module":
        """`copy.deepcopy`: every attribute copied, each tensor once (ties stay ties); a
        parameter frozen since it was assigned stays a parameter of the copy."""
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        state = dict(vars(self))
        # Layers and models first: a tensor tied to one of their weights then copies to theirs.
        holders = [k for k, v in state.items() if not isinstance(v, (Tensor, Module, list, tuple, dict))
                   and callable(getattr(v, "named_parameters", None))]
        copies = {k: copy.deepcopy(state[k], memo) for k in holders}
        copies.update({k: copy.deepcopy(v, memo) for k, v in state.items() if k not in copies})
        registered = state.get("_parameter_uids")
        if registered:  # the copies of the registered tensors, noted in memo by uid
            copies["_parameter_uids"] = {memo[("ferrolm.Tensor", uid)].uid for uid in registered
                                         if ("ferrolm.Tensor", uid) in memo}
        copied.__dict__.update({k: copies[k] for k in state})
        return copied

    def __repr__(self) -> str:
        """The module and the layers it holds, one per line, as PyTorch prints a model."""
        children = "".join(f"\n  ({name}): " + repr(layer).replace("\n", "\n  ")
                           for attr, value in vars(self).items() for name, layer in _layers_in(value, attr))
        return f"{type(self).__name__}({self.extra_repr()}{children}{chr(10) if children else ''})"

    def extra_repr(self) -> str:
        """This module's own settings, shown in its repr (as PyTorch's extra_repr)."""
        return ""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Tensor]]:
        out: list[tuple[str, Tensor]] = []
        seen: set[int] = set()  # tensors, not Python objects: a Rust layer's weight is a new object per read
        registered = self.__dict__.get("_parameter_uids", set())
        for name, value in vars(self).items():
            for sub_name, tensor in _parameters_of(value, f"{prefix}{name}", registered):
                if tensor.uid not in seen:
                    seen.add(tensor.uid)
                    out.append((sub_name, tensor))
        return out

    def parameters(self) -> list[Tensor]:
        return [t for _, t in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        """This module and every module it holds, in lists and dicts at any depth (as
        `named_parameters` finds them)."""
        yield self
        for value in vars(self).values():
            yield from _modules_in(value)

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path) -> None:
        """Writes every parameter to ``path/model.safetensors`` (atomically; ``path`` is created)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_safetensors(str(path / "model.safetensors"), dict(self.named_parameters()))

    def load_weights(self, path: str | Path) -> "Module":
        """Fills every parameter from ``path/model.safetensors`` written by ``save``; the names
        and shapes must match exactly."""
        file = Path(path) / "model.safetensors"
        fill_parameters(dict(self.named_parameters()), load_safetensors(str(file))[0], file)
        return self


class Dropout(Module):
    """Inverted dropout while training (a fresh mask each call, from the stream
    `fl.manual_seed` restarts); the identity after `eval()`.

    >>> import ferrolm as fl
    >>> drop = Dropout(0.5)
    >>> bool((drop(fl.ones(1000)).numpy() == 0).any()), bool((drop.eval()(fl.ones(3)).numpy() == 1).all())
    (True, True)
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, training=self.training)


def fill_parameters(named: dict[str, Tensor], tensors: dict[str, Any], file: str | Path) -> None:
    """Copies `tensors` (read from `file`) into the parameters `named`: the names must match
    exactly, the shapes too, and the values must be finite (a damaged or diverged checkpoint
    is refused, not trained on)."""
    if set(tensors) != set(named):
        missing, extra = sorted(set(named) - set(tensors)), sorted(set(tensors) - set(named))
        raise ValueError(f"{file}: the saved parameters do not match (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in named.items():
        if tuple(tensors[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{file}: {name} has shape {tensors[name].shape}, the parameter's is {tensor.shape}")
        if not np.isfinite(tensors[name]).all():
            raise ValueError(f"{file}: {name} holds NaN or infinite values (a damaged or diverged checkpoint)")
        tensor.copy_(tensors[name])


def _modules_in(value: Any) -> Iterator[Module]:
    if isinstance(value, Module):
        yield from value.modules()
    elif isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _modules_in(item)


def _layers_in(value: Any, name: str) -> Iterator[tuple[str, Any]]:
    """The modules, Rust layers and models in an attribute's value, named as in named_parameters."""
    if isinstance(value, (list, tuple, dict)):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _layers_in(item, f"{name}.{key}")
    elif not isinstance(value, Tensor) and callable(getattr(value, "named_parameters", None)):
        yield name, value


def _tensors_in(value: Any) -> Iterator[Tensor]:
    """The tensors of an attribute's value: itself, or those in its lists, tuples and dicts."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors_in(item)


def _parameters_of(value: Any, name: str, registered: set[int]) -> list[tuple[str, Tensor]]:
    """The parameters in an attribute's value: tensors that require grad or were assigned as
    parameters (`registered` uids), and those of the modules and models it holds."""
    if isinstance(value, Tensor):
        return [(name, value)] if (value.requires_grad and value.is_leaf) or value.uid in registered else []
    if isinstance(value, Module):
        return value.named_parameters(prefix=f"{name}.")
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _parameters_of(item, f"{name}.{i}", registered)]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _parameters_of(item, f"{name}.{key}", registered)]
    if callable(getattr(value, "named_parameters", None)):  # Rust layers, GPT/BERT models
        return [(f"{name}.{n}", t) for n, t in value.named_parameters()]
    return []


__all__ = ["Dropout", "Embedding", "LayerNorm", "Linear", "Module"]
