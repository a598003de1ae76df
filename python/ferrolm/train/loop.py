"""The training loop shared by every objective (next-token, MLM, SFT, reward, DPO...).

An objective supplies batches and a loss; the loop owns everything else: AdamW with weight
decay on matrices only, linear warmup + cosine decay, gradient accumulation and clipping,
periodic evaluation, a progress bar, a JSONL metrics log, checkpoints, and exact resume
(optimizer moments, step and the data sampler's RNG are restored into a model loaded from the
checkpoint, so a resumed run repeats the uninterrupted run's losses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Collection, Optional, Protocol

import numpy as np

from ferrolm import _core
from ferrolm.atomic import atomic_file, atomic_files, finish_atomic_files, non_empty_path, write_json
from ferrolm.autograd import no_grad
from ferrolm.data import data_digest, files_digest
from ferrolm.holding import hold, let_go
from ferrolm.jsonl import is_count, lines_of, read_json_object, require_count
from ferrolm.models import TOKENIZER_FILE, replace_stale_hf_files
from ferrolm.nn import Module
from ferrolm.optim import AdamW
from ferrolm.train.memory import check_memory

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
METRICS_FILE = "metrics.jsonl"
#: Where a command that prepares a run's data in its directory (`ferrolm pretrain`) keeps it, and
#: where it puts a new run's while an earlier run's checkpoint is there: moved in with the new
#: run's first checkpoint, so that a run stopped before then leaves the earlier one resumable.
DATA_DIR, PENDING_DATA_DIR = "data", "data.pending"
#: A new run's log while the directory still holds an earlier run's checkpoint (see `_RunLog`).
PENDING_METRICS_FILE = "metrics.pending.jsonl"
RUN_LOCK_FILE = ".run.lock"  # held while a run trains in the directory (`hold_run_directory`)
DTYPES = ("float32", "bfloat16")  # TrainConfig.dtype: the matmul precision training runs in
#: TrainConfig's counts, each with its least value (None, for lr_decay_iters: max_iters).
_COUNTS = {"max_iters": 0, "warmup_iters": 0, "lr_decay_iters": 0, "checkpoint_interval": 0, "grad_accum": 1,
           "eval_interval": 1, "eval_iters": 1, "log_interval": 1}


#: Where each post-training objective's settings differ from TrainConfig's (nanoGPT's pretraining
#: ones): `ferrolm sft/reward/classify/dpo/ppo`'s defaults. Fine-tuning takes smaller steps, and no weight
#: decay (it would pull the weights toward 0, not toward the model training started from).
_SUPERVISED = {"max_iters": 300, "learning_rate": 3e-4, "warmup_iters": 20, "eval_interval": 100, "weight_decay": 0.0}
PRESETS = {
    "sft": _SUPERVISED,
    "reward": _SUPERVISED,
    "classify": _SUPERVISED,
    # TRL's DPOConfig rate: at 1e-5 and above a small chat model's answers fell apart (the margin
    # grew as both sides were unlearned), while 1e-6 doubled the preferred answers it gave.
    "dpo": {"max_iters": 200, "learning_rate": 1e-6, "warmup_iters": 10, "eval_interval": 50, "weight_decay": 0.0},
    # decay_lr None: a constant rate unless a min_lr is given (see TrainConfig.preset).
    "ppo": {"max_iters": 200, "learning_rate": 5e-5, "warmup_iters": 0, "eval_interval": 50, "weight_decay": 0.0,
            "decay_lr": None},
}


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings, by nanoGPT's names. The defaults are its
    Shakespeare-char run's (config/train_shakespeare_char.py with its README's CPU settings:
    2000 steps, 20 evaluation batches), not train.py's GPT-2 ones. Fields may be changed after
    creation; `train()` reads and checks them when it starts.

    Attributes:
        max_iters: optimiser steps of the run.
        learning_rate, min_lr, warmup_iters, lr_decay_iters, decay_lr: the schedule (`lr_at`):
            linear warmup to learning_rate, cosine decay to min_lr at lr_decay_iters (None:
            learning_rate / 10 and max_iters); decay_lr=False keeps learning_rate throughout.
        weight_decay, beta1, beta2: AdamW's (decay on matrices only, as nanoGPT).
        grad_clip: the gradients' global norm is clipped to this (0: no clipping).
        grad_accum: micro-batches per step, their gradients summed (a larger effective batch).
            Each micro-batch weighs 1/grad_accum, or, for an objective whose loss is a mean
            over a varying number of tokens (`loss_weight`: SFT's answers, MLM's masked
            tokens, PPO's responses), its share of the step's tokens, so that the step's loss
            and gradient are those of one batch holding all the micro-batches.
        eval_interval, eval_iters: evaluate at step 0 (the model a new run starts from) and every
            eval_interval steps on eval_iters batches of each split.
        log_interval: steps between metrics.jsonl records (and lines, without a progress bar;
            a new run over an earlier run's checkpoint logs to metrics.pending.jsonl until its
            first checkpoint replaces that one).
        checkpoint_interval: save every this many steps (0: at each evaluation after step 0) and
            at the end.
        always_save_checkpoint: False saves only when the validation loss improves (nanoGPT's
            option), so a run that overfits keeps, and ends holding, its best model (a copy is
            kept in memory), and a resume continues from it. Step 0 counts: a run that never
            improves on the model it started from keeps that one.
        seed: batches, dropout and evaluation batches are drawn from it (a Module's nn.Dropout
            too: the stream `fl.manual_seed` restarts is seeded from it at every micro-batch).
        dtype: "float32", or "bfloat16": matrix products of 16 rows or more round their operands
            to bfloat16 and sum in float32 (as PyTorch's bf16 autocast, outputs staying float32;
            smaller ones by a layer's weight round only the weight); 1.4-1.7x
            faster training on CPUs with AVX512-BF16 (about 1.2x with a 32k vocabulary, whose
            float32 softmax and loss weigh more), float32 elsewhere.
        progress: a tqdm bar (when tqdm is installed); False, or without tqdm, evaluations and
            log lines are printed instead.
    """

    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: Optional[float] = None  # None: learning_rate / 10, nanoGPT's advice (its 1e-4 for 1e-3)
    warmup_iters: int = 100
    lr_decay_iters: Optional[int] = None
    decay_lr: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    checkpoint_interval: int = 0
    always_save_checkpoint: bool = True
    seed: int = 1337
    dtype: str = "float32"
    progress: bool = True

    def __post_init__(self) -> None:
        for name, least in _COUNTS.items():
            if getattr(self, name) is not None or name != "lr_decay_iters":
                require_count(name, getattr(self, name), least)
        if not (0 < self.learning_rate < math.inf and 0 <= self.final_lr <= self.learning_rate):
            raise ValueError(f"learning_rate must be > 0 and finite and min_lr in [0, learning_rate] (the decay ends "
                             f"at min_lr), got learning_rate {self.learning_rate} and min_lr {self.final_lr} (give "
                             "min_lr, --min-lr)")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.weight_decay >= 0 and self.grad_clip >= 0):
            raise ValueError(f"beta1 and beta2 must be in [0, 1) and weight_decay and grad_clip >= 0, got betas "
                             f"({self.beta1}, {self.beta2}), weight_decay {self.weight_decay}, grad_clip {self.grad_clip}")
        if self.checkpoint_interval and not self.always_save_checkpoint:
            raise ValueError("checkpoint_interval (--checkpoint-interval) saves on a schedule; always_save_checkpoint="
                             "False (--always-save-checkpoint false) saves the best model: choose one")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @classmethod
    def preset(cls, kind: str, **overrides: Any) -> "TrainConfig":
        """The settings `ferrolm <kind>` trains with (`kind`: "sft", "reward", "classify", "dpo" or "ppo", an
        objective's `kind`), then `overrides`; PPO's learning rate stays constant unless a
        min_lr or decay_lr=True is given. TrainConfig() itself has nanoGPT's Shakespeare-char pretraining settings."""
        if kind not in PRESETS:
            raise ValueError(f"no preset for {kind!r}: one of {', '.join(PRESETS)}")
        values = {**PRESETS[kind], **overrides}
        if values.get("decay_lr", True) is None:  # constant, at whatever learning_rate holds when training starts
            values["decay_lr"] = values.get("min_lr") is not None
        return cls(**values)

    @property
    def final_lr(self) -> float:
        """Where the decay ends: min_lr, or learning_rate / 10 when it is not given."""
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    @property
    def decay_end(self) -> int:
        """The step the decay ends at: lr_decay_iters, or max_iters when it is not given."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    def resolved(self) -> "TrainConfig":
        """A checked copy with min_lr and lr_decay_iters filled in from the current values (a
        field changed after creation counts, as it does for a PyTorch scheduler made then)."""
        return dataclasses.replace(self, min_lr=self.final_lr, lr_decay_iters=self.decay_end)

    def lr_at(self, it: int) -> float:
        """Linear warmup, then cosine decay to min_lr at lr_decay_iters (nanoGPT's get_lr)."""
        if not self.decay_lr:
            return self.learning_rate
        if it < self.warmup_iters:
            return self.learning_rate * (it + 1) / (self.warmup_iters + 1)
        end, final = self.decay_end, self.final_lr
        if it > end:
            return final
        ratio = (it - self.warmup_iters) / max(1, end - self.warmup_iters)
        return final + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.learning_rate - final)


