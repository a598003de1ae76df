"""nanoGPT's habits on ferrolm's command line: its option spellings (`--batch_size=32`,
`--out_dir`, `--gradient_accumulation_steps`, `--init_from`, sample.py's `--start` and
`--out_dir`) and its config files (`ferrolm pretrain config/train_shakespeare_char.py`),
translated into ferrolm's flags before parsing. Config files are read, never run: values must
be literals or arithmetic on numbers."""

from __future__ import annotations

import argparse
import ast
import contextlib
import operator
import re
import sys
from pathlib import Path

from ferrolm.cli.common import MODEL_FLAGS, TRAIN_FLAGS, boolean

#: nanoGPT names that ferrolm spells differently, after `_` → `-`.
RENAMED = {"--out-dir": "--out", "--gradient-accumulation-steps": "--grad-accum"}
#: Config keys about hardware and logging services, which mean nothing here.
IGNORED = {"device", "compile", "backend", "wandb_log", "wandb_project", "wandb_run_name"}
#: What a checkpoint fixes: on resume nanoGPT takes these from it, not from the config file.
ARCHITECTURE = {"n_layer", "n_head", "n_embd", "block_size", "bias"}
#: The settings that take integers (a whole float from `/` in a config file is one).
_INTEGER = {k for k, v in {**MODEL_FLAGS, **TRAIN_FLAGS}.items() if type(v) is int} | {"lr_decay_iters",
                                                                                       "gradient_accumulation_steps"}
#: The keys a config file may set: ferrolm's settings, and nanoGPT's names for others.
KNOWN = set(MODEL_FLAGS) | set(TRAIN_FLAGS) | IGNORED | {"dataset", "out_dir", "gradient_accumulation_steps",
                                                         "init_from", "eval_only"}
#: nanoGPT train.py's settings (GPT-2 124M on OpenWebText), which configurator.py runs a config
#: file over: what a config file leaves out takes these, not ferrolm's defaults.
TRAIN_PY_DEFAULTS = {"dataset": "openwebtext", "out_dir": "out", "eval_interval": 2000, "log_interval": 1,
                     "eval_iters": 200, "always_save_checkpoint": True, "gradient_accumulation_steps": 5 * 8,
                     "batch_size": 12, "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768, "dropout": 0.0,
                     "bias": False, "learning_rate": 6e-4, "max_iters": 600000, "weight_decay": 0.1, "beta1": 0.9,
                     "beta2": 0.95, "grad_clip": 1.0, "decay_lr": True, "warmup_iters": 2000, "lr_decay_iters": 600000,
                     "min_lr": 6e-5}
#: The nanoGPT dataset that is ferrolm's bundled corpus (character-level by default).
BUNDLED_DATASET = "shakespeare_char"
#: Arithmetic allowed in config values (`gradient_accumulation_steps = 5 * 8`).
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv}


def translate(argv: list[str]) -> list[str]:
    """`argv` with nanoGPT spellings and config files replaced by ferrolm's flags (nothing
    after a `--` separator is touched)."""
    if not argv:
        return argv
    command, out, ignored, configs = argv[0], [], [], False
    init_from = _init_from(argv)
    # BERT's masked language modelling keeps ferrolm's defaults: nanoGPT's train.py is a GPT's.
    mlm = _last_value(argv, "--objective") == "mlm"
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out += argv[i - 1:]
            break
        config = config_statements(Path(arg)) if command == "pretrain" and arg.endswith(".py") else None
        if config is not None:
            out += config_flags(Path(arg), config, ignored, init_from, mlm)
            # Said: a .py file of a code corpus made of settings alone would be read so silently.
            print(f"ferrolm: reading {arg} as a nanoGPT config: its settings apply, train.py's where it sets none "
                  "(to train on it as text, put it after --)", file=sys.stderr)
            configs = True
            continue
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if not eq and name.replace("-", "_")[2:] in IGNORED | {"out_dir", "start", "init_from"} and i < len(argv) \
                and not argv[i].startswith("-"):
            eq, value, i = "=", argv[i], i + 1  # `--device cpu`: the value is the next word
        if name.replace("-", "_")[2:] in IGNORED:
            ignored.append(name + eq + value)
        else:
            out += _option(name, eq, value, command)
    if ignored:
        print(f"ferrolm: ignoring {', '.join(ignored)} (no meaning here)", file=sys.stderr)
    # As in nanoGPT, the command line's settings, before a config file or after it, fall on train.py's.
    return [command, *(_train_py_flags(init_from, mlm) if configs else []), *out]


