"""Supervised fine-tuning on conversations: next-token loss on the answers only (the prompt
teaches nothing to imitate), with the chat template. A record is a prompt and its response
({"prompt", "response"}) or whole exchanges ({"messages": [user, assistant, user, ...]}, the
conversational format of TRL and Hugging Face)."""

from __future__ import annotations

import numpy as np

import ferrolm.functional as F
from ferrolm.chat import TOO_LONG_HINT, ChatTemplate, check_fits, checked_turns, encode_splits, pad_right
from ferrolm.data import digest
from ferrolm.jsonl import check_fields


def conversation(record: dict) -> list[dict]:
    """A record's turns: its messages, or its prompt and response as one exchange."""
    if "messages" in record:
        return record["messages"]
    return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["response"]}]


def check_record(record: object, where: str) -> None:
    """A record `ferrolm sft` can train on (for `read_records`): ValueError naming `where`."""
    if not (isinstance(record, dict) and "messages" in record):
        check_fields(record, where, ("prompt", "response"))
        return
    try:
        turns = checked_turns(record["messages"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if not turns:
        raise ValueError(f"{where}: no messages")
    empty = next((i for i, t in enumerate(turns) if not t["content"].strip()), None)
    if empty is not None:
        raise ValueError(f"{where}: message {empty} is empty")


def encode_conversations(records: list[dict], template: ChatTemplate, block_size: int,
                         skip_long: bool) -> tuple[list, dict]:
    """Renders records to ids; a record that does not fit the context is an error naming its
    line, or, with `skip_long`, skipped and counted."""
    rendered, skipped = [], 0
    for r in records:
        where = r.get("_where", "a record")
        try:
            ids = template.render_conversation(conversation(r))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        problem = check_fits(ids, block_size, where)
        if problem:
            if not skip_long:
                raise ValueError(problem + f" ({TOO_LONG_HINT})")
            skipped += 1
            continue
        rendered.append(ids)
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
        ids, lengths = pad_right(rows, self.template.end)
        targets = np.where(self.template.answer_targets(ids, lengths), ids[:, 1:], -100)
        return ids[:, :-1], targets

    def loss(self, model, batch, dropout_seed):
        x, targets = batch
        return F.cross_entropy(model(x, dropout_seed=dropout_seed), targets.reshape(-1)), {}

    def tokens(self, batch) -> int:
        return int(batch[0].size)

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "counts": self.counts, "data": self.data_digest}
