"""`ferrolm sft | reward | classify | dpo | ppo`: fine-tuning from a model directory into a new one.

Each command reads its data (JSONL; preferences also from a labelling SQLite file), holds out
a validation share, trains through the shared loop and prints its held-out metric. With
--resume it continues the run saved in --out exactly: the model there, the optimizer, the
data order and (PPO) the rollout in progress; MODEL stays the reference (DPO, PPO).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ferrolm.batching import LEFT_OUT
from ferrolm.train.loop import PRESETS
from ferrolm.cli.common import (TRAIN_FLAGS, add_flags, checkpoint_state, choose, count, fraction, given_path,
                                non_negative, positive, resumed, train_config)

# PPO's evaluation samples every held-out prompt once (no --eval-iters) and reports rewards,
# not a validation loss to keep the best model by (no --always-save-checkpoint).
_PPO_FLAGS = {k: v for k, v in TRAIN_FLAGS.items() if k not in ("eval_iters", "always_save_checkpoint")}
DEFAULTS = {kind: {**(_PPO_FLAGS if kind == "ppo" else TRAIN_FLAGS), **preset, "batch_size": 8 if kind == "ppo" else 16}
            for kind, preset in PRESETS.items()}
def _split(records: list, val_fraction: float, seed: int) -> tuple[list, list]:
    if len(records) < 2:
        raise ValueError(f"need at least 2 records to hold some out, got {len(records)}")
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = min(max(1, int(round(len(records) * val_fraction))), len(records) - 1)
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


def load_preference_records(path: str) -> list[dict]:
    """Preference pairs from JSONL (validated, errors name the line) or a labelling database."""
    from ferrolm.preferences import load_preferences

    prefs = load_preferences(path, "--data")  # as sft and classify name it
    if prefs.skipped:
        print(f"{path}: left out {', '.join(f'{n} {k}' for k, n in sorted(prefs.skipped.items()))}", flush=True)
    return prefs.records


PREFERENCE_DATA_HELP = ("preference JSONL: prompt, chosen and rejected texts, or TRL's conversational forms (a prompt "
                        "conversation ending with a user turn; or chosen and rejected conversations differing only in "
                        "their last answer); or a labelling .sqlite database")
_DATA = {"val_fraction": 0.1, "skip_long": False}
#: The commands that keep MODEL as their reference: their resumed runs read it again (the others'
#: read only --out).
KEEP_REFERENCE = ("dpo", "ppo")
#: The flags that define a run besides the training ones, with their defaults: saved with its
#: checkpoints, taken from there by --resume, and refused there if given differently. Paths
#: (None) are compared resolved.
RUN_SETTINGS = {
    "sft": {"model": None, "data": None, **_DATA},
    "reward": {"model": None, "data": None, **_DATA},
    "classify": {"model": None, "data": None, **_DATA, "truncate": False, "max_length": 0},
    "dpo": {"model": None, "data": None, **_DATA, "beta": 0.1},
    "ppo": {"model": None, "reward_model": None, "prompts": None, **_DATA, "rollout_size": 16, "ppo_epochs": 4,
            "max_new_tokens": 48, "kl_coef": 0.1, "target_kl": 6.0, "missing_end_penalty": 0.0},
}


_PPO, _ROLLOUT = DEFAULTS["ppo"], RUN_SETTINGS["ppo"]
_PPO_HELP = {"min_lr": "learning rate at the end of the cosine decay (default: none, a constant --learning-rate; "
                       "on --resume, the run's)",
             "decay_lr": "warmup and cosine decay (default false unless --min-lr is given)",
             "checkpoint_interval": "steps between checkpoints (default 0: at each evaluation after step 0 and at the end)",
             # TRL's words differ: a step here is one minibatch update, not one rollout.
             "batch_size": f"responses per micro-batch (default {_PPO['batch_size']}); an optimiser step takes "
                           "--grad-accum of them",
             "max_iters": "optimiser steps, not rollouts: a rollout gives --ppo-epochs × --rollout-size / --batch-size "
                          f"micro-batches (with the defaults, {_ROLLOUT['ppo_epochs']} × {_ROLLOUT['rollout_size']} / "
                          f"{_PPO['batch_size']} = {_ROLLOUT['ppo_epochs'] * _ROLLOUT['rollout_size'] // _PPO['batch_size']}"
                          f" steps at --grad-accum 1; default {_PPO['max_iters']})"}


def _common(p, command: str, model_help: str = "model directory to start from") -> None:
    p.add_argument("model", help=model_help)
    p.add_argument("--out", type=given_path, required=True, help="model directory to write")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (its model, data and settings; given flags must agree; "
                        "DPO and PPO read MODEL again, their reference)")
    p.add_argument("--val-fraction", type=fraction, default=None, help="share of records held out for evaluation (default 0.1)")
    p.add_argument("--skip-long", action="store_true", default=None,
                   help="skip (and count) records that do not fit the context")
    add_flags(p, DEFAULTS[command], _PPO_HELP if command == "ppo" else None)


def _values(args, command: str) -> dict:
    """Training flag values (given, else on --resume the checkpoint's, else the command's
    default); also settles the run's other settings on `args` (see RUN_SETTINGS)."""
    state = checkpoint_state(Path(args.out)) if args.resume else {}
    if args.resume:
        if state.get("objective") != command:
            trained = {"causal": "pretrain", "mlm": "pretrain --objective mlm"}.get(state.get("objective"), state.get("objective"))
            raise ValueError(f"--resume: {args.out} holds a `ferrolm {trained}` run, not {command}")
    _settle(args, command, state.get("settings"))
    if Path(args.out).resolve() == Path(args.model).resolve():
        reference = " (and keeps as its reference)" if command in KEEP_REFERENCE else ""
        raise ValueError(f"--out {args.out} is MODEL: {command} would overwrite the model it starts from{reference}; "
                         "write elsewhere")
    if command == "ppo" and Path(args.out).resolve() == Path(args.reward_model).resolve():
        raise ValueError(f"--out {args.out} is the reward model's directory: write the policy elsewhere")
    saved = {**state["config"], **state.get("objective_state", {})} if args.resume else None
    # The seed drew the train/val split, which a resumed run keeps.
    fixed = {"seed": (f"the run's in {args.out}", "it drew the run's train/val split (start a new run with another --out)")}
    return {k: choose(args, k, saved, DEFAULTS[command], fixed=fixed.get(k)) for k in DEFAULTS[command]}


