"""Token data for training: corpora tokenised once into uint16/uint32 files read by memmap,
and seeded random windows over them (nanoGPT's `get_batch`)."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ferrolm.atomic import atomic_file, write_json
from ferrolm.jsonl import is_count, read_json_object

BUNDLED_CORPUS = Path(__file__).parent / "corpora" / "tinyshakespeare.txt"


def read_corpus(paths: Sequence[str | Path] | None = None) -> str:
    """The text of the given files joined by newlines, or the bundled tiny Shakespeare."""
    return "\n".join(read_text(p) for p in corpus_files(paths))


def corpus_files(paths: Sequence[str | Path] | None = None) -> list[Path]:
    """The given files, or the bundled tiny Shakespeare."""
    return [Path(p) for p in paths] if paths else [BUNDLED_CORPUS]


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents as they are (line ends too: the tokenizer trainer reads the
    same bytes); anything else is a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        utf16 = e.object[:2] in (b"\xff\xfe", b"\xfe\xff")  # its byte-order mark (Windows' "Unicode" text)
        hint = f" (it is UTF-16: convert it, e.g. iconv -f UTF-16 -t UTF-8 {path})" if utf16 else ""
        raise ValueError(f"{path} is not valid UTF-8 text{hint}: {e}") from None


def digest(value) -> str:
    """A short fingerprint of JSON-able data (lists of ids, records): what an objective's
    `state()["data"]` holds, so a resumed run can tell that its data changed."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def files_digest(*paths: str | Path) -> str:
    """sha256 of the files' bytes, one after another, read a MiB at a time."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


#: Characters per encode call: bounds the memory of ids in flight, and Ctrl-C is seen between calls
#: (a text its tokenizer may not cut is encoded whole: see `_pieces`).
PIECE = 1 << 22
#: Where a text may be cut without changing its tokens, by the tokenizer's `safe_cuts` (decided in
#: the core, which knows its pre-tokenizer and added tokens): before a space, or after a newline,
#: that non-space characters stand on both sides of (but a slash: o200k's punctuation pieces take
#: the line breaks and slashes after them); with add_prefix_space, before such a space only.
_BEFORE_SPACE = r"(?<=\S)(?= \S)"
SAFE_CUTS = {"spaces and line breaks": re.compile(_BEFORE_SPACE + r"|(?<=\S\n)(?=[^\s/])"),
             "spaces": re.compile(_BEFORE_SPACE)}


def prepare_tokens(text: str, tokenizer, directory: str | Path, val_fraction: float = 0.1) -> dict:
    """Tokenises `text` and writes `train.bin` / `val.bin` (the first 1 − val_fraction of the
    text for training, the rest for validation, as nanoGPT) plus `meta.json` into `directory`."""
    return _prepare_one(text, None, tokenizer, directory, val_fraction)


def _prepare_one(text: str, file: Path | None, tokenizer, directory: str | Path, val_fraction: float) -> dict:
    """`prepare_tokens` of the text of `file` (named in errors), or of no file."""
    if not text:
        raise ValueError("the corpus is empty: there is nothing to train on")
    _check_fraction(val_fraction)
    return _prepare([(text, int(len(text) * (1.0 - val_fraction)), file)], tokenizer, directory)


def prepare_files(paths: Sequence[str | Path], tokenizer, directory: str | Path, val_fraction: float = 0.1) -> dict:
    """`prepare_tokens` for text files, read one at a time. One file is split as nanoGPT splits
    it; of several, each is split near its last val_fraction after a line end or, where none is
    within half the val share of that point (a file of one or a few long lines), before a space
    (so every file is in both splits, about val_fraction in validation, and no word is cut); a file of
    one word goes whole to training, or, file index i with i % max(round(1 / val_fraction), 2)
    at its largest, to validation. Files are separated by the tokenizer's <|endoftext|>, else
    its [SEP] or </s>, else a newline. Check the files first with `check_files`."""
    _check_fraction(val_fraction)
    files = [Path(p) for p in paths]
    if len(files) == 1:
        return _prepare_one(read_text(files[0]), files[0], tokenizer, directory, val_fraction)
    texts = ((read_text(f), f) for f in files)
    parts = ((t, _line_split(t, i, val_fraction), f) for i, (t, f) in enumerate(texts))
    return _prepare(parts, tokenizer, directory)


def check_paths(paths: Sequence[str | Path]) -> None:
    """Raises ValueError unless every path is a file and some file has bytes (FileNotFoundError
    for a missing one), without reading them. A pipe (`<(...)`, /dev/stdin) may have bytes: its
    size says nothing."""
    for p in paths:
        if Path(p).is_dir():
            raise ValueError(f"{p} is a directory: give its text files ({Path(p) / '*.txt'})")
    sizes = [Path(p).stat() for p in paths]  # a list: every file is looked at
    if not any(s.st_size or not stat.S_ISREG(s.st_mode) for s in sizes):
        raise ValueError("the corpus is empty: there is nothing to train on")


def check_files(paths: Sequence[str | Path]) -> None:
    """`check_paths`, and ValueError unless every file is a regular file (they are read more than
    once: a pipe would be empty the second time) of UTF-8 text and some file has any, reading one
    file at a time."""
    check_paths(paths)
    for p in paths:
        if not Path(p).is_file():
            raise ValueError(f"{p} is not a regular file (a pipe?): the corpus is read more than once, so save it to "
                             "a file first")
    if not any([len(read_text(p)) for p in paths]):  # a list: every file is read
        raise ValueError("the corpus is empty: there is nothing to train on")


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")


def _line_split(text: str, index: int, val_fraction: float) -> int:
    """Where file `index` of several is split (see `prepare_files`)."""
    at = int(len(text) * (1.0 - val_fraction))
    lo, hi = len(text) - len(text.lstrip()), len(text.rstrip())  # the text inside its outer whitespace
    # A line end may move the cut by half the validation share at most: a heading followed by a
    # long paragraph line put the whole paragraph in validation.
    slack = len(text) * val_fraction / 2
    for mark, offset, reach in (("\n", 1, slack), (" ", 0, len(text))):  # after a line end, else before a space
        after, before = text.find(mark, max(at, lo + 1), hi), text.rfind(mark, lo + 1, min(at, hi))
        if after >= 0 or before >= 0:  # the one nearer the target, with text on both sides
            cut = after if before < 0 or 0 <= after - at <= at - before else before
            if abs(cut - at) <= reach:
                return offset + cut
    period = max(round(1 / val_fraction), 2)
    return 0 if index % period == period - 1 else len(text)


def _prepare(parts: Iterable[tuple[str, int, Path | None]], tokenizer, directory: str | Path) -> dict:
    """Writes the token files of (text, where its validation part begins, its file) triples."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    meta = {"vocab_size": tokenizer.vocab_size, "dtype": np.dtype(dtype).name}
    # The old meta.json goes first: tokens half-written by an interrupted run must not pass
    # for the data a checkpoint's digest names (meta.json is written last, with the new one).
    (directory / "meta.json").unlink(missing_ok=True)
    separator = np.asarray(_separator(tokenizer), dtype=dtype)
    count, hashes = {"train": 0, "val": 0}, {"train": hashlib.sha256(), "val": hashlib.sha256()}
    unk, unknown, encoded = _unknown_id(tokenizer), 0, 0
    with atomic_file(directory / "train.bin", binary=True) as train, atomic_file(directory / "val.bin", binary=True) as val:
        out = {"train": train, "val": val}

        def write(split: str, ids: np.ndarray) -> None:
            try:
                ids.tofile(out[split])
            except OSError as e:  # numpy's own words name no file and no cause ("180000 requested and 51200 written")
                raise OSError(f"writing {directory / split}.bin: {e.strerror or e} (is the disk full, or a file size "
                              "limit reached: ulimit -f?)") from None
            hashes[split].update(ids)
            count[split] += ids.size

        for text, split, file in parts:
            for name, begin, end in (("train", 0, split), ("val", split, len(text))):
                if count[name] and begin < end:
                    write(name, separator)
                for piece in _pieces(text, begin, end, tokenizer):
                    try:
                        ids = tokenizer.encode_array(piece, add_special_tokens=False)
                    except ValueError as e:  # a character the vocabulary lacks, say: in which file
                        if file is None:
                            raise
                        raise ValueError(f"{file}: {e}") from None
                    write(name, np.asarray(ids, dtype=dtype))
                    encoded += len(ids)
                    unknown += int(np.count_nonzero(np.asarray(ids) == unk)) if unk is not None else 0
        _check_unknown(unknown, encoded)  # refused before the files are in place
    meta.update(train_tokens=count["train"], val_tokens=count["val"])
    # Identifies the data for resume (see data_digest).
    meta["digest"] = _tokens_digest(hashes["train"].digest(), hashes["val"].digest())
    write_json(directory / "meta.json", meta)
    return meta


