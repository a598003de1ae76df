"""Masked-language-model pretraining (BERT): windows of the token stream packed as
[CLS] A [SEP] B [SEP] sentence pairs (or single segments), masked by `MlmCollator`; the loss
is cross-entropy at the masked positions only (the head runs on those rows alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ferrolm.functional as F
from ferrolm.data import MlmCollator, data_digest, load_tokens


class MaskedLM:
    kind = "mlm"
    loss_is_token_nll = True

    @property
    def refuses(self) -> tuple:
        """A model it cannot train, and why (a BERT, or your own encoder with `hidden` and
        `mlm_logits`, trains). Imported here: the GPT module imports the training package."""
        from ferrolm.gpt import GPT

        return GPT, "it has no masked-LM head, and its causal attention cannot see past a mask: train it with CausalLM"

    def __init__(self, data_dir: str | Path, tokenizer, max_len: int, batch_size: int, pairs: bool = True,
                 mask_prob: float = 0.15, whole_word: bool = False, short_prob: float = 0.1,
                 check_tokens: bool = True) -> None:
        """`check_tokens`: read the data once to refuse a corpus with nothing to predict
        (`_check_maskable`); a caller that built the objective on this data before skips it."""
        if max_len < 8:
            raise ValueError(f"max_len must be at least 8, got {max_len}")
        self.streams = {split: load_tokens(Path(data_dir), split) for split in ("train", "val")}
        for split, t in self.streams.items():
            if len(t) <= max_len:
                raise ValueError(f"the {split} split has only {len(t)} tokens: sequences of {max_len} (--block-size) need "
                                 "more (give more text, a smaller block size, or another val_fraction / --val-fraction)")
        self.collate = MlmCollator(tokenizer, mask_prob, whole_word)
        self.max_len, self.batch_size, self.pairs, self.short_prob = max_len, batch_size, pairs, short_prob
        self.data_digest = data_digest(data_dir)
        if check_tokens:
            self._check_maskable(tokenizer)

    def _check_maskable(self, tokenizer) -> None:
        """A split the tokenizer encodes to special tokens only (a corpus in a script its
        vocabulary lacks is all [UNK]; preparing the data says so too) has nothing to predict:
        its loss would read 0. Refused."""
        for split, tokens in self.streams.items():
            counts = sum(np.bincount(tokens[i : i + (1 << 22)], minlength=tokenizer.vocab_size)
                         for i in range(0, len(tokens), 1 << 22))  # a piece at a time: bounded memory
            if counts[self.collate.special_ids].sum() == len(tokens):
                raise ValueError(f"the {split} split has no token to predict: the tokenizer encodes it to special tokens "
                                 "only ([UNK] for text its vocabulary lacks); it cannot encode this corpus")

    def batch(self, split: str, rng: np.random.Generator) -> dict:
        tokens = self.streams[split]
        body = self.max_len - (3 if self.pairs else 2)
        examples = []
        for _ in range(self.batch_size):
            # As in BERT, some sequences are shorter, so the model also sees padding.
            n = int(rng.integers(4, body + 1)) if rng.random() < self.short_prob else body
            start = int(rng.integers(0, len(tokens) - n))
            window = np.asarray(tokens[start : start + n], dtype=np.int64)
            if self.pairs:
                cut = int(rng.integers(1, n))
                examples.append(self.collate.pack(self._pair(window, cut)))
            else:
                examples.append(self.collate.pack([window.tolist()]))
        return self.collate(examples, rng)

    def _pair(self, window: np.ndarray, cut: int) -> list[list[int]]:
        """Segments A and B of a window cut at `cut`; where [SEP]s in the stream end documents
        (prepare_files), two neighbouring documents' pieces instead, the boundary nearest `cut`."""
        ends = np.flatnonzero(window == self.collate.sep)
        if ends.size == 0:
            return [window[:cut].tolist(), window[cut:].tolist()]
        bounds = np.concatenate(([-1], ends, [len(window)]))  # document i lies between bounds i and i + 1
        lengths = np.diff(bounds) - 1
        both = np.flatnonzero((lengths[:-1] > 0) & (lengths[1:] > 0))  # [SEP]s with text on both sides
        if both.size:
            j = both[np.argmin(np.abs(ends[both] + 1 - cut))]
            return [window[bounds[j] + 1 : ends[j]].tolist(), window[ends[j] + 1 : bounds[j + 2]].tolist()]
        i = int(np.argmax(lengths))  # one document in the window
        piece = window[bounds[i] + 1 : bounds[i + 1]].tolist()
        half = max(len(piece) // 2, 1)
        return [piece[:half], piece[half:]]

    def loss(self, model, batch: dict, dropout_seed):
        h = model.hidden(batch["ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"],
                         dropout_seed=dropout_seed)
        labels = batch["labels"].reshape(-1)
        rows = np.flatnonzero(labels != -100)
        if rows.size == 0:  # a batch of special tokens only: nothing to predict
            rows = np.array([0])
            targets = np.array([-100])
        else:
            targets = labels[rows]
        picked = F.index_select(F.reshape(h, [-1, h.shape[-1]]), 0, rows)
        logits = model.mlm_logits(picked)
        loss = F.cross_entropy(logits, targets)
        extra = {}
        if dropout_seed is None:  # evaluation: accuracy where the input really was [MASK]
            # (the 10% of chosen tokens left unchanged can be copied, which would inflate it),
            # pooled over batches: a batch may show no [MASK] at all.
            shown = batch["ids"].reshape(-1)[rows] == self.collate.mask
            extra["accuracy"] = (int((logits.numpy().argmax(-1) == targets)[shown].sum()), int(shown.sum()))
        return loss, extra

    def loss_weight(self, batch: dict) -> int:
        return int((batch["labels"] != -100).sum())  # the masked tokens, which the loss is the mean over

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def state(self) -> dict:
        return {"block_size": self.max_len, "batch_size": self.batch_size, "pairs": self.pairs,
                "whole_word": self.collate.whole_word, "mask_prob": self.collate.mask_prob,
                "short_prob": self.short_prob, "data": self.data_digest}