def _settle(args, command: str, saved: dict | None) -> None:
    settings = RUN_SETTINGS[command]
    for name, default in settings.items():
        if default is not None:
            setattr(args, name, choose(args, name, saved, settings, fixed=resumed(args)))
            continue
        path = str(Path(getattr(args, name)).resolve())  # a path (always given)
        unread = name == "model" and command not in KEEP_REFERENCE  # a resumed run reads --out's model
        if saved is not None and saved.get(name, path) != path and not unread:  # a moved directory is not a new run
            flag = name.upper() if name == "model" else "--" + name.replace("_", "-")
            print(f"ferrolm: warning: {flag} {path} is not where the run started ({saved[name]}); using it",
                  file=sys.stderr, flush=True)
        setattr(args, name, path)


def _start(args, command: str, records: list, system: bool = False):
    """Flag values, the starting model (MODEL) prepared for chat (given a system role with
    `system`: fine-tuning on system turns), its template, and the records split into train and
    held-out parts (the same split on --resume)."""
    from ferrolm.chat import ChatTemplate
    from ferrolm.gpt import GPT

    from ferrolm.models import warn_of_head

    v = _values(args, command)
    # A resumed SFT or reward run is all in --out; DPO and PPO keep MODEL as their reference.
    source = args.out if args.resume and command not in KEEP_REFERENCE else args.model
    model = GPT.load(source)
    if source == args.model and command != "reward":  # reward trains MODEL's head on (run_reward)
        warn_of_head(Path(args.model))  # a reward model's backbone trained as a policy: said
    if command in KEEP_REFERENCE and not model.is_chat:
        print(f"ferrolm {command}: {args.model} is not a chat model (from `ferrolm sft`): it gains the chat tokens and "
              "learns to answer as one (`ferrolm sft` first teaches it the format)", flush=True)
    template = ChatTemplate.prepare(model, system=system)
    train_records, val_records = _split(records, args.val_fraction, v["seed"])
    return v, model, template, train_records, val_records


def held_out(objective, noun: str) -> str:
    """'the one held-out pair' or 'all 4 held-out pairs' of the objective's validation split."""
    n = len(objective.data["val"])
    return f"the one held-out {noun}" if n == 1 else f"all {n} held-out {noun}s"


