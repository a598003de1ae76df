"""Flags shared by the training commands (nanoGPT's names) and how they become a TrainConfig."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

from ferrolm.train.loop import DTYPES

# None on the command line means "the command's default, or the checkpoint's value on --resume".
MODEL_FLAGS = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": False}
TRAIN_FLAGS = {"batch_size": 12, "max_iters": 2000, "learning_rate": 1e-3, "min_lr": None, "warmup_iters": 100,
               "lr_decay_iters": None, "decay_lr": True, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0,
               "eval_interval": 250, "eval_iters": 20, "log_interval": 10, "grad_accum": 1, "seed": 1337,
               "checkpoint_interval": 0, "always_save_checkpoint": True, "dtype": "float32"}
# MLM starts on a plateau where it predicts the unigram distribution, and the plateau lasts
# longer the longer the sequences (benches/quality_bert_mlm.py): BERT's defaults here are
# short sequences in larger batches, more steps, and BERT's weight decay.
MLM_DEFAULTS = {"block_size": 32, "batch_size": 64, "max_iters": 5000, "weight_decay": 0.01, "bias": True}

HELP = {"log_interval": "steps between log lines: in metrics.jsonl, and printed when there is no progress bar "
                        "(default 10)",
        "checkpoint_interval": "steps between checkpoints (default 0: at each evaluation after step 0 and at the end, "
                               "or as --always-save-checkpoint says)",
        "always_save_checkpoint": "checkpoint at every evaluation after step 0 (default true); false: only when the "
                                  "validation loss improves (step 0's counts), keeping the best model of a run that "
                                  "overfits (nanoGPT's option)",
        "bias": "biases in the linear and LayerNorm layers (default false, as nanoGPT; GPT-2 has them; BERT always does)",
        "min_lr": "learning rate at the end of the cosine decay (default: --learning-rate / 10; on --resume, the run's)",
        "lr_decay_iters": "step where the cosine decay reaches --min-lr (default: --max-iters; on --resume, the run's)",
        "decay_lr": "warmup and cosine decay (default true; false: a constant --learning-rate, as nanoGPT's decay_lr)",
        "dtype": "float32 (default), or bfloat16: matrix products round their operands to bfloat16 and sum in "
                 "float32 (training 1.4-1.7x faster than float32 on the benchmark models, about 1.2x with a 32k "
                 "vocabulary, whose float32 softmax and loss then weigh more; measured on a CPU with AVX512-BF16)"}


# Integer flags that may be 0 (the rest must be at least 1).
MAY_BE_ZERO = {"max_iters", "warmup_iters", "seed", "checkpoint_interval"}


def undecodable(text: str) -> bool:
    """Whether `text` holds bytes that were not UTF-8 (Python decodes command-line arguments and,
    in `chat`, stdin with surrogateescape, which keeps them as lone surrogates)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


def _number(text: str, kind: type = float):
    """`text` as a `kind` number; otherwise an argparse error that says what was expected (it
    named the type function: "invalid non_negative value")."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def count(minimum: int = 0):
    """An argparse type: an integer of at least `minimum`, and below 2**63 (the core's counts
    are 64-bit: a larger one was refused as "int too big to convert", naming no option)."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if value >= 1 << 63:
            raise argparse.ArgumentTypeError(f"must be below 2**63, got {value}")
        return value

    return parse


def given_path(text: str) -> str:
    """An argparse type: a path that is not empty (`--out ""` wrote into the working directory)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty (\".\" is the current directory)")
    return text


def non_negative(text: str) -> float:
    value = _number(text)
    if not 0 <= value < math.inf:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive(text: str) -> float:
    value = _number(text)
    if not 0 < value < math.inf:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A share strictly between 0 and 1 (a validation split)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def probability(text: str) -> float:
    """A nucleus mass: 0 < p <= 1."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def dtype(text: str) -> str:
    """A precision of DTYPES; float16, which nanoGPT's GPU runs use, is refused with the reason."""
    if text in DTYPES:
        return text
    if text in ("float16", "half", "fp16"):
        raise argparse.ArgumentTypeError("float16 is a GPU type, which CPUs do not compute in: use bfloat16 (or float32)")
    raise argparse.ArgumentTypeError(f"expected {' or '.join(DTYPES)}, got {text!r}")


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


#: The types of flags whose default (None: resolved later) does not tell.
TYPES = {"lr_decay_iters": count(0), "min_lr": non_negative, "decay_lr": boolean, "dtype": dtype}


def add_flags(parser, defaults: dict, helps: Optional[dict] = None) -> None:
    """--flag-name for each entry, defaulting to None so `choose` can tell given from not; the
    type follows the default (or TYPES); `helps` overrides HELP's texts for this command."""
    helps = {**HELP, **(helps or {})}
    for name, default in defaults.items():
        kind = TYPES.get(name) or (boolean if isinstance(default, bool) else
                                   count(0 if name in MAY_BE_ZERO else 1) if isinstance(default, int) else
                                   non_negative if isinstance(default, float) else str)
        metavar = {boolean: "BOOL", dtype: "{" + ",".join(DTYPES) + "}"}.get(kind)
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, metavar=metavar,
                            help=helps.get(name, f"default {default}"))
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar, but a line every --log-interval steps (the default when the output is "
                             "not a terminal: a file or a pipe)")


def resumed(args) -> tuple[str, str]:
    """`choose`'s `fixed` for a flag that a resumed run keeps."""
    return f"the run's in {args.out}", "a resumed run keeps its settings (start a new run with another --out)"


def choose(args, name: str, saved: Optional[dict], defaults: dict, fixed: Optional[tuple[str, str]] = None):
    """The flag's value: given on the command line, else saved (in a checkpoint, a starting
    model), else default. For a `fixed` flag (one that defines the run: its model, its data) a
    given value that contradicts the saved one is an error; `fixed` says whose value that is and
    why it stays (`resumed(args)`)."""
    given = getattr(args, name)
    if saved is not None and name in saved:
        if fixed and given is not None and given != saved[name]:
            whose, why = fixed
            shown = lambda v: str(v).lower() if isinstance(v, bool) else v  # noqa: E731 (as the flag is spelt)
            raise ValueError(f"--{name.replace('_', '-')} {shown(given)} is not {whose} ({shown(saved[name])}): {why}")
        return saved[name] if given is None else given
    return defaults[name] if given is None else given


def checkpoint_state(out: Path) -> dict:
    """The trainer state saved in `out`, for --resume. Every command's run needs the tokenizer
    (states written before its digest was recorded do not name it)."""
    from ferrolm.models import TOKENIZER_FILE, TOKENIZER_FILES
    from ferrolm.train.loop import STATE_FILE, read_state

    state = read_state(out / STATE_FILE)
    if not any((out / name).exists() for name in TOKENIZER_FILES):
        raise ValueError(f"cannot resume: {TOKENIZER_FILE} is missing from {out}")
    return state


def train_config(values: dict, args, kind: Optional[str] = None):
    """The TrainConfig of the flag values; with `kind`, over that objective's preset."""
    from ferrolm.train import TrainConfig

    fields = {k: v for k, v in values.items() if k != "batch_size"}
    # A bar's redrawn lines would fill a log file: piped or redirected, nanoGPT's lines instead.
    progress = not args.no_progress and sys.stderr.isatty()
    if kind is not None:
        return TrainConfig.preset(kind, **fields, progress=progress)
    return TrainConfig(**fields, progress=progress)
