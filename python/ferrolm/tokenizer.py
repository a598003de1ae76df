"""Tokenizers: byte-level BPE (GPT-2's, GPT-4's, Qwen2's, GPT-4o's or a regex pre-tokenizer),
WordPiece (BERT) and characters.

`Tokenizer` is implemented in Rust (`ferrolm._core`); this module adds the bundled default
corpus. Quick start::

    from ferrolm.tokenizer import Tokenizer, default_corpus
    tok = Tokenizer.train([default_corpus()], kind="bpe", vocab_size=4096)
    ids = tok.encode("To be, or not to be")
    assert tok.decode(ids) == "To be, or not to be"
    tok.save("tokenizer.json")          # loads in Hugging Face `tokenizers` too
"""

from __future__ import annotations


from ferrolm._core import PATTERNS, Tokenizer
from ferrolm.data import BUNDLED_CORPUS

__all__ = ["Tokenizer", "default_corpus", "KINDS", "PATTERNS"]

#: Model kinds accepted by `Tokenizer.train(kind=...)`.
KINDS = ("bpe", "wordpiece", "char")


def default_corpus() -> str:
    """Path of the corpus shipped with the package (tiny Shakespeare, 1.1 MB)."""
    return str(BUNDLED_CORPUS)
