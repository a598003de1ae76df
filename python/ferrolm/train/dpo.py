"""Direct preference optimisation: the policy against a frozen reference on preference pairs,
loss −log σ(β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) with sequence
log-probs summed over response tokens. Reference log-probs are computed once per split, in the
matrix-product precision the policy's are then computed in (a bfloat16 run compared with a
float32 reference would start with nonzero log-ratios). As in TRL, the policy runs without
dropout, which the reference's log-probs do not have either."""

from __future__ import annotations

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm.autograd import no_grad
from ferrolm.gpt import GPT
from ferrolm.batching import response_mask
from ferrolm.chat import ChatTemplate
from ferrolm.data import digest
from ferrolm.jsonl import require_count
from ferrolm.gpt import sequence_logprobs, shares_weights
from ferrolm.train.loop import weights_digest
from ferrolm.train.reward import encode_preference_splits, split_pairs


def response_logprobs(model, ids: np.ndarray, lengths: np.ndarray, starts: np.ndarray):
    """Σ log π(response tokens) per row [B], keeping the graph."""
    mask = response_mask(ids, lengths, starts).astype(np.float32)
    lp = sequence_logprobs(model, ids)
    return F.sum(lp * mask, axis=1)


class DPO:
    kind = "dpo"
    trains = GPT

    def __init__(self, reference, train, val, template: ChatTemplate, block_size: int, batch_size: int,
                 beta: float = 0.1, skip_long: bool = False) -> None:
        # NaN passed, and the first step said "training diverged"; so did a beta of 1e300, infinite in float32.
        if not 0 < beta <= float(np.finfo(np.float32).max):
            raise ValueError(f"beta must be > 0 and finite in float32, got {beta}")
        require_count("batch_size", batch_size)
        template.check_reads(reference, "the reference")
        self.template, self.batch_size, self.beta = template, batch_size, beta
        self.data, self.counts = encode_preference_splits(train, val, template, block_size, skip_long, shifted=True)
        self.data_digest = digest(self.data)
        self.reference: GPT = reference
        self.reference_digest = weights_digest(reference)  # a resume against another reference is refused
        self._ref: dict[tuple[str, str], np.ndarray] = {}
        self._policy = None  # the model last checked to be separate from the reference

    def ref(self, split: str) -> np.ndarray:
        """[N, 2] reference log-probs of a split's pairs, in the current matmul precision."""
        key = (split, _core.matmul_precision())
        if key not in self._ref:
            self._ref[key] = self._logprobs(self.reference, self.data[split])
        return self._ref[key]

    def _rows(self, pairs):
        ids, lengths = split_pairs(pairs, self.template.end)
        starts = np.array([self.template.response_start(r) for r in ids])
        return ids, lengths, starts

    def _logprobs(self, model, pairs) -> np.ndarray:
        """[N, 2] (chosen, rejected) sequence log-probs, in chunks, without a graph."""
        out = []
        with no_grad():
            for s in range(0, len(pairs), 32):
                chunk = pairs[s : s + 32]
                lp = response_logprobs(model, *self._rows(chunk)).numpy()
                out.append(np.stack([lp[: len(chunk)], lp[len(chunk) :]], axis=1))
        return np.concatenate(out)

    def batch(self, split, rng):
        idx = rng.integers(0, len(self.data[split]), size=self.batch_size)
        return (*self._rows([self.data[split][i] for i in idx]), self.ref(split)[idx])

    def loss(self, model, batch, dropout_seed):
        if model is not self._policy:
            if shares_weights(model, self.reference):
                raise ValueError("the reference shares its weights with the policy being trained, so it would move "
                                 "with it: give DPO a copy (GPT.load of the same directory, or policy.copy())")
            self.template.check_reads(model, "the policy")
            self._policy = model
        ids, lengths, starts, ref = batch
        lp = response_logprobs(model, ids, lengths, starts)
        b = ids.shape[0] // 2
        chosen = F.narrow(lp, 0, 0, b) - _core.Tensor(ref[:, 0])
        rejected = F.narrow(lp, 0, b, b) - _core.Tensor(ref[:, 1])
        logits = (chosen - rejected) * self.beta
        loss = -F.log_sigmoid(logits).mean()
        margin = logits.numpy()
        # TRL's rewards/chosen and rewards/rejected: a margin that grows while both fall is the
        # policy unlearning the chosen answers too (too high a learning rate).
        return loss, {"accuracy": float((margin > 0).mean()), "margin": float(margin.mean()),
                      "chosen_reward": self.beta * float(chosen.numpy().mean()),
                      "rejected_reward": self.beta * float(rejected.numpy().mean())}

    def log_ratios(self, model, split: str = "val") -> np.ndarray:
        """[N, 2] log π(answer) − log π_ref(answer) of every (chosen, rejected) pair of a split."""
        return self._logprobs(model, self.data[split]) - self.ref(split)

    def accuracy(self, model, split: str = "val") -> float:
        """Implicit-reward accuracy over every pair of a split: the share whose chosen answer
        gains more log-probability over the reference than the rejected one; a tie is a miss,
        as in TRL, so it is 0 at the start, where the policy is the reference."""
        lp = self.log_ratios(model, split)
        return float((lp[:, 0] > lp[:, 1]).mean())

    def tokens(self, batch) -> int:
        return int(batch[1].sum())

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "beta": self.beta, "counts": self.counts, "data": self.data_digest,
                "reference": self.reference_digest}
