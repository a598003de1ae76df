"""Masked-language-model pretraining on tiny Shakespeare, measured against the unigram model.

    python benches/quality_bert_mlm.py [--vocab 1000] [--iters 6000] [--seq 32] [--out DIR]

Trains a WordPiece vocabulary with ferrolm and a small BERT (4 layers, 192 wide; about 20
minutes on 2 cores with the defaults) by MLM, then reports on held-out text: accuracy at
positions whose input was [MASK] (tokens left unchanged by the 80/10/10 rule could be copied,
so they are not counted), and how often the true token is in fill_mask's top 5 — each next to
the unigram model's (always the most frequent token / the 5 most frequent tokens).

Sequences are short by default because MLM starts on a plateau where the model predicts the
unigram distribution: attention begins uniform, so a masked token's neighbours carry 1/T of
the signal, and the plateau lasts longer the longer the sequences (2-layer model, 2,048 tokens
per step: about 1,000 steps at 16 tokens, 2,000 at 32, more than 6,000 at 64; the same model
in PyTorch sits on the same plateau). BERT pretrained mostly on short sequences too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import ferrolm as fl
from ferrolm.data import BUNDLED_CORPUS, prepare_tokens
from ferrolm.train import MaskedLM, TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=6000)
    parser.add_argument("--seq", type=int, default=32, help="sequence length in tokens, [CLS] and [SEP] included")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ferrolm-mlm-"))
    text = BUNDLED_CORPUS.read_text()
    tok = fl.Tokenizer.train_from_iterator([text], kind="wordpiece", vocab_size=args.vocab)
    prepare_tokens(text, tok, out / "data")
    model = fl.BERT.create(vocab_size=tok.vocab_size, hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
                           max_position_embeddings=args.seq, hidden_dropout_prob=0.0, tokenizer=tok)
    start = time.perf_counter()
    config = TrainConfig(max_iters=args.iters, eval_interval=max(args.iters // 6, 1), eval_iters=40, learning_rate=1e-3,
                         min_lr=1e-4, warmup_iters=args.iters // 20, lr_decay_iters=args.iters, weight_decay=0.01)
    evals = train(model, MaskedLM(out / "data", tok, args.seq, args.batch), config, out / "run")
    seconds = time.perf_counter() - start
    val = np.fromfile(out / "data" / "val.bin", dtype=np.uint16)
    ids, counts = np.unique(val, return_counts=True)
    unigram_top1 = counts.max() / counts.sum()
    top5 = set(ids[np.argsort(-counts)[:5]].tolist())
    heldout = text[int(len(text) * 0.9) :]
    targets, hits = model.fill_mask_hits(heldout.splitlines()[:2000])
    print(f"\nBERT {model.num_parameters() / 1e6:.2f}M parameters, WordPiece vocab {tok.vocab_size}, {args.iters} steps in {seconds:.0f}s")
    print(f"held-out [MASK] accuracy   ferrolm {evals[-1]['val_accuracy']:.3f}   unigram {unigram_top1:.3f}")
    print(f"fill_mask top-5 hit rate   ferrolm {hits.mean():.3f}   unigram {np.mean([t in top5 for t in targets]):.3f}"
          f"   ({len(targets)} held-out lines)")


if __name__ == "__main__":
    main()
