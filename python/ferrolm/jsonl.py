"""JSON Lines records: validated reading (errors name the line) and atomic writing."""

from __future__ import annotations

import codecs
import json
import numbers
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar, Union

from ferrolm.atomic import atomic_file

SQLITE_MAGIC = b"SQLite format 3\x00"
T = TypeVar("T")


def is_sqlite(path: Union[str, Path]) -> bool:
    """True when `path` starts with SQLite's file header (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def read_json_object(path: Union[str, Path]) -> dict:
    """A JSON file holding an object (a config, a state file); anything else is a ValueError
    naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a byte-order mark, as some editors write
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object")
    return value


def is_count(value: object) -> bool:
    """A JSON value that counts something: an integer (not a boolean) ≥ 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def require_count(name: str, value: Any, least: int = 1) -> None:
    """Refuses `value` for the setting `name` unless it is an integer (a Python or numpy one,
    not a boolean) ≥ `least`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be {'a non-negative' if least == 0 else 'a positive'} integer, got {value!r}")


def lines_of(text: str) -> list[str]:
    """The lines of a text file: split at "\\n" only (`str.splitlines` also splits at U+2028,
    U+0085, \\x1c..., which JSON strings and prompts may hold raw), without "\\r" ends or the
    empty line after a final newline."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def require_file(path: Path, what: str = "file") -> None:
    """IsADirectoryError or FileNotFoundError saying `what` (a flag, "prompts file"...) and
    the path, unless `path` is there and not a directory."""
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")


def read_utf8(path: Path, what: str = "file") -> str:
    """A text file's contents, without the byte-order mark some editors (Windows Notepad) write
    first; one that is not UTF-8 is a ValueError naming the line. A missing file or a directory
    is said as `require_file` says it."""
    require_file(path, what)
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # removed first: errors count bytes and lines of the rest
    if raw.startswith(SQLITE_MAGIC):  # it was "not valid UTF-8 (byte 0xf8)"
        raise ValueError(f"{path} is an SQLite database, not a text file (a `ferrolm label` one? `reward --data` and "
                         "`dpo --data` read those, and `ferrolm label export` writes their pairs as JSONL)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: not valid UTF-8 (byte {raw[e.start]:#04x}); save the file as UTF-8") from None


#: Said of a line that holds a JSON array, or starts one spread over several lines.
ONE_PER_LINE = "a JSON Lines file holds one JSON object per line, not a JSON array of them"


def read_records(path: Union[str, Path], fields: Sequence[str] = (),
                 check: Optional[Callable[[dict, str], None]] = None, what: str = "file") -> list[dict]:
    """Every line of `path` must be a JSON object whose `fields` are non-blank strings and
    that passes `check(record, where)`, if given; blank lines are allowed. Raises ValueError
    naming the line. Each record gets `_where` ("FILE line N"), for later errors about it.
    A missing file is said as `what`, as `read_utf8` says it."""
    path = Path(path)
    records = []
    for number, line in enumerate(lines_of(read_utf8(path, what)), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            hint = f"; {ONE_PER_LINE}" if line.lstrip().startswith("[") else ""
            raise ValueError(f"{where}: invalid JSON ({getattr(e, 'msg', 'nested too deeply')}){hint}") from None
        if isinstance(record, list):
            raise ValueError(f"{where}: {ONE_PER_LINE}")
        check_fields(record, where, fields)
        if check is not None:
            check(record, where)
        record["_where"] = where
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def where_of(record: Any) -> str:
    """Where a record came from (`read_records`' "FILE line N"), or "a record" (one given from Python)."""
    return record.get("_where", "a record") if isinstance(record, dict) else "a record"


def located(where: str, read: Callable[[Any], T], record: Any) -> T:
    """`read(record)`, its ValueError or TypeError raised as a ValueError naming `where`."""
    try:
        return read(record)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def check_fields(record: object, where: str, fields: Sequence[str]) -> None:
    """Raises ValueError (prefixed with `where`) unless `record` is a JSON object whose `fields`
    are non-blank strings."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in fields:
        if field not in record:
            raise ValueError(f"{where}: no {field!r} field (each record needs {', '.join(map(repr, fields))})")
        value = record[field]
        if not isinstance(value, str):
            raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{where}: field {field!r} is empty")


def write_records(path: Union[str, Path], records: Iterable[dict]) -> int:
    """Writes records as JSONL atomically (temporary file + rename; keys starting with "_" are
    left out); returns how many. Refuses to replace a SQLite database (a labelling database
    given as the output by mistake would be lost)."""
    path = Path(path)
    if path.is_file() and is_sqlite(path):
        raise ValueError(f"{path} is a SQLite database: writing JSONL over it would destroy it; choose another file")
    count = 0
    with atomic_file(path) as f:
        for r in records:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")
            count += 1
    return count
