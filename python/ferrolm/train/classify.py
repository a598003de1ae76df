"""Text classification by fine-tuning a BERT encoder, as Hugging Face's
BertForSequenceClassification: the [CLS] hidden state through BERT's pooler, dropout, then a
linear head, trained with cross-entropy on {"text", "label"} records (with a "text_pair", the
two texts framed as the tokenizer frames pairs: [CLS] text [SEP] pair [SEP] for BERT). Saved in its layout too
(`classifier.*` beside `bert.*` in model.safetensors, `id2label` in config.json), so either
library loads the other's classifiers."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm._core import FormatError
from ferrolm.autograd import no_grad
from ferrolm.bert import BERT
from ferrolm.batching import encode_splits, length_batches, pad_right, real_tokens
from ferrolm.data import digest
from ferrolm.jsonl import require_count
from ferrolm.models import require_model

HEAD = ("classifier.weight", "classifier.bias")


class TextClassifier:
    """logits(text) = head(dropout(pooler([CLS] hidden state))) over `labels`. A BERT without a
    pooler gets a new one, as Hugging Face gives it.

    >>> bert = BERT.create(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    >>> TextClassifier(bert, ["neg", "pos"])(np.zeros((3, 5), dtype=np.int64), np.ones((3, 5), bool)).shape
    (3, 2)
    """

    def __init__(self, bert: BERT, labels: Sequence[str], head=None, seed: int = 0,
                 classifier_dropout: Optional[float] = None) -> None:
        require_model(bert, BERT, "a TextClassifier")
        labels = [str(label) for label in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"a classifier needs two or more distinct labels, got {labels}")
        if not bert.core.has_pooler:
            bert = BERT(bert.core.with_new_pooler(seed), bert.tokenizer)
        self.bert, self.labels = bert, labels
        #: Dropout before the head (Hugging Face's `classifier_dropout`); None: the encoder's rate.
        self.classifier_dropout = classifier_dropout
        if head is None:  # Hugging Face's initialisation: N(0, 0.02) weights, zero bias
            c = bert.config["hidden_size"]
            head = _core.Linear(c, len(labels), bias=True, seed=seed)
            head.weight.copy_(_core.randn(len(labels), c, std=0.02, seed=seed + 1))
            head.bias.copy_(np.zeros(len(labels), dtype=np.float32))
        self.head = head

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TextClassifier":
        """A classifier directory: saved by `save` or `ferrolm classify`, or a Hugging Face
        BertForSequenceClassification (labels from `id2label`, else LABEL_0, LABEL_1, ...)."""
        from ferrolm.jsonl import read_json_object
        from ferrolm.models import CONFIG_FILE, model_dir
        from ferrolm.nn import fill_parameters

        path = model_dir(path)
        try:
            head = _core.load_model_weights(str(path), list(HEAD))
        except FileNotFoundError:
            if _core.model_weights_files(path):  # a shard is missing
                raise
            head = {}  # no weights at all: said below (pytorch_model.bin alone raised a FormatError naming it)
        if set(head) != set(HEAD):
            raise FileNotFoundError(f"{path} is not a classifier: it has no classifier.weight and classifier.bias "
                                    "(train one with `ferrolm classify`)")
        config = read_json_object(path / CONFIG_FILE)
        # Other heads named classifier.* (tokens', multiple choice's) score something else.
        architectures = config.get("architectures") or ["BertForSequenceClassification"]
        architectures = architectures if isinstance(architectures, list) else [architectures]
        if "BertForSequenceClassification" not in architectures:
            raise NotATextClassifier(f"{path} is a {', '.join(map(str, architectures))}, not a "
                                     "BertForSequenceClassification: its classifier head does not classify texts")
        if config.get("problem_type") not in (None, "single_label_classification"):
            raise NotATextClassifier(f"{path}: problem_type {config['problem_type']!r} is not supported (single-label only)")
        count = head[HEAD[0]].shape[0]
        if count < 2:
            raise NotATextClassifier(f"{path}: a head of {count} output (regression, num_labels 1) is not supported "
                                     "(single-label classification into two or more labels only)")
        labels = [str(name) for name in _label_names(config.get("id2label"), count, path, config.get("num_labels"))]
        bert = BERT.load(path)
        if not bert.core.has_pooler:  # the head reads the pooler's output: a new one would make it guess
            raise NotATextClassifier(f"{path} has a classifier head but no pooler (bert.pooler.dense.*) to read it from")
        model = cls(bert, labels, classifier_dropout=config.get("classifier_dropout"))
        fill_parameters(dict(model.head.named_parameters()), {k.removeprefix("classifier."): v for k, v in head.items()},
                        path)
        return model

    def save(self, path: Union[str, Path]) -> None:
        """Writes the directory in Hugging Face's layout (its files together: `model_files`)."""
        from ferrolm.atomic import write_json
        from ferrolm.models import CONFIG_FILE, TOKENIZER_FILE, model_files, write_hf_tokenizer_files

        with model_files(path) as files:
            tensors = {**dict(self.bert.named_parameters()), **{f"classifier.{n}": t for n, t in self.head.named_parameters()}}
            _core.save_safetensors(str(files / "model.safetensors"), tensors, {"format": "pt"})
            write_json(files / CONFIG_FILE, {**self.bert.config, "architectures": ["BertForSequenceClassification"],
                                             "id2label": dict(enumerate(self.labels)),
                                             "label2id": {label: i for i, label in enumerate(self.labels)},
                                             "classifier_dropout": self.classifier_dropout})
            if self.bert.tokenizer is not None:
                self.bert.tokenizer.save(str(files / TOKENIZER_FILE))
            write_hf_tokenizer_files(files, self.bert.tokenizer, self.bert.config)

    def relabelled(self, labels: Sequence[str]) -> Optional["TextClassifier"]:
        """This classifier, head and all, for `labels` in another order (the head's rows
        reordered to match), or for the integer labels 0, 1, ... when its own are Hugging Face's
        default names LABEL_0, LABEL_1, ... (as GLUE's data meets a checkpoint saved without
        id2label); None when they are other labels."""
        labels = [str(label) for label in labels]
        own = self.labels
        if own == [f"LABEL_{i}" for i in range(len(own))] and labels == [str(i) for i in range(len(own))]:
            own = labels
        if sorted(own) != sorted(labels):
            return None
        rows = np.array([own.index(label) for label in labels])
        head = _core.Linear(self.head.weight.shape[1], len(labels), bias=True, seed=0)
        with no_grad():
            head.weight.copy_(self.head.weight.numpy()[rows])
            head.bias.copy_(self.head.bias.numpy()[rows])
        return TextClassifier(self.bert, labels, head=head, classifier_dropout=self.classifier_dropout)

    def named_parameters(self):
        return self.bert.named_parameters() + [(f"classifier.{n}", t) for n, t in self.head.named_parameters()]

    def __call__(self, ids: np.ndarray, mask: np.ndarray, token_type_ids=None, *, dropout_seed=None):
        """Logits [B, labels] for right-padded ids [B, T] whose real tokens `mask` marks, with
        their token type ids (a pair's: 0 for the first text, 1 for the second; None: all 0).
        A `dropout_seed` turns on training-mode dropout."""
        h = self.bert.hidden(ids, token_type_ids=token_type_ids, attention_mask=mask, dropout_seed=dropout_seed)
        pooled = self.bert.core.pooled(h)
        if dropout_seed is not None:
            rate = self.bert.config["hidden_dropout_prob"] if self.classifier_dropout is None else self.classifier_dropout
            pooled = F.dropout(pooled, rate, seed=dropout_seed ^ 0xC1A55)
        return self.head(pooled)

    def classify(self, texts: Sequence[str], batch_size: int = 32, *, pairs: Optional[Sequence[str]] = None,
                 truncate: bool = False) -> list[dict]:
        """For each text (and its pair, if `pairs` is given), {"label", "score"} (the most probable
        label and its probability) and "scores" (every label's probability), as Hugging Face's
        text-classification pipeline. Texts go through the model `batch_size` at a time, grouped
        by length. One longer than the model's context raises ValueError, or with `truncate=True`
        loses its end (a pair, its longer text's), as the pipeline's `truncation=True`."""
        if isinstance(texts, str) or isinstance(pairs, str):
            raise TypeError("classify takes a list of texts (and of pairs)")
        if self.bert.tokenizer is None:  # an AttributeError on None's encode, later
            raise ValueError("this classifier has no tokenizer to encode texts with: attach one "
                             "(classifier.bert.tokenizer = fl.Tokenizer.from_file(...))")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(pairs)} pairs for {len(texts)} texts")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rows = [encode_text(self.bert.tokenizer, t, self.bert.max_len, f"text {i}", None if pairs is None else pairs[i],
                            truncate=truncate) for i, t in enumerate(texts)]
        probs = np.empty((len(rows), len(self.labels)), dtype=np.float32)
        for picked in length_batches([len(r[0]) for r in rows], batch_size):
            with no_grad():
                probs[picked] = F.softmax(self(*pad([rows[i] for i in picked], self.bert.tokenizer.pad_id))).numpy()
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {label: float(q) for label, q in zip(self.labels, p)}} for p in probs]