class Objective(Protocol):
    """What an objective supplies to the loop (`CausalLM` in train/causal.py is a complete
    example in 30 lines). The model it trains needs `named_parameters()` and `save(path)`: a
    GPT, a BERT, or an `fl.nn.Module`.

    Optional extras: `loss_is_token_nll = True` to report perplexity; `loss_weight(batch)`,
    the number of targets a batch's loss is the mean over when it varies from batch to batch,
    so that losses are pooled over targets, not batches (micro-batches of a step, evaluation
    batches); `evaluate(model, rng)` returning a dict to replace loss-based evaluation;
    `metrics()` returning a dict of extra numbers for each log line; `trains`, the class of
    model it trains, checked before step 0.
    """

    kind: str  # recorded in checkpoints, so a run resumes only with the same objective

    def batch(self, split: str, rng: np.random.Generator) -> Any:
        """A batch of the "train" or the "val" split, drawn with `rng` (the loop's: seeded,
        and saved with checkpoints)."""
        ...

    def loss(self, model: Any, batch: Any, dropout_seed: int | None) -> tuple[Any, dict[str, Any]]:
        """The scalar loss Tensor to minimise and a dict of extra numbers to log: each a
        number (averaged over batches) or a (count, out of) pair, pooled over batches (a rate
        over what a batch may hold none of). Evaluation calls it under `no_grad` with
        `dropout_seed=None` (dropout off); training passes a seed, for the model's dropout."""
        ...

    def tokens(self, batch: Any) -> int:
        """How many tokens (or examples) the batch holds, for the logged throughput."""
        ...

    def state(self) -> dict:
        """JSON-able state saved with each checkpoint (its settings, and anything a resumed
        run needs that the RNG and the model do not carry). Its `data` entry, a fingerprint of
        the objective's data (ferrolm.data.digest), lets a resumed run refuse other data. An
        objective with more than settings in it also has `load_state(state)`, which a resumed
        run calls."""
        ...


#: What an objective's state may fingerprint (a digest), and how it may have changed: a resume
#: that finds it changed is refused, as it would not continue the same run.
_FINGERPRINTED = {
    "data": ("the training data", "edited, prepared again by another run, tokenised differently, or read "
                                  "otherwise by a newer ferrolm since"),
    "reference": ("the reference model", "its directory written again since, or another one given"),
    "reward_model": ("the reward model", "its directory written again since, or another one given"),
}


