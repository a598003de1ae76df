"""BERT masked-LM training speed, ferrolm vs the same model in PyTorch, side by side.

    python benches/bench_bert.py [--steps N] [--repeats R]

A small BERT (4 layers, 256 wide, 4 heads, 1024 FFN, vocab 8192, sequences of 128, batch 16,
some padding) trained with AdamW on BERT-masked random token batches; both heads run on the
masked positions only; bf16: ferrolm's bfloat16 matmul precision against PyTorch's bf16
autocast. The two sides take turns R times (default 3); the table shows each side's median
run. torch is optional (skipped if missing). Ratios > 1: ferrolm is faster.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from _harness import add_repeats_flag, bf16_row, header, measure_pair, row, set_torch_threads, time_steps, use_matmul_precision

CFG = dict(vocab=8192, hidden=256, layers=4, heads=4, ffn=1024, seq=128, batch=16)


def batches(seed: int = 0):
    """Random MLM batches with padding: (ids, attention mask, masked rows, their labels)."""
    rng = np.random.default_rng(seed)
    b, t, v = CFG["batch"], CFG["seq"], CFG["vocab"]
    while True:
        ids = rng.integers(5, v, size=(b, t))
        lengths = np.where(rng.random(b) < 0.1, rng.integers(16, t, size=b), t)
        mask = np.arange(t)[None, :] < lengths[:, None]
        chosen = mask & (rng.random((b, t)) < 0.15)
        labels = ids[chosen]
        ids = np.where(chosen, 4, ids)
        yield ids, mask, np.flatnonzero(chosen.reshape(-1)), labels, int(mask.sum())


def ferrolm_train(steps: int, dtype: str = "float32") -> dict:
    import ferrolm as fl
    import ferrolm.functional as F

    use_matmul_precision(dtype)
    model = fl.BERT.create(vocab_size=CFG["vocab"], hidden_size=CFG["hidden"], num_hidden_layers=CFG["layers"],
                           num_attention_heads=CFG["heads"], intermediate_size=CFG["ffn"], max_position_embeddings=CFG["seq"],
                           hidden_dropout_prob=0.0)
    opt = fl.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    data = batches()

    def step():
        ids, mask, rows, labels, _ = next(data)
        h = model.hidden(ids, attention_mask=mask)
        logits = model.mlm_logits(F.index_select(F.reshape(h, [-1, CFG["hidden"]]), 0, rows))
        F.cross_entropy(logits, labels).backward()
        opt.step()
        opt.zero_grad()

    return time_steps(step, steps, CFG["batch"] * CFG["seq"])


def torch_train(steps: int, bf16: bool = False) -> dict:
    """fp32, or with bf16 autocast."""
    import torch
    import torch.nn as nn
    from torch.nn import functional as TF

    torch.manual_seed(0)
    c, h = CFG["hidden"], CFG["heads"]

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.ln1, self.ln2 = nn.LayerNorm(c, eps=1e-12), nn.LayerNorm(c, eps=1e-12)
            self.ff1, self.ff2 = nn.Linear(c, CFG["ffn"]), nn.Linear(CFG["ffn"], c)

        def forward(self, x, mask):
            b, t, _ = x.shape
            q, k, v = (z.view(b, t, h, c // h).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
            a = TF.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
            x = self.ln1(x + self.out(a.transpose(1, 2).reshape(b, t, c)))
            return self.ln2(x + self.ff2(TF.gelu(self.ff1(x))))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos, self.typ = nn.Embedding(CFG["vocab"], c), nn.Embedding(CFG["seq"], c), nn.Embedding(2, c)
            self.ln = nn.LayerNorm(c, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(CFG["layers"]))
            self.dense, self.head_ln = nn.Linear(c, c), nn.LayerNorm(c, eps=1e-12)
            self.bias = nn.Parameter(torch.zeros(CFG["vocab"]))

        def forward(self, ids, mask, rows):
            t = ids.shape[1]
            x = self.ln(self.tok(ids) + self.pos(torch.arange(t)) + self.typ(torch.zeros_like(ids)))
            for layer in self.layers:
                x = layer(x, mask)
            x = x.reshape(-1, c)[rows]
            return self.head_ln(TF.gelu(self.dense(x))) @ self.tok.weight.T + self.bias

    model = Bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    data = batches()

    def step():
        ids, mask, rows, labels, _ = next(data)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(rows))
        TF.cross_entropy(logits.float(), torch.from_numpy(labels)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, steps, CFG["batch"] * CFG["seq"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    add_repeats_flag(parser)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        task, steps = args.worker[0], int(args.worker[1])
        if task.startswith("torch"):
            set_torch_threads()
        run = {"ferrolm": lambda: ferrolm_train(steps), "torch": lambda: torch_train(steps),
               "ferrolm-bf16": lambda: ferrolm_train(steps, "bfloat16"), "torch-bf16": lambda: torch_train(steps, bf16=True)}
        print(json.dumps(run[task]()))
        return
    header()
    ours, theirs = measure_pair(__file__, ["ferrolm", str(args.steps)], ["torch", str(args.steps)], args.repeats)
    row("MLM train tokens/s (incl. padding)", ours["tokens_per_sec"], theirs and theirs["tokens_per_sec"])
    row("MLM train peak RSS MB", ours["peak_rss_mb"], theirs and theirs["peak_rss_mb"], lower_is_better=True)
    bf16_row("MLM train bf16 tokens/s (autocast)", __file__, [str(args.steps)], args.repeats,
             torch_f32=theirs and theirs["tokens_per_sec"])


if __name__ == "__main__":
    main()
