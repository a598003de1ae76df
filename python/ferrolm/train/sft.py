"""Supervised fine-tuning on conversations: next-token loss on the answers only (the prompt
teaches nothing to imitate), with the chat template. A record is a prompt and its response,
or whole exchanges, in any form `ferrolm.conversations.sft_turns` reads (TRL's among them)."""

from __future__ import annotations

import numpy as np

import ferrolm.functional as F
from ferrolm.batching import check_fits, encode_splits, keep_fitting, pad_right
from ferrolm.chat import ChatTemplate
from ferrolm.conversations import sft_turns
from ferrolm.data import digest
from ferrolm.jsonl import located, where_of


def check_record(record: object, where: str) -> None:
    """A record `ferrolm sft` can train on (for `read_records`): ValueError naming `where`."""
    located(where, sft_turns, record)


def encode_conversations(records: list[dict], template: ChatTemplate, block_size: int,
                         skip_long: bool) -> tuple[list, dict]:
    """Renders records to ids; records that do not fit the context are an error naming the
    first, or, with `skip_long`, skipped and counted."""
    checked = []
    for r in records:
        where = where_of(r)
        ids = located(where, lambda r: template.render_conversation(sft_turns(r)), r)
        checked.append((ids, check_fits(ids, block_size, where)))
    rendered, skipped = keep_fitting(checked, skip_long)
    return rendered, {"skipped_too_long": skipped}


class SFT:
    kind = "sft"
    loss_is_token_nll = True

    def __init__(self, train: list[dict], val: list[dict], template: ChatTemplate, block_size: int, batch_size: int,
                 skip_long: bool = False) -> None:
        self.template, self.batch_size = template, batch_size
        self.data, self.counts = encode_splits(train, val, lambda r: encode_conversations(r, template, block_size, skip_long),
                                               f"examples fit the context of {block_size} tokens")
        self.data_digest = digest(self.data)

    def batch(self, split: str, rng: np.random.Generator):
        rows = [self.data[split][i] for i in rng.integers(0, len(self.data[split]), size=self.batch_size)]
        ids, _ = pad_right(rows, self.template.end)
        targets = np.where(self.template.answer_targets(ids), ids[:, 1:], -100)
        return ids[:, :-1], targets

    def loss(self, model, batch, dropout_seed):
        x, targets = batch
        return F.cross_entropy(model(x, dropout_seed=dropout_seed), targets.reshape(-1)), {}

    def loss_weight(self, batch) -> int:
        return int((batch[1] != -100).sum())  # the answers' tokens, which the loss is the mean over

    def tokens(self, batch) -> int:
        return int(batch[0].size)

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "counts": self.counts, "data": self.data_digest}
