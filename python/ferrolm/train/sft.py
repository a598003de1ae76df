"""Supervised fine-tuning on conversations: next-token loss on the answers only (the prompt
teaches nothing to imitate), with the chat template. A record is a prompt and its response,
trained on the response only (as TRL's prompt-completion; answers in a prompt conversation are
context), or whole exchanges, trained on every answer, in any form
`ferrolm.conversations.sft_turns` reads (TRL's among them)."""

from __future__ import annotations

import numpy as np

import ferrolm.functional as F
from ferrolm.batching import check_fits, encode_splits, keep_fitting, pad_right
from ferrolm.chat import ChatTemplate
from ferrolm.conversations import completion_only, sft_turns
from ferrolm.data import digest
from ferrolm.gpt import GPT
from ferrolm.jsonl import located, require_count, where_of


def check_record(record: object, where: str) -> None:
    """A record `ferrolm sft` can train on (for `read_records`): ValueError naming `where`."""
    located(where, sft_turns, record)


def encode_conversations(records: list[dict], template: ChatTemplate, block_size: int,
                         skip_long: bool) -> tuple[list, dict]:
    """Renders records to (ids, the first position trained: past the prompt's answers when only
    the last answer is); records that do not fit the context are an error naming the first, or,
    with `skip_long`, skipped and counted."""
    checked = []
    for r in records:
        where = where_of(r)
        ids = located(where, lambda r: template.render_conversation(sft_turns(r)), r)
        last_only = completion_only(r) and ids.count(template.assistant) > 1  # earlier answers to leave out
        start = template.response_start(ids) - 1 if last_only else 0  # the position predicting the answer
        checked.append(((ids, start), check_fits(ids, block_size, where)))
    rendered, skipped = keep_fitting(checked, skip_long)
    return rendered, {"skipped_too_long": skipped}


class SFT:
    kind = "sft"
    trains = GPT
    loss_is_token_nll = True

    def __init__(self, train: list[dict], val: list[dict], template: ChatTemplate, block_size: int, batch_size: int,
                 skip_long: bool = False) -> None:
        require_count("batch_size", batch_size)
        self.template, self.batch_size = template, batch_size
        rows, self.counts = encode_splits(train, val, lambda r: encode_conversations(r, template, block_size, skip_long),
                                          f"examples fit the context of {block_size} tokens")
        self.data = {split: [ids for ids, _ in r] for split, r in rows.items()}
        self.trained_from = {split: np.array([start for _, start in r]) for split, r in rows.items()}
        # The rows, and where their training starts when any starts past 0.
        starts = {split: s.tolist() for split, s in self.trained_from.items()}
        self.data_digest = digest([self.data, starts] if any(map(any, starts.values())) else self.data)

    def batch(self, split: str, rng: np.random.Generator):
        picked = rng.integers(0, len(self.data[split]), size=self.batch_size)
        ids, _ = pad_right([self.data[split][i] for i in picked], self.template.end)
        # The answers before a completion's are its prompt: trained only from its start.
        trained = self.template.answer_targets(ids) & (np.arange(ids.shape[1] - 1) >= self.trained_from[split][picked, None])
        return ids[:, :-1], np.where(trained, ids[:, 1:], -100)

    def loss(self, model, batch, dropout_seed):
        x, targets = batch
        return F.cross_entropy(model(x, dropout_seed=dropout_seed), targets.reshape(-1)), {}

    def loss_weight(self, batch) -> int:
        return int((batch[1] != -100).sum())  # the answers' tokens, which the loss is the mean over

    def tokens(self, batch) -> int:
        return int(batch[0].size)

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "counts": self.counts, "data": self.data_digest}
