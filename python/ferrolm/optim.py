"""Optimisers. The update itself runs in Rust over all parameters in one call."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

import json
import math
from pathlib import Path

import numpy as np

from ferrolm import _core
from ferrolm._core import Tensor

ParamGroup = dict
Params = Union[Iterable[Tensor], Sequence[ParamGroup]]


class _Optimizer:
    """What AdamW and SGD share: param groups, a learning rate to schedule, step, zero_grad."""

    _opt: _core.Optimizer
    _settings: dict  # the hyperparameters besides lr and weight decay, as the constructor took them
    _buffers: tuple[str, ...]  # what the optimizer keeps per parameter, by torch's names

    def _build(self, params: Params, lr: float, weight_decay: float, make, **settings: Any) -> None:
        pairs = self._pairs(params, weight_decay)
        self._opt, self._settings = make(pairs, float(lr)), settings
        self._lr = float(lr)
        decay = {t.uid: d for t, d in reversed(pairs)}  # a tensor listed twice keeps its first decay
        self._decays = [decay[t.uid] for t in self._opt.parameters()]

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
        """As given (the core steps with it in float32: 0.1 read back 0.10000000149011612)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._opt.lr = float(value)
        self._lr = float(value)

    def step(self) -> None:
        """Updates every parameter that has a gradient."""
        self._opt.step()

    def zero_grad(self) -> None:
        self._opt.zero_grad()

    def parameters(self) -> list[Tensor]:
        return self._opt.parameters()

    def state_dict(self) -> dict:
        """What the next steps depend on, laid out as torch's ``state_dict()``: ``{"state": {i:
        {"step": n, <buffer>: array}}, "param_groups": [{"lr", "weight_decay", ..., "params": [i]}]}``
        with ``i`` indexing ``parameters()``, arrays shaped like the parameter (AdamW's
        ``exp_avg``/``exp_avg_sq``, SGD's ``momentum_buffer``), and one group per weight decay.
        The arrays are copies; ``save`` writes them to a file."""
        state = {i: {"step": steps, **{name: values.reshape(p.shape) for name, values in buffers}}
                 for i, (p, (buffers, steps)) in enumerate(zip(self.parameters(), self._opt.state()))}
        return {"state": state, "param_groups": self._groups()}

    def _groups(self) -> list[dict]:
        """The param groups of ``state_dict()``: one per weight decay, with the settings."""
        groups: dict[float, list[int]] = {}
        for i, decay in enumerate(self._decays):
            groups.setdefault(decay, []).append(i)
        return [{"lr": self.lr, "weight_decay": decay, **self._settings, "params": ids} for decay, ids in groups.items()]

    def __repr__(self) -> str:
        groups = ", ".join(f"{len(g['params'])} with weight_decay={g['weight_decay']}" for g in self._groups())
        settings = "".join(f", {k}={v}" for k, v in self._settings.items())
        return f"{type(self).__name__}(lr={self.lr:g}{settings}; parameters: {groups or 'none'})"

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores a ``state_dict()`` of an optimizer over the same parameters (same order and
        shapes, same settings): the learning rate and every parameter's state. A state that does
        not fit raises ValueError and changes nothing."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("load_state_dict takes what state_dict() returned: a dict with 'state' and 'param_groups'")
        theirs = state_dict["param_groups"]
        if not isinstance(theirs, (list, tuple)) or not all(isinstance(g, dict) for g in theirs):
            raise ValueError("param_groups must be a list of dicts")
        keys = lambda groups: [{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in g.items() if k != "lr"}
                               for g in groups]
        if keys(theirs) != keys(self._groups()):
            raise ValueError(f"the saved optimizer had other settings or parameters: {keys(theirs)}, this one has "
                             f"{keys(self._groups())}")
        lrs = [g.get("lr") for g in theirs]
        lr = lrs[0] if lrs and all(x == lrs[0] for x in lrs) else None
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 <= lr < math.inf:
            raise ValueError(f"param_groups must share one finite learning rate >= 0, got {lrs}")
        self._load(state_dict["state"], lambda i: i, "parameter")
        self.lr = lr

    def save(self, path: Union[str, Path], names: Optional[Sequence[str]] = None,
             metadata: Optional[dict[str, str]] = None) -> None:
        """Writes every parameter's state to a safetensors file, atomically: its buffers as
        ``"{name}.{buffer}"`` (``names``: the parameters' names, in order; default their
        indices), its step count in the metadata (with ``metadata``, strings to keep beside)."""
        names = self._names(names)
        state = self.state_dict()["state"].values()
        tensors = {f"{n}.{k}": v for n, entry in zip(names, state) for k, v in entry.items() if k != "step"}
        steps = json.dumps({n: entry["step"] for n, entry in zip(names, state)})
        _core.save_safetensors(str(path), tensors, {**(metadata or {}), "steps": steps})

    def load(self, path: Union[str, Path], names: Optional[Sequence[str]] = None,
             steps: Optional[dict[str, int]] = None) -> dict[str, str]:
        """Restores the parameters' state from a file ``save`` wrote (with the same ``names``);
        the settings (learning rate, betas...) stay this optimizer's. Returns the file's metadata.
        A file that does not fit raises ValueError and changes nothing. ``steps`` (step counts
        by name) stand in for a file without them: checkpoints before they were kept there."""
        names = self._names(names)
        tensors, metadata = _core.load_safetensors(str(path))
        try:
            steps = json.loads(metadata["steps"])
        except (KeyError, ValueError, RecursionError):
            pass
        wanted = {f"{n}.{b}" for n in names for b in self._buffers}
        if not isinstance(steps, dict) or set(steps) != set(names) or set(tensors) != wanted:
            missing, extra = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
            raise ValueError(f"{path} does not hold this optimizer's state (missing {missing[:3]}, unexpected "
                             f"{extra[:3]}{'' if isinstance(steps, dict) else ', no step counts'})")
        saved = {n: {"step": steps[n], **{b: tensors[f"{n}.{b}"] for b in self._buffers}} for n in names}
        self._load(saved, names.__getitem__, f"{path}:", flat_ok=True)  # earlier checkpoints stored them flat
        return metadata

    def _load(self, saved: Any, key, what: str, flat_ok: bool = False) -> None:
        """Checks `saved` (parameter `key(i)` -> {"step", buffers...}) against the parameters and
        hands it to the core, which checks the values; nothing changes unless all of it fits."""
        params = self.parameters()
        if not isinstance(saved, dict) or len(saved) != len(params):
            raise ValueError(f"the saved state has {len(saved) if isinstance(saved, dict) else 'no'} entries, "
                             f"this optimizer has {len(params)} parameters")
        state = []
        for i, p in enumerate(params):
            k = key(i)
            entry = saved.get(k, saved.get(str(k)))  # str: the keys may have been through JSON
            expected = {"step", *self._buffers}
            if not isinstance(entry, dict) or set(entry) != expected:
                raise ValueError(f"{what} {k}: the state must have keys {sorted(expected)}, "
                                 f"got {sorted(entry) if isinstance(entry, dict) else entry!r}")
            step = entry["step"]
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < 2**63:
                raise ValueError(f"{what} {k}: step must be a count, got {step!r}")
            buffers = []
            for name in self._buffers:
                values = np.asarray(entry[name])
                if values.shape != tuple(p.shape) and not (flat_ok and values.shape == (p.numel(),)):
                    raise ValueError(f"{what} {k}: {name} has shape {values.shape}, the parameter has {tuple(p.shape)}")
                buffers.append((name, np.ascontiguousarray(values, dtype=np.float32).ravel()))
            state.append((buffers, int(step)))
        self._opt.load_state(state)

    def _names(self, names: Optional[Sequence[str]]) -> list[str]:
        n = len(self._decays)
        names = [str(i) for i in range(n)] if names is None else list(names)
        if len(names) != n or len(set(names)) != n:
            raise ValueError(f"names must be {n} distinct names, one per parameter, got {len(names)}")
        return names


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
        betas, eps = (float(betas[0]), float(betas[1])), float(eps)
        self._buffers = ("exp_avg", "exp_avg_sq")
        self._build(params, lr, weight_decay, lambda pairs, lr: _core.Optimizer.adamw(pairs, lr, betas, eps),
                    betas=betas, eps=eps)


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
        momentum, nesterov = float(momentum), bool(nesterov)
        self._buffers = ("momentum_buffer",) if momentum else ()
        self._build(params, lr, weight_decay, lambda pairs, lr: _core.Optimizer.sgd(pairs, lr, momentum, nesterov),
                    momentum=momentum, nesterov=nesterov)


__all__ = ["AdamW", "SGD"]
