"""RLHF with PPO (Ouyang et al. 2022, as in TRL): sample responses from the policy with the KV
cache, score them with the reward model, subtract a per-token KL penalty to the frozen
reference, estimate advantages with GAE against a value head, and take clipped policy and
value steps over several minibatch epochs per rollout. As in TRL, the policy's log-probs are
those of the tempered distribution it samples from, and its forward passes run without dropout
(with dropout, the ratio to the rollout's log-probs would be noise before any update).

Unlike TRL's default, the reward model's score enters the reward normalised by its running
mean and standard deviation over training rollouts (a reward model's scale and offset are
arbitrary); `kl_coef` is therefore in units of the score's standard deviation, and a TRL
`kl_coef` carries over only for a reward model whose scores have unit spread.

It plugs into the shared loop: `batch()` runs a rollout whenever its buffer of minibatches is
empty, `loss()` is the clipped objective, `evaluate()` scores fresh samples on held-out prompts.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Union

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm.autograd import no_grad
from ferrolm.batching import pad_right, response_mask
from ferrolm.chat import ChatTemplate
from ferrolm.conversations import prompt_turns
from ferrolm.jsonl import located, require_count
from ferrolm.data import digest
from ferrolm.gpt import GPT, sequence_logprobs, shares_weights, tempered_log_softmax, token_logprobs
from ferrolm.models import load_head, model_files, require_model, save_head
from ferrolm.train.loop import check_model, weights_digest
from ferrolm.train.reward import RewardModel

VALUE_HEAD_FILE = "value_head.safetensors"


class PolicyWithValue:
    """The policy GPT plus a value head on its hidden states (shared backbone)."""

    def __init__(self, gpt: GPT, value_head=None) -> None:
        require_model(gpt, GPT, "a PolicyWithValue")
        self.gpt = gpt
        self.value_head = value_head or _core.Linear(gpt.config["n_embd"], 1, bias=True, seed=11)

    def __call__(self, ids: np.ndarray):
        """(logits [B, T, V], values [B, T]), without dropout (see the module's docstring)."""
        h = self.gpt.hidden(ids)
        b, t, _ = h.shape
        return self.gpt.logits(h), F.reshape(self.value_head(h), [b, t])

    def named_parameters(self):
        return self.gpt.named_parameters() + [(f"value_head.{n}", t) for n, t in self.value_head.named_parameters()]

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PolicyWithValue":
        """A policy saved by PPO training (its GPT and value head)."""
        policy = cls(GPT.load(path))
        load_head(policy.value_head, path, VALUE_HEAD_FILE, "value_head", "ppo")
        return policy

    def save(self, path: Union[str, Path]) -> None:
        with model_files(path) as files:  # the head and the weights it belongs to, together
            self.gpt.save(files)
            save_head(self.value_head, files, VALUE_HEAD_FILE, "value_head")


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over the masked (response) steps of each row:
    δ_t = r_t + γ V_{t+1} − V_t, A_t = δ_t + γλ A_{t+1}, with V = 0 after the last step.
    Returns (advantages, returns = advantages + values), zero outside the mask."""
    adv = np.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        steps = np.flatnonzero(mask[i])
        running, next_value = 0.0, 0.0
        for t in steps[::-1]:
            delta = rewards[i, t] + gamma * next_value - values[i, t]
            running = delta + gamma * lam * running
            adv[i, t] = running
            next_value = values[i, t]
    return adv, (adv + values) * mask


def masked_mean(x, mask: np.ndarray):
    """Mean of a tensor over the positions where `mask` is set."""
    return F.sum(x * mask.astype(np.float32)) * (1.0 / max(float(mask.sum()), 1.0))


class PPO:
    kind = "ppo"
    trains = PolicyWithValue

    def __init__(self, policy: PolicyWithValue, reference: GPT, reward_model, train_prompts: list, val_prompts: list, template: ChatTemplate,
                 rollout_size: int = 16, minibatch_size: int = 8, ppo_epochs: int = 4, max_new_tokens: int = 48,
                 kl_coef: float = 0.1, target_kl: float | None = 6.0, clip: float = 0.2, vf_coef: float = 0.1,
                 gamma: float = 1.0, lam: float = 0.95, temperature: float = 1.0, missing_end_penalty: float = 0.0,
                 skip_long: bool = False) -> None:
        check_model(self, policy)
        check_model(self, reward_model, RewardModel, "scores with")
        check_model(self, reference, GPT, "keeps near")
        if not 0 < temperature < math.inf:
            raise ValueError(f"PPO samples its rollouts: temperature must be > 0 and finite, got {temperature}")
        if not 0 <= missing_end_penalty < math.inf:
            raise ValueError(f"missing_end_penalty must be >= 0 and finite, got {missing_end_penalty}")
        if not (kl_coef >= 0 and clip > 0 and 0 <= gamma <= 1 and 0 <= lam <= 1 and vf_coef >= 0):
            raise ValueError(f"need kl_coef >= 0, clip > 0, gamma and lam in [0, 1] and vf_coef >= 0, got kl_coef "
                             f"{kl_coef}, clip {clip}, gamma {gamma}, lam {lam}, vf_coef {vf_coef}")
        if target_kl is not None and not target_kl > 0:
            raise ValueError(f"target_kl must be > 0 (None: a fixed kl_coef), got {target_kl}")
        if shares_weights(policy, reference):
            raise ValueError("the reference shares its weights with the policy, so it would move with it and the KL "
                             "penalty would stay 0: give PPO a copy (GPT.load of the same directory, or gpt.copy())")
        if shares_weights(policy, reward_model):
            raise ValueError("the reward model shares its weights with the policy, so its scores would move with it: "
                             "give PPO a reward model of its own (RewardModel.load of its directory)")
        for name, value in (("rollout_size", rollout_size), ("minibatch_size", minibatch_size),
                            ("ppo_epochs", ppo_epochs), ("max_new_tokens", max_new_tokens)):
            require_count(name, value)
        if target_kl is not None and not kl_coef > 0:
            raise ValueError(f"kl_coef {kl_coef}: an adaptive KL target scales the coefficient, which cannot grow from 0 "
                             "(give kl_coef > 0, or no target_kl for a fixed coefficient: --kl-coef, or --target-kl 0 "
                             "on the command line)")
        if rollout_size % minibatch_size:
            raise ValueError(f"rollout_size {rollout_size} must be a multiple of minibatch_size {minibatch_size} "
                             "(--rollout-size and --batch-size on the command line)")
        template.check_reads(reward_model.gpt, "the reward model")  # its scores of other ids would be meaningless
        template.check_reads(reference, "the reference")
        template.check_reads(policy.gpt, "the policy")
        self.reference, self.reward_model, self.template = reference, reward_model, template
        # The ids rollouts are sampled among (a model's vocabulary may be padded past them, a
        # tokenizer leave gaps): every log-probability here is over these.
        self.vocab, self.gaps = template.tokenizer.vocab_size, template.tokenizer.unused_ids()
        # A response cut at max_new_tokens is scored with <|end|> appended: one more token
        # than the policy wrote must fit the reward model's context.
        policy_block, reward_block = reference.block_size, reward_model.gpt.block_size
        room = min(policy_block, reward_block - 1)
        self.prompts, self.counts = {}, {}
        for split, texts in (("train", train_prompts), ("val", val_prompts)):
            rows = [located(f"{split} prompt {i}", template.prompt_ids, p) for i, p in enumerate(texts)]
            too_long = [i for i, r in enumerate(rows) if len(r) + max_new_tokens > room]
            if too_long and not skip_long:
                first = prompt_turns(texts[too_long[0]])[-1]["content"]  # a conversation's: its last turn
                raise ValueError(f"{len(too_long)} {split} prompts leave no room for {max_new_tokens} new tokens in the policy's "
                                 f"context of {policy_block} and, with <|end|>, the reward model's of {reward_block}, "
                                 f"such as {first[:60]!r}{'...' if len(first) > 60 else ''} (lower --max-new-tokens, "
                                 "pass --skip-long to skip such prompts, or start from models with a longer --block-size)")
            if not rows:
                raise ValueError(f"no {split} prompts given")
            skipped = set(too_long)
            self.prompts[split] = [r for i, r in enumerate(rows) if i not in skipped]
            self.counts[split] = {"skipped_too_long": len(too_long)}
            if not self.prompts[split]:
                raise ValueError(f"no {split} prompts leave room for {max_new_tokens} new tokens in the policy's context "
                                 f"of {policy_block} and the reward model's of {reward_block}")
        self.data_digest = digest(self.prompts)
        # A resume against another reference or reward model is refused.
        self.model_digests = {"reference": weights_digest(reference), "reward_model": weights_digest(reward_model)}
        self.rollout_size, self.minibatch_size, self.ppo_epochs = rollout_size, minibatch_size, ppo_epochs
        # Subtracted from the normalised score of a response cut at max_new_tokens (TRL's
        # missing_eos_penalty, in kl_coef's units): otherwise rambling is scored as if it had ended.
        self.max_new_tokens, self.temperature, self.missing_end_penalty = max_new_tokens, temperature, missing_end_penalty
        self.kl_coef, self.target_kl, self.clip, self.vf_coef, self.gamma, self.lam = kl_coef, target_kl, clip, vf_coef, gamma, lam
        self.score_stats = RunningStats()
        self.buffer: list[dict] = []
        self.rollouts = 0
        self.last_rollout: dict = {}
        self.policy = policy

    # ------------------------------------------------------------ rollouts

    def generate(self, gpt: GPT, prompts: list[list[int]], seed: int, temperature: float) -> list[list[int]]:
        """Responses (ids) from the KV-cache generator, stopped as chat generation stops them: at
        <|end|>, or at <|user|> / <|assistant|> (another turn: the answer has ended), which
        they end with; sampled among the tokenizer's ids, as chat text is."""
        session = gpt._generation(prompts, temperature=temperature, seed=seed, stop_tokens=list(self.template.turn_ends),
                                  tokenizer=self.template.tokenizer)
        return session.run(self.max_new_tokens)

    def _experience(self, gpt_policy: PolicyWithValue, prompts: list[list[int]], responses: list[list[int]], learn: bool) -> dict:
        """Everything PPO needs about sampled sequences, computed once without a graph; `learn`
        adds their scores to the running statistics (training rollouts, not evaluation)."""
        rows = [p + r for p, r in zip(prompts, responses)]
        ids, lengths = pad_right(rows, self.template.end)
        x = ids[:, :-1]
        starts = np.array([len(p) for p in prompts])
        mask = response_mask(ids, lengths, starts)
        with no_grad():
            logits, values = gpt_policy(x)
            log_probs = tempered_log_softmax(logits, self.temperature, self.vocab, self.gaps)
            logp = token_logprobs(log_probs, ids[:, 1:]).numpy()
            ref_logp = sequence_logprobs(self.reference, ids, temperature=self.temperature, vocab=self.vocab,
                                         excluded=self.gaps).numpy()
            # Scored as the reward model was trained and as chat shows the answer: ending in
            # <|end|>, in place of a turn marker that ended it, or after a cut at max_new_tokens.
            cut = np.array([r[-1] not in self.template.turn_ends for r in rows])
            scores = self.reward_model.score_ids([(r if c else r[:-1]) + [self.template.end] for r, c in zip(rows, cut)])
        values = values.numpy() * mask
        kl = (logp - ref_logp) * mask
        rewards = -self.kl_coef * kl
        last = lengths - 2  # the step that produced the final token
        rewards[np.arange(len(rows)), last] += self._final_rewards(scores, cut, learn)
        adv, returns = gae(rewards, values, mask, self.gamma, self.lam)
        sel = adv[mask]
        var = sel.var(ddof=1) if sel.size > 1 else 0.0  # whitened as TRL's masked_whiten: unbiased variance
        adv = np.where(mask, (adv - sel.mean()) / np.sqrt(var + 1e-8), 0.0)
        return {"x": x, "targets": ids[:, 1:], "mask": mask, "old_logp": logp * mask, "old_values": values,
                "advantages": adv.astype(np.float32), "returns": returns.astype(np.float32), "scores": scores,
                "kl": kl.sum(1), "lengths": lengths - starts}

    def _final_rewards(self, scores: np.ndarray, cut: np.ndarray, learn: bool) -> np.ndarray:
        """What each response earns at its last token: its reward-model score normalised by the
        running statistics of the scores (which `learn` adds these to), less
        `missing_end_penalty` where it was cut, in the same units as kl_coef. A reward model's
        scale and offset are arbitrary; normalised scores keep the value head's targets O(1),
        so its gradient does not swamp the policy's in the shared trunk. (Penalised before
        normalising, a penalty moved the statistics: it could shift the cut responses' reward
        by at most 1/sqrt(f(1-f)) of their spread, f their share, and not at all when all were cut.)"""
        if learn:
            self.score_stats.update(scores)
        return self.score_stats.normalise(scores) - np.float32(self.missing_end_penalty) * cut

    def _rollout(self, model: PolicyWithValue, rng: np.random.Generator) -> None:
        prompts = [self.prompts["train"][i] for i in rng.integers(0, len(self.prompts["train"]), size=self.rollout_size)]
        start = time.perf_counter()
        responses = self.generate(model.gpt, prompts, seed=int(rng.integers(1 << 62)), temperature=self.temperature)
        gen_seconds = time.perf_counter() - start
        exp = self._experience(model, prompts, responses, learn=True)
        total_seconds = time.perf_counter() - start
        self.rollouts += 1
        mean_kl = float(exp["kl"].mean())
        if self.target_kl is not None:  # Ziegler et al.'s proportional controller
            error = float(np.clip(mean_kl / self.target_kl - 1.0, -0.2, 0.2))
            # Horizon 256 samples: a 16-sample rollout moves the coefficient by up to 1.25%, as
            # Ziegler et al.'s 512-sample batches with horizon 10,000 move it by up to 1%.
            # A Python float, as a resumed run reads it back: a numpy float64 here would turn
            # the float32 rewards computed with it into float64 ones.
            self.kl_coef *= 1.0 + error * self.rollout_size / 256
        new_tokens = int(exp["lengths"].sum())
        self.last_rollout = {"reward": float(exp["scores"].mean()), "kl": mean_kl, "kl_coef": self.kl_coef,
                             "response_length": float(exp["lengths"].mean()), "rollout_tokens_per_sec": new_tokens / gen_seconds,
                             "generation_share": gen_seconds / total_seconds}
        for _ in range(self.ppo_epochs):
            order = rng.permutation(self.rollout_size)
            for s in range(0, self.rollout_size, self.minibatch_size):
                idx = order[s : s + self.minibatch_size]
                self.buffer.append({k: v[idx] for k, v in exp.items()})

    # ------------------------------------------------------------ the loop's interface

    def batch(self, split, rng):
        if not self.buffer:
            self._rollout(self.policy, rng)
        return self.buffer.pop(0)

    def _check_trained(self, model: PolicyWithValue) -> None:
        if model is not self.policy:  # rollouts come from self.policy: updating another model is not PPO
            raise ValueError("PPO samples its rollouts from the policy it was given: train() that same policy")

    def loss(self, model: PolicyWithValue, mb: dict, dropout_seed):
        self._check_trained(model)
        logits, values = model(mb["x"])
        log_probs = tempered_log_softmax(logits, self.temperature, self.vocab, self.gaps)
        logp = token_logprobs(log_probs, mb["targets"])
        mask = mb["mask"]
        ratio = F.exp(logp - mb["old_logp"])
        adv, old_values, returns = (_core.Tensor(mb[k]) for k in ("advantages", "old_values", "returns"))
        unclipped = ratio * adv
        clipped = F.clamp(ratio, 1.0 - self.clip, 1.0 + self.clip) * adv
        policy_loss = -masked_mean(F.minimum(unclipped, clipped), mask)
        v_clipped = old_values + F.clamp(values - old_values, -self.clip, self.clip)
        v_loss = masked_mean(F.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask) * 0.5
        r = ratio.numpy()[mask]
        with no_grad():  # only [B, T] crosses to numpy, not the [B, T, V] distribution
            entropy = (-F.sum(F.exp(log_probs) * log_probs, axis=-1)).numpy()[mask].mean()
        extra = {"policy_loss": policy_loss.item(), "value_loss": v_loss.item(), "entropy": float(entropy),
                 "clip_fraction": float((np.abs(r - 1.0) > self.clip).mean())}
        return policy_loss + v_loss * self.vf_coef, extra

    def evaluate(self, model: PolicyWithValue, rng) -> dict:
        """Mean reward-model score and KL to the reference of fresh samples on held-out prompts."""
        self._check_trained(model)
        prompts = self.prompts["val"]
        responses = self.generate(model.gpt, prompts, seed=12345, temperature=self.temperature)
        exp = self._experience(model, prompts, responses, learn=False)
        return {"val_reward": float(exp["scores"].mean()), "val_kl": float(exp["kl"].mean()),
                "val_response_length": float(exp["lengths"].mean())}

    def loss_weight(self, mb) -> int:
        return int(mb["mask"].sum())  # the responses' tokens, which both losses are means over

    def tokens(self, mb) -> int:
        return int(mb["mask"].sum())

    def metrics(self) -> dict:
        """The latest rollout's reward, KL, response length and generation speed."""
        return self.last_rollout

    def state(self) -> dict:
        """Everything a resumed run needs besides the weights and the loop's RNG: the KL
        controller, the score statistics and the rest of the current rollout's minibatches."""
        stats = self.score_stats
        return {"batch_size": self.minibatch_size, "kl_coef": self.kl_coef, "rollouts": self.rollouts, "data": self.data_digest,
                **self.model_digests,
                "score_stats": [stats.count, stats.mean, stats.m2],
                "last_rollout": self.last_rollout, "buffer": [{k: _encode(v) for k, v in mb.items()} for mb in self.buffer]}

    def load_state(self, state: dict) -> None:
        if "buffer" not in state:
            raise ValueError("this PPO checkpoint predates exact resume (no rollout state in it): start a new run")
        try:
            kl_coef, rollouts, last_rollout = float(state["kl_coef"]), int(state["rollouts"]), state["last_rollout"]
            count, mean, m2 = state["score_stats"]
            buffer = [{k: _decode(v) for k, v in mb.items()} for mb in state["buffer"]]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"cannot resume: the PPO state in the checkpoint is damaged ({type(e).__name__}: {e}); "
                             "start a new run") from None
        self.kl_coef, self.rollouts, self.last_rollout = kl_coef, rollouts, last_rollout
        self.score_stats.count, self.score_stats.mean, self.score_stats.m2 = count, mean, m2
        self.buffer = buffer


def _encode(a: np.ndarray) -> dict:
    """A numpy array as JSON, exactly (float32 values are exact as JSON's float64)."""
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.ravel().tolist()}


def _decode(d: dict) -> np.ndarray:
    return np.array(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])


class RunningStats:
    """Running mean and variance (Chan et al.'s parallel update) of reward-model scores, in
    float64 (float32's squares overflowed at scores of 1e20); the standard deviation is the
    unbiased one, as TRL's RunningMoments'."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        n, mean, var = len(x), float(np.mean(x)), float(np.var(x))
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += var * n + delta**2 * self.count * n / total
        self.count = total

    def normalise(self, x: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0
        return (x - self.mean) / (std + 1e-8)