def _unknown_id(tokenizer) -> int | None:
    """The id text the vocabulary lacks becomes (WordPiece's [UNK], SentencePiece's <unk>)."""
    return next((tokenizer.special_tokens[t] for t in ("[UNK]", "<unk>") if t in tokenizer.special_tokens), None)


def _check_unknown(unknown: int, total: int) -> None:
    """Refuses a corpus the tokenizer encodes to [UNK] alone (a script its vocabulary lacks:
    a model would learn to predict [UNK], its loss near 0), and says when most of it is."""
    if total and unknown == total:
        raise ValueError("the tokenizer encodes this corpus to [UNK] alone: its vocabulary lacks the corpus's text "
                         "(train a tokenizer on it: --tokenizer bpe or wordpiece)")
    if total and unknown / total > 0.5:
        warnings.warn(f"{unknown / total:.0%} of the corpus's tokens are [UNK]: the tokenizer lacks most of its text",
                      stacklevel=3)


def _tokens_digest(train: bytes, val: bytes) -> str:
    """The data's fingerprint, from the sha256 of each split's token bytes."""
    return hashlib.sha256(train + val).hexdigest()[:32]


def _token_file(directory: Path, split: str) -> Path:
    path = directory / f"{split}.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run's tokens are incomplete (prepare them again: a new run "
                                "does)")
    return path


