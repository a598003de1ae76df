"""`ferrolm pretrain` and `ferrolm generate`, with nanoGPT's flag names; `ferrolm chat` and `ferrolm perplexity`."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ferrolm.cli.common import (MLM_DEFAULTS, MODEL_FLAGS, TRAIN_FLAGS, add_flags, checkpoint_state, choose, count,
                                dtype, fraction, given_path, non_negative, positive, probability, resumed, train_config,
                                undecodable)
from ferrolm.cli.nanogpt import check_dataset
from ferrolm.jsonl import read_utf8
from ferrolm.train.loop import DTYPES, using_precision


def register_pretrain(sub) -> None:
    """`ferrolm pretrain`: next-token (GPT) or masked-LM (BERT) pretraining."""
    p = sub.add_parser("pretrain", help="pretrain a GPT (next token) or a BERT (--objective mlm); default: tiny Shakespeare")
    p.add_argument("files", nargs="*", help="UTF-8 text files (default: the bundled tiny Shakespeare); a nanoGPT config "
                                            "file (.py of name = value lines) sets flags instead, read, never run")
    p.add_argument("--objective", choices=["causal", "mlm"], default=None,
                   help="causal (default; with --init-from, the model's: mlm for a BERT): GPT next-token prediction; "
                        "mlm: BERT masked language modelling (its defaults for a new model: "
                        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in MLM_DEFAULTS.items())
                        + "); --resume continues the checkpoint's")
    p.add_argument("--tokenizer", default=None,
                   help="char, bpe, wordpiece, or the path of a tokenizer.json or .tiktoken file (default: char for causal, wordpiece for mlm)")
    p.add_argument("--vocab-size", type=count(1), default=None,
                   help=f"vocabulary size when training a bpe/wordpiece tokenizer (default {_VOCAB_SIZE})")
    p.add_argument("--out", type=given_path, default=None, help="model directory to write and resume from (default: out-<objective>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (on its data: corpus files and tokenizer flags, if given, "
                        "must be the run's)")
    p.add_argument("--dataset", default=None, help=argparse.SUPPRESS)  # a nanoGPT config's (cli/nanogpt.py)
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate the model of --resume (on its data) or --init-from (on the corpus given) on "
                        "--eval-iters batches of each split, and exit without training (nanoGPT's eval_only)")
    p.add_argument("--init-from", metavar="DIR", default=None,
                   help="start from a model directory's weights and tokenizer (a GPT, trained causal, or a BERT, "
                        "trained mlm; Hugging Face ones too) instead of a new model, as nanoGPT's init_from=gpt2: its "
                        "architecture stays; --block-size may be shorter than its context")
    p.add_argument("--val-fraction", type=fraction, default=None, help=f"share of the corpus held out (default {_VAL_FRACTION})")
    p.add_argument("--whole-word-masking", action="store_true", help="mlm: mask whole words, not single pieces")
    p.add_argument("--mlm-probability", type=fraction, default=None,
                   help="mlm: share of tokens chosen for prediction (default 0.15, BERT's; on --resume, the run's)")
    p.add_argument("--sample-tokens", type=count(), default=300, help="causal: tokens of sample text to print at the end (default 300; 0: none)")
    add_flags(p, {**MODEL_FLAGS, **TRAIN_FLAGS})
    p.set_defaults(func=run_pretrain)


def _model_flags(model) -> dict:
    """The nanoGPT-style flags that describe a loaded model."""
    c = model.config
    if c["model_type"] == "bert":
        return {"n_layer": c["num_hidden_layers"], "n_head": c["num_attention_heads"], "n_embd": c["hidden_size"],
                "block_size": c["max_position_embeddings"], "dropout": c["hidden_dropout_prob"], "bias": True}
    return {"n_layer": c["n_layer"], "n_head": c["n_head"], "n_embd": c["n_embd"], "block_size": c["n_positions"],
            "dropout": c["resid_pdrop"], "bias": c.get("bias", True)}


def _starting_model(args):
    """--init-from's model, checked against the objective and the flags it makes moot."""
    from ferrolm.models import load_model

    moot = [f for f, v in (("--tokenizer", args.tokenizer), ("--vocab-size", args.vocab_size)) if v]
    if moot:
        raise ValueError(f"--init-from {args.init_from}: the model's tokenizer is used; {', '.join(moot)} cannot change it")
    if not Path(args.init_from).exists():
        raise ValueError(f"--init-from {args.init_from}: no such model directory (ferrolm downloads nothing: for "
                         "nanoGPT's init_from=gpt2, download a Hugging Face GPT-2 directory, e.g. openai-community/gpt2 "
                         "with config.json, model.safetensors, vocab.json and merges.txt, and give its path)")
    model = load_model(args.init_from)
    kind = "mlm" if type(model).__name__ == "BERT" else "causal"
    if args.objective not in (None, kind):
        raise ValueError(f"--init-from {args.init_from}: a {type(model).__name__} trains with --objective {kind}")
    args.objective = kind  # the model's, when not given
    if model.tokenizer is None:
        raise ValueError(f"--init-from {args.init_from}: the directory has no tokenizer to prepare the corpus with")
    if kind == "mlm" and not model.core.has_mlm_head:
        if args.eval_only:
            raise ValueError(f"--init-from {args.init_from}: an encoder-only checkpoint has no masked-LM head to evaluate")
        print(f"ferrolm: {args.init_from} has no masked-LM head (an encoder-only checkpoint): training a new one",
              file=sys.stderr, flush=True)
        model = model.with_new_mlm_head(args.seed or 0)
    if args.learning_rate is None and not args.eval_only:
        print(f"ferrolm: fine-tuning {args.init_from} at the pretraining learning rate, {TRAIN_FLAGS['learning_rate']:g} "
              "(nanoGPT's finetune_shakespeare.py takes --learning-rate 3e-5 --decay-lr false)", file=sys.stderr, flush=True)
    return model