def _train_py_flags(init_from: str | None, mlm: bool) -> list[str]:
    """train.py's settings as flags, but for the architecture when it comes from a checkpoint
    (resume) or a model (init_from a directory), and but for its dataset for a BERT."""
    from_checkpoint = init_from not in (None, "scratch")
    flags = []
    for key, value in TRAIN_PY_DEFAULTS.items():
        if not (from_checkpoint and key in ARCHITECTURE) and not (mlm and key != "dataset"):
            flags += _option(f"--{key}", "=", str(value).lower() if isinstance(value, bool) else str(value), "pretrain")
    return flags


def _last_value(argv: list[str], flag: str) -> str | None:
    """The value the command line gives `flag` (`--flag value` or `--flag=value`) last, as argparse
    reads it, before any `--`."""
    value = None
    for i, arg in enumerate(argv[:argv.index("--")] if "--" in argv else argv):
        name, eq, given = arg.partition("=")
        if name == flag:
            value = given if eq else argv[i + 1] if i + 1 < len(argv) else None
    return value


def _init_from(argv: list[str]) -> str | None:
    """nanoGPT's init_from as the command line sets it, in any spelling, or through a config
    file (later settings win, as in nanoGPT); `--resume` is ours for "resume"."""
    value = None
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        if arg == "--resume":
            value = "resume"
        name, eq, given = arg.partition("=")
        if name in ("--init_from", "--init-from"):  # nanoGPT's spelling, or ferrolm's (a directory)
            value = given if eq else argv[i + 1] if i + 1 < len(argv) else None
        elif argv[0] == "pretrain" and arg.endswith(".py"):
            for node in config_statements(Path(arg)) or []:
                if _assigned(node) == "init_from" and isinstance(node.value, ast.Constant):
                    value = node.value.value
    return value


def check_dataset(dataset: str | None, files: list) -> None:
    """A nanoGPT config's dataset (the hidden `--dataset` flag) is the bundled corpus, or the
    text files given stand for it."""
    if dataset not in (None, BUNDLED_DATASET) and not files:
        raise ValueError(f"dataset {dataset!r} (a nanoGPT setting): give its text files as arguments (the bundled "
                         f"corpus is nanoGPT's {BUNDLED_DATASET!r})")


def _option(name: str, eq: str, value: str, command: str) -> list[str]:
    """One `--name[=value]` option in ferrolm's spelling."""
    if name == "--init_from" and value in ("scratch", "resume"):  # nanoGPT's own values (not directories)
        # sample.py's init_from="resume" reads --out_dir, which generate does anyway.
        return ["--resume"] if value == "resume" and command != "generate" else []
    name = name.replace("_", "-")
    if name == "--eval-only" and eq:  # nanoGPT's eval_only=True: our switch
        try:
            return [name] if boolean(value) else []
        except argparse.ArgumentTypeError as e:  # not silently false
            raise ValueError(f"--eval_only: {e}") from None
    if command == "generate":
        if name == "--out-dir" and eq:  # sample.py samples from --out_dir: our positional model
            return [value]
        if name == "--start":
            return ["--prompt-file", value.removeprefix("FILE:")] if value.startswith("FILE:") else ["--prompt" + eq + value]
        if name == "--top-k" and value == "None":  # sample.py's top_k=None: no limit, our 0
            return ["--top-k=0"]
    return [RENAMED.get(name, name) + eq + value]


