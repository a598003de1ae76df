"""Type stubs for the Rust extension `ferrolm._core` (kept by hand)."""

# ---------------------------------------------------------------- tokenizers (issue 3) — begin

from os import PathLike
from typing import Any, Collection, Iterable, Literal, Optional, Sequence, Union, final

import numpy as np
import numpy.typing as npt

_Text = Union[str, bytes]
_Path = Union[str, PathLike]
_Ids = Union[Sequence[int], npt.NDArray[np.integer]]
_Allowed = Union[Literal["all", "none"], Collection[str], None]

@final
class Tokenizer:
    """Byte-level BPE, WordPiece or character tokenizer; reads and writes HF tokenizer.json."""

    @staticmethod
    def from_file(path: _Path) -> Tokenizer: ...
    @staticmethod
    def from_str(json: str) -> Tokenizer: ...
    @staticmethod
    def from_vocab_merges(vocab: _Path, merges: _Path, pattern: str = "gpt2") -> Tokenizer: ...
    @staticmethod
    def from_bert_vocab(
        path: _Path,
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
    ) -> Tokenizer: ...
    @staticmethod
    def train(
        files: Sequence[_Path],
        *,
        kind: Literal["bpe", "wordpiece", "char"] = "bpe",
        vocab_size: int = 32000,
        min_frequency: int = 0,
        special_tokens: Optional[Sequence[str]] = None,
        pattern: str = "gpt2",
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        limit_alphabet: Optional[int] = None,
    ) -> Tokenizer: ...
    @staticmethod
    def train_from_iterator(
        iterator: Iterable[_Text],
        *,
        kind: Literal["bpe", "wordpiece", "char"] = "bpe",
        vocab_size: int = 32000,
        min_frequency: int = 0,
        special_tokens: Optional[Sequence[str]] = None,
        pattern: str = "gpt2",
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        limit_alphabet: Optional[int] = None,
    ) -> Tokenizer: ...
    def save(self, path: _Path) -> None: ...
    def to_str(self) -> str: ...
    def encode(
        self,
        text: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: Literal["raise", "text"] = "raise",
        add_special_tokens: bool = True,
    ) -> list[int]: ...
    def encode_array(
        self,
        text: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: Literal["raise", "text"] = "raise",
        add_special_tokens: bool = True,
    ) -> npt.NDArray[np.uint32]: ...
    def encode_with_offsets(
        self,
        text: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: Literal["raise", "text"] = "raise",
        add_special_tokens: bool = True,
    ) -> tuple[list[int], list[tuple[int, int]]]: ...
    def encode_batch(
        self,
        texts: Sequence[_Text],
        *,
        allowed_special: _Allowed = None,
        disallowed_special: Literal["raise", "text"] = "raise",
        add_special_tokens: bool = True,
        num_threads: Optional[int] = None,
    ) -> list[list[int]]: ...
    def encode_batch_padded(
        self,
        texts: Sequence[_Text],
        *,
        max_length: Optional[int] = None,
        padding: Literal["longest", "max_length"] = "longest",
        truncation: bool = True,
        pad_id: Optional[int] = None,
        allowed_special: _Allowed = None,
        disallowed_special: Literal["raise", "text"] = "raise",
        add_special_tokens: bool = True,
        num_threads: Optional[int] = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]: ...
    def decode(self, ids: _Ids, *, skip_special_tokens: bool = False) -> str: ...
    def decode_bytes(self, ids: _Ids, *, skip_special_tokens: bool = False) -> bytes: ...
    def decode_batch(
        self, batch: Iterable[_Ids], *, skip_special_tokens: bool = False, num_threads: Optional[int] = None
    ) -> list[str]: ...
    def pre_tokenize(self, text: _Text) -> list[str]: ...
    def token_to_id(self, token: str) -> Optional[int]: ...
    def id_to_token(self, id: int) -> Optional[str]: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def kind(self) -> Literal["bpe", "wordpiece", "char"]: ...
    @property
    def special_tokens(self) -> dict[str, int]: ...
    @property
    def pad_id(self) -> int: ...
    def get_vocab(self) -> dict[str, int]: ...
    def add_special_tokens(self, tokens: Sequence[str]) -> int: ...
    def __len__(self) -> int: ...
    def __reduce__(self) -> tuple[Any, tuple[str]]: ...

# ---------------------------------------------------------------- tokenizers (issue 3) — end