#: --tokenizer's kinds, trained on the corpus; those --vocab-size sizes, and its default.
_TRAINED_HERE, _SIZED, _VOCAB_SIZE = ("char", "bpe", "wordpiece"), ("bpe", "wordpiece"), 4096
_VAL_FRACTION = 0.1


def _corpus_settings(args, files: list[Path]) -> dict:
    """The corpus flags of a new run, defaults filled in: what it prepares its data from,
    saved with its checkpoints (a resume may repeat them, the command run again with
    --resume, not change them). A run from a model (--init-from) takes the model's tokenizer."""
    kind = args.tokenizer or ("wordpiece" if args.objective == "mlm" else "char")
    if args.vocab_size and kind not in _SIZED:
        raise ValueError(f"--vocab-size sizes a bpe or wordpiece tokenizer trained here, not --tokenizer {kind}")
    if kind not in _TRAINED_HERE and not Path(kind).exists():
        raise ValueError(f"--tokenizer {kind}: not char, bpe or wordpiece, and no such file")
    own = not args.init_from
    return {"files": [str(f.resolve()) for f in files],
            "tokenizer": _tokenizer_setting(kind) if own else None,
            "vocab_size": (args.vocab_size or _VOCAB_SIZE) if kind in _SIZED and own else None,
            "val_fraction": args.val_fraction or _VAL_FRACTION}


def _tokenizer_setting(tokenizer: str) -> str:
    """--tokenizer as a run records it: a kind trained on the corpus, or a file's resolved path."""
    return tokenizer if tokenizer in _TRAINED_HERE else str(Path(tokenizer).resolve())


def _tokenizer(settings: dict, files: list[Path]):
    """The run's tokenizer (`_corpus_settings`), trained on the corpus files or read from a file."""
    from ferrolm import Tokenizer
    from ferrolm.cli.tokenizer import note_short_vocabulary
    from ferrolm.data import read_text

    kind = settings["tokenizer"]
    if kind in _TRAINED_HERE:
        # From the files, line by line, as `ferrolm tokenizer train` does: bounded memory (one
        # 80 MB string took 1.5 GB to train WordPiece on) and every core.
        if kind != "char":
            print(f"tokenizer: training {kind} on the corpus...", flush=True)
        tok = Tokenizer.train([str(f) for f in files], kind=kind, vocab_size=settings["vocab_size"] or 1 << 20)
        if kind == "char" and len(files) > 1 and tok.token_to_id("\n") is None:
            # What separates the files (`prepare_files`): one-line files without one were run together.
            texts = itertools.chain((read_text(f) for f in files), ["\n"])
            tok = Tokenizer.train_from_iterator(texts, kind="char", vocab_size=1 << 20)
        if settings["vocab_size"]:
            note_short_vocabulary(tok, settings["vocab_size"])
        return tok
    return Tokenizer.from_file(kind)


