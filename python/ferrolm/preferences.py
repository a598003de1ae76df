"""Preference data: `{"prompt", "chosen", "rejected"}` records, read and written in one place.

Post-training (`ferrolm reward`, `ferrolm dpo`) reads preference data only through
`load_preferences`, which accepts either

* a JSONL file, one object per line with keys "prompt", "chosen" and "rejected" (extra keys
  such as "labeller" or "comment" are kept), as texts or in TRL's conversational forms (see
  `ferrolm.conversations`). The file is validated strictly: any bad line raises `ValueError`
  naming its line number, so no record is ever dropped silently; or
* a labelling database written by `ferrolm label` (SQLite). Ties and skips carry no
  preference and are left out; how many were left out, and why, is in `Preferences.skipped`.

`write_preferences` writes the JSONL form atomically (temporary file + rename), so a reader
never sees half a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Union

from ferrolm.conversations import preference
from ferrolm.jsonl import is_sqlite, located, read_records, require_file, write_records

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


def load_preferences(path: Union[str, Path], what: str = "preference data") -> Preferences:
    """Reads preference data from a `.jsonl` file or a `ferrolm label` SQLite database.

    Raises FileNotFoundError for a missing file and ValueError for anything malformed
    (naming the line, for JSONL) — including a JSONL file with no records at all. Errors
    about the file call it `what` (the command line's "--data").
    """
    path = Path(path)
    require_file(path, what)
    if not path.is_file():  # a pipe: the SQLite check would swallow what it reads
        raise ValueError(f"{what} {path} is not a regular file (a .jsonl file or a `ferrolm label` database)")
    if is_sqlite(path):
        from ferrolm.label.store import LabelStore

        with LabelStore.open_existing(path) as store:
            return store.preferences()
    return Preferences([plain(r, r["_where"]) for r in read_records(path)])


def plain(record: object, where: str) -> dict:
    """`record` in the plain form: "prompt" a text (or a conversation ending with a user turn,
    when it holds a system turn or earlier exchanges), "chosen" and "rejected" texts, from any of the forms
    `ferrolm.conversations.preference` reads; ValueError naming `where` unless it is a usable
    preference. Other keys are kept."""
    prompt, chosen, rejected = located(where, preference, record)
    return {**record, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def write_preferences(records: Iterable[dict], path: Union[str, Path]) -> int:
    """Writes records as JSONL atomically (validated first); returns how many were written."""
    records = [plain(record, f"record {i}") for i, record in enumerate(records, 1)]
    return write_records(path, records)