def weights_digest(model: Any) -> str:
    """A fingerprint of the model's parameters, names and values, as they are in memory."""
    h = hashlib.sha256()
    for name, t in model.named_parameters():
        h.update(name.encode())
        h.update(t.numpy())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """numpy scalars (an objective's state or metrics) as the Python numbers JSON takes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-able: objective state and metrics must be numbers, "
                    "strings, lists and dicts")


class _Checkpoints:
    """Model + optimizer + trainer state in `out_dir`, written as one set (`atomic_files`: a
    failed or killed save leaves the previous checkpoint whole); the state file goes in last
    and records digests of the weights and optimizer files, so any mismatch is still detected
    on resume."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def save(self, model: Any, opt: AdamW, names: list[str], state: dict, log: "_RunLog") -> None:
        with atomic_files(self.out_dir, last=STATE_FILE) as files:
            model.save(files)
            opt.save(files / OPTIMIZER_FILE, names, {"step": str(state["step"])})
            # The tokenizer too: the run's data was encoded with it, and a run resumed without it
            # would save a model no text can be given to.
            tokenizer = [files / TOKENIZER_FILE] if (files / TOKENIZER_FILE).exists() else []
            state["digests"] = {p.name: files_digest(p) for p in sorted(files.glob("*.safetensors")) + tokenizer}
            state["weights"] = weights_digest(model)
            write_json(files / STATE_FILE, state, default=_plain)
            log.join(files)
            # model.save's own replacement looked at `files`, where it wrote; the set replaces out_dir's.
            replace_stale_hf_files(self.out_dir, files)

    def read(self, objective_kind: str) -> dict:
        """The trainer state, checked against the objective and the checkpoint's files."""
        state = read_state(self.out_dir / STATE_FILE)
        if state.get("objective") != objective_kind:
            raise ValueError(f"cannot resume: the checkpoint was trained with objective {state.get('objective')!r}, not {objective_kind!r}")
        for f, digest in state["digests"].items():
            if files_digest(self.out_dir / f) != digest:
                raise ValueError(f"cannot resume: {f} does not match {STATE_FILE} (was a save interrupted, or "
                                 "another model saved over it?)")
        return state

    def restore(self, state: dict, model: Any, opt: AdamW, names: list[str]) -> None:
        """Checks that `model` holds the checkpoint's weights, and loads the optimizer's state."""
        # The optimizer state is restored here, the weights are the caller's: a model made afresh
        # (or a head: a reward or value head is a file of its own) would train on from its
        # initialisation with the checkpoint's moments, silently. (States before this record no
        # digest of the weights.)
        given = weights_digest(model)
        if state.get("weights", given) != given:
            raise ValueError(f"cannot resume: the model given does not hold the weights of the checkpoint in "
                             f"{self.out_dir}; load them first (fl.load_model(dir), GPT.load(dir), "
                             "RewardModel.load(dir), PolicyWithValue.load(dir), or module.load_weights(dir))")
        try:
            saved_at = opt.load(self.out_dir / OPTIMIZER_FILE, names, steps=state.get("optimizer_steps")).get("step")
        except ValueError as e:
            raise ValueError(f"cannot resume: the optimizer state does not match the model: {e}") from None
        if saved_at is not None and saved_at != str(state["step"]):  # the state file is the one the digests cannot hold
            raise ValueError(f"cannot resume: {self.out_dir / STATE_FILE} says step {state['step']}, but its optimizer "
                             f"state was saved at step {saved_at} (damaged or edited; start a new run)")


