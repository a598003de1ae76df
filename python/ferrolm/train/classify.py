"""Text classification by fine-tuning a BERT encoder (Hugging Face's
BertForSequenceClassification): the [CLS] hidden state, through BERT's pooler when the model has
one, dropout, then a linear head, trained with cross-entropy on {"text", "label"} records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm.autograd import no_grad
from ferrolm.bert import BERT
from ferrolm.chat import encode_splits
from ferrolm.data import digest
from ferrolm.models import load_head, save_head

HEAD_FILE = "classifier_head.safetensors"


class TextClassifier:
    """logits(text) = head(dropout(pooler([CLS] hidden state))) over `labels`.

    >>> bert = BERT.create(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    >>> TextClassifier(bert, ["neg", "pos"])(np.zeros((3, 5), dtype=np.int64), np.ones((3, 5), bool)).shape
    (3, 2)
    """

    def __init__(self, bert: BERT, labels: Sequence[str], head=None) -> None:
        labels = [str(label) for label in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"a classifier needs two or more distinct labels, got {labels}")
        self.bert, self.labels = bert, labels
        self.head = head or _core.Linear(bert.config["hidden_size"], len(labels), bias=True, seed=11)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TextClassifier":
        """A classifier saved by `save` (or `ferrolm classify`), or a Hugging Face
        BertForSequenceClassification directory (`classifier.*` tensors, `id2label`)."""
        path = Path(path)
        if not (path / HEAD_FILE).exists():
            return cls._load_hugging_face(path)
        labels = json.loads(_core.load_safetensors(str(path / HEAD_FILE))[1].get("labels", "[]"))
        model = cls(BERT.load(path), labels)
        load_head(model.head, path, HEAD_FILE, "classifier", "classify")
        return model

    @classmethod
    def _load_hugging_face(cls, path: Path) -> "TextClassifier":
        from ferrolm.jsonl import read_json_object
        from ferrolm.nn import fill_parameters

        weights = path / "model.safetensors"
        names = ["classifier.weight", "classifier.bias"]
        head = _core.load_safetensors(str(weights), names)[0] if weights.is_file() else {}
        if set(head) != set(names):
            raise FileNotFoundError(f"{path} is not a classifier: it has no {HEAD_FILE} (train one with "
                                    "`ferrolm classify`) and no Hugging Face classifier.weight and classifier.bias")
        config = read_json_object(path / "config.json")
        if config.get("problem_type") not in (None, "single_label_classification"):
            raise ValueError(f"{path}: problem_type {config['problem_type']!r} is not supported (single-label only)")
        n = head["classifier.weight"].shape[0]
        id2label = config.get("id2label") or {}
        labels = [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(n)]  # Hugging Face's default names
        model = cls(BERT.load(path), labels)
        fill_parameters(dict(model.head.named_parameters()), {k.removeprefix("classifier."): v for k, v in head.items()},
                        weights)
        return model

    def save(self, path: Union[str, Path]) -> None:
        self.bert.save(path)
        save_head(self.head, path, HEAD_FILE, "classifier", metadata={"labels": json.dumps(self.labels)})

    def named_parameters(self):
        return self.bert.named_parameters() + [(f"classifier.{n}", t) for n, t in self.head.named_parameters()]

    def __call__(self, ids: np.ndarray, mask: np.ndarray, dropout_seed=None):
        """Logits [B, labels] for right-padded ids [B, T] whose real tokens `mask` marks."""
        h = self.bert.hidden(ids, attention_mask=mask, dropout_seed=dropout_seed)
        core = self.bert.core
        pooled = core.pooled(h) if core.has_pooler else F.reshape(F.narrow(h, 1, 0, 1), [h.shape[0], h.shape[2]])
        if dropout_seed is not None:
            pooled = F.dropout(pooled, self.bert.config["hidden_dropout_prob"], seed=dropout_seed ^ 0xC1A55)
        return self.head(pooled)

    def classify(self, texts: Sequence[str], batch_size: int = 32) -> list[dict]:
        """For each text, {"label", "score"} (the most probable label and its probability) and
        "scores" (every label's probability), as Hugging Face's text-classification pipeline."""
        if isinstance(texts, str):
            raise TypeError("classify takes a list of texts")
        rows = [encode_text(self.bert.tokenizer, t, self.bert.max_len, f"text {i}") for i, t in enumerate(texts)]
        out = []
        for start in range(0, len(rows), batch_size):
            with no_grad():
                probs = F.softmax(self(*pad(rows[start : start + batch_size], self.bert.tokenizer.pad_id))).numpy()
            for p in probs:
                best = int(p.argmax())
                out.append({"label": self.labels[best], "score": float(p[best]),
                            "scores": {label: float(q) for label, q in zip(self.labels, p)}})
        return out


def encode_text(tokenizer, text: str, max_len: int, where: str) -> list[int]:
    ids = tokenizer.encode(text)
    if len(ids) > max_len:
        raise ValueError(f"{where} has {len(ids)} tokens, more than the model's context ({max_len})")
    if not ids:
        raise ValueError(f"{where} has no tokens")
    return ids


def pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids [B, T] and the mask of their real tokens."""
    ids = np.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, True
    return ids, mask


def labels_of(records: Sequence[dict]) -> list[str]:
    """The labels of the records, sorted (numbers as numbers)."""
    found = {str(r["label"]) for r in records}
    return sorted(found, key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class Classification:
    """Cross-entropy training of a TextClassifier on {"text", "label"} records."""

    kind = "classify"

    def __init__(self, train, val, tokenizer, labels: Sequence[str], max_len: int, batch_size: int,
                 skip_long: bool = False) -> None:
        self.labels, self.batch_size, self.pad_id = list(labels), batch_size, tokenizer.pad_id
        index = {label: i for i, label in enumerate(self.labels)}

        def encode(records):
            rows, skipped = [], 0
            for r in records:
                label = str(r["label"])
                if label not in index:
                    raise ValueError(f"{r.get('_where', 'a record')}: label {label!r} is not one of {self.labels}")
                try:
                    rows.append((encode_text(tokenizer, r["text"], max_len, r.get("_where", "a record")), index[label]))
                except ValueError:
                    if not skip_long:
                        raise
                    skipped += 1
            return rows, {"skipped_too_long": skipped}

        self.data, self.counts = encode_splits(train, val, encode, f"texts fit the context of {max_len} tokens")
        self.data_digest = digest(self.data)

    def batch(self, split, rng):
        picked = [self.data[split][i] for i in rng.integers(0, len(self.data[split]), size=self.batch_size)]
        ids, mask = pad([row for row, _ in picked], self.pad_id)
        return ids, mask, np.array([label for _, label in picked], dtype=np.int64)

    def loss(self, model: TextClassifier, batch, dropout_seed):
        ids, mask, labels = batch
        logits = model(ids, mask, dropout_seed)
        return F.cross_entropy(logits, labels), {"accuracy": float((logits.numpy().argmax(-1) == labels).mean())}

    def accuracy(self, model: TextClassifier, split: str = "val") -> float:
        """Accuracy over every record of a split."""
        rows, hits = self.data[split], 0
        for start in range(0, len(rows), 64):
            part = rows[start : start + 64]
            with no_grad():
                predicted = model(*pad([row for row, _ in part], self.pad_id)).numpy().argmax(-1)
            hits += int((predicted == np.array([label for _, label in part])).sum())
        return hits / len(rows)

    def tokens(self, batch) -> int:
        return int(batch[1].sum())

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "labels": self.labels, "counts": self.counts, "data": self.data_digest}
