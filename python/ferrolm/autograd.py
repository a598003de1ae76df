"""Gradient-mode context managers (thread-local, like PyTorch's)."""

from __future__ import annotations

import contextlib

from ferrolm._core import set_grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(set_grad_enabled(self.enabled))

    def __exit__(self, *exc: object) -> None:
        set_grad_enabled(self._previous.pop())


def no_grad() -> _GradMode:
    """Context manager (or decorator) in which operations record no graph.

    >>> import ferrolm as fl
    >>> w = fl.randn(2, requires_grad=True)
    >>> with fl.no_grad():
    ...     (w * 2).requires_grad
    False
    """
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Context manager (or decorator) that turns graph recording back on."""
    return _GradMode(True)


__all__ = ["enable_grad", "no_grad"]