@contextlib.contextmanager
def _interrupts_held():
    """Holds Ctrl-C and SIGTERM back until the block ends, so a checkpoint is written whole
    (an interrupt between its files would leave the model of one step beside the state of
    another); then the first one does what it would have done."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    pending = []
    held = (signal.SIGINT, signal.SIGTERM)
    # A handler installed from C reads as None, and is put back as the default.
    previous = {s: signal.signal(s, lambda *received: pending.append(received)) or signal.SIG_DFL for s in held}
    try:
        yield
    finally:
        for s in held:
            signal.signal(s, previous[s])
    if not pending:
        return
    handler = previous[pending[0][0]]
    if callable(handler):
        handler(*pending[0])  # Python's SIGINT handler raises KeyboardInterrupt, the command line's SIGTERM one too
    elif handler == signal.SIG_DFL:
        signal.raise_signal(pending[0][0])  # the default: the process ends


def _is_pcg64_state(rng: Any) -> bool:
    """Whether `rng` is numpy's PCG64 state, every number of it an integer in its range (numpy
    takes a state of 1.5, and refuses -1 in a message that names no field)."""
    def holds(value: Any, below: int) -> bool:
        return type(value) is int and 0 <= value < below
    inner = rng.get("state") if isinstance(rng, dict) else None
    return isinstance(inner, dict) and rng.get("bit_generator") == "PCG64" \
        and holds(inner.get("state"), 2**128) and holds(inner.get("inc"), 2**128) \
        and holds(rng.get("has_uint32"), 2) and holds(rng.get("uinteger"), 2**32)


def read_state(path: Path) -> dict:
    """The trainer state file, with the fields resuming relies on checked (a tampered or
    damaged file is a clear error, and only the checkpoint's own files are hashed). A save
    that died while moving its files in is finished first."""
    finish_atomic_files(path.parent, last=STATE_FILE)
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: no checkpoint in {path.parent} ({path.name} is missing)")
    try:
        state = read_json_object(path)
    except ValueError as e:
        raise ValueError(f"cannot resume: {e}") from None
    problem = None
    if not is_count(state.get("step")):
        problem = f"step {state.get('step')!r} is not a non-negative integer"
    elif not isinstance(state.get("config"), dict):
        problem = "its config entry is missing"
    elif not _is_pcg64_state(state.get("rng")):
        problem = "its rng entry is not a PCG64 state"
    elif not isinstance(state.get("objective"), str):
        problem = "it does not name its objective"
    elif not isinstance(state.get("evals", []), list) or not isinstance(state.get("objective_state", {}), dict) \
            or not all(isinstance(e, dict) and is_count(e.get("step")) for e in state.get("evals", [])):
        problem = "its evals or objective_state entry is malformed"
    elif not isinstance(state.get("digests"), dict) or not {"model.safetensors", OPTIMIZER_FILE} <= set(state["digests"]) \
            or not all(Path(f).name == f and (f.endswith(".safetensors") or f == TOKENIZER_FILE) for f in state["digests"]):
        problem = (f"its digests must name model.safetensors, {OPTIMIZER_FILE} and only other .safetensors files or "
                   f"{TOKENIZER_FILE} beside them")
    else:
        problem = _config_problem(state["config"])
    if problem:
        raise ValueError(f"cannot resume: {path}: {problem} (damaged or edited; start a new run)")
    for f in state["digests"]:  # checked here, before a command builds the run from the directory
        if not (path.parent / f).is_file():
            raise ValueError(f"cannot resume: {f} is missing from {path.parent}")
    return state


#: The JSON values each type of TrainConfig field takes.
_JSON_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _config_problem(saved: dict) -> Optional[str]:
    """Which setting of a trainer state's `config` has a value of the wrong type (a string
    for a number failed later with a TypeError), or None. Only types: a rule on values may
    have changed since the run was saved."""
    for field in dataclasses.fields(TrainConfig):
        kind = str(field.type)
        optional = kind.startswith("Optional[")
        kind = kind.removeprefix("Optional[").removesuffix("]")
        value = saved.get(field.name)
        if field.name not in saved or (value is None and optional) or kind not in _JSON_TYPES:
            continue
        if isinstance(value, bool) != (kind == "bool") or not isinstance(value, _JSON_TYPES[kind]):
            return f"its config's {field.name} is {value!r}, not a {kind}"
    return None


#: The settings that shape a run's updates: resumed with others, it no longer reproduces itself.
_RUN_DEFINING = ("learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "decay_lr", "weight_decay", "beta1",
                 "beta2", "grad_clip", "grad_accum", "seed", "dtype", "batch_size", "block_size", "pairs", "whole_word",
                 "mask_prob", "short_prob", "beta")


def _warn_if_changed(saved: dict, current: dict, out: Path) -> None:
    """Says which run-defining settings (of the config and the objective's state) a resume
    changes (a larger max_iters with the default lr_decay_iters, say, restarts the decay), rather
    than letting them change silently."""
    changed = [f"{k} {saved[k]} -> {current[k]}" for k in _RUN_DEFINING
               if k in saved and k in current and saved[k] != current[k]]
    if changed:  # stacklevel: train()'s caller
        warnings.warn(f"resuming {out} with settings that differ from the run's ({', '.join(changed)}); it will not "
                      "continue as the uninterrupted run would", stacklevel=4)


def _decay_groups(named: list[tuple[str, Any]], weight_decay: float) -> tuple[list[dict], list[str]]:
    """Matrices decay; biases and norm weights (1-D) do not, as in nanoGPT."""
    decay = [(n, t) for n, t in named if t.ndim >= 2]
    keep = [(n, t) for n, t in named if t.ndim < 2]
    groups = [{"params": [t for _, t in decay], "weight_decay": weight_decay}, {"params": [t for _, t in keep], "weight_decay": 0.0}]
    return groups, [n for n, _ in decay] + [n for n, _ in keep]


def train(model: Any, objective: Any, config: TrainConfig, out_dir: str | Path, resume: bool = False,
          settings: dict | None = None) -> list[dict]:
    """Runs `objective` on `model` for `config.max_iters` optimiser steps; returns the
    evaluation records (the first at step 0, for a new run). The model is saved to `out_dir` at
    every checkpoint (each evaluation after step 0, or every `checkpoint_interval` steps) and at
    the end; with `always_save_checkpoint=False`, only when the validation loss improves (step
    0's included), and the model ends holding the best weights.
    Products run in `config.dtype`; the process's setting is restored however training ends.
    `settings` (JSON-able: how the run was set up, e.g. a command's flags) is saved with each
    checkpoint for a resumed run to reuse. With `resume`, training continues the checkpoint in
    `out_dir` exactly; `model` must hold its weights (load it from `out_dir`: GPT.load,
    fl.load_model...), else ValueError. Without it, an earlier run's checkpoint and log in
    `out_dir` stay until this run's first checkpoint replaces them (see `_RunLog`)."""
    config = config.resolved()  # checked again: fields may have been set since it was made
    if not resume:  # a resume's schedule is checked against its checkpoint's (`_run`)
        _warn_of_schedule(config, stacklevel=2)
    out = non_empty_path(out_dir)
    held = out.resolve() in _HELD
    try:
        with using_precision(config.dtype):
            return _run(model, objective, config, out, resume, settings or {})
    finally:
        if not held:
            _release_run_directory(out)
        _core.release_memory()  # the step buffers the allocator kept for the next step


def _warn_of_schedule(config: TrainConfig, stacklevel: int) -> None:
    """Warns of a learning-rate schedule that never reaches its rate, or that drops to min_lr
    where its warmup ends."""
    if config.decay_lr and 0 < config.max_iters <= config.warmup_iters:
        steps = f"{config.max_iters} step" + ("s" if config.max_iters > 1 else "")
        warnings.warn(f"the warmup ({config.warmup_iters} steps) outlasts the run ({steps}): the learning rate rises "
                      f"to {config.lr_at(config.max_iters - 1):.3g} only, not {config.learning_rate:g} (give a smaller "
                      "warmup_iters, --warmup-iters)", stacklevel=stacklevel + 1)
    elif config.decay_lr and config.max_iters > config.warmup_iters > config.decay_end:
        warnings.warn(f"the warmup ({config.warmup_iters} steps) outlasts the decay (lr_decay_iters {config.decay_end}): "
                      f"the learning rate drops from {config.lr_at(config.warmup_iters - 1):.3g} to min_lr "
                      f"{config.final_lr:g} at step {config.warmup_iters} (give a larger lr_decay_iters, "
                      "--lr-decay-iters)", stacklevel=stacklevel + 1)


#: The run directories this process holds (`hold_run_directory`): each one's open lock file,
#: and the directories holding it created (innermost first).
_HELD: dict[Path, tuple[Any, list[Path]]] = {}


def hold_run_directory(out: str | Path) -> None:
    """Holds `out` for this process's run (until `train` ends, or for a command that also
    prepares data there, until `release_run_directories`): another process starting a run in it (a second
    terminal given the same --out) is refused, where both wrote checkpoints and data over each
    other's. Holding a directory again is allowed; where fcntl is missing, nothing is held."""
    out = Path(out)
    if out.resolve() in _HELD:
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: a run writes a directory of files there")
    resolved = out.resolve()  # `a/../b` makes b, not a
    created = [p for p in (resolved, *resolved.parents) if not p.exists()]  # innermost first
    resolved.mkdir(parents=True, exist_ok=True)
    _HELD[out.resolve()] = hold(out / RUN_LOCK_FILE, lambda owner: OSError(
        f"{out} is in use by another run (process {owner}): give another --out, or wait for it to end")), created


def _release_run_directory(out: Path) -> None:
    lock, created = _HELD.pop(out.resolve(), (None, []))
    let_go(lock)
    with contextlib.suppress(OSError):  # a run refused before it wrote anything leaves no empty directory behind
        for directory in created:
            directory.rmdir()


def held_run_directories() -> list[Path]:
    """The run directories this process holds."""
    return list(_HELD)


def release_run_directories(keep: Collection[Path] = ()) -> None:
    """Releases the directories this process holds but those in `keep` (a command's, when it ends)."""
    for out in held_run_directories():
        if out not in keep:
            _release_run_directory(out)


@contextlib.contextmanager
def using_precision(dtype: str):
    """Matrix products in `dtype` (see DTYPES) inside the block, the process's setting after it."""
    previous = _core.set_matmul_precision(dtype)
    try:
        yield
    finally:
        with warnings.catch_warnings():  # a CPU without AVX512-BF16 was warned about when set
            warnings.simplefilter("ignore")
            _core.set_matmul_precision(previous)


def evaluate_model(model: Any, objective: Any, eval_iters: int = 20, seed: Any = 0, dtype: Optional[str] = None) -> dict:
    """The loop's evaluation, without dropout: the mean loss (and the objective's extra
    metrics) over `eval_iters` batches of each split, with `val_ppl` for a per-token
    cross-entropy; or the objective's own `evaluate`. Batches are drawn from their own seeded
    generator, so evaluating changes no training batch. Products run in `dtype` (None: the
    process's setting), as training's do."""
    if dtype is not None:
        with using_precision(dtype):
            return evaluate_model(model, objective, eval_iters, seed)
    require_count("eval_iters", eval_iters, 1)
    check_model(objective, model)
    eval_rng = np.random.Generator(np.random.PCG64([*np.atleast_1d(seed).tolist(), 7]))
    if hasattr(objective, "evaluate"):  # objectives whose quality is not a loss (PPO)
        with no_grad(), _evaluating(model):
            return dict(objective.evaluate(model, eval_rng))
    record: dict[str, Any] = {}
    with no_grad(), _evaluating(model):
        for split in ("train", "val"):
            values: dict[str, list] = {}
            losses, weights = [], []
            for _ in range(eval_iters):
                batch = objective.batch(split, eval_rng)
                loss, extra = _loss_and_extras(objective.loss(model, batch, None), objective)
                losses.append(loss.item())
                weights.append(_loss_weight(objective, batch))
                for k, v in extra.items():
                    values.setdefault(k, []).append((v, weights[-1]))
            if not any(weights):  # every loss a mean over nothing: 0.0 would read as a perfect (best) model
                raise ValueError(f"evaluation: none of the {eval_iters} {split} batches of {type(objective).__name__} "
                                 "holds anything to score (each loss_weight() is 0)")
            record[f"{split}_loss"] = float(np.dot(losses, _shares(weights)))
            record.update({f"{split}_{k}": v for k, v in _pooled(values).items()})
    if getattr(objective, "loss_is_token_nll", False):  # a per-token cross-entropy: perplexity means something
        record["val_ppl"] = math.exp(min(record["val_loss"], 50.0))
    return record


@contextlib.contextmanager
def _evaluating(model: Any):
    """`model`'s modules in eval mode inside the block (an `nn.Dropout` off; the built-in
    models take dropout from the seed they are given), each in its own mode again after it."""
    modules = list(model.modules()) if isinstance(model, Module) else []
    modes = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


def kept_evaluations(evals: list[dict], config: TrainConfig) -> list[dict]:
    """`evals` up to the evaluation of the model a run keeps: the last one, or with
    `always_save_checkpoint=False` the first with the lowest validation loss (the model the run
    ends holding, and the checkpoint it saved)."""
    if config.always_save_checkpoint or not evals:
        return evals
    best = min(range(len(evals)), key=lambda i: evals[i].get("val_loss", math.inf))
    return evals[: best + 1]


def _check_plugged(model: Any, objective: Any) -> None:
    """Refuses a model or objective that lacks what the loop calls, before step 0 (not at the
    first checkpoint, 250 steps in)."""
    missing = [f"{m}()" for m in ("named_parameters", "save") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"train() needs a model with named_parameters() and save(path) (a GPT, a BERT or an "
                        f"fl.nn.Module); {type(model).__name__} has no {', '.join(missing)}")
    missing = [m for m in ("kind", "batch", "loss", "tokens", "state") if not hasattr(objective, m)]
    if missing:
        raise TypeError(f"train() needs an objective with kind, batch(), loss(), tokens() and state() "
                        f"(see ferrolm.train.Objective); {type(objective).__name__} has no {', '.join(missing)}")
    check_model(objective, model)


def check_model(objective: Any, model: Any, trains: Optional[type] = None, role: str = "trains") -> None:
    """TypeError unless `model` is an instance of `trains` (default: the objective's optional
    `trains` class, and not of its optional `refuses` class, said with its reason), the part it
    plays for the objective (`role`: "trains", "scores with")."""
    if trains is None and hasattr(objective, "refuses") and isinstance(model, objective.refuses[0]):
        refused, why = objective.refuses
        raise TypeError(f"{type(objective).__name__} cannot train a {refused.__name__}: {why}")
    trains = trains or getattr(objective, "trains", None)
    if trains is not None and not isinstance(model, trains):
        # A RewardModel, PolicyWithValue or TextClassifier wraps the GPT or BERT given instead.
        needed = [p for p in inspect.signature(trains).parameters.values() if p.default is inspect.Parameter.empty]
        wraps = needed and needed[0].annotation in (type(model), type(model).__name__)
        hint = f": wrap it, {trains.__name__}({', '.join(p.name for p in needed)})" if wraps else ""
        raise TypeError(f"{type(objective).__name__} {role} a {trains.__name__}, not a {type(model).__name__}{hint}")


def _pooled(values: dict[str, list]) -> dict[str, float]:
    """Each extra over several batches, from its (value, batch's loss weight) pairs: numbers
    pooled as the losses are (`_shares`: PPO's per-token means over its responses' tokens), or
    a pooled rate of (count, out of) pairs (left out when no batch had any)."""
    out = {}
    for k, pairs in values.items():
        v, weights = zip(*pairs)
        if isinstance(v[0], tuple):
            count, total = np.sum(v, axis=0)
            if total > 0:
                out[k] = float(count / total)
        else:
            # A batch of no weight adds nothing, not even its NaN (a mean over no token). Exact
            # sums, so a mean of values in [0, 1] stays in it (accuracies read 1.0000000000000002).
            shares = _shares(list(weights))
            kept = [(x, s) for x, s in zip(v, shares) if s > 0]
            out[k] = math.fsum(x * s for x, s in kept) / math.fsum(s for _, s in kept)
    return out


def _loss_weight(objective: Any, batch: Any) -> float:
    """What `batch`'s loss is a mean over (`objective.loss_weight`), or 1: batches weigh alike."""
    weigh = getattr(objective, "loss_weight", None)
    if weigh is None:
        return 1.0
    weight = float(weigh(batch))
    if not weight >= 0:
        raise ValueError(f"{type(objective).__name__}.loss_weight() must be a count >= 0, got {weight}")
    return weight


def _shares(weights: list[float]) -> list[float]:
    """Each loss's share of a pooled mean: its weight's share, or equal when none has any."""
    total = sum(weights)
    return [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)


def _loss_and_extras(result: Any, objective: Any) -> tuple[Any, dict[str, Any]]:
    """`objective.loss(...)` unpacked, its extras as plain floats (numpy scalars, Tensors),
    or pairs of them."""
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        raise TypeError(f"{type(objective).__name__}.loss() must return (loss, dict of extra metrics), "
                        f"got {type(result).__name__}")
    loss, extra = result
    name = type(objective).__name__
    if math.prod(getattr(loss, "shape", ())) != 1:  # it failed at .item(), deep in the loop
        raise TypeError(f"{name}.loss() must return one number as its loss (a mean or a sum), got shape "
                        f"{tuple(loss.shape)}")

    def plain(key: str, v: Any) -> float:
        try:
            return float(v.item() if hasattr(v, "item") else v)
        except (TypeError, ValueError):
            raise TypeError(f"{name}.loss()'s extra metric {key!r} must be a number (or a pair of them), "
                            f"got {v!r}") from None

    return loss, {k: tuple(plain(k, x) for x in v) if isinstance(v, tuple) else plain(k, v) for k, v in extra.items()}


def _run(model: Any, objective: Any, config: TrainConfig, out: Path, resume: bool, settings: dict) -> list[dict]:
    _check_plugged(model, objective)
    named = [(n, t) for n, t in model.named_parameters() if t.requires_grad]
    check_memory(model, objective, sum(t.numel() for _, t in named))
    hold_run_directory(out)  # creates it
    groups, names = _decay_groups(named, config.weight_decay)
    opt = AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), eps=1e-8)
    opt.zero_grad()  # gradients left on the model (an interrupted step, a backward() before) are not this run's
    params = [t for _, t in named]
    checkpoints = _Checkpoints(out)
    rng = np.random.Generator(np.random.PCG64(config.seed))
    step, evals = 0, []
    if resume:
        state = checkpoints.read(objective.kind)
        saved_state, current = state.get("objective_state", {}), objective.state()
        # Before the weights: other data can change the model too (a system turn adds a token).
        for key, (what, how) in _FINGERPRINTED.items():
            if saved_state.get(key) and current.get(key) not in (None, saved_state[key]):
                raise ValueError(f"cannot resume: {what} differs from the one the checkpoint in {out} was trained "
                                 f"with ({how}); restore it, or start a new run")
        checkpoints.restore(state, model, opt, names)
        step = state["step"]
        _warn_if_changed({**state["config"], **saved_state}, {**dataclasses.asdict(config), **current}, out)
        if step > config.max_iters:
            raise ValueError(f"cannot resume: the checkpoint in {out} is at step {step}, past max_iters={config.max_iters} "
                             "(give a larger max_iters, --max-iters, to train further)")
        if any(state["config"].get(k) != getattr(config, k) for k in ("max_iters", "warmup_iters", "lr_decay_iters")):
            _warn_of_schedule(config, stacklevel=3)  # a schedule changed since the run started
        rng.bit_generator.state = state["rng"]
        evals = state.get("evals", [])
        if hasattr(objective, "load_state"):
            objective.load_state(saved_state)
        _truncate_metrics(out / METRICS_FILE, step)
        print(f"ferrolm: resuming the run in {out} at step {step} of {config.max_iters}"
              + ("; it is complete (give a larger max_iters, --max-iters, to train further)"
                 if step == config.max_iters else ""),
              file=sys.stderr, flush=True)
    earlier = None  # the step of an earlier run's checkpoint, which this new run replaces at its first save
    if not resume and (out / STATE_FILE).exists():
        try:
            old = read_state(out / STATE_FILE)
            earlier = old["step"]
            when = "at its step-0 evaluation" if not config.always_save_checkpoint else "when it saves its own"
            what = f"the {old.get('objective')} checkpoint there (step {earlier}) {when}"
            if old.get("objective") == objective.kind:
                what += "; resume=True (--resume) would have continued it"
        except ValueError:
            what = "the damaged checkpoint there"
        print(f"ferrolm: starting a new run in {out}: it replaces {what}", file=sys.stderr, flush=True)
    metrics = _RunLog(out, new_run=not resume, pending=earlier is not None)
    log = metrics.write

    def evaluate(it: int) -> dict:
        """The evaluation at step `it`, logged; a loss that is not finite (an update diverged
        though its gradients were finite) stops the run before a checkpoint saves that model."""
        record = {"step": it, **evaluate_model(model, objective, config.eval_iters, seed=(config.seed, it))}
        evals.append(record)
        log(record)
        _describe(bar, record)
        bad = {k: v for k, v in record.items() if k.endswith("loss") and not math.isfinite(v)}
        if bad:
            said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bad.items())
            held = ""
            if best:  # always_save_checkpoint=False: the model ends holding the best checkpoint's weights
                restore_weights()
                held = ", whose weights the model holds"
            what = (f"training diverged before step {it}: its evaluation gave {said} (lower the learning rate, or "
                    f"check the data)" if it > 0 else f"the model gives {said} before any update (check the model "
                    f"and the data)")
            raise FloatingPointError(f"{what}; last checkpoint in {out}: "
                                     f"{_last_checkpoint(saved[0], earlier)}{held}")
        return record

    saved = [step if resume else None]  # the step of the checkpoint in `out`, if any

    # With always_save_checkpoint=False, the weights of the checkpoint in `out` (a resumed
    # run's to start with), which the run ends holding.
    best: dict[str, np.ndarray] = {}

    def keep_weights() -> None:
        if not config.always_save_checkpoint:
            best.update((n, t.numpy()) for n, t in named)  # numpy() is a copy

    def restore_weights() -> None:
        for name, tensor in named:
            tensor.copy_(best[name])

    if resume:
        keep_weights()

    def improved(record: dict) -> bool:
        """Whether `record`, the latest evaluation, has the run's best validation loss."""
        if "val_loss" not in record:
            raise ValueError(f"always_save_checkpoint=False keeps the model with the best validation loss, which the "
                             f"{objective.kind} objective's evaluate() does not report")
        return all(record["val_loss"] < e["val_loss"] for e in evals[:-1] if "val_loss" in e)

    def save(it: int) -> None:
        state = {"step": it, "rng": rng.bit_generator.state, "objective": objective.kind, "evals": evals,
                 "config": dataclasses.asdict(config), "objective_state": objective.state(), "settings": settings}
        with _interrupts_held():
            checkpoints.save(model, opt, names, state, metrics)
            saved[0] = it  # before a held Ctrl-C is raised, so its message names this checkpoint
            _move_in_pending_data(out, state["objective_state"].get("data"))  # the checkpoint vouches for it now
        keep_weights()

    bar = _progress(config, step)
    train_seconds, tokens_since = 0.0, 0  # since the last log line; evaluations and saves not counted
    try:
        while step < config.max_iters:
            if step % config.eval_interval == 0 and not (evals and evals[-1]["step"] == step):
                evaluate(step)  # at step 0 too, as nanoGPT: the baseline the run improves on
                # The model a run starts from is saved only when the run keeps its best model
                # (nanoGPT saves nothing at step 0, so a fine-tune that never improves keeps nothing).
                keep = improved(evals[-1]) if not config.always_save_checkpoint else step > 0
                if keep and not config.checkpoint_interval:
                    save(step)
            if config.checkpoint_interval and step % config.checkpoint_interval == 0 and step > 0 and saved[0] != step:
                save(step)
            step_start = time.perf_counter()
            lr = config.lr_at(step)
            opt.lr = lr
            total, extras = 0.0, {}
            batches = [objective.batch("train", rng) for _ in range(config.grad_accum)]
            weights = [_loss_weight(objective, b) for b in batches]
            shares = _shares(weights) if any(weights) else [0.0] * len(weights)
            for micro, (batch, share) in enumerate(zip(batches, shares)):
                tokens_since += objective.tokens(batch)
                if share == 0:  # nothing to learn from (an MLM batch with no masked token): skipped
                    continue
                seed = _dropout_seed(config.seed, step, micro)
                _core.manual_seed(seed)  # for what draws from the process-wide stream (an nn.Dropout), as resumable
                loss, extra = _loss_and_extras(objective.loss(model, batch, seed), objective)
                (loss * share).backward()
                total += loss.item() * share
                for k, v in extra.items():
                    extras.setdefault(k, []).append((v, share))
            if not any(shares):
                # No batch of the step holds anything to learn from: no update (AdamW's momentum
                # would still move the weights), and no loss to log (0.0 would read as perfect).
                warnings.warn(f"step {step}: no batch holds anything to learn from (each loss_weight() of "
                              f"{type(objective).__name__} is 0): skipped without an update", stacklevel=2)
                total, grad_norm = None, None
            else:
                # With clipping off the norm is still taken (an infinite bound scales nothing): it
                # is logged, and a non-finite one stops the run before the update.
                grad_norm = _core.clip_grad_norm(params, config.grad_clip if config.grad_clip > 0 else math.inf)
            if total is not None and not (math.isfinite(total) and math.isfinite(grad_norm)):
                # One update with these gradients would make every weight NaN; stop before it.
                last = _last_checkpoint(saved[0], earlier)
                if saved[0] == step:  # saved at this step's start (--checkpoint-interval, an evaluation, a resume)
                    last += " (saved with the weights that diverged: a resume from it stops here again)"
                raise FloatingPointError(f"training diverged at step {step}: loss {total}, gradient norm {grad_norm} "
                                         f"(lower the learning rate, or check the data); last checkpoint in {out}: {last}")
            if total is not None:
                opt.step()
                opt.zero_grad()
            step += 1
            train_seconds += time.perf_counter() - step_start
            if step % config.log_interval == 0 or step == config.max_iters:
                tps = tokens_since / max(train_seconds, 1e-9)
                train_seconds, tokens_since = 0.0, 0
                state_metrics = objective.metrics() if hasattr(objective, "metrics") else {}
                learned = {} if total is None else {"loss": total, "grad_norm": grad_norm}
                log({"step": step, **learned, "lr": lr, "tokens_per_sec": tps, **_pooled(extras), **state_metrics})
                shown = "skipped" if total is None else f"{total:.4f}"
                if bar is not None:
                    bar.set_postfix(loss=shown, tok_s=f"{tps:,.0f}", refresh=False)
                elif not config.progress:  # asked for lines instead of a bar (logs, CI)
                    print(f"step {step}: loss {shown}, lr {lr:.2e}, {tps:,.0f} tokens/s", flush=True)
            if bar is not None:
                bar.update(1)
        if not (evals and evals[-1]["step"] == step):
            evaluate(step)
        if saved[0] == step:
            pass  # resumed complete: the checkpoint holds this state
        elif config.always_save_checkpoint or improved(evals[-1]):
            save(step)
        else:
            restore_weights()
            kept = next((f"val loss {e['val_loss']:.4f}" for e in evals if e["step"] == saved[0]), "resumed from")
            print(f"ferrolm: kept the best checkpoint (step {saved[0]}, {kept}; the last evaluation had "
                  f"{evals[-1]['val_loss']:.4f}), and the model holds its weights", flush=True)
    except KeyboardInterrupt:
        where = (f"the checkpoint there is from step {saved[0]}, and resuming continues from it" if saved[0] is not None
                 else "this run saved no checkpoint yet" + (f" ({_last_checkpoint(None, earlier)})" if earlier is not None
                                                             else ""))
        print(f"\nferrolm: interrupted at step {step} of {out}; {where}", file=sys.stderr, flush=True)
        raise
    finally:
        metrics.close()
        if bar is not None:
            bar.close()
    _plot(out)
    return evals