def _statements(path: Path) -> list[ast.stmt] | None:
    """A .py file's statements; None for a file that is not Python. A file that fails to parse
    but sets a nanoGPT setting on a line of its own (`n_layer = 6)`) is a config with a typo: a
    ValueError naming the line, not a corpus to train on."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as some editors write
        return ast.parse(text, str(path)).body
    except SyntaxError as e:
        settings = re.compile(rf"^\s*({'|'.join(map(re.escape, sorted(KNOWN)))})\s*(:[^=]*)?=", re.MULTILINE)
        if settings.search(text):
            raise ValueError(f"{path}: line {e.lineno}: {e.msg} (a nanoGPT config must be valid Python; its settings "
                             "are read, never run; to train on this file as text, put it after --)") from None
        return None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, MemoryError):
        return None


def _assigned(node: ast.stmt) -> str | None:
    """The name a `name = value` (or `name: type = value`) statement sets."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def config_statements(path: Path) -> list[ast.stmt] | None:
    """A .py file's statements if it looks like a nanoGPT config: lower-case `name = ...`
    settings, besides only imports and docstrings (Python source to train on has definitions and
    control flow); None otherwise."""
    body = _statements(path) or []
    names = [_assigned(s) for s in body]
    others = [s for s, n in zip(body, names) if n is None]
    is_config = (any(names) and all(n is None or n.islower() for n in names)
                 and all(isinstance(s, (ast.Import, ast.ImportFrom)) or _is_docstring(s) for s in others))
    return body if is_config else None


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


#: What `_value` raises for a value it does not read (NameError is caught first where it matters).
_UNREADABLE = (ValueError, TypeError, ArithmeticError, RecursionError, NameError)


def _value(node: ast.expr, earlier: dict):
    """A literal, a setting the file set before (in `earlier`), or + - * / // on numbers;
    anything else is ValueError (NameError for a setting the file did not set before)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in earlier:
            raise NameError(node.id)
        return earlier[node.id]
    number = (int, float)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = _value(node.operand, earlier)
        if isinstance(operand, number) and not isinstance(operand, bool):
            return -operand
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left, earlier), _value(node.right, earlier)
        if all(isinstance(x, number) and not isinstance(x, bool) for x in (left, right)):
            return OPERATORS[type(node.op)](left, right)
    raise ValueError


def config_flags(path: Path, statements: list[ast.stmt], ignored: list[str], init_from: str | None = None,
                 mlm: bool = False) -> list[str]:
    """The flags the statements of the nanoGPT config file `path` set, in its order (later
    command-line flags win); the keys that mean nothing here are added to `ignored`. As in
    nanoGPT, resuming (`init_from` "resume") takes the architecture from the checkpoint, and
    starting from a model (a directory) takes it from the model, but for a shorter block_size."""
    from_model = init_from not in (None, "scratch", "resume")
    flags = []
    # The settings so far, which later ones may use (`min_lr = learning_rate / 10`): train.py's
    # first, but for a BERT, whose run does not take them.
    earlier: dict = {} if mlm else dict(TRAIN_PY_DEFAULTS)
    for node in statements:
        key = _assigned(node)
        if key is None:
            continue  # an import or a docstring
        if key not in KNOWN:
            raise ValueError(f"{path} line {node.lineno}: {key} is not a setting ferrolm has (a nanoGPT config sets "
                             f"the flags of `ferrolm pretrain --help`; to train on this file as text, put it after --)")
        with contextlib.suppress(*_UNREADABLE):  # a later setting may use it, even one not taken here
            earlier[key] = _value(node.value, earlier)
        if key in IGNORED:
            ignored.append(f"{key} in {path}")
            continue
        if init_from == "resume" and key in ARCHITECTURE:
            continue
        if from_model and key in ARCHITECTURE - {"block_size"}:
            ignored.append(f"{key} in {path} (the model's own is kept)")
            continue
        try:
            value = _value(node.value, earlier)
        except NameError as e:
            raise ValueError(f"{path} line {node.lineno}: {key} uses {e.args[0]}, which the file does not set before "
                             f"it: write its value (the file is read, not run)") from None
        except _UNREADABLE:
            raise ValueError(f"{path} line {node.lineno}: {key} must be a number, text, True/False, or arithmetic on "
                             f"numbers and settings set before it (the file is read, not run)") from None
        if key in _INTEGER and isinstance(value, float) and value.is_integer():
            value = int(value)  # `lr_decay_iters = max_iters / 2`: Python's / gives 2500.0, which nanoGPT takes
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += _option(f"--{key}", "=", text, "pretrain")
    return flags