def _new_model(objective: str, tokenizer, m: dict, seed: int):
    from ferrolm.bert import BERT
    from ferrolm.gpt import GPT

    if objective == "mlm":
        return BERT.create(vocab_size=tokenizer.vocab_size, hidden_size=m["n_embd"], num_hidden_layers=m["n_layer"],
                           num_attention_heads=m["n_head"], max_position_embeddings=m["block_size"],
                           hidden_dropout_prob=m["dropout"], pad_token_id=tokenizer.pad_id, seed=seed, tokenizer=tokenizer)
    return GPT.create(vocab_size=tokenizer.vocab_size, block_size=m["block_size"], n_layer=m["n_layer"], n_head=m["n_head"],
                      n_embd=m["n_embd"], dropout=m["dropout"], bias=m["bias"], seed=seed, tokenizer=tokenizer)


def _check_resume_flags(args, state: dict) -> None:
    """--resume continues on the data, tokenizer and objective saved in --out: flags that would
    change them are refused rather than ignored; the run's own values (the command repeated
    with --resume) are accepted."""
    given = {"files": args.files, "tokenizer": args.tokenizer, "vocab_size": args.vocab_size,
             "val_fraction": args.val_fraction}
    given = {name: value for name, value in given.items() if value}
    saved = state.get("settings") or None  # runs saved before they were recorded have none (or {})
    if given and saved is None:
        raise ValueError(f"--resume continues on the data prepared in {args.out}, by a run saved before ferrolm recorded "
                         f"its corpus flags: leave out {', '.join(_flag(n) for n in given)}")
    problems = [problem for name, value in given.items() if (problem := _differs(name, value, saved))]
    if problems:
        raise ValueError(f"--resume continues on the corpus and tokenizer prepared in {args.out}: {'; '.join(problems)} "
                         "(leave them out, or start a new run with another --out)")
    if state["objective"] not in ("causal", "mlm"):
        raise ValueError(f"{args.out} holds a `ferrolm {state['objective']}` run: resume it with that command")
    if args.objective not in (None, state["objective"]):
        raise ValueError(f"--objective {args.objective}: the checkpoint in {args.out} was trained with {state['objective']}")
    saved_whole_word = bool(state.get("objective_state", {}).get("whole_word"))
    if args.whole_word_masking and not saved_whole_word:
        raise ValueError(f"--whole-word-masking: the run in {args.out} masks single pieces")


def _flag(name: str) -> str:
    return "files" if name == "files" else "--" + name.replace("_", "-")


def _differs(name: str, value, saved: dict) -> str | None:
    """What is wrong with flag `name`'s `value` on a resume of a run whose corpus settings
    are `saved` (`_corpus_settings`); None when it is the run's own."""
    theirs = saved.get(name)
    if name == "files":
        paths = [Path(f) for f in theirs]
        if len(value) == len(paths) and all(_same_file(Path(f), p) for f, p in zip(value, paths)):
            return None
        shown = ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        return f"{'file' if len(value) == 1 else 'files'} {' '.join(value)} {'is' if len(value) == 1 else 'are'} not the " \
               f"run's ({shown})"
    if name == "tokenizer" and theirs is None:
        return "--tokenizer: the run took its --init-from model's tokenizer"
    if name == "vocab_size" and theirs is None:
        return f"--vocab-size: the run's tokenizer ({saved.get('tokenizer') or 'its --init-from model'}) was not sized by it"
    if name == "tokenizer" and theirs not in _TRAINED_HERE:
        return None if value not in _TRAINED_HERE and _same_file(Path(value), Path(theirs)) else \
            f"--tokenizer {value} is not the run's ({theirs})"
    return None if value == theirs else f"{_flag(name)} {value} is not the run's ({theirs})"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is gone: by name
        return a.resolve() == b.resolve()