def _last_checkpoint(step: int | None, earlier: int | None) -> str:
    """What `out` holds to resume from: this run's checkpoint at `step`, or an earlier run's."""
    if step is not None:
        return f"step {step}"
    if earlier is not None:
        return f"still the earlier run's, from step {earlier}"
    return "none yet"


def settle_pending_data(out: Path, change: bool = True) -> Path:
    """The data directory of the checkpoint in `out`: pending data (see PENDING_DATA_DIR) that
    it was trained on (its process died between the two) is moved in, and other pending data (a
    new run's, stopped before its first checkpoint) dropped; with `change=False` (a reader, such
    as an evaluation, that does not hold the directory) nothing moves and the directory that
    holds the checkpoint's data is returned. Called before a run starts in `out`: a resume, or a
    new run (which would otherwise replace pending data an earlier run's checkpoint needs)."""
    pending, data = out / PENDING_DATA_DIR, out / DATA_DIR
    if not pending.is_dir():
        return data
    try:
        digest = read_state(out / STATE_FILE).get("objective_state", {}).get("data")
        trained_on = digest is not None and data_digest(pending) == digest
    except (OSError, ValueError):  # no checkpoint, a damaged one, or data cut short while it was prepared
        trained_on = False
    if not change:
        return pending if trained_on else data
    if trained_on:
        _move_in_pending_data(out, digest)
        return pending if pending.is_dir() else data  # a move that failed leaves it there
    shutil.rmtree(pending, ignore_errors=True)
    return data


