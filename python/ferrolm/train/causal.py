"""Next-token prediction (GPT pretraining): random windows of the corpus, cross-entropy of
each position's prediction of the token that follows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ferrolm.functional as F
from ferrolm.bert import BERT
from ferrolm.data import Windows, data_digest, load_tokens
from ferrolm.jsonl import require_count


class CausalLM:
    """Next-token prediction on a tokenised corpus (`prepare_tokens`' directory): batches of
    `batch_size` random windows of `block_size + 1` tokens, each window's model input its first
    `block_size` tokens and its targets the same shifted by one, as nanoGPT's get_batch."""

    kind = "causal"
    loss_is_token_nll = True
    #: A model it cannot train, and why (a GPT or your own causal module trains).
    refuses = (BERT, "it sees the tokens it would predict: train it with MaskedLM")

    def __init__(self, data_dir: str | Path, block_size: int, batch_size: int) -> None:
        require_count("block_size", block_size)
        require_count("batch_size", batch_size)
        data_dir = Path(data_dir)
        self.windows = {split: Windows(load_tokens(data_dir, split), block_size, f"the {split} split")
                        for split in ("train", "val")}
        self.batch_size = batch_size
        self.block_size = block_size
        self.data_digest = data_digest(data_dir)

    def batch(self, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.windows[split].sample(self.batch_size, rng)

    def loss(self, model, batch, dropout_seed):
        x, y = batch
        logits = model(x, dropout_seed=dropout_seed)
        return F.cross_entropy(logits, y.reshape(-1)), {}

    def tokens(self, batch) -> int:
        return int(batch[0].size)

    def state(self) -> dict:
        return {"block_size": self.block_size, "batch_size": self.batch_size, "data": self.data_digest}