def run_pretrain(args) -> int:
    from ferrolm.data import MlmCollator, check_files, check_token_files, corpus_files, prepare_files
    from ferrolm.models import load_model
    from ferrolm.train import CausalLM, MaskedLM, evaluate_model, train
    from ferrolm.train.loop import (DATA_DIR, PENDING_DATA_DIR, STATE_FILE, hold_run_directory, kept_evaluations,
                                    settle_pending_data)

    if args.eval_only and not (args.resume or args.init_from):
        raise ValueError("--eval-only evaluates a model: give --resume (the run in --out) or --init-from DIR")
    if args.resume and args.init_from:
        raise ValueError("--init-from starts a new run from a model; --resume continues the run in --out")
    if not args.resume:
        check_dataset(args.dataset, args.files)
    saved_model = saved_train = fixed = settings = None
    if args.init_from:  # before --out's default, which names the model's objective
        model, fixed = _starting_model(args), (f"the model's in {args.init_from}", "the model keeps its architecture")
        saved_model = _model_flags(model)
    out = Path(args.out or f"out-{args.objective or 'causal'}")
    args.out = str(out)
    data_dir = out / DATA_DIR
    if args.eval_only and args.init_from:  # a corpus tokenised only to evaluate on: not kept
        data_dir = Path(tempfile.mkdtemp(prefix="ferrolm-eval-"))
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    if args.init_from and not args.eval_only and Path(args.init_from).resolve() == out.resolve():
        raise ValueError(f"--init-from {args.init_from} is the output directory: training would overwrite the model it "
                         "starts from (choose another --out)")
    if not args.eval_only:  # first: a second run there is refused before it reads, tokenises or trains anything
        hold_run_directory(out)
    if args.resume:
        state = checkpoint_state(out)
        _check_resume_flags(args, state)
        data_dir = settle_pending_data(out, change=not args.eval_only)  # an evaluation holds nothing: it only reads
        check_token_files(data_dir)  # an edit that kept their size passed for the prepared data
        settings = state.get("settings")
        args.objective = state["objective"]
        model = load_model(out)
        saved_model, fixed = _model_flags(model), resumed(args)
        saved_train = {**state["config"], **state.get("objective_state", {})}
        if "block_size" in saved_train:  # the run's sequences, which may be shorter than the model's context
            saved_model["block_size"] = saved_train["block_size"]
    args.objective = args.objective or "causal"
    defaults = {**MODEL_FLAGS, **TRAIN_FLAGS, **(MLM_DEFAULTS if args.objective == "mlm" else {})}
    # Dropout is a training setting (nanoGPT lets it change too); the rest is the architecture. A
    # resumed run keeps its dropout; a new run from a model takes the default, as nanoGPT's
    # init_from does (a Hugging Face GPT-2's 0.1 is its pretraining's).
    def saved_for(k: str):
        return None if k == "dropout" and args.init_from else saved_model

    # A run from a model may also train on shorter sequences than its context, as Hugging Face's
    # run_mlm trains a 512-position BERT on 128 tokens and nanoGPT crops GPT-2's to block_size.
    free = {"dropout", "block_size"} if args.init_from else {"dropout"}
    m = {k: choose(args, k, saved_for(k), defaults, fixed=None if k in free else fixed) for k in MODEL_FLAGS}
    if args.init_from and m["block_size"] > saved_model["block_size"]:
        raise ValueError(f"--block-size {m['block_size']} is longer than the context of the model in {args.init_from} "
                         f"({saved_model['block_size']})")
    t = {k: choose(args, k, saved_train, defaults) for k in TRAIN_FLAGS}
    config = train_config(t, args)
    # Checked here, before the corpus is tokenised.
    if m["n_embd"] % m["n_head"]:
        raise ValueError(f"--n-embd {m['n_embd']} must be a multiple of --n-head {m['n_head']}")
    if args.objective == "mlm" and not m["bias"]:
        raise ValueError("--bias false: BERT's layers always have biases (the flag is for GPT)")
    if args.objective == "mlm" and args.tokenizer in ("char", "bpe"):  # before training one on the corpus
        raise ValueError(f"--tokenizer {args.tokenizer}: masked language modelling needs [CLS], [SEP], [MASK] and [PAD] "
                         "(--tokenizer wordpiece, or a BERT tokenizer.json)")
    if args.objective == "mlm" and m["block_size"] < 8:
        raise ValueError(f"--block-size {m['block_size']}: masked language modelling needs sequences of at least 8")
    for flag, given in (("--whole-word-masking", args.whole_word_masking), ("--mlm-probability", args.mlm_probability)):
        if given and args.objective != "mlm":
            raise ValueError(f"{flag} is for --objective mlm (a GPT masks nothing)")
    mask_prob = args.mlm_probability or (saved_train or {}).get("mask_prob", 0.15)
    if not 0 <= m["dropout"] < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {m['dropout']}")
    def make_objective(directory: Path, check_tokens: bool = True):
        if args.objective == "mlm":
            whole_word = args.whole_word_masking or bool(saved_train and saved_train.get("whole_word"))
            return MaskedLM(directory, tokenizer, m["block_size"], t["batch_size"], mask_prob=mask_prob,
                            whole_word=whole_word, check_tokens=check_tokens)
        return CausalLM(directory, m["block_size"], t["batch_size"])

    tokenizer = model.tokenizer if args.resume or args.init_from else None
    if not args.resume:
        files = corpus_files(args.files)
        settings = _corpus_settings(args, files)
        check_files(files)  # before a tokenizer is trained on them, or anything is replaced
        tokenizer = tokenizer or _tokenizer(settings, files)
        if args.objective == "mlm":  # checked before the corpus is tokenised with it
            MlmCollator(tokenizer)  # raises if it lacks [CLS], [SEP], [MASK] or [PAD]
        # Prepared beside the run's data and put in its place only once the objective takes it:
        # a new run that is refused leaves the run in --out resumable.
        staging = data_dir.with_name(data_dir.name + ".preparing")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            try:
                meta = prepare_files(files, tokenizer, staging, settings["val_fraction"])
            except ValueError as e:  # the files were checked: what is left is encoding them
                if not args.init_from:
                    raise
                raise ValueError(f"--init-from {args.init_from}: the model's tokenizer cannot encode the corpus: {e}") from None
            make_objective(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if not args.eval_only:
            # An earlier checkpoint's pending data is moved in first: that run stays resumable.
            if settle_pending_data(out) != data_dir:
                raise OSError(f"{out / PENDING_DATA_DIR} holds the data of the checkpoint in {out}, which could not be "
                              "moved into its place: resume that run (--resume), or give another --out")
            if (out / STATE_FILE).exists():  # until this run's first checkpoint replaces it
                data_dir = out / PENDING_DATA_DIR
        shutil.rmtree(data_dir, ignore_errors=True)
        staging.rename(data_dir)
        size = sum(f.stat().st_size for f in files)
        print(f"corpus: {len(files)} file{'s' * (len(files) > 1)}, {size / 1e6:.1f} MB -> {meta['train_tokens']:,} train / "
              f"{meta['val_tokens']:,} val tokens (vocab {tokenizer.vocab_size})", flush=True)
        if not args.init_from:
            model = _new_model(args.objective, tokenizer, m, choose(args, "seed", None, defaults))
    if saved_model and m["dropout"] != saved_model["dropout"]:
        print(f"ferrolm: dropout {saved_model['dropout']} -> {m['dropout']}", file=sys.stderr, flush=True)
        model = model.with_dropout(m["dropout"])
    # A model from --init-from keeps its context, trained on shorter sequences (nanoGPT crops its own).
    context = _model_flags(model)["block_size"]
    shorter = f", trained on sequences of {m['block_size']}" if m["block_size"] < context else ""
    print(f"model: {type(model).__name__}, {model.num_parameters() / 1e6:.2f}M parameters, {m['n_layer']} layers, "
          f"{m['n_head']} heads, width {m['n_embd']}, context {context}{shorter}", flush=True)
    objective = make_objective(data_dir, check_tokens=args.resume)  # a new run's data was checked while staged
    if args.eval_only:
        record = evaluate_model(model, objective, t["eval_iters"], seed=(t["seed"], 0), dtype=config.dtype)
        print(f"evaluation on {t['eval_iters']} batches of each split: "
              + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()), flush=True)
        return 0
    start = time.perf_counter()
    evals = train(model, objective, config, out, resume=args.resume, settings=settings)
    elapsed = time.perf_counter() - start
    final = kept_evaluations(evals, config)[-1]  # with --always-save-checkpoint false, the best one
    extra = f", masked-token accuracy {final['val_accuracy']:.3f}" if "val_accuracy" in final else ""
    print(f"done in {elapsed:.1f}s: train loss {final['train_loss']:.4f}, val loss {final['val_loss']:.4f} "
          f"(perplexity {final['val_ppl']:.2f}){extra}; saved to {out}/", flush=True)
    if args.objective == "causal" and args.sample_tokens > 0 and model.tokenizer is not None:
        print("-" * 60)
        for piece in model.generate(_start_prompt(model), args.sample_tokens, temperature=0.8, top_k=200, seed=0,
                                    stream=True):
            print(piece, end="", flush=True)
        print()
    return 0