def check_token_files(directory: str | Path) -> None:
    """ValueError unless the token files of `directory` hold what `prepare_tokens` wrote: their
    bytes hashed again (about 0.1 s per 100 MB), against meta.json's digest."""
    directory = Path(directory)
    recorded = data_digest(directory)
    hashed = [bytes.fromhex(files_digest(_token_file(directory, split))) for split in ("train", "val")]
    if recorded is not None and _tokens_digest(*hashed) != recorded:
        raise ValueError(f"the token files in {directory} changed since they were prepared (edited?): a run resumed "
                         "on them would not continue the same run (start a new run, which prepares them again)")


def _separator(tokenizer) -> list[int]:
    """What goes between documents: <|endoftext|> (nanoGPT puts GPT-2's there), else BERT's
    [SEP] or RoBERTa's </s>, else a newline if the tokenizer has one."""
    for token in ("<|endoftext|>", "[SEP]"):
        if tokenizer.token_to_id(token) is not None:
            return [tokenizer.token_to_id(token)]
    if "</s>" in tokenizer.special_tokens:  # only special: "</s>" is also HTML's strike-through end tag
        return [tokenizer.special_tokens["</s>"]]
    try:
        return list(tokenizer.encode("\n", add_special_tokens=False))
    except ValueError:  # a character vocabulary without "\n"
        return []


def _pieces(text: str, begin: int, end: int, tokenizer) -> Iterator[str]:
    """text[begin:end] in pieces of about PIECE characters, cut where the tokens of the pieces
    are those of the whole (SAFE_CUTS). A text that may not be cut (a user's regex, an added token
    that holds or strips white space) is one piece, whose encoding (`encode_array`) a user's
    regex ends at Ctrl-C; the built-in patterns encode ~100 MB/s."""
    cuts = SAFE_CUTS.get(tokenizer.safe_cuts)
    if cuts is None:
        yield text[begin:end]
        return
    while begin < end:
        cut = cuts.search(text, begin + PIECE, end) if end - begin > PIECE else None
        stop = cut.start() if cut else end
        yield text[begin:stop]
        begin = stop


def _meta(directory: Path) -> dict:
    """meta.json, checked: the token files are read with the dtype it names, so anything but
    what `prepare_tokens` writes (uint16/uint32, as the vocabulary needs) is refused."""
    path = directory / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tokens there were never prepared, or their preparation "
                                "was interrupted (prepare them again with a new run)")
    meta = read_json_object(path)
    for key in ("vocab_size", "train_tokens", "val_tokens"):
        if not is_count(meta.get(key)):
            raise ValueError(f"{path}: {key!r} must be a non-negative integer, got {meta.get(key)!r}")
    expected = np.dtype(token_dtype(meta["vocab_size"])).name
    if meta.get("dtype") != expected:
        raise ValueError(f"{path}: dtype {meta.get('dtype')!r} is not the {expected} that a vocabulary of "
                         f"{meta['vocab_size']} tokens is stored as")
    return meta


def data_digest(directory: str | Path) -> str | None:
    """The fingerprint `prepare_tokens` recorded of a token directory (None for older ones)."""
    return _meta(Path(directory)).get("digest")


