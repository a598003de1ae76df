"""`ferrolm pretrain` and `ferrolm generate`, with nanoGPT's flag names."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

# nanoGPT's flag names; None means "use the default, or the checkpoint's value on --resume".
MODEL_FLAGS = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": True}
TRAIN_FLAGS = {"batch_size": 12, "max_iters": 2000, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100,
               "lr_decay_iters": 2000, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0,
               "eval_interval": 250, "eval_iters": 20, "log_interval": 10, "grad_accum": 1, "seed": 1337,
               "checkpoint_interval": 0}


def register_pretrain(sub) -> None:
    """`ferrolm pretrain`: next-token pretraining (the MLM objective joins with --objective)."""
    p = sub.add_parser("pretrain", help="train a GPT by next-token prediction (default: tiny Shakespeare, char-level)")
    p.add_argument("files", nargs="*", help="UTF-8 text files (default: the bundled tiny Shakespeare)")
    p.add_argument("--tokenizer", default="char", help="char, bpe, or the path of a tokenizer.json")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size when training a bpe tokenizer")
    p.add_argument("--out", default="out-shakespeare-char", help="model directory to write (and resume from)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--sample-tokens", type=int, default=300, help="tokens of sample text to print at the end (0: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, default in {**MODEL_FLAGS, **TRAIN_FLAGS}.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None, metavar="BOOL")
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"default {default}")
    p.set_defaults(func=run_pretrain)


def _choose(args, name: str, saved: Optional[dict], defaults: dict):
    given = getattr(args, name)
    if saved is not None and name in saved:
        if given is not None and given != saved[name] and name in MODEL_FLAGS:
            raise SystemExit(f"error: --{name.replace('_', '-')} {given} does not match the checkpoint in {args.out} ({saved[name]})")
        return saved[name] if given is None else given
    return defaults[name] if given is None else given


def run_pretrain(args) -> int:
    from ferrolm import Tokenizer
    from ferrolm.data import prepare_tokens, read_corpus
    from ferrolm.model import GPT
    from ferrolm.train import CausalLM, TrainConfig, train

    out = Path(args.out)
    data_dir = out / "data"
    saved_model = saved_train = None
    if args.resume:
        state_file = out / "trainer_state.json"
        if not state_file.exists():
            raise SystemExit(f"error: --resume: no checkpoint in {out} ({state_file} is missing)")
        state = json.loads(state_file.read_text())
        model = GPT.load(out)
        cfg = model.config
        saved_model = {"n_layer": cfg["n_layer"], "n_head": cfg["n_head"], "n_embd": cfg["n_embd"],
                       "block_size": cfg["n_positions"], "dropout": cfg["resid_pdrop"], "bias": cfg.get("bias", True)}
        saved_train = {**state["config"], **state.get("objective_state", {})}
        m = {k: _choose(args, k, saved_model, MODEL_FLAGS) for k in MODEL_FLAGS}
    else:
        text = read_corpus(args.files)
        if args.tokenizer == "char":
            tokenizer = Tokenizer.train_from_iterator([text], kind="char", vocab_size=1 << 20)
        elif args.tokenizer == "bpe":
            tokenizer = Tokenizer.train_from_iterator([text], kind="bpe", vocab_size=args.vocab_size)
        else:
            tokenizer = Tokenizer.from_file(args.tokenizer)
        meta = prepare_tokens(text, tokenizer, data_dir, args.val_fraction)
        print(f"corpus: {len(text):,} characters -> {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens "
              f"(vocab {tokenizer.vocab_size})", flush=True)
        m = {k: _choose(args, k, None, MODEL_FLAGS) for k in MODEL_FLAGS}
        model = GPT.create(vocab_size=tokenizer.vocab_size, block_size=m["block_size"], n_layer=m["n_layer"],
                           n_head=m["n_head"], n_embd=m["n_embd"], dropout=m["dropout"], bias=m["bias"],
                           seed=_choose(args, "seed", None, TRAIN_FLAGS), tokenizer=tokenizer)
    t = {k: _choose(args, k, saved_train, TRAIN_FLAGS) for k in TRAIN_FLAGS}
    config = TrainConfig(**{k: v for k, v in t.items() if k != "batch_size"}, progress=not args.no_progress)
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {m['n_layer']} layers, {m['n_head']} heads, "
          f"width {m['n_embd']}, context {m['block_size']}", flush=True)
    objective = CausalLM(data_dir, m["block_size"], t["batch_size"])
    start = time.perf_counter()
    evals = train(model, objective, config, out, resume=args.resume)
    elapsed = time.perf_counter() - start
    final = evals[-1]
    print(f"done in {elapsed:.1f}s: train loss {final['train_loss']:.4f}, val loss {final['val_loss']:.4f} "
          f"(perplexity {final['val_ppl']:.2f}); saved to {out}/", flush=True)
    if args.sample_tokens > 0 and model.tokenizer is not None:
        print("-" * 60)
        for piece in model.generate("\n", args.sample_tokens, temperature=0.8, top_k=200, seed=0, stream=True):
            print(piece, end="", flush=True)
        print()
    return 0




def register_generate(sub) -> None:
    """`ferrolm generate`: stream text from a model directory."""
    p = sub.add_parser("generate", help="sample text from a model directory, streamed as it is generated")
    p.add_argument("model", help="model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    from ferrolm.model import GPT

    model = GPT.load(args.model)
    if model.tokenizer is None:
        raise SystemExit(f"error: {args.model} has no tokenizer.json")
    sys.stdout.write(args.prompt)
    for piece in model.generate(args.prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop,
                                seed=args.seed, stream=True):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
