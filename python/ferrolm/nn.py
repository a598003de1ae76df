"""Composable modules: a small `Module` base for models written in Python, plus the Rust
layers (Linear, Embedding, LayerNorm)."""

from __future__ import annotations

from typing import Any, Iterator

from ferrolm._core import Embedding, LayerNorm, Linear, Tensor


class Module:
    """Base class for Python models: parameters are found by walking attributes.

    Attributes that are Tensors with ``requires_grad``, modules (Python or Rust layers), or
    lists of modules are registered automatically, named like PyTorch's state dicts.

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

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Tensor]]:
        out: list[tuple[str, Tensor]] = []
        seen: set[int] = set()
        for name, value in vars(self).items():
            for sub_name, tensor in _parameters_of(value, f"{prefix}{name}"):
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    out.append((sub_name, tensor))
        return out

    def parameters(self) -> list[Tensor]:
        return [t for _, t in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        yield self
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Module):
                    yield from item.modules()

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


def _parameters_of(value: Any, name: str) -> list[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        return [(name, value)] if value.requires_grad else []
    if isinstance(value, Module):
        return value.named_parameters(prefix=f"{name}.")
    if isinstance(value, (Linear, Embedding, LayerNorm)):
        return [(f"{name}.{n}", t) for n, t in value.named_parameters()]
    if isinstance(value, (list, tuple)):
        out: list[tuple[str, Tensor]] = []
        for i, item in enumerate(value):
            out.extend(_parameters_of(item, f"{name}.{i}"))
        return out
    return []


__all__ = ["Embedding", "LayerNorm", "Linear", "Module"]
