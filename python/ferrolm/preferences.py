"""Preference data: `{"prompt", "chosen", "rejected"}` records, read and written in one place.

Post-training (`ferrolm reward`, `ferrolm dpo`) reads preference data only through
`load_preferences`, which accepts either

* a JSONL file, one object per line with string keys "prompt", "chosen" and "rejected"
  (extra keys such as "labeller" or "comment" are kept). The file is validated strictly:
  any bad line raises `ValueError` naming its line number, so no record is ever dropped
  silently; or
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

    `records` are dicts with at least "prompt", "chosen" and "rejected" (all non-empty
    strings except the prompt, chosen != rejected). `skipped` maps a reason ("tie", "skip",
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
    return Preferences(read_records(path, check=check_record))


def check_record(record: object, where: str) -> None:
    """Raises ValueError (prefixed with `where`) unless `record` is a usable preference."""
    check_fields(record, where, KEYS, allow_empty=("prompt",))
    if record["chosen"] == record["rejected"]:
        raise ValueError(f"{where}: 'chosen' and 'rejected' are the same text (no preference)")


def write_preferences(records: Iterable[dict], path: Union[str, Path]) -> int:
    """Writes records as JSONL atomically (validated first); returns how many were written."""
    records = list(records)
    for i, record in enumerate(records, 1):
        check_record(record, f"record {i}")
    return write_records(path, records)
