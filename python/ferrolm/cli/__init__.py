"""The `ferrolm` command line.

Each command group lives in its own module and registers itself with a function of the
argparse subparsers object; every leaf command sets `func(args) -> int` (the exit status).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import sys
import threading
import warnings
from importlib import metadata
from typing import Callable, Optional, Sequence

from ferrolm.cli.common import undecodable
from ferrolm.cli.label import register_label
from ferrolm.cli.lm import register_chat, register_fill_mask, register_generate, register_perplexity, register_pretrain
from ferrolm.cli.nanogpt import translate
from ferrolm.cli.posttrain import register_classify, register_dpo, register_ppo, register_reward, register_sft
from ferrolm.cli.tokenizer import register_tokenizer
from ferrolm.train.loop import held_run_directories, release_run_directories

#: Command groups, each registered by a function of the subparsers object.
COMMANDS: list[Callable] = [
    register_pretrain,
    register_generate,
    register_chat,
    register_perplexity,
    register_fill_mask,
    register_sft,
    register_reward,
    register_classify,
    register_dpo,
    register_ppo,
    register_tokenizer,
    register_label,
]


def _version() -> str:
    try:
        return metadata.version("ferrolm")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


class _Parser(argparse.ArgumentParser):
    """A parser, and its commands' parsers, that take flags only as spelt: argparse's default
    takes any unique prefix, so `--lr 100` set --lr-decay-iters."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ferrolm", description="Train and run small language models on CPUs.")
    parser.add_argument("--version", action="version", version=f"ferrolm {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    parser.commands = subparsers.choices  # type: ignore[attr-defined]  # each command's own parser
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    held = set(held_run_directories())  # an in-process caller's (a notebook's training) stay held
    with _closed_streams_as_devnull(), _terminate_as_interrupt() as terminated, _plain_warnings():
        for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character gets its escape, not an error
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        try:
            return _run(argv)
        except KeyboardInterrupt:
            print("ferrolm: terminated" if terminated else "ferrolm: interrupted", file=sys.stderr)
            return 143 if terminated else 130
        finally:
            release_run_directories(keep=held)


@contextlib.contextmanager
def _closed_streams_as_devnull():
    """A standard stream closed when the command started (`>&-`, `<&-`; Python then has None
    for it) reads as empty and takes writes as /dev/null does, so a run neither fails after its
    work is done nor prints its notes into its output when only stderr is closed."""
    names = [name for name in ("stdin", "stdout", "stderr") if getattr(sys, name) is None]
    with contextlib.ExitStack() as opened:
        for name in names:
            setattr(sys, name, opened.enter_context(open(os.devnull, "r" if name == "stdin" else "w")))
        try:
            yield
        finally:
            for name in names:
                setattr(sys, name, None)


@contextlib.contextmanager
def _plain_warnings():
    """Python warnings shown as the command's other notes, `ferrolm: warning: …`, without the
    source line Python shows (the command's user did not write it). Only the format changes:
    an in-process caller's recorders (pytest.warns, logging) still receive them."""
    def plain(message, category, filename, lineno, line=None) -> str:
        return f"ferrolm: warning: {message}\n"

    previous, warnings.formatwarning = warnings.formatwarning, plain
    try:
        yield
    finally:
        warnings.formatwarning = previous


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt: what catches Ctrl-C to go on (`chat`) lets it through."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (`kill`, `timeout`, a cluster's preemption) stops a command as Ctrl-C does:
    training says which checkpoint it can resume from, and lets go of its directory. Yields a
    list that is non-empty once SIGTERM came."""
    terminated: list = []
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield terminated  # signal handlers are the main thread's; an ignored SIGTERM stays ignored
        return

    def interrupt(*received):
        terminated.append(received)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt) or signal.SIG_DFL  # None: a handler from C
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(argv: Optional[Sequence[str]]) -> int:
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(translate(list(sys.argv[1:] if argv is None else argv)))
        if unknown:  # said with the command's usage, not the top level's
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        _check_text_flags(args)
        status = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone before the last output is caught below
        return status
    except BrokenPipeError:  # the reader (say `head`) has gone: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError, IndexError, ArithmeticError, MemoryError, sqlite3.Error) as e:
        from ferrolm import FormatError, ShapeError

        kind = {FormatError: "bad format: ", ShapeError: "shape mismatch: "}.get(type(e), "")  # as their class says
        print(f"ferrolm: error: {kind}{e}", file=sys.stderr)
        return 2


#: The flags that are text for a model (paths may hold any bytes).
_TEXT_FLAGS = ("prompt", "system", "stop")


def _check_text_flags(args) -> None:
    """A text flag with bytes that are not UTF-8 (Python decodes arguments with surrogateescape)
    is said as such (it was "not valid Unicode (it contains an unpaired surrogate)")."""
    for name in _TEXT_FLAGS:
        value = getattr(args, name, None)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and undecodable(text):
                raise ValueError(f"--{name} is not UTF-8 text")


if __name__ == "__main__":
    sys.exit(main())
