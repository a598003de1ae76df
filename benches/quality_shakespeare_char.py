"""nanoGPT's published CPU run, reproduced: tiny Shakespeare, char-level, 4 layers, 4 heads,
128 wide, context 64, batch 12, 2000 iterations, lr 1e-3 → 1e-4 (warmup 100), beta2 0.99,
weight decay 0.1, grad clip 1.0, dropout 0, no biases (nanoGPT's train.py default), 90/10 split,
eval over 20 batches. nanoGPT reports val loss ≈ 1.88.

    python benches/quality_shakespeare_char.py [--out DIR]

Prints the final train/val loss and the wall time; exits non-zero if val loss > 1.88.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ferrolm.cli import main as ferrolm

NANOGPT_VAL_LOSS = 1.88

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="model directory (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ferrolm-shakespeare-char-"))
    start = time.perf_counter()
    code = ferrolm(["pretrain", "--tokenizer", "char", "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
                    "--block-size", "64", "--batch-size", "12", "--max-iters", "2000", "--lr-decay-iters", "2000",
                    "--learning-rate", "1e-3", "--min-lr", "1e-4", "--warmup-iters", "100", "--beta2", "0.99",
                    "--weight-decay", "0.1", "--grad-clip", "1.0", "--dropout", "0.0", "--bias", "false", "--eval-interval", "250",
                    "--eval-iters", "20", "--sample-tokens", "200", "--out", str(out)])
    wall = time.perf_counter() - start
    final = json.loads((out / "trainer_state.json").read_text())["evals"][-1]
    print(f"\nferrolm: train loss {final['train_loss']:.4f}, val loss {final['val_loss']:.4f} in {wall:.1f}s "
          f"(nanoGPT reports val loss {NANOGPT_VAL_LOSS})")
    sys.exit(code or (0 if final["val_loss"] <= NANOGPT_VAL_LOSS else 1))
