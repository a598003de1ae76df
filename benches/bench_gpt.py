"""GPT training and generation speed, ferrolm vs the same model in PyTorch, side by side.

    python benches/bench_gpt.py [--quick] [--gpt2] [--steps N] [--repeats R]

Each measurement runs in a fresh subprocess so peak memory (RSS) is its own; each side runs R
times (default 3; in turns for training) and the table shows each side's median run. Configs are
nanoGPT's "baby" Shakespeare model (4 layers, 128 wide, context 64, batch 12) and a 6-layer,
384-wide, context-256 model (batch 16); with --gpt2, GPT-2 small too (12 layers, 768 wide, its
50,257-token vocabulary, context 256, batch 4). Training: AdamW steps on random token windows.
bf16: ferrolm's bfloat16 matmul precision against PyTorch's bf16 autocast.
Generation: one prompt token, then tokens up to the context length, batch 1 (and each of
GENERATE_BATCHES prompts at once); PyTorch with a
KV cache (like ferrolm) and without (nanoGPT's `generate`); bf16: ferrolm's bfloat16 precision
(decoding reads bfloat16 copies of the weights) against PyTorch's model cast to bfloat16. Chat (configs with room for it):
a conversation of CHAT_TURNS messages and answers of CHAT_TOKENS tokens each, ferrolm
continuing one KV cache across turns (`Generation.extend`, as `GPT.chat` does) against PyTorch
running the conversation through the model at each turn, then decoding with a KV cache (what
a chat on a stateless `generate`, such as a Hugging Face pipeline's, does). torch is optional
(skipped if missing). Ratios > 1 mean ferrolm is faster / smaller.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _harness import (add_repeats_flag, bf16_row, header, measure_pair, measure_turns, peak_rss_mb, row,
                      set_torch_threads, time_steps, use_matmul_precision)

#: The chat benchmark's conversation: turns, and tokens per message and per answer (a turn's
#: markers included), so that it fits in a context of 256 without starting again.
CHAT_TURNS, CHAT_TOKENS = 6, 20
#: Prompts generated together in the batch generation rows (a list of prompts to `generate`;
#: PPO's rollouts are 16 by default).
GENERATE_BATCHES = (4, 16)

CONFIGS = {
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65),
    "6-layer": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16, vocab_size=65),
    # GPT-2 small (124M parameters, its 50,257-token vocabulary), at context 256: fine-tuning scale.
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=256, batch_size=4, vocab_size=50257),
}


# ---------------------------------------------------------------- ferrolm


def ferrolm_train(cfg: dict, steps: int, dtype: str = "float32") -> dict:
    import ferrolm as fl
    import ferrolm.functional as F

    use_matmul_precision(dtype)
    model = fl.GPT.create(vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                          n_head=cfg["n_head"], n_embd=cfg["n_embd"], seed=0)
    decay = [t for _, t in model.named_parameters() if t.ndim >= 2]
    other = [t for _, t in model.named_parameters() if t.ndim < 2]
    opt = fl.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(0)
    b, t, v = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]

    def step():
        x = rng.integers(0, v, size=(b, t + 1))
        loss = F.cross_entropy(model(x[:, :-1]), x[:, 1:].reshape(-1))
        loss.backward()
        fl.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return time_steps(step, steps, b * t)


def ferrolm_generate(cfg: dict, reps: int, dtype: str = "float32", batch: int = 1) -> dict:
    import ferrolm as fl

    use_matmul_precision(dtype)
    model = fl.GPT.create(vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                          n_head=cfg["n_head"], n_embd=cfg["n_embd"], seed=0)
    new = cfg["block_size"] - 1
    model.core.generation([[0]] * batch, temperature=1.0, seed=0).run(new)  # warm-up
    start = time.perf_counter()
    for r in range(reps):
        model.core.generation([[0]] * batch, temperature=1.0, top_k=50, seed=r).run(new)
    dt = time.perf_counter() - start
    return {"tokens_per_sec": reps * batch * new / dt, "peak_rss_mb": peak_rss_mb()}


def ferrolm_chat(cfg: dict, reps: int) -> dict:
    import ferrolm as fl

    model = fl.GPT.create(vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                          n_head=cfg["n_head"], n_embd=cfg["n_embd"], seed=0)
    rng = np.random.default_rng(0)

    def conversation():
        session = None
        for _ in range(CHAT_TURNS):
            message = rng.integers(0, cfg["vocab_size"], CHAT_TOKENS).tolist()
            if session is None:
                session = model.core.generation([message], temperature=1.0, top_k=50, seed=0)
            else:
                session.extend(message)
            session.run(CHAT_TOKENS)

    return time_conversations(conversation, reps)


def time_conversations(conversation, reps: int) -> dict:
    conversation()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        conversation()
    return {"ms_per_turn": 1000 * (time.perf_counter() - start) / (reps * CHAT_TURNS), "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------- PyTorch peer


def torch_model(cfg: dict):
    import torch
    import torch.nn as nn
    from torch.nn import functional as TF

    class Block(nn.Module):
        def __init__(self, c: int, h: int):
            super().__init__()
            self.h = h
            self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.c_attn, self.attn_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.c_fc, self.mlp_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

        def attend(self, x, cache=None):
            b, t, c = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
            q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
            if cache is not None:
                if cache.get("k") is not None:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
            causal = cache is None or t > 1
            y = TF.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return self.attn_proj(y.transpose(1, 2).reshape(b, t, c))

        def forward(self, x, cache=None):
            x = x + self.attend(x, cache)
            return x + self.mlp_proj(TF.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg["n_embd"]
            self.wte, self.wpe = nn.Embedding(cfg["vocab_size"], c), nn.Embedding(cfg["block_size"], c)
            self.blocks = nn.ModuleList(Block(c, cfg["n_head"]) for _ in range(cfg["n_layer"]))
            self.ln_f = nn.LayerNorm(c)

        def forward(self, idx, caches=None, start=0, last_only=False):
            pos = torch.arange(start, start + idx.shape[1])
            x = self.wte(idx) + self.wpe(pos)
            for i, block in enumerate(self.blocks):
                x = block(x, None if caches is None else caches[i])
            x = self.ln_f(x)
            if last_only:  # generating without a cache, as nanoGPT's generate: the head for the last position only
                x = x[:, -1:]
            return x @ self.wte.weight.T

    return Gpt()


def torch_train(cfg: dict, steps: int, bf16: bool = False) -> dict:
    """fp32, or with bf16 autocast (what a PyTorch user turns on for speed)."""
    import torch
    from torch.nn import functional as TF

    torch.manual_seed(0)
    model = torch_model(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(0)
    b, t, v = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]

    def step():
        x = torch.randint(0, v, (b, t + 1), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x[:, :-1]).reshape(-1, v)
        loss = TF.cross_entropy(logits.float(), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, steps, b * t)


def torch_generate(cfg: dict, reps: int, cached: bool, bf16: bool = False, batch: int = 1) -> dict:
    import torch

    torch.manual_seed(0)
    model = torch_model(cfg).eval().to(torch.bfloat16 if bf16 else torch.float32)
    new = cfg["block_size"] - 1

    @torch.no_grad()
    def run():
        idx = torch.zeros((batch, 1), dtype=torch.long)
        caches = [dict() for _ in range(cfg["n_layer"])] if cached else None
        logits = model(idx, caches, 0)
        for i in range(new):
            probs = torch.softmax(logits[:, -1, :].float(), dim=-1)
            top = torch.topk(probs, 50)
            nxt = top.indices.gather(1, torch.multinomial(top.values, 1))
            idx = torch.cat([idx, nxt], 1)
            logits = model(nxt, caches, i + 1) if cached else model(idx, last_only=True)

    run()
    start = time.perf_counter()
    for _ in range(reps):
        run()
    dt = time.perf_counter() - start
    return {"tokens_per_sec": reps * batch * new / dt, "peak_rss_mb": peak_rss_mb()}


def torch_chat(cfg: dict, reps: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = torch_model(cfg).eval()
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def conversation():
        history = torch.zeros((1, 0), dtype=torch.long)
        for _ in range(CHAT_TURNS):
            history = torch.cat([history, torch.randint(0, cfg["vocab_size"], (1, CHAT_TOKENS), generator=gen)], 1)
            caches = [dict() for _ in range(cfg["n_layer"])]
            logits = model(history, caches, 0)
            for _ in range(CHAT_TOKENS):
                top = torch.topk(torch.softmax(logits[:, -1, :], dim=-1), 50)
                nxt = top.indices.gather(1, torch.multinomial(top.values, 1, generator=gen))
                logits = model(nxt, caches, history.shape[1])
                history = torch.cat([history, nxt], 1)

    return time_conversations(conversation, reps)


# ---------------------------------------------------------------- harness


def worker(task: str, config: str, steps: int) -> None:
    cfg = CONFIGS[config]
    if task.startswith("torch"):
        set_torch_threads()
    result = {
        "ferrolm-train": lambda: ferrolm_train(cfg, steps),
        "torch-train": lambda: torch_train(cfg, steps),
        "ferrolm-bf16": lambda: ferrolm_train(cfg, steps, "bfloat16"),
        "torch-bf16": lambda: torch_train(cfg, steps, bf16=True),
        "ferrolm-generate": lambda: ferrolm_generate(cfg, max(1, steps // 10)),
        "torch-generate-cache": lambda: torch_generate(cfg, max(1, steps // 10), cached=True),
        "torch-generate-nocache": lambda: torch_generate(cfg, max(1, steps // 10), cached=False),
        "ferrolm-generate-bf16": lambda: ferrolm_generate(cfg, max(1, steps // 10), "bfloat16"),
        "torch-generate-bf16": lambda: torch_generate(cfg, max(1, steps // 10), cached=True, bf16=True),
        **{f"ferrolm-generate-batch-{b}": lambda b=b: ferrolm_generate(cfg, max(1, steps // 10), batch=b)
           for b in GENERATE_BATCHES},
        **{f"torch-generate-batch-{b}": lambda b=b: torch_generate(cfg, max(1, steps // 10), cached=True, batch=b)
           for b in GENERATE_BATCHES},
        "ferrolm-chat": lambda: ferrolm_chat(cfg, max(1, steps // 10)),
        "torch-chat": lambda: torch_chat(cfg, max(1, steps // 10)),
    }[task]()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="baby config only, fewer steps")
    parser.add_argument("--gpt2", action="store_true", help="also GPT-2 small (124M parameters; ~15 minutes)")
    parser.add_argument("--steps", type=int, default=None)
    add_repeats_flag(parser)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    configs = ["baby"] if args.quick else ["baby", "6-layer"]
    header()
    for name in configs + ["gpt2"] * args.gpt2:
        steps = args.steps or (20 if args.quick else {"baby": 50, "6-layer": 10, "gpt2": 4}[name])
        config = [name, str(steps)]
        ours, theirs = measure_pair(__file__, ["ferrolm-train", *config], ["torch-train", *config], args.repeats)
        row(f"train {name} tokens/s", ours["tokens_per_sec"], theirs and theirs["tokens_per_sec"])
        row(f"train {name} peak RSS MB", ours["peak_rss_mb"], theirs and theirs["peak_rss_mb"], lower_is_better=True)
        bf16_row(f"train {name} bf16 tokens/s (autocast)", __file__, config, args.repeats,
                 torch_f32=theirs and theirs["tokens_per_sec"])
        gen = [name, str({"baby": 30, "6-layer": 20, "gpt2": 10}[name])]
        tasks = ["ferrolm-generate", "torch-generate-cache", "torch-generate-nocache"]
        ours, *peers = measure_turns(__file__, [[task, *gen] for task in tasks], args.repeats)
        for theirs, label in zip(peers, ("KV cache", "no cache")):
            row(f"generate {name} tok/s vs torch {label}", ours["tokens_per_sec"], theirs and theirs["tokens_per_sec"])
        bf16_row(f"generate {name} bf16 tok/s (bf16 weights)", __file__, gen, args.repeats,
                 ("ferrolm-generate-bf16", "torch-generate-bf16"), torch_f32=peers[0] and peers[0]["tokens_per_sec"])
        for b in GENERATE_BATCHES:
            tasks = [f"ferrolm-generate-batch-{b}", f"torch-generate-batch-{b}"]
            ours, theirs = measure_turns(__file__, [[task, *gen] for task in tasks], args.repeats)
            row(f"generate {name} batch {b} tok/s (KV cache)", ours["tokens_per_sec"], theirs and theirs["tokens_per_sec"])
        if 2 * CHAT_TURNS * CHAT_TOKENS <= CONFIGS[name]["block_size"]:
            ours, theirs = measure_turns(__file__, [["ferrolm-chat", *gen], ["torch-chat", *gen]], args.repeats)
            row(f"chat {name} ms per turn ({CHAT_TURNS} turns)", ours["ms_per_turn"], theirs and theirs["ms_per_turn"],
                lower_is_better=True)


if __name__ == "__main__":
    main()