def _start_prompt(model) -> str:
    """What a sample starts from: nanoGPT's newline; when the tokenizer has none (WordPiece drops
    whitespace, a character vocabulary may lack it), the start of a sequence, [CLS], if it has
    one, else its first token."""
    try:
        if model.encode("\n"):
            return "\n"
    except ValueError:  # a character vocabulary without "\n"
        pass
    tok = model.tokenizer
    return "[CLS]" if "[CLS]" in tok.special_tokens else tok.decode([0])


def register_generate(sub) -> None:
    """`ferrolm generate`: stream text from a model directory."""
    p = sub.add_parser("generate", help="sample text from a model directory, streamed as it is generated",
                       epilog="nanoGPT's sample.py spellings work too: --out_dir DIR, --start TEXT or --start FILE:path, "
                              "--num_samples N, --max_new_tokens N, --top_k N")
    p.add_argument("model", help="model directory (config.json, model.safetensors, and tokenizer.json, "
                                         "vocab.json + merges.txt or vocab.txt)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help="text to continue (default a newline; [CLS] for a WordPiece model, "
                                                       "which has none; a character vocabulary's first character if it "
                                                       "lacks one); a chat model's question")
    prompt.add_argument("--prompt-file", metavar="FILE", default=None, help="read the prompt from a UTF-8 text file")
    prompt.add_argument("--conversation", metavar="FILE", default=None,
                        help="a chat model's conversation to answer: a JSON list of {\"role\", \"content\"} turns, "
                             "or {\"messages\": [...]} (sft's layout), ending with the user turn")
    p.add_argument("--num-samples", type=count(1), default=1, help="samples to draw, one after another, each with the "
                                                                 "next seed (default 1)")
    _sampling_flags(p)
    p.add_argument("--raw", action="store_true", help="continue the prompt as plain text even with a chat model (by "
                                                      "default a model from `ferrolm sft` answers it as a user turn)")
    _system_flag(p)
    p.set_defaults(func=run_generate)


def _system_flag(p) -> None:
    p.add_argument("--system", default=None, help="a chat model's system turn, before the user's (a model fine-tuned "
                                                  "on system turns has the role)")


def _system_turns(model, args) -> list[dict]:
    """The conversation's opening: --system's turn, if given, refused clearly by a model
    without the role."""
    if args.system is None:
        return []
    if model._chat_template().system is None:
        raise ValueError(f"--system: {args.model} has no system role (fine-tune it with `ferrolm sft` on conversations "
                         "that have system turns, which adds it)")
    return [{"role": "system", "content": args.system}]


def _sampling_flags(p) -> None:
    """How `generate` and `chat` sample, with nanoGPT's sample.py defaults (one sample, where
    sample.py draws 10)."""
    p.add_argument("--max-new-tokens", type=count(), default=500, help="default 500")
    p.add_argument("--temperature", type=non_negative, default=0.8, help="default 0.8 (0: greedy)")
    p.add_argument("--top-k", type=count(), default=200, help="default 200 (0: no limit)")
    p.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass (default: off)")
    p.add_argument("--repetition-penalty", type=positive, default=1.0, help="default 1.0 (off)")
    p.add_argument("--seed", type=count(), default=1337, help="default 1337 (sample.py's)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--dtype", type=dtype, default="float32", metavar="{" + ",".join(DTYPES) + "}",
                   help="float32 (default), or bfloat16: each new token reads bfloat16 copies of the weights, "
                        "activations staying float32 (about twice as fast where the weights outgrow the CPU's cache; "
                        "half again the weights' memory; prompts of 16 tokens or more are read with bfloat16 products)")


def _in_dtype(command):
    """`command` with its matrix products in its --dtype."""
    @functools.wraps(command)
    def run(args) -> int:
        with using_precision(args.dtype):
            return command(args)
    return run


def _text_model(directory: str):
    """The GPT in `directory`, which must have a tokenizer (text in, text out)."""
    from ferrolm.gpt import GPT
    from ferrolm.models import TOKENIZER_FILES, model_dir, warn_of_head

    model = GPT.load(directory)
    warn_of_head(model_dir(directory))
    if model.tokenizer is None:
        raise ValueError(f"{directory} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
    return model


@_in_dtype
def run_generate(args) -> int:
    model = _text_model(args.model)
    chat = model.is_chat and not args.raw
    asked, echo = _asked(model, args, chat)
    for i in range(args.num_samples):
        # The prompt is encoded (and refused, if it cannot be) before anything is printed.
        pieces = model.generate(asked, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop,
                                seed=args.seed + i, stream=True, chat=chat)
        if i:
            sys.stdout.write("-" * 15 + "\n")  # between samples (nanoGPT's sample.py also ends with one)
        elif args.conversation is not None:
            print("(chat model: the conversation's last turn is answered, the answer ends at <|end|>)", file=sys.stderr,
                  flush=True)
        elif chat:
            print("(chat model: the prompt is a user turn, the answer ends at <|end|>; --raw continues text instead)",
                  file=sys.stderr, flush=True)
        if not chat:
            sys.stdout.write(echo)
        try:
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
        finally:
            sys.stdout.write("\n")  # also before a Ctrl-C's message: not on the sample's line
    return 0


def _asked(model, args, chat: bool):
    """What `generate` answers or continues, and the text to echo before a plain continuation."""
    given = "--system" if args.system is not None else "--conversation" if args.conversation is not None else None
    if given and not chat:
        raise ValueError(f"{given} gives a chat model's turns: " + (
            "leave out --raw, which continues plain text" if args.raw else
            f"{args.model} is not a chat model (fine-tune one with `ferrolm sft`)"))
    if args.conversation is not None:
        if args.system is not None:
            raise ValueError("--conversation: give its system turn in the file, not --system")
        return _conversation_file(args.conversation), ""
    system = _system_turns(model, args)
    # A prompt file's line ends as Python reads text (CRLF as \n), as nanoGPT's sample.py reads
    # it; a chat model's message without the file's last line end.
    prompt = args.prompt
    if args.prompt_file is not None:  # sample.py's --start=FILE:path too
        if not args.prompt_file:
            raise ValueError("--prompt-file (sample.py's --start=FILE:) names no file")
        prompt = read_utf8(Path(args.prompt_file), "--prompt-file").replace("\r\n", "\n")  # without a byte-order mark
        if chat:
            prompt = prompt.removesuffix("\n")
    if prompt == "":
        raise ValueError(f"--prompt-file {args.prompt_file} is empty" if args.prompt_file is not None else
                         "--prompt is empty (leave it out to start where nanoGPT does: a newline)")
    echo = prompt
    if prompt is None:
        prompt = _start_prompt(model)
        echo = "" if prompt == "[CLS]" else prompt  # shown as nanoGPT shows its newline start; [CLS] is not text
    return (system + [{"role": "user", "content": prompt}] if system else prompt), echo


def _conversation_file(path: str) -> list[dict]:
    """--conversation's turns: a JSON list of {"role", "content"}, or {"messages": [...]} (sft's
    layout), ending with the user turn to answer."""
    from ferrolm.conversations import checked_turns

    text = read_utf8(Path(path), "--conversation")  # without a byte-order mark
    try:
        value = json.loads(text)
        return checked_turns(value["messages"] if isinstance(value, dict) and "messages" in value else value,
                             open_turn=True)
    except (ValueError, TypeError) as e:  # invalid JSON too
        raise ValueError(f"--conversation {path}: {e}") from None


def register_chat(sub) -> None:
    """`ferrolm chat`: talk with a chat model in the terminal."""
    p = sub.add_parser("chat", help="talk with a chat model (from `ferrolm sft`): each line is a message, answered as "
                                    "it is generated")
    p.add_argument("model", help="model directory of a chat model")
    _system_flag(p)
    _sampling_flags(p)
    p.set_defaults(func=run_chat)


#: What the chat's lines starting with "/" do (other lines, "/" ones too, are messages).
CHAT_COMMANDS = {"/reset": "forgets the conversation (not the system turn)", "/help": "lists these commands",
                 "/exit": "ends the chat (as Ctrl-D does)"}


@_in_dtype
def run_chat(args) -> int:
    """A message per line, each answered as it streams. A message the model cannot take (too
    long, characters it lacks) is reported and the chat goes on; with piped input the exit
    status is then 2."""
    from ferrolm.cli import Terminated

    model = _text_model(args.model)
    if not model.is_chat:
        raise ValueError(f"{args.model} is not a chat model (its tokenizer lacks <|user|>, <|assistant|> and <|end|>): "
                         "fine-tune one with `ferrolm sft`, or continue text with `ferrolm generate`")
    chat = model.chat(_system_turns(model, args), temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p,
                      repetition_penalty=args.repetition_penalty, seed=args.seed)
    interactive, refused = sys.stdin.isatty(), False
    if hasattr(sys.stdin, "reconfigure"):  # bytes it cannot decode reach the message check, not end the chat
        sys.stdin.reconfigure(errors="surrogateescape")
    commands = "; ".join(f"{c} {what}" for c, what in CHAT_COMMANDS.items()) + "; Ctrl-C stops an answer"
    if interactive:
        with contextlib.suppress(ImportError):
            importlib.import_module("readline")  # line editing and history for input()
        print(f"Chatting with {args.model}: type a message and press Enter ({commands}).", file=sys.stderr, flush=True)
    while True:
        try:
            message = input("> " if interactive else "").strip()
        except (EOFError, KeyboardInterrupt) as e:  # Ctrl-D or Ctrl-C at the prompt: its message on a line of its own
            if interactive:
                sys.stdout.write("\n")
            if isinstance(e, EOFError):
                break
            raise
        if message == "/exit":
            break
        if message == "/reset":
            chat.reset()
            print("(the conversation is forgotten)", file=sys.stderr, flush=True)
        elif message == "/help":
            print(commands, file=sys.stderr, flush=True)
        if not message or message in CHAT_COMMANDS:
            continue
        if undecodable(message):  # bytes the terminal's decoder could not read
            print("ferrolm: error: this message is not UTF-8 text", file=sys.stderr, flush=True)
            refused = True
            continue
        try:
            for piece in chat.send(message, args.max_new_tokens, stop=args.stop, stream=True):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt as e:  # Ctrl-C stops the answer, not the chat
            if isinstance(e, Terminated) or not interactive:
                raise
        except ValueError as e:  # this message only: the conversation goes on without it
            print(f"ferrolm: error: {e}", file=sys.stderr, flush=True)
            refused = True
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 2 if refused and not interactive else 0


def register_perplexity(sub) -> None:
    """`ferrolm perplexity`: how well a GPT predicts held-out text."""
    p = sub.add_parser("perplexity", help="score text files with a GPT: loss, perplexity and bits per byte")
    p.add_argument("model", help="GPT model directory")
    p.add_argument("files", nargs="+", help="UTF-8 text files, each scored on its own")
    p.add_argument("--stride", type=count(1), default=None,
                   help="tokens between sliding windows over text longer than the context; each token is predicted "
                        "from at least block size - stride before it (default half the context)")
    p.set_defaults(func=run_perplexity)


def run_perplexity(args) -> int:
    """Per file and in total: tokens predicted, their mean negative log-likelihood (nats), its
    exponential (the perplexity) and bits per byte of text, which compares tokenizers too."""
    from ferrolm.gpt import GPT
    from ferrolm.jsonl import located
    from ferrolm.models import load_model

    model = load_model(args.model)
    if not isinstance(model, GPT):
        raise ValueError(f"{args.model} is a {type(model).__name__} model; perplexity needs a GPT (a BERT sees "
                         "both sides of each token, so it has no next-token likelihood)")
    if args.stride is not None and args.stride >= model.block_size:  # said before any file is scored
        raise ValueError(f"--stride must be between 1 and block_size - 1 ({model.block_size - 1}), got {args.stride}")
    # Every file is read (without a byte-order mark) and encoded before the first is scored.
    texts = [read_utf8(Path(f), "text file") for f in args.files]
    ids = [located(name, model.encode, text) for name, text in zip(args.files, texts)]  # an error names its file
    totals = [0.0, 0, 0]  # negative log-likelihood, tokens predicted, bytes

    def report(name: str, nll: float, tokens: int, size: int, seconds: float | None = None) -> None:
        if not tokens:
            print(f"{name}: no token to predict (the first token of a text has no prediction)")
            return
        speed = f" ({tokens / seconds:,.0f} tokens/s)" if seconds else ""
        print(f"{name}: {tokens:,} tokens, loss {nll / tokens:.4f}, perplexity {math.exp(nll / tokens):.3f}, "
              f"{nll / math.log(2) / size:.4f} bits per byte{speed}", flush=True)

    for name, text, text_ids in zip(args.files, texts, ids):
        start = time.perf_counter()
        logprobs = model.score(text_ids, args.stride) if len(text_ids) > 1 else np.zeros(0)
        nll, size = -float(np.sum(logprobs, dtype=np.float64)), len(text.encode("utf-8"))
        report(name, nll, logprobs.size, size, time.perf_counter() - start)
        if logprobs.size:  # a file with no prediction adds nothing to the total, its bytes neither
            totals = [totals[0] + nll, totals[1] + logprobs.size, totals[2] + size]
    if len(args.files) > 1:
        report("total", *totals)
    return 0


def register_fill_mask(sub) -> None:
    """`ferrolm fill-mask`: a BERT's guesses for each [MASK]."""
    p = sub.add_parser("fill-mask", help="show a BERT model's top candidates for each [MASK] in a text")
    p.add_argument("model", help="BERT model directory")
    p.add_argument("text", help="text containing [MASK]")
    p.add_argument("--top-k", type=count(1), default=5, help="candidates shown per [MASK] (default 5)")
    p.set_defaults(func=run_fill_mask)


def run_fill_mask(args) -> int:
    from ferrolm.bert import BERT
    from ferrolm.models import TOKENIZER_FILES, load_model

    model = load_model(args.model)
    if not isinstance(model, BERT):
        raise ValueError(f"{args.model} is a {type(model).__name__} model; fill-mask needs a BERT "
                         "(ferrolm pretrain --objective mlm)")
    if model.tokenizer is None:  # said as generate says it, not as the Python API's advice
        raise ValueError(f"{args.model} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
    for i, candidates in enumerate(model.fill_mask(args.text, args.top_k)):
        print(f"[MASK] {i + 1}: " + ", ".join(f"{c['token']} ({c['score']:.3f})" for c in candidates))
    return 0