def _report(command: str, data: dict, counts: dict, unit: str, detail: str = "") -> None:
    """How many records the run trains and evaluates on, how many were left out, and how many
    held-out ones are training ones too."""
    line = f"{command}: {len(data['train'])} train / {len(data['val'])} val {unit}{detail}"
    for key, why in LEFT_OUT.items():
        left_out = {split: c[key] for split, c in counts.items() if c.get(key)}
        if left_out:
            line += f" (skipped as {why}: " + ", ".join(f"{n} {split}" for split, n in left_out.items()) + ")"
    print(line, flush=True)
    trained = {json.dumps(row) for row in data["train"]}
    repeated = sum(json.dumps(row) in trained for row in data["val"])
    if repeated:  # a file holding each record several times, say: the split does not see it
        print(f"ferrolm: {repeated} of the {len(data['val'])} held-out {unit} are also training {unit}: the held-out "
              "metrics partly measure what was learnt by heart", file=sys.stderr, flush=True)


def _train(args, v: dict, name: str, model, objective, summary) -> int:
    """Trains through the shared loop, then prints the time and `summary(evals)` (up to the
    kept model's evaluation)."""
    from ferrolm.train import train
    from ferrolm.train.loop import kept_evaluations

    start = time.perf_counter()
    settings = {name: getattr(args, name) for name in RUN_SETTINGS[name]}
    config = train_config(v, args, kind=name)
    evals = kept_evaluations(train(model, objective, config, args.out, resume=args.resume, settings=settings), config)
    print(f"{name} done in {time.perf_counter() - start:.1f}s; {summary(evals)}; saved to {args.out}/", flush=True)
    return 0


# ---------------------------------------------------------------- sft


def register_sft(sub) -> None:
    """`ferrolm sft`: supervised fine-tuning on prompt/response or conversation JSONL."""
    p = sub.add_parser("sft", help="supervised fine-tuning on {\"prompt\", \"response\"} or {\"messages\": [...]} JSONL "
                                   "(loss on answers only)")
    p.add_argument("--data", required=True, help="JSONL: prompt and response (or TRL's completion), as texts or a prompt "
                                                 "conversation and one assistant message; or messages (an optional "
                                                 "system turn, then alternating user and assistant turns: {\"role\", "
                                                 "\"content\"} objects, as TRL's conversational datasets)")
    _common(p, "sft")
    p.set_defaults(func=run_sft)


def run_sft(args) -> int:
    from ferrolm.jsonl import read_records
    from ferrolm.conversations import opens_with_system, sft_turns
    from ferrolm.train.sft import SFT, check_record

    records = read_records(args.data, check=check_record, what="--data")
    system = any(opens_with_system(sft_turns(r)) for r in records)  # the role is learnt here, from such data
    v, model, template, tr, va = _start(args, "sft", records, system)
    objective = SFT(tr, va, template, model.block_size, v["batch_size"], skip_long=args.skip_long)
    _report("sft", objective.data, objective.counts, "examples")
    return _train(args, v, "sft", model, objective, lambda evals: f"val loss on answers {evals[-1]['val_loss']:.4f}")


# ---------------------------------------------------------------- reward


def register_reward(sub) -> None:
    """`ferrolm reward`: a reward model from pairwise preferences."""
    p = sub.add_parser("reward", help="train a reward model on {\"prompt\", \"chosen\", \"rejected\"} preferences")
    p.add_argument("--data", required=True, help=PREFERENCE_DATA_HELP)
    _common(p, "reward")
    p.set_defaults(func=run_reward)


def run_reward(args) -> int:
    from ferrolm.models import load_head
    from ferrolm.train.reward import HEAD_FILE, Preferences, RewardModel

    v, gpt, template, tr, va = _start(args, "reward", load_preference_records(args.data))
    model = RewardModel(gpt)  # on --resume, --out's weights: its head is loaded beside them
    if args.resume:
        load_head(model.head, args.out, HEAD_FILE, "reward_head", "reward")
    elif (Path(args.model) / HEAD_FILE).is_file():  # MODEL is a reward model: its head trains on, as classify's does
        try:
            load_head(model.head, args.model, HEAD_FILE, "reward_head", "reward")
            print(f"ferrolm: {args.model} is a reward model: its head trains on", file=sys.stderr, flush=True)
        except ValueError as e:
            print(f"ferrolm: {e}; a new head is trained", file=sys.stderr, flush=True)
    objective = Preferences(tr, va, template, gpt.block_size, v["batch_size"], skip_long=args.skip_long)
    _report("reward", objective.data, objective.counts, "pairs")
    return _train(args, v, "reward", model, objective, lambda _: f"pairwise accuracy {objective.accuracy(model):.3f} on "
                                                              f"{held_out(objective, 'pair')}")


