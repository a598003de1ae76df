"""nanoGPT's habits on ferrolm's command line: its option spellings (`--batch_size=32`,
`--out_dir`, `--gradient_accumulation_steps`, sample.py's `--start` and `--out_dir`) and its
config files (`ferrolm pretrain config/train_shakespeare_char.py`), translated into ferrolm's
flags before parsing. Config files are read, never run: values must be literals or arithmetic
on them."""

from __future__ import annotations

import ast
import operator
import sys
from pathlib import Path

#: nanoGPT names that ferrolm spells differently, after `_` → `-`.
RENAMED = {"--out-dir": "--out", "--gradient-accumulation-steps": "--grad-accum"}
#: Config keys about hardware and logging services, which mean nothing here.
IGNORED = {"device", "compile", "backend", "wandb_log", "wandb_project", "wandb_run_name"}
#: The nanoGPT dataset that is ferrolm's bundled corpus (character-level by default).
BUNDLED_DATASET = "shakespeare_char"
#: Arithmetic allowed in config values (`gradient_accumulation_steps = 5 * 8`).
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv}


def translate(argv: list[str]) -> list[str]:
    """`argv` with nanoGPT spellings and config files replaced by ferrolm's flags."""
    if not argv:
        return argv
    command, rest = argv[0], argv[1:]
    configs = {a for a in rest if command == "pretrain" and a.endswith(".py") and is_config(Path(a))}
    files_given = any(not a.startswith("-") and a not in configs for a in rest)
    out, ignored = [command], []
    for arg in rest:
        if arg in configs:
            out += config_flags(Path(arg), files_given, ignored)
        elif arg.startswith("--") and arg[2:].partition("=")[0] in IGNORED:
            ignored.append(arg)
        elif arg.startswith("--"):
            out += _option(arg, command)
        else:
            out.append(arg)
    if ignored:
        print(f"ferrolm: ignoring {', '.join(ignored)} (no meaning here)", file=sys.stderr)
    return out


def _option(arg: str, command: str) -> list[str]:
    """One `--name[=value]` option in ferrolm's spelling."""
    name, eq, value = arg.partition("=")
    name = name.replace("_", "-")
    if command == "generate":
        if name == "--out-dir" and eq:  # sample.py samples from --out_dir: our positional model
            return [value]
        if name == "--start":
            return ["--prompt-file", value.removeprefix("FILE:")] if value.startswith("FILE:") else ["--prompt" + eq + value]
    if name == "--init-from" and value in ("scratch", "resume"):
        return ["--resume"] if value == "resume" else []
    return [RENAMED.get(name, name) + eq + value]


def _statements(path: Path) -> list[ast.stmt] | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), str(path)).body
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def is_config(path: Path) -> bool:
    """Whether a .py file looks like a nanoGPT config: only imports, docstrings and `name = ...`
    lines (Python source to train on has definitions and control flow)."""
    body = _statements(path)
    return bool(body) and all(isinstance(s, (ast.Import, ast.ImportFrom)) or _is_docstring(s) or _assigned(s)
                              for s in body)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def _assigned(node: ast.stmt) -> str | None:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def _value(node: ast.expr):
    """A literal, or + - * / // on literals; anything else is ValueError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError


def config_flags(path: Path, files_given: bool, ignored: list[str]) -> list[str]:
    """The flags a nanoGPT config file sets, in its order (later command-line flags win); the
    keys that mean nothing here are added to `ignored`."""
    flags = []
    for node in _statements(path) or []:
        key = _assigned(node)
        if key is None:
            continue  # an import or a docstring
        if key in IGNORED:
            ignored.append(f"{key} in {path}")
            continue
        try:
            value = _value(node.value)
        except (ValueError, TypeError, ArithmeticError):
            raise ValueError(f"{path} line {node.lineno}: {key} must be a plain value (the file is read, not run)") from None
        if key == "dataset":
            if value != BUNDLED_DATASET and not files_given:
                raise ValueError(f"{path}: dataset {value!r}: give its text files as arguments (the bundled corpus "
                                 f"is nanoGPT's {BUNDLED_DATASET!r})")
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += _option(f"--{key}={text}", "pretrain")
    return flags
