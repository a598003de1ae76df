"""Optimisers. The update itself runs in Rust over all parameters in one call."""

from __future__ import annotations

from typing import Iterable, Sequence, Union

from ferrolm import _core
from ferrolm._core import Tensor

ParamGroup = dict
Params = Union[Iterable[Tensor], Sequence[ParamGroup]]


class _Optimizer:
    """What AdamW and SGD share: param groups, a learning rate to schedule, step, zero_grad."""

    _opt: _core.Optimizer

    @staticmethod
    def _pairs(params: Params, weight_decay: float) -> list[tuple[Tensor, float]]:
        """(tensor, weight decay) for every parameter: tensors take `weight_decay`, param
        groups ``{"params": [...], "weight_decay": x}`` their own."""
        if isinstance(params, Tensor):  # iterating it would give its rows
            raise TypeError("params must be an iterable of Tensors or param-group dicts, not a Tensor: pass [tensor]")
        pairs: list[tuple[Tensor, float]] = []
        for item in list(params):
            if isinstance(item, dict):
                if "params" not in item:
                    raise ValueError(f"a param group needs a 'params' list, got keys {sorted(item)}")
                other = sorted(set(item) - {"params", "weight_decay"})
                if other:  # torch's per-group lr, betas...: silently using the global ones would mislead
                    raise ValueError(f"param group keys {other} are not supported: only weight_decay varies by "
                                     "group (the learning rate and the rest are the optimizer's)")
                decay = float(item.get("weight_decay", weight_decay))
                pairs.extend((t, decay) for t in item["params"])
            elif isinstance(item, Tensor):
                pairs.append((item, float(weight_decay)))
            else:
                raise TypeError(f"params must be Tensors or param-group dicts, got {type(item).__name__}")
        return pairs

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


class AdamW(_Optimizer):
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
        self._opt = _core.Optimizer.adamw(self._pairs(params, weight_decay), float(lr),
                                          (float(betas[0]), float(betas[1])), float(eps))


class SGD(_Optimizer):
    """Stochastic gradient descent (as ``torch.optim.SGD``, without dampening): the weight decay
    is added to the gradient (L2 regularisation), then momentum keeps a running buffer
    ``b = momentum·b + g`` that replaces the gradient (or, with ``nesterov``, ``g + momentum·b``).

    >>> import ferrolm as fl
    >>> w = fl.ones(2, requires_grad=True)
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> (w * w).sum().backward(); opt.step(); w.numpy().tolist()
    [0.800000011920929, 0.800000011920929]
    """

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        self._opt = _core.Optimizer.sgd(self._pairs(params, weight_decay), float(lr), float(momentum), bool(nesterov))


__all__ = ["AdamW", "SGD"]
