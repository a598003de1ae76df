"""Token data for training: corpora tokenised once into uint16/uint32 files read by memmap,
and seeded random windows over them (nanoGPT's `get_batch`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

BUNDLED_CORPUS = Path(__file__).parent / "corpora" / "tinyshakespeare.txt"


def read_corpus(paths: Sequence[str | Path] | None = None) -> str:
    """The text of the given files joined by newlines, or the bundled tiny Shakespeare."""
    if not paths:
        return BUNDLED_CORPUS.read_text(encoding="utf-8")
    texts = []
    for p in paths:
        try:
            texts.append(Path(p).read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{p} is not valid UTF-8 text: {e}") from None
    return "\n".join(texts)


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def prepare_tokens(text: str, tokenizer, directory: Path, val_fraction: float = 0.1) -> dict:
    """Tokenises `text` and writes `train.bin` / `val.bin` (the first 1 − val_fraction of the
    text for training, the rest for validation, as nanoGPT) plus `meta.json` into `directory`."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    directory.mkdir(parents=True, exist_ok=True)
    split = int(len(text) * (1.0 - val_fraction))
    dtype = token_dtype(tokenizer.vocab_size)
    meta = {"vocab_size": tokenizer.vocab_size, "dtype": np.dtype(dtype).name}
    for name, part in (("train", text[:split]), ("val", text[split:])):
        ids = np.asarray(tokenizer.encode_array(part), dtype=dtype)
        tmp = directory / f".{name}.bin.tmp"
        ids.tofile(tmp)
        tmp.replace(directory / f"{name}.bin")
        meta[f"{name}_tokens"] = int(ids.size)
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def load_tokens(directory: Path, split: str) -> np.ndarray:
    """A read-only memmap of `split`.bin written by `prepare_tokens`."""
    meta = json.loads((directory / "meta.json").read_text())
    return np.memmap(directory / f"{split}.bin", dtype=meta["dtype"], mode="r")


class Windows:
    """Random contiguous windows of `block_size + 1` tokens: inputs and next-token targets."""

    def __init__(self, tokens: np.ndarray, block_size: int) -> None:
        if len(tokens) <= block_size:
            raise ValueError(f"only {len(tokens)} tokens: need more than block_size={block_size} for one window")
        self.tokens = tokens
        self.block_size = block_size

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        starts = rng.integers(0, len(self.tokens) - self.block_size, size=batch_size)
        rows = np.stack([np.asarray(self.tokens[s : s + self.block_size + 1], dtype=np.int64) for s in starts])
        return rows[:, :-1], rows[:, 1:]
