"""Preference data: `{"prompt", "chosen", "rejected"}` records, read and written in one place.

Post-training (`ferrolm reward`, `ferrolm dpo`) reads preference data only through
`load_preferences`, which accepts either

* a JSONL file, one object per line with keys "prompt", "chosen" and "rejected" (extra keys
  such as "labeller" or "comment" are kept), as text, or in the conversational forms of TRL
  and Hugging Face: a "prompt" conversation ending with a user turn and one assistant message
  (or a text) as "chosen" and "rejected", or, with no prompt, two whole conversations that
  differ only in their last answer. The file is validated strictly: any bad line raises
  `ValueError` naming its line number, so no record is ever dropped silently; or
* a labelling database written by `ferrolm label` (SQLite). Ties and skips carry no
  preference and are left out; how many were left out, and why, is in `Preferences.skipped`.

`write_preferences` writes the JSONL form atomically (temporary file + rename), so a reader
never sees half a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Union

from ferrolm.jsonl import check_fields, is_sqlite, read_records, write_records

KEYS = ("prompt", "chosen", "rejected")


@dataclass
class Preferences:
    """Preference records plus a count of what was left out.

    `records` are dicts with at least "prompt" (a string, or a conversation ending with a user
    turn), "chosen" and "rejected" (non-empty strings, chosen != rejected). `skipped` maps a reason ("tie", "skip",
    "identical", "empty") to how many judgements of a labelling database were not turned
    into records; it is always empty for JSONL input, where a bad line is an error instead.
    """

    records: list[dict]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)


def load_preferences(path: Union[str, Path]) -> Preferences:
    """Reads preference data from a `.jsonl` file or a `ferrolm label` SQLite database.

    Raises FileNotFoundError for a missing file and ValueError for anything malformed
    (naming the line, for JSONL) — including a JSONL file with no records at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference data {path} does not exist")
    if is_sqlite(path):
        from ferrolm.label.store import LabelStore

        with LabelStore.open_existing(path) as store:
            return store.preferences()
    return Preferences([plain(r, r["_where"]) for r in read_records(path)])


def plain(record: object, where: str) -> dict:
    """`record` with its answers as texts ("chosen" and "rejected") and its "prompt" a text or
    a conversation ending with a user turn, from any of the accepted forms; ValueError
    (prefixed with `where`) unless it is a usable preference."""
    if not isinstance(record, dict) or not any(isinstance(record.get(k), list) for k in KEYS):
        check_fields(record, where, KEYS, allow_empty=("prompt",))
        return _distinct(record, where)
    from ferrolm.chat import checked_turns

    try:
        if "prompt" in record:
            prompt = checked_turns(record["prompt"], open_turn=True)
            chosen, rejected = (_answer(record.get(k), k) for k in ("chosen", "rejected"))
        else:  # the implicit prompt: what the two conversations share before their last answer
            conversations = [checked_turns(record.get(k, ()), open_turn=False) for k in ("chosen", "rejected")]
            if not all(conversations) or conversations[0][:-1] != conversations[1][:-1]:
                raise ValueError("without a 'prompt', 'chosen' and 'rejected' are two conversations that differ only in "
                                 "their last answer")
            prompt, chosen, rejected = conversations[0][:-1], conversations[0][-1]["content"], conversations[1][-1]["content"]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise ValueError(f"{where}: the {name} answer is empty")
    return _distinct({**record, "prompt": prompt, "chosen": chosen, "rejected": rejected}, where)


def _answer(value: object, name: str) -> str:
    """A conversational record's answer: a text, or a list of one assistant message."""
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    raise ValueError(f"{name!r} must be a text or a list of one {{'role': 'assistant', 'content': str}} message")


def _distinct(record: dict, where: str) -> dict:
    if record["chosen"] == record["rejected"]:
        raise ValueError(f"{where}: 'chosen' and 'rejected' are the same text (no preference)")
    return record


def write_preferences(records: Iterable[dict], path: Union[str, Path]) -> int:
    """Writes records as JSONL atomically (validated first); returns how many were written."""
    records = [plain(record, f"record {i}") for i, record in enumerate(records, 1)]
    return write_records(path, records)
