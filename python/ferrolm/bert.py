"""BERT: the core encoder plus its WordPiece tokenizer, with fill-mask and sentence embeddings."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm._core import Tensor
from ferrolm.autograd import no_grad
from ferrolm.batching import length_batches, pad_right, real_tokens
from ferrolm.models import CoreModel

#: Windows of long text that fill_mask runs through the model at once.
WINDOWS_PER_PASS = 32


class BERT(CoreModel):
    """A BERT encoder (masked-LM head included unless loaded from an encoder-only checkpoint).

    >>> model = BERT.create(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    >>> model.hidden(np.zeros((1, 5), dtype=np.int64)).shape
    (1, 5, 32)
    """

    core_class = _core.Bert

    @classmethod
    def create(cls, *, vocab_size: int, hidden_size: int = 256, num_hidden_layers: int = 4, num_attention_heads: int = 4,
               intermediate_size: Optional[int] = None, max_position_embeddings: int = 128, type_vocab_size: int = 2,
               hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: Optional[float] = None,
               pad_token_id: int = 0, pooler: bool = False, seed: Optional[int] = None, tokenizer=None) -> "BERT":
        """A freshly initialised encoder, from `seed` (None: the next seed of the stream
        `fl.manual_seed` restarts). Attention probabilities are dropped at
        `hidden_dropout_prob` unless `attention_probs_dropout_prob` is given."""
        from ferrolm.train.memory import check_model_memory  # here: the training objectives import BERT

        check_model_memory(num_hidden_layers, hidden_size, vocab_size, max_position_embeddings, type_vocab_size,
                           feed_forward=intermediate_size)
        core = _core.Bert(vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                          intermediate_size or 4 * hidden_size, max_position_embeddings=max_position_embeddings,
                          type_vocab_size=type_vocab_size, hidden_dropout_prob=hidden_dropout_prob,
                          attention_probs_dropout_prob=attention_probs_dropout_prob,
                          pad_token_id=pad_token_id, pooler=pooler, seed=seed)
        return cls(core, tokenizer)

    @property
    def max_len(self) -> int:
        return self.config["max_position_embeddings"]

    def hidden(self, ids, *, token_type_ids=None, attention_mask=None, dropout_seed: Optional[int] = None) -> Tensor:
        """Last hidden states [B, T, C]; `attention_mask` is 1/True for real tokens."""
        return self.core.hidden(ids, token_type_ids, attention_mask, dropout_seed)

    def with_new_mlm_head(self, seed: int = 0) -> "BERT":
        """The same encoder (weights shared) with a freshly initialised masked-LM head: an
        encoder-only checkpoint (a BertModel, a sentence-embedding model) ready for MLM training."""
        return BERT(self.core.with_new_mlm_head(seed), self.tokenizer)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        return self.core.mlm_logits(hidden)

    def __call__(self, ids, *, token_type_ids=None, attention_mask=None, dropout_seed: Optional[int] = None) -> Tensor:
        """Masked-LM logits [B, T, V]; `attention_mask` is 1/True for real tokens. Dropout
        (hidden_dropout_prob, attention_probs_dropout_prob) is on only when a `dropout_seed` is
        given (the training loop passes one; evaluation does not)."""
        return self.mlm_logits(self.hidden(ids, token_type_ids=token_type_ids, attention_mask=attention_mask, dropout_seed=dropout_seed))

    # ------------------------------------------------------------ text

    def _tok(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids, or attach one (model.tokenizer = ...)")
        return self.tokenizer

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[dict]]:
        """Candidates for every [MASK] in `text`: one list per mask, best first, each entry
        {"token", "token_id", "score"} with the softmax probability as score. In text longer
        than the model's context each [MASK] is predicted from the window of that many tokens
        around it (framed by [CLS] and [SEP] as in training)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        tok = self._tok()
        ids = np.asarray(tok.encode(text, allowed_special="all"), dtype=np.int64)
        masks = np.flatnonzero(ids == self._mask_id())
        if masks.size == 0:
            raise ValueError(f"no [MASK] in the text: {text!r}")
        if len(ids) <= self.max_len:
            return self._fill(ids[None, :], top_k)[0]
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        framed = ids[0] == cls and ids[-1] == sep
        body = ids[1:-1] if framed else ids
        width = self.max_len - 2 if framed else self.max_len
        starts = [min(max(p - width // 2, 0), len(body) - width) for p in masks - int(framed)]
        windows = sorted(set(starts))  # masks near each other or an end share a window
        batch = np.stack([body[s : s + width] for s in windows])
        if framed:
            batch = np.concatenate([np.full((len(batch), 1), cls), batch, np.full((len(batch), 1), sep)], axis=1)
        # Windows go through the model in batches, few enough to bound the activations' memory.
        filled = dict(zip(windows, (row for i in range(0, len(batch), WINDOWS_PER_PASS)
                                    for row in self._fill(batch[i : i + WINDOWS_PER_PASS], top_k))))
        # Each mask's candidates, from its window: the mask's rank among the window's masks.
        return [filled[s][int(np.sum(body[s:p] == self._mask_id()))] for s, p in zip(starts, masks - int(framed))]

    def _mask_id(self) -> int:
        mask_id = self._tok().token_to_id("[MASK]")
        if mask_id is None:
            raise ValueError("the tokenizer has no [MASK] token")
        return mask_id

    def _fill(self, ids: np.ndarray, top_k: int) -> list[list[list[dict]]]:
        """For each row of `ids` [B, T], the candidates of each of its [MASK]s."""
        positions = np.flatnonzero(ids == self._mask_id())  # in the flattened batch, row by row
        with no_grad():
            h = self.hidden(ids)
            rows = F.index_select(F.reshape(h, [-1, h.shape[-1]]), 0, positions)
            # Over the tokenizer's ids only: a vocabulary padded past them has no words there.
            probs = F.softmax(self.mlm_logits(rows)[:, : self._tok().vocab_size]).numpy()
        if not np.isfinite(probs).all():  # a ranking by NaN would be meaningless
            raise ValueError("fill_mask: the model's scores hold NaN or infinite values (are its weights damaged or "
                             "diverged?)")
        out: list[list[list[dict]]] = [[] for _ in ids]
        for at, p in zip(positions, probs):
            best = np.argsort(-p, kind="stable")[:top_k]
            out[at // ids.shape[1]].append(
                [{"token": self._tok().id_to_token(int(i)), "token_id": int(i), "score": float(p[i])} for i in best])
        return out

    def embed(self, texts: Sequence[str], pooling: str = "mean", *, batch_size: int = 32,
              truncate: bool = False) -> np.ndarray:
        """Sentence embeddings [N, C]: the mean of the last hidden states over real tokens,
        or the [CLS] vector (`pooling="cls"`). Texts go through the model `batch_size` at a
        time, grouped by length so little is padded (padding does not change a text's
        embedding). A text longer than the context raises ValueError, or with `truncate=True`
        keeps its first tokens (and the template's, BERT's [CLS] and [SEP])."""
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if isinstance(texts, str) or not len(texts):
            raise ValueError("embed takes a non-empty list of texts")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        enc = [self._encode_to_fit(t, i, truncate) for i, t in enumerate(texts)]
        out = np.empty((len(enc), self.config["hidden_size"]), dtype=np.float32)
        for rows in length_batches([len(e) for e in enc], batch_size):
            out[rows] = self._pool([enc[i] for i in rows], pooling)
        return out

    def _encode_to_fit(self, text: str, index: int, truncate: bool) -> np.ndarray:
        ids = np.asarray(self._tok().encode(text, max_length=self.max_len if truncate else None), dtype=np.int64)
        if not len(ids):  # a tokenizer that adds no [CLS] … [SEP] gives an empty text no tokens to pool
            raise ValueError(f"text {index} has no tokens to embed")
        if len(ids) > self.max_len:
            raise ValueError(f"text {index} has {len(ids)} tokens, more than max_position_embeddings "
                             f"({self.max_len}); embed(..., truncate=True) keeps its first tokens")
        return ids

    def _pool(self, enc: list[np.ndarray], pooling: str) -> np.ndarray:
        """One batch's embeddings, its texts padded to the longest."""
        ids, lengths = pad_right(enc, self._tok().pad_id)
        mask = real_tokens(lengths, ids.shape[1])
        with no_grad():
            h = self.hidden(ids, attention_mask=mask).numpy()
        if pooling == "cls":
            return h[:, 0]
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

    def fill_mask_hits(self, lines: Sequence[str], top_k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Held-out evaluation: masks one random piece of each line (lines that do not fit the
        context are skipped) and returns (the true ids, whether each is in `fill_mask`'s top k)."""
        rng = np.random.default_rng(seed)
        tok, mask_id, targets, hits = self._tok(), self._mask_id(), [], []
        for line in lines:
            # [CLS] pieces [SEP]; a "[MASK]" written in the line is text, not a second mask.
            ids = np.asarray(tok.encode(line, allowed_special="none", disallowed_special="text"), dtype=np.int64)
            if len(ids) < 3 or len(ids) > self.max_len:
                continue
            at = 1 + int(rng.integers(len(ids) - 2))
            true_id, ids[at] = int(ids[at]), mask_id
            top = [c["token_id"] for c in self._fill(ids[None, :], top_k)[0][0]]
            targets.append(true_id)
            hits.append(true_id in top)
        return np.array(targets, dtype=np.int64), np.array(hits, dtype=bool)
