"""JSON Lines records: validated reading (errors name the line) and atomic writing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence, Union


def read_records(path: Union[str, Path], fields: Sequence[str], allow_empty: Sequence[str] = ()) -> list[dict]:
    """Every line of `path` must be a JSON object whose `fields` are strings (non-empty unless
    listed in `allow_empty`); blank lines are allowed. Raises ValueError naming the line."""
    path = Path(path)
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 ({e})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        for field in fields:
            value = record.get(field)
            if not isinstance(value, str):
                raise ValueError(f"{path}:{number}: field {field!r} must be a string, got {type(value).__name__}")
            if not value.strip() and field not in allow_empty:
                raise ValueError(f"{path}:{number}: field {field!r} is empty")
        record["_line"] = number
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def write_records(path: Union[str, Path], records: Iterable[dict]) -> int:
    """Writes records as JSONL atomically (temp file + rename); returns how many."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")
            count += 1
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return count
