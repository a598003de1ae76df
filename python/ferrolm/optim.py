"""Optimisers. The update itself runs in Rust over all parameters in one call."""

from __future__ import annotations

from typing import Iterable, Sequence, Union

from ferrolm import _core
from ferrolm._core import Tensor

ParamGroup = dict
Params = Union[Iterable[Tensor], Sequence[ParamGroup]]


class AdamW:
    """AdamW with decoupled weight decay and bias correction (as ``torch.optim.AdamW``).

    Args:
        params: tensors, or param groups ``{"params": [...], "weight_decay": x}``
            (nanoGPT decays matrices and not biases or norms).
        lr: learning rate; assign ``opt.lr`` to schedule it.
        betas: moment decay rates.
        eps: denominator guard.
        weight_decay: decay for groups that do not set their own.

    >>> import ferrolm as fl
    >>> w = fl.randn(2, 2, requires_grad=True)
    >>> opt = AdamW([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers (beta1, beta2), got {betas!r}")
        pairs: list[tuple[Tensor, float]] = []
        for item in list(params):
            if isinstance(item, dict):
                if "params" not in item:
                    raise ValueError(f"a param group needs a 'params' list, got keys {sorted(item)}")
                decay = float(item.get("weight_decay", weight_decay))
                pairs.extend((t, decay) for t in item["params"])
            elif isinstance(item, Tensor):
                pairs.append((item, float(weight_decay)))
            else:
                raise TypeError(f"AdamW params must be Tensors or param-group dicts, got {type(item).__name__}")
        self._opt = _core.AdamW(pairs, float(lr), (float(betas[0]), float(betas[1])), float(eps))

    @property
    def lr(self) -> float:
        return self._opt.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._opt.lr = float(value)

    def step(self) -> None:
        """Updates every parameter that has a gradient."""
        self._opt.step()

    def zero_grad(self) -> None:
        self._opt.zero_grad()

    def parameters(self) -> list[Tensor]:
        return self._opt.parameters()


__all__ = ["AdamW"]