# ---------------------------------------------------------------- classify


def register_classify(sub) -> None:
    """`ferrolm classify`: fine-tunes a BERT to classify texts."""
    p = sub.add_parser("classify", help="fine-tune a BERT to classify texts: {\"text\", \"label\"} JSONL")
    p.add_argument("--data", required=True,
                   help="JSONL with a text string, a label (a string, or an integer: 1 and \"1\" are one label) and, "
                        "for pairs of texts (entailment, say), a text_pair string")
    _common(p, "classify", "BERT model directory to start from (or a classifier: with the same labels, its head trains on)")
    p.add_argument("--max-length", type=count(1), default=None,
                   help="tokens a text (with its pair and [CLS]/[SEP]) may have (default: the model's context)")
    p.add_argument("--truncate", action="store_true", default=None,
                   help="cut texts longer than --max-length (a pair's longer text first), as Hugging Face's run_glue")
    p.set_defaults(func=run_classify)


def _check_record(record: dict, where: str) -> None:
    label = record.get("label")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
        raise ValueError(f"{where}: \"label\" must be a non-empty string or an integer, got {label!r}")
    if not isinstance(record.get("text_pair", ""), str):
        raise ValueError(f"{where}: \"text_pair\" must be a string, got {record['text_pair']!r}")


def _starting_classifier(path: str, labels: list[str], seed: int):
    """The classifier training starts from: MODEL's own, when it is one with these labels (its
    head trains on), else MODEL's encoder with a new head (said, when MODEL's head is left
    aside or is another task's)."""
    from ferrolm.bert import BERT
    from ferrolm.train.classify import NotATextClassifier, TextClassifier

    try:
        start = TextClassifier.load(path)
    except (FileNotFoundError, NotATextClassifier) as e:  # a plain BERT, or another task's (as Hugging Face does)
        if isinstance(e, NotATextClassifier):
            print(f"ferrolm: {e}; its encoder starts a new classifier", file=sys.stderr, flush=True)
        return TextClassifier(BERT.load(path), labels, seed=seed)
    kept = start.relabelled(labels)
    if kept is not None:
        if start.labels != labels:
            print(f"ferrolm: {path}'s head classifies {start.labels}: read as {labels}, in that order", file=sys.stderr,
                  flush=True)
        return kept
    print(f"ferrolm: {path} classifies {start.labels}, not {labels}: its head is left aside and a new one trained",
          file=sys.stderr, flush=True)
    return TextClassifier(start.bert, labels, seed=seed)


def run_classify(args) -> int:
    from ferrolm.jsonl import read_records
    from ferrolm.train.classify import Classification, TextClassifier, labels_of

    records = read_records(args.data, ("text",), check=_check_record, what="--data")
    v = _values(args, "classify")
    train_records, val_records = _split(records, args.val_fraction, v["seed"])
    labels = labels_of(records)
    model = TextClassifier.load(args.out) if args.resume else _starting_classifier(args.model, labels, v["seed"])
    bert = model.bert
    if bert.tokenizer is None:
        raise ValueError(f"{args.model} has no tokenizer to encode the texts with")
    if args.max_length > bert.max_len:
        raise ValueError(f"--max-length {args.max_length} is longer than the model's context ({bert.max_len})")
    objective = Classification(train_records, val_records, bert.tokenizer, model.labels, args.max_length or bert.max_len,
                               v["batch_size"], skip_long=args.skip_long, truncate=args.truncate)
    _report("classify", objective.data, objective.counts, "texts", f", labels {model.labels}")
    return _train(args, v, "classify", model, objective,
                  lambda _: f"accuracy {objective.accuracy(model):.3f} on {held_out(objective, 'text')}")


# ---------------------------------------------------------------- dpo


def register_dpo(sub) -> None:
    """`ferrolm dpo`: direct preference optimisation against a frozen copy of the model."""
    p = sub.add_parser("dpo", help="direct preference optimisation on preference pairs")
    p.add_argument("--data", required=True, help=PREFERENCE_DATA_HELP)
    p.add_argument("--beta", type=positive, default=None, help="strength of the implicit KL constraint (default 0.1)")
    _common(p, "dpo")
    p.set_defaults(func=run_dpo)


