"""Gradient-mode context managers (thread-local, like PyTorch's)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading

from ferrolm import _core


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        # Per thread: one object used as a decorator may be entered by several threads at once,
        # and each must get its own mode back.
        self._previous = threading.local()

    def __enter__(self) -> None:
        stack = self._previous.__dict__.setdefault("stack", [])
        stack.append(_core.set_grad_enabled(self.enabled))

    def __exit__(self, *exc: object) -> None:
        _core.set_grad_enabled(self._previous.stack.pop())

    def __call__(self, func):
        """As a decorator; a generator function's body runs in the mode at each resume, and
        its caller in its own mode in between (wrapping only the call that makes the generator
        would cover none of its body)."""
        if not inspect.isgeneratorfunction(func):
            return super().__call__(func)

        def resume(step, *arg):
            with self:
                return step(*arg)

        @functools.wraps(func)
        def generator(*args, **kwargs):
            gen = func(*args, **kwargs)
            try:
                value = resume(gen.send, None)
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        resume(gen.close)
                        raise
                    except BaseException as e:
                        value = resume(gen.throw, e)
                    else:
                        value = resume(gen.send, sent)
            except StopIteration as e:  # the body returned: so does this generator, with its value
                return e.value

        return generator


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


class set_grad_enabled:
    """Turns graph recording on or off for this thread, at once, as PyTorch's does; used as a
    context manager (`with fl.set_grad_enabled(False): ...`), it restores the previous mode on
    exit.

    >>> import ferrolm as fl
    >>> with fl.set_grad_enabled(False):
    ...     fl.is_grad_enabled()
    False
    >>> fl.is_grad_enabled()
    True
    """

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled takes True or False, got {mode!r}")
        self.mode = mode
        self.previous = _core.set_grad_enabled(mode)

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        _core.set_grad_enabled(self.previous)

    def __call__(self, func):
        """As a decorator (`@fl.set_grad_enabled(False)`): `func` runs in the mode, which is
        not switched until it runs."""
        _core.set_grad_enabled(self.previous)
        return _GradMode(self.mode)(func)


__all__ = ["enable_grad", "no_grad", "set_grad_enabled"]