def load_tokens(directory: str | Path, split: str) -> np.ndarray:
    """A read-only memmap of `split`.bin written by `prepare_tokens`, checked against its
    meta.json (ids beyond a model's vocabulary are refused by the model itself)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    directory = Path(directory)
    meta = _meta(directory)
    path = _token_file(directory, split)
    dtype = np.dtype(meta["dtype"])
    if meta[f"{split}_tokens"] == 0:
        raise ValueError(f"the {split} split in {directory} has no tokens: the corpus is too short for it "
                         "(give more text, or another val_fraction / --val-fraction)")
    if path.stat().st_size != meta[f"{split}_tokens"] * dtype.itemsize:
        raise ValueError(f"{path} holds {path.stat().st_size} bytes, not the {meta[f'{split}_tokens']} "
                         f"{dtype.name} tokens its meta.json records (truncated or replaced?)")
    return np.memmap(path, dtype=dtype, mode="r")


class Windows:
    """Random contiguous windows of `block_size + 1` tokens: inputs and next-token targets."""

    def __init__(self, tokens: np.ndarray, block_size: int, name: str = "the data") -> None:
        if len(tokens) <= block_size:
            raise ValueError(f"{name} has only {len(tokens)} tokens: need more than block_size={block_size} for one "
                             "window (give more text, a smaller block size, or another val_fraction / --val-fraction)")
        self.tokens = tokens
        self.block_size = block_size

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        starts = rng.integers(0, len(self.tokens) - self.block_size, size=batch_size)
        rows = np.stack([np.asarray(self.tokens[s : s + self.block_size + 1], dtype=np.int64) for s in starts])
        return rows[:, :-1], rows[:, 1:]


class MlmCollator:
    """BERT's masking: choose `mask_prob` of the non-special, non-padding tokens (or, with
    `whole_word`, of the words, a word being a piece plus its `##` continuations); of those,
    80% become [MASK], 10% a random token, 10% stay. Labels are the original ids at chosen
    positions and -100 elsewhere. Masks are drawn from the caller's RNG, so every epoch sees
    fresh ones and runs are reproducible."""

    def __init__(self, tokenizer, mask_prob: float = 0.15, whole_word: bool = False) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        specials = tokenizer.special_tokens
        for name in ("[CLS]", "[SEP]", "[MASK]", "[PAD]"):
            if name not in specials:
                raise ValueError(f"MLM needs a tokenizer with {name} (a WordPiece/BERT vocabulary)")
        self.cls, self.sep, self.mask, self.pad = (specials[n] for n in ("[CLS]", "[SEP]", "[MASK]", "[PAD]"))
        self.special_ids = np.array(sorted(specials.values()), dtype=np.int64)
        self.vocab_size = tokenizer.vocab_size
        self.mask_prob = mask_prob
        self.whole_word = whole_word
        if whole_word:
            vocab = tokenizer.get_vocab()
            self.continuation = np.zeros(self.vocab_size, dtype=bool)
            for token, i in vocab.items():
                self.continuation[i] = token.startswith("##")

    def pack(self, segments: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        """[CLS] A [SEP] (B [SEP]) with token types 0 for A and 1 for B."""
        ids, types = [self.cls], [0]
        for segment_type, seg in enumerate(segments):
            ids += list(seg) + [self.sep]
            types += [segment_type] * (len(seg) + 1)
        return ids, types

    def __call__(self, examples: Sequence[tuple[list[int], list[int]]], rng: np.random.Generator) -> dict:
        """Pads packed (ids, token types) examples and masks them: a dict of [B, T] arrays
        ids, token_type_ids, attention_mask (bool) and labels."""
        length = max(len(ids) for ids, _ in examples)
        b = len(examples)
        ids = np.full((b, length), self.pad, dtype=np.int64)
        types = np.zeros((b, length), dtype=np.int64)
        attention = np.zeros((b, length), dtype=bool)
        for i, (x, t) in enumerate(examples):
            ids[i, : len(x)], types[i, : len(x)], attention[i, : len(x)] = x, t, True
        candidates = attention & ~np.isin(ids, self.special_ids)
        if self.whole_word:
            # A word starts at a candidate that is not a continuation, or that follows a special
            # token (a segment never continues the previous one's word); its pieces share its draw.
            after_special = np.pad(~candidates[:, :-1], ((0, 0), (1, 0)), constant_values=True)
            units = candidates & (~self.continuation[ids] | after_special)  # word starts
            word = np.maximum.accumulate(np.where(units, np.arange(length)[None, :], -1), axis=1)

            def spread(picked):  # every piece of the words whose start is picked
                return candidates & (word >= 0) & np.take_along_axis(picked & units, np.maximum(word, 0), axis=1)
        else:
            units = candidates

            def spread(picked):
                return picked & units
        chosen = spread(rng.random(ids.shape) < self.mask_prob)
        if not chosen.any() and units.any():
            # A small batch can draw nothing; one token (word) is then chosen, or its loss would
            # be a zero averaged into the training signal and the evaluation.
            picked = np.zeros_like(units)
            picked.flat[rng.choice(np.flatnonzero(units))] = True
            chosen = spread(picked)
        labels = np.where(chosen, ids, -100)
        action = rng.random(ids.shape)
        masked = ids.copy()
        masked[chosen & (action < 0.8)] = self.mask
        random_spot = chosen & (action >= 0.8) & (action < 0.9)
        masked[random_spot] = rng.integers(0, self.vocab_size, size=int(random_spot.sum()))
        return {"ids": masked, "token_type_ids": types, "attention_mask": attention, "labels": labels}