def _move_in_pending_data(out: Path, trained_on: str | None) -> None:
    """Moves in the pending data when it is the data `trained_on` (an objective's digest): a
    checkpoint of this run vouches for it now. Where the move fails (a system that cannot rename
    a directory of mapped files), the data stays pending, for `settle_pending_data`."""
    pending = out / PENDING_DATA_DIR
    try:
        if trained_on is None or not pending.is_dir() or data_digest(pending) != trained_on:
            return
        shutil.rmtree(out / DATA_DIR, ignore_errors=True)
        os.replace(pending, out / DATA_DIR)  # the run's data stays mapped (open files) under the new name
    except (OSError, ValueError) as e:
        warnings.warn(f"the run's data stays in {pending} ({e}): a resume moves it in", stacklevel=2)


class _RunLog:
    """The run's metrics.jsonl, appended to record by record. A new run in a directory that holds
    an earlier run's checkpoint logs to metrics.pending.jsonl until its first checkpoint: the log
    replaces the earlier run's together with the checkpoint, as one of its files. Stopped before
    then, the new run leaves the earlier run's log and checkpoint as they were, resumable (a
    command that prepares the data there keeps the new run's aside too: PENDING_DATA_DIR)."""

    def __init__(self, out: Path, new_run: bool, pending: bool):
        self.path, self.pending = out / METRICS_FILE, (out / PENDING_METRICS_FILE if pending else None)
        (out / PENDING_METRICS_FILE).unlink(missing_ok=True)  # a new run's, stopped before its first checkpoint
        if new_run and not pending:
            self.path.unlink(missing_ok=True)
        self.file: Optional[IO] = open(self.pending or self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.file is None:  # joined a checkpoint's files: the log is metrics.jsonl now
            self.file = open(self.path, "a", encoding="utf-8")
        try:
            self.file.write(json.dumps(record, default=_plain) + "\n")
            self.file.flush()
        except OSError as e:  # said "[Errno 27] File too large", naming no file
            raise OSError(e.errno, f"writing {self.file.name}: {e.strerror}") from None

    def join(self, files: Path) -> None:
        """Called as a checkpoint's `files` are written: a pending log goes with them."""
        if self.pending is not None and self.file is not None:
            self.file.close()
            os.replace(self.pending, files / METRICS_FILE)
            self.file, self.pending = None, None

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):  # a record that could not be written was said by write()
                self.file.close()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops log lines past `step` (written after the checkpoint by a run that was then
    interrupted), so a resumed run's log reads as one run."""
    if not path.exists():
        return
    kept = []
    # A damaged byte spoils its line only: replaced by U+FFFD, it fails to parse (dropped, as a torn
    # line is) or, inside a string, stays as that character.
    for line in lines_of(path.read_text(encoding="utf-8", errors="replace")):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # blank, or torn by a crash mid-write
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    with atomic_file(path) as f:
        f.write("".join(line + "\n" for line in kept))


