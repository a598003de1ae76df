"""A reward model learned from pairwise preferences: the GPT backbone plus a scalar head read
at the last real token, trained with the Bradley–Terry loss −log σ(r_chosen − r_rejected)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm.autograd import no_grad
from ferrolm.batching import check_fits, encode_splits, keep_fitting, pad_right
from ferrolm.chat import ChatTemplate
from ferrolm.conversations import preference
from ferrolm.data import digest
from ferrolm.jsonl import located, require_count, where_of
from ferrolm.gpt import GPT
from ferrolm.models import load_head, model_files, require_head, require_model, save_head

HEAD_FILE = "reward_head.safetensors"


class RewardModel:
    """r(prompt, response) = head(h_last), h_last the hidden state at the sequence's last real
    token (<|end|>), never at padding."""

    def __init__(self, gpt: GPT, head=None) -> None:
        require_model(gpt, GPT, "a RewardModel")
        self.gpt = gpt
        c = gpt.config["n_embd"]
        self.head = head or _core.Linear(c, 1, bias=True, seed=7)
        self.template = ChatTemplate(gpt.tokenizer)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "RewardModel":
        require_head(path, HEAD_FILE, "reward")  # first: a plain model's missing chat tokens would hide it
        model = cls(GPT.load(path))
        load_head(model.head, path, HEAD_FILE, "reward_head", "reward")
        return model

    def save(self, path: Union[str, Path]) -> None:
        with model_files(path) as files:  # the head and the weights it belongs to, together
            self.gpt.save(files)
            save_head(self.head, files, HEAD_FILE, "reward_head")

    def named_parameters(self):
        return self.gpt.named_parameters() + [(f"reward_head.{n}", t) for n, t in self.head.named_parameters()]

    def __call__(self, ids: np.ndarray, lengths: np.ndarray, dropout_seed=None):
        """Rewards [B] for right-padded ids [B, T] with real lengths [B]."""
        h = self.gpt.hidden(ids, dropout_seed=dropout_seed)
        b, t, c = h.shape
        last = np.arange(b) * t + (lengths - 1)
        picked = F.index_select(F.reshape(h, [-1, c]), 0, last)
        return F.reshape(self.head(picked), [-1])

    def score(self, prompt: Union[str, list], response: str) -> float:
        """The reward of `response` to `prompt` (a text, or a conversation ending with a user turn)."""
        ids = self.template.render(prompt, response)
        problem = check_fits(ids, self.gpt.block_size, "score", shifted=False)
        if problem:
            raise ValueError(problem)
        with no_grad():
            return self(np.array([ids]), np.array([len(ids)])).item()

    def score_ids(self, rows: list[list[int]]) -> np.ndarray:
        """The rewards of rendered sequences of ids (`template.render`), one per row."""
        if not len(rows):
            return np.zeros(0, dtype=np.float32)
        empty = next((i for i, r in enumerate(rows) if not len(r)), None)
        if empty is not None:  # its reward would be read at the row before's last token
            raise ValueError(f"row {empty} is empty: a reward is read at a sequence's last token")
        ids, lengths = pad_right(rows, self.template.end)
        with no_grad():
            return self(ids, lengths).numpy()


def encode_preferences(records, template: ChatTemplate, block_size: int, skip_long: bool, shifted: bool):
    """(chosen ids, rejected ids) pairs; pairs that do not fit are an error or skipped+counted
    (`shifted`: the model reads a sequence and predicts its next tokens, as DPO's does, so one
    more token fits; a reward model reads the whole sequence).
    Pairs whose two sides encode alike (texts differing only in what the tokenizer drops:
    spacing, case for an uncased WordPiece) are skipped and counted: they carry no preference."""
    checked = []
    for r in records:
        where = where_of(r)
        prompt, chosen, rejected = located(where, preference, r)
        c, j = (located(where, lambda a: template.render(prompt, a), a) for a in (chosen, rejected))
        checked.append(((c, j), check_fits(c, block_size, where, shifted) or check_fits(j, block_size, where, shifted)))
    fitting, skipped = keep_fitting(checked, skip_long)
    pairs = [(c, j) for c, j in fitting if c != j]
    return pairs, {"skipped_too_long": skipped, "skipped_identical": len(fitting) - len(pairs)}


def encode_preference_splits(train, val, template: ChatTemplate, block_size: int, skip_long: bool,
                             shifted: bool = False) -> tuple[dict, dict]:
    return encode_splits(train, val, lambda r: encode_preferences(r, template, block_size, skip_long, shifted),
                         f"preference pairs fit the context of {block_size} tokens with sides that differ")


def split_pairs(batch_rows, pad):
    """Stacks chosen rows then rejected rows into one right-padded batch."""
    rows = [c for c, _ in batch_rows] + [r for _, r in batch_rows]
    return pad_right(rows, pad)


class Preferences:
    """Bradley–Terry training of a RewardModel on (chosen, rejected) pairs."""

    kind = "reward"
    trains = RewardModel

    def __init__(self, train, val, template: ChatTemplate, block_size: int, batch_size: int, skip_long: bool = False) -> None:
        require_count("batch_size", batch_size)
        self.template, self.batch_size = template, batch_size
        self.data, self.counts = encode_preference_splits(train, val, template, block_size, skip_long)
        self.data_digest = digest(self.data)

    def batch(self, split, rng):
        chosen = [self.data[split][i] for i in rng.integers(0, len(self.data[split]), size=self.batch_size)]
        return split_pairs(chosen, self.template.end)

    def loss(self, model: RewardModel, batch, dropout_seed):
        ids, lengths = batch
        r = model(ids, lengths, dropout_seed)
        b = ids.shape[0] // 2
        margin = F.narrow(r, 0, 0, b) - F.narrow(r, 0, b, b)
        loss = -F.log_sigmoid(margin).mean()
        return loss, {"accuracy": float((margin.numpy() > 0).mean())}

    def accuracy(self, model: RewardModel, split: str = "val") -> float:
        """Pairwise accuracy over every pair of a split."""
        hits = 0
        for start in range(0, len(self.data[split]), 64):
            ids, lengths = split_pairs(self.data[split][start : start + 64], self.template.end)
            with no_grad():
                r = model(ids, lengths).numpy()
            b = ids.shape[0] // 2
            hits += int((r[:b] > r[b:]).sum())
        return hits / len(self.data[split])

    def tokens(self, batch) -> int:
        return int(batch[1].sum())

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "counts": self.counts, "data": self.data_digest}