class NotATextClassifier(ValueError):
    """A directory whose head is not one `TextClassifier` runs (another task's, a regression's,
    one without its pooler): its encoder may still start a classifier."""


def _label_names(id2label, count: int, path, num_labels=None) -> list:
    """A classifier config's `id2label` (a {"0": name} object, or a list of names) for `count`
    outputs; Hugging Face's LABEL_i where it names none, or, as there, where it names another
    number of outputs than a `num_labels` that fits the head says (warned)."""
    if isinstance(id2label, list):
        id2label = dict(enumerate(id2label))
    if not isinstance(id2label, (dict, type(None))):
        raise ValueError(f"{path}: config.json's id2label must map output indices to label names, got "
                         f"{type(id2label).__name__}")
    named = {str(k): v for k, v in (id2label or {}).items()}
    if named and set(named) != {str(i) for i in range(count)}:
        if num_labels != count or len(named) == count:  # (Hugging Face refuses the first: a size mismatch)
            raise FormatError(f"{path}: config.json's id2label names outputs {sorted(named, key=str)}, but the "
                              f"classifier head has {count}: the labels would be misnamed")
        warnings.warn(f"{path}: config.json's id2label names outputs {sorted(named, key=str)}, but num_labels and the "
                      f"head say {count}: the labels are named LABEL_0 to LABEL_{count - 1}, as in Hugging Face",
                      stacklevel=3)
        named = {}
    return [named.get(str(i), f"LABEL_{i}") for i in range(count)]