def _dropout_seed(seed: int, step: int, micro: int) -> int:
    """A dropout seed of its own for every micro-batch of every step (hashed: no two collide)."""
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(1, np.uint64)[0] >> 1)


def _progress(config: TrainConfig, start: int):
    if not config.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=config.max_iters, initial=start, unit="it", dynamic_ncols=True)


def _describe(bar, record: dict) -> None:
    # nanoGPT's words ("step 250: train loss 2.4219, val loss 2.4511"); metrics.jsonl keeps the keys.
    text = f"step {record['step']}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()
                                                  if k != "step" and isinstance(v, float))
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def _plot(out: Path) -> None:
    """loss.png from metrics.jsonl, when matplotlib is installed (an optional extra)."""
    try:  # a Figure of its own: pyplot's state (a notebook's backend, its figures) stays the user's
        from matplotlib.figure import Figure
    except ImportError:
        print(f"ferrolm: no {out / 'loss.png'}: matplotlib is not installed (pip install matplotlib)",
              file=sys.stderr, flush=True)
        return
    records = [json.loads(line) for line in lines_of((out / METRICS_FILE).read_text(encoding="utf-8")) if line.strip()]
    steps = [(r["step"], r["loss"]) for r in records if "loss" in r]
    vals = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if steps:
        ax.plot(*zip(*steps), label="train (batch)", alpha=0.6)
    if vals:
        ax.plot(*zip(*vals), "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    with atomic_file(out / "loss.png", binary=True) as f:
        fig.savefig(f, dpi=100, format="png")