def run_dpo(args) -> int:
    from ferrolm.train.dpo import DPO

    from ferrolm.gpt import GPT

    v, start, template, tr, va = _start(args, "dpo", load_preference_records(args.data))
    model = GPT.load(args.out) if args.resume else start.copy()
    objective = DPO(start, tr, va, template, model.block_size, v["batch_size"], beta=args.beta, skip_long=args.skip_long)
    _report("dpo", objective.data, objective.counts, "pairs")
    return _train(args, v, "dpo", model, objective, lambda _: _dpo_summary(objective, model))


def _dpo_summary(objective, model) -> str:
    """The held-out pairs' implicit-reward accuracy and how far each side moved from the reference."""
    ratios = objective.log_ratios(model)
    chosen, rejected = ratios.mean(axis=0)
    line = (f"implicit-reward accuracy {float((ratios[:, 0] > ratios[:, 1]).mean()):.3f} on "
            f"{held_out(objective, 'pair')}; log-probability against the reference: chosen {chosen:+.2f}, "
            f"rejected {rejected:+.2f} nats")
    if chosen < -1:  # the margin grew by unlearning both sides: the model drifts from what it was
        line += (f" (the chosen answers became e^{-chosen:.1f} times less likely too: a lower --learning-rate "
                 "keeps the policy nearer its reference)")
    return line


# ---------------------------------------------------------------- ppo


def register_ppo(sub) -> None:
    """`ferrolm ppo`: RLHF against a reward model with a KL penalty to the starting model."""
    p = sub.add_parser("ppo", help="RLHF: PPO against a reward model, KL-penalised towards the starting (SFT) model")
    p.add_argument("--reward-model", required=True, help="reward model directory (from `ferrolm reward`)")
    p.add_argument("--prompts", required=True, help="prompts: a text file (one per line) or JSONL with a prompt field (a text, or a "
                                                    "conversation ending with the user turn to answer)")
    p.add_argument("--rollout-size", type=count(1), default=None, help="responses sampled per rollout (default 16)")
    p.add_argument("--ppo-epochs", type=count(1), default=None, help="passes over each rollout (default 4)")
    p.add_argument("--max-new-tokens", type=count(1), default=None, help="response length limit (default 48)")
    p.add_argument("--kl-coef", type=non_negative, default=None, help="initial KL penalty coefficient (default 0.1)")
    p.add_argument("--target-kl", type=non_negative, default=None, help="adaptive KL target (default 6; 0: fixed coefficient)")
    p.add_argument("--missing-end-penalty", type=non_negative, default=None,
                   help="subtracted from the normalised score of a response cut at --max-new-tokens, in "
                        "--kl-coef's units: the scores' standard deviations (default 0)")
    _common(p, "ppo")
    p.set_defaults(func=run_ppo)


def run_ppo(args) -> int:
    from ferrolm.jsonl import located
    from ferrolm.label.prompts import numbered_prompts
    from ferrolm.train.ppo import PPO, PolicyWithValue
    from ferrolm.train.reward import RewardModel

    prompts = numbered_prompts(args.prompts, skip_blank=True)
    v, gpt, template, tr, va = _start(args, "ppo", [prompt for _, prompt in prompts])
    for number, prompt in prompts:  # each refused with its line, before the split mixes them
        located(f"{args.prompts} line {number}", template.prompt_ids, prompt)
    reward_model = RewardModel.load(args.reward_model)
    policy = PolicyWithValue.load(args.out) if args.resume else PolicyWithValue(gpt.copy())
    objective = PPO(policy, gpt, reward_model, tr, va, template, rollout_size=args.rollout_size,
                    minibatch_size=v["batch_size"], ppo_epochs=args.ppo_epochs, max_new_tokens=args.max_new_tokens,
                    kl_coef=args.kl_coef, target_kl=args.target_kl or None, missing_end_penalty=args.missing_end_penalty,
                    skip_long=args.skip_long)
    _report("ppo", objective.prompts, objective.counts, "prompts")
    return _train(args, v, "ppo", policy, objective,
                  lambda evals: f"held-out reward {evals[-1]['val_reward']:.3f} (KL to start {evals[-1]['val_kl']:.2f})"
                                + (f", from {evals[0]['val_reward']:.3f} at step {evals[0]['step']}" if len(evals) > 1
                                   else ""))
