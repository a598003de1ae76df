"""Gradient-mode context managers (thread-local, like PyTorch's)."""

from __future__ import annotations

import contextlib
import threading

from ferrolm._core import set_grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        # Per thread: one object used as a decorator may be entered by several threads at once,
        # and each must get its own mode back.
        self._previous = threading.local()

    def __enter__(self) -> None:
        stack = self._previous.__dict__.setdefault("stack", [])
        stack.append(set_grad_enabled(self.enabled))

    def __exit__(self, *exc: object) -> None:
        set_grad_enabled(self._previous.stack.pop())


def no_grad(func=None):
    """Context manager (or decorator, with or without parentheses) in which operations record
    no graph.

    >>> import ferrolm as fl
    >>> w = fl.randn(2, requires_grad=True)
    >>> with fl.no_grad():
    ...     (w * 2).requires_grad
    False
    """
    return _GradMode(False) if func is None else _GradMode(False)(func)


def enable_grad(func=None):
    """Context manager (or decorator, with or without parentheses) that turns graph recording
    back on."""
    return _GradMode(True) if func is None else _GradMode(True)(func)


__all__ = ["enable_grad", "no_grad"]