class TooLong(ValueError):
    """A text with more tokens than the model's context."""


def encode_text(tokenizer, text: str, max_len: int, where: str, pair: Optional[str] = None,
                truncate: bool = False) -> tuple[list, list]:
    """The ids of a text, or of a text and its pair, and their token type ids; cut to `max_len`
    as Hugging Face's truncation cuts them with `truncate`, else TooLong beyond it."""
    limit = max_len if truncate else None
    try:
        if pair is None:
            ids, types = tokenizer.encode(text, max_length=limit), None
        else:
            ids, types = tokenizer.encode_pair(text, pair, max_length=limit)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if len(ids) > max_len:
        raise TooLong(f"{where} has {len(ids)} tokens, more than the {max_len} allowed (the model's context, or "
                      "--max-length)")
    if not ids:
        raise ValueError(f"{where} has no tokens")
    return ids, types or [0] * len(ids)


def pad(rows: list[tuple[list, list]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded ids [B, T], the mask of their real tokens, and their token type ids."""
    ids, lengths = pad_right([r for r, _ in rows], pad_id)
    types, _ = pad_right([t for _, t in rows], 0)
    return ids, real_tokens(lengths, ids.shape[1]), types


def labels_of(records: Sequence[dict]) -> list[str]:
    """The records' labels (an integer and its string are one label), sorted: as numbers when
    all are integers, else as strings."""
    found = {str(r["label"]) for r in records}
    if all(re.fullmatch(r"-?\d+", label) for label in found):
        return sorted(found, key=lambda label: (int(label), label))  # "01" before "1": one order every run
    return sorted(found)


class Classification:
    """Cross-entropy training of a TextClassifier on {"text", "label"} records (and
    "text_pair"); `labels` in the classifier's order (`labels_of(records)` for a new one).
    Records longer than `max_len` tokens raise TooLong, are left out (`skip_long`), or lose
    their end (`truncate`: a pair, its longer text's first, as Hugging Face's run_glue)."""

    kind = "classify"
    trains = TextClassifier

    def __init__(self, train, val, tokenizer, labels: Sequence[str], max_len: int, batch_size: int,
                 skip_long: bool = False, truncate: bool = False) -> None:
        if skip_long and truncate:
            raise ValueError("skip_long and truncate exclude each other: long texts are either left out or cut")
        require_count("batch_size", batch_size)
        self.labels, self.batch_size, self.pad_id = list(labels), batch_size, tokenizer.pad_id
        index = {label: i for i, label in enumerate(self.labels)}

        def encode(records):
            rows, skipped = [], 0
            for r in records:
                label = str(r["label"])
                if label not in index:
                    raise ValueError(f"{r.get('_where', 'a record')}: label {label!r} is not one of {self.labels}")
                try:
                    where = r.get("_where", "a record")
                    rows.append((encode_text(tokenizer, r["text"], max_len, where, r.get("text_pair"), truncate),
                                 index[label]))
                except TooLong as e:
                    if not skip_long:
                        raise TooLong(f"{e}; --truncate (truncate=True) cuts such texts, --skip-long (skip_long=True) "
                                      "leaves them out") from None
                    skipped += 1
            return rows, {"skipped_too_long": skipped}

        self.data, self.counts = encode_splits(train, val, encode, f"texts fit the context of {max_len} tokens")
        self.data_digest = digest(self.data)
        trained = {label for _, label in self.data["train"]}
        untrained = [label for i, label in enumerate(self.labels) if i not in trained]
        if untrained:  # left to the held-out split, or out as too long: the head learns never to say them
            many = len(untrained) > 1
            warnings.warn(f"{'labels' if many else 'label'} {', '.join(map(repr, untrained))} "
                          f"{'have' if many else 'has'} no training text (only held out, or left out as too long): "
                          f"the classifier never trains on {'them' if many else 'it'} (give more examples of each)",
                          stacklevel=2)

    def batch(self, split, rng):
        picked = [self.data[split][i] for i in rng.integers(0, len(self.data[split]), size=self.batch_size)]
        ids, mask, types = pad([row for row, _ in picked], self.pad_id)
        return ids, mask, types, np.array([label for _, label in picked], dtype=np.int64)

    def loss(self, model: TextClassifier, batch, dropout_seed):
        ids, mask, types, labels = batch
        logits = model(ids, mask, types, dropout_seed=dropout_seed)
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
