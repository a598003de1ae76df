"""The labelling database: generated pairs and human judgements in SQLite.

Two tables. `pairs` holds every generated pair as soon as it exists, so a restart re-offers
pairs nobody judged yet instead of generating them again, and a judgement retried after a
restart still finds its pair. A prompt is a text, or a conversation (its turns as JSON, with
`conversation` = 1; one user turn is stored as its text: `prompts.prompt_key`). `judgements`
holds one self-contained row per judgement (prompt, both completions, which was shown left,
the choice, labeller, time, generation settings and weight hashes); `pair_id` is UNIQUE, so a
judgement is stored at most once however often a browser retries it. Every write is one
transaction, committed before the HTTP answer is sent (WAL, synchronous=FULL), so every
acknowledged judgement survives the process being killed.

A connection is opened per operation: SQLite connections are cheap, and this keeps the store
safe to call from the web server's worker threads and from other processes at once.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import unicodedata
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional, Union

from ferrolm.conversations import Prompt
from ferrolm.jsonl import is_sqlite
from ferrolm.label.prompts import prompt_key, prompt_of_key
from ferrolm.preferences import Preferences, write_preferences

APP_ID = "ferrolm-label"
SCHEMA_VERSION = "2"
# Version 1 had text prompts only: read as it is, and given this column in both tables (all
# texts: 0) when opened to label into.
CONVERSATION = "conversation INTEGER NOT NULL DEFAULT 0 CHECK (conversation IN (0, 1))"
CHOICES = ("a", "b", "tie", "skip")  # which completion won: a, b, or no preference
SIDES = ("left", "right", "tie", "skip")  # what the browser sends: the position on screen

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    shown_left TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
    settings TEXT NOT NULL,
    model_a_hash TEXT NOT NULL,
    model_b_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    {CONVERSATION}
);
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an undone id is never reused
    pair_id TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    shown_left TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'skip')),
    comment TEXT NOT NULL DEFAULT '',
    labeller TEXT NOT NULL,
    created_at TEXT NOT NULL,
    settings TEXT NOT NULL,
    model_a_hash TEXT NOT NULL,
    model_b_hash TEXT NOT NULL,
    {CONVERSATION}
);
"""


MAX_LABELLER = 100


#: Letters that draw nothing (Braille's blank, Hangul's fillers): a name of them looks empty.
_BLANK_LETTERS = frozenset("\u2800\u3164\u115f\u1160\uffa0")


def _visible(c: str) -> bool:
    return not c.isspace() and unicodedata.category(c) != "Cf" and c not in _BLANK_LETTERS


def is_labeller_name(name: object) -> bool:
    """Whether `name` can be stored as a labeller's: a string of at most MAX_LABELLER
    characters with a visible one (not only spaces, format characters such as a zero-width
    space or a byte-order mark, or blank letters), without control, separator or
    direction-override characters (a name shown in a list must read as what it is; joiners,
    as in Persian or emoji, are fine)."""
    return isinstance(name, str) and any(map(_visible, name)) and len(name) <= MAX_LABELLER and all(
        unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp") and not ("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069")
        for c in name)


def is_busy(error: Exception) -> bool:
    """Whether `error` is SQLite's SQLITE_BUSY: another connection holds the database (past the
    wait). Not SQLITE_LOCKED (a table or schema locked within a connection)."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    return (code & 0xFF) == sqlite3.SQLITE_BUSY if code is not None else str(error) == "database is locked"


class Conflict(ValueError):
    """The pair was already judged differently (e.g. in another tab); `judged`: that judgement's
    id and choice as the page shows it (left, right, tie or skip), where the store found it."""

    def __init__(self, message: str, judged: Optional[tuple[int, str]] = None) -> None:
        super().__init__(message)
        self.judged = judged


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Pair:
    """Two completions of one prompt (a text, or a conversation ending with the user turn they
    answer). `a`/`b` name the samplers (model A/B, or the two settings of one model);
    `shown_left` says which one the page shows on the left."""

    prompt: Prompt
    completion_a: str
    completion_b: str
    shown_left: str
    settings: dict
    model_a_hash: str
    model_b_hash: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=now)

    @functools.cached_property
    def key(self) -> tuple[str, bool]:
        """The prompt as prompts are compared (`prompt_key`; a conversation's is its JSON, made
        once)."""
        return prompt_key(self.prompt)

    def side(self, side: str) -> str:
        """'a' or 'b': which completion is on `side` ('left' or 'right') of the page."""
        other = "b" if self.shown_left == "a" else "a"
        return self.shown_left if side == "left" else other

    def public(self) -> dict:
        """What the page sees: the texts by position, not which sampler made them (blind)."""
        text = {"a": self.completion_a, "b": self.completion_b}
        return {"id": self.id, "prompt": self.prompt, "left": text[self.side("left")], "right": text[self.side("right")]}


class LabelStore:
    """A labelling database file. Raises ValueError for a file that is not one (a corrupt
    or foreign file is never modified)."""

    def __init__(self, path: Union[str, Path], *, create: bool = True) -> None:
        self.path = Path(path)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists and not create:
            if self.path.exists():
                raise ValueError(f"{self.path} is empty, not a labelling database")
            raise FileNotFoundError(f"labelling database {self.path} does not exist")
        if exists and not is_sqlite(self.path):
            raise ValueError(f"{self.path} is not a SQLite database (corrupt, or another kind of file); "
                             "it was left untouched")
        try:
            self._check_or_create(exists, create)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} is a damaged SQLite database ({e}); it was left untouched") from None

    @classmethod
    def open_existing(cls, path: Union[str, Path]) -> "LabelStore":
        return cls(path, create=False)

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # nothing to release: connections are per operation

    def _check_or_create(self, exists: bool, create: bool) -> None:
        con = self._connect()
        try:
            if exists:
                problems = [row[0] for row in con.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise ValueError(f"{self.path} is a damaged SQLite database ({problems[0]}); it was left untouched")
                tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if (tables or not create) and "meta" not in tables:  # an empty one is made ours only to label into
                    raise ValueError(f"{self.path} is a SQLite database but not a ferrolm labelling database; it was left untouched")
                if "meta" in tables:
                    columns = {row[1] for row in con.execute("PRAGMA table_info(meta)")}
                    # Another program's table named meta: it was "damaged (no such column: key)".
                    meta = dict(con.execute("SELECT key, value FROM meta")) if {"key", "value"} <= columns else {}
                    if meta.get("app") != APP_ID:
                        raise ValueError(f"{self.path} is a SQLite database but not a ferrolm labelling database")
                    if meta.get("schema_version") == "1" and create:
                        self._upgrade_from_version_1(con)
                    elif meta.get("schema_version") not in ("1", SCHEMA_VERSION):
                        raise ValueError(f"{self.path} has labelling schema version {meta.get('schema_version')}; "
                                         f"this ferrolm reads versions 1 and {SCHEMA_VERSION}")
                    return
            # WAL: readers (the judgements page, an export) never block the labeller's writes.
            con.execute("PRAGMA journal_mode = WAL")
            with self._transaction(con):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('app', ?), ('schema_version', ?)", (APP_ID, SCHEMA_VERSION))
        finally:
            con.close()

    def _upgrade_from_version_1(self, con: sqlite3.Connection) -> None:
        """Adds the conversation column (its prompts are all texts), unless another process
        has meanwhile."""
        try:
            with self._transaction(con):
                version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
                if version == "1":
                    for table in ("pairs", "judgements"):
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {CONVERSATION}")
                    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        except sqlite3.OperationalError as e:  # a file this process may not write
            raise ValueError(f"{self.path} is a labelling database of version 1, which opening upgrades, but it "
                             f"cannot be written here ({e})") from None

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each operation is exactly
        # one transaction; busy_timeout: wait for another writer instead of failing at once.
        con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA synchronous = FULL")  # a committed judgement is on disk
        return con

    @staticmethod
    @contextmanager
    def _transaction(con: sqlite3.Connection) -> Iterator[None]:
        con.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            with self._transaction(con):
                yield con
        finally:
            con.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    # ------------------------------------------------------------ pairs

    def add_pair(self, pair: Pair) -> None:
        with self._write() as con:
            prompt, conversation = pair.key
            con.execute("INSERT INTO pairs (id, prompt, completion_a, completion_b, shown_left, settings, model_a_hash, "
                        "model_b_hash, created_at, conversation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (pair.id, prompt, pair.completion_a, pair.completion_b, pair.shown_left,
                         json.dumps(pair.settings), pair.model_a_hash, pair.model_b_hash, pair.created_at, conversation))

    def pair(self, pair_id: str) -> Optional[Pair]:
        with self._read() as con:
            row = con.execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()
        return None if row is None else self._pair(row)

    def unjudged_pairs(self) -> list[Pair]:
        """Generated pairs without a judgement, oldest first."""
        with self._read() as con:
            rows = con.execute("SELECT * FROM pairs WHERE id NOT IN (SELECT pair_id FROM judgements) "
                               "ORDER BY created_at, rowid").fetchall()
        return [self._pair(r) for r in rows]

    def judged_prompts(self, hashes: tuple[str, str]) -> set[tuple[str, bool]]:
        """The keys (`prompt_key`) of the prompts judged between the models whose weights have
        these `hashes`, in either order (other models' completions are another comparison)."""
        a, b = hashes
        with self._read() as con:
            rows = con.execute("SELECT DISTINCT prompt, conversation FROM judgements WHERE (model_a_hash = ? AND "
                               "model_b_hash = ?) OR (model_a_hash = ? AND model_b_hash = ?)", (a, b, b, a))
            # Only conversations are decoded: one of one turn, stored by an earlier ferrolm, is its text.
            return {prompt_key(self._prompt(row, "a judgement")) if row[1] else (row[0], False) for row in rows}

    # ------------------------------------------------------------ judgements

    def judge(self, pair_id: str, side: str, comment: str, labeller: str) -> tuple[int, bool]:
        """Stores a judgement of pair `pair_id`; `side` is 'left', 'right', 'tie' or 'skip'.

        Returns (judgement id, duplicate). Judging a pair again with the same choice and comment
        (a retry) returns the stored id with duplicate=True; a different choice raises Conflict;
        an unknown pair raises KeyError.
        """
        if side not in SIDES:
            raise ValueError(f"choice must be one of {', '.join(SIDES)}")
        with self._write() as con:
            row = con.execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if row is None:
                raise KeyError(pair_id)
            pair = self._pair(row)
            choice = pair.side(side) if side in ("left", "right") else side
            done = con.execute("SELECT id, choice, comment FROM judgements WHERE pair_id = ?", (pair_id,)).fetchone()
            if done is not None:
                if (done["choice"], done["comment"]) == (choice, comment):
                    return done["id"], True
                shown = {pair.side("left"): "left", pair.side("right"): "right"}.get(done["choice"], done["choice"])
                raise Conflict("this pair was already judged differently (in another tab?)", (done["id"], shown))
            cur = con.execute(
                "INSERT INTO judgements (pair_id, prompt, conversation, completion_a, completion_b, shown_left, choice, "
                "comment, labeller, created_at, settings, model_a_hash, model_b_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pair.id, *pair.key, pair.completion_a, pair.completion_b, pair.shown_left, choice, comment,
                 labeller, now(), json.dumps(pair.settings), pair.model_a_hash, pair.model_b_hash))
            return cur.lastrowid, False

    def undo(self, judgement_id: int, pair_id: str) -> Pair:
        """Deletes a judgement of pair `pair_id`; returns the pair (to be judged again).
        KeyError if there is no such judgement of that pair."""
        with self._write() as con:
            row = con.execute("SELECT pair_id FROM judgements WHERE id = ? AND pair_id = ?",
                              (judgement_id, pair_id)).fetchone()
            if row is None:
                raise KeyError(judgement_id)
            con.execute("DELETE FROM judgements WHERE id = ?", (judgement_id,))
            pair = con.execute("SELECT * FROM pairs WHERE id = ?", (row["pair_id"],)).fetchone()
        return self._pair(pair)

    def judgements(self, limit: Optional[int] = None) -> list[dict]:
        """Judgements, newest first, as plain dicts (prompts and settings decoded)."""
        sql = "SELECT * FROM judgements ORDER BY id DESC" + (" LIMIT ?" if limit is not None else "")
        with self._read() as con:
            rows = con.execute(sql, () if limit is None else (limit,)).fetchall()
        return [{**dict(r), "prompt": self._prompt(r, f"judgement {r['id']}"),
                 "settings": self._settings(r["settings"], f"judgement {r['id']}")} for r in rows]

    def _prompt(self, row: sqlite3.Row, where: str) -> Prompt:
        """A row's prompt: its text, or its conversation decoded (an edited row is an error naming it)."""
        conversation = "conversation" in row.keys() and bool(row["conversation"])  # version 1 has none
        try:
            return prompt_of_key(row["prompt"], conversation)
        except (TypeError, ValueError, RecursionError):
            raise ValueError(f"{self.path} {where}: its prompt is not a text or a conversation's turns "
                             "(a damaged or edited database)") from None

    def _settings(self, text, where: str) -> dict:
        """A row's sampling settings, decoded (an edited row is an error naming it)."""
        try:
            settings = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            settings = None
        if not isinstance(settings, dict):
            raise ValueError(f"{self.path} {where}: its settings are not a JSON object (a damaged or edited database)")
        return settings

    def _pair(self, row: sqlite3.Row) -> Pair:
        settings = self._settings(row["settings"], f"pair {row['id']}")
        return Pair(prompt=self._prompt(row, f"pair {row['id']}"), completion_a=row["completion_a"], completion_b=row["completion_b"],
                    shown_left=row["shown_left"], settings=settings, model_a_hash=row["model_a_hash"],
                    model_b_hash=row["model_b_hash"], id=row["id"], created_at=row["created_at"])

    def count(self) -> int:
        with self._read() as con:
            return con.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    # ------------------------------------------------------------ export

    def preferences(self) -> Preferences:
        """Judgements as preference records (oldest first); ties, skips and pairs that carry
        no usable preference (identical or empty completions) are left out and counted."""
        records, skipped = [], {}
        for j in reversed(self.judgements()):
            where = f"{self.path} judgement {j['id']}"
            if j["choice"] not in CHOICES:
                raise ValueError(f"{where}: choice {j['choice']!r} is not a, b, tie or skip (a damaged or edited database)")
            if not all(isinstance(j[k], str) for k in ("completion_a", "completion_b")):
                raise ValueError(f"{where}: its completions must be text (a damaged or edited database)")
            reason = j["choice"] if j["choice"] in ("tie", "skip") else None
            if reason is None:
                winner, loser = ("a", "b") if j["choice"] == "a" else ("b", "a")  # the samplers' sides, not left/right
                chosen, rejected = j[f"completion_{winner}"], j[f"completion_{loser}"]
                reason = "identical" if chosen == rejected else "empty" if not chosen.strip() or not rejected.strip() else None
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            # Which sampler wrote each side (its model's weights and sampling settings): one
            # database may hold several comparisons.
            sides = {x: j["settings"].get(x, {}) for x in ("a", "b")}
            if not all(isinstance(side, dict) for side in sides.values()):
                raise ValueError(f"{where}: its settings must hold an object per side (a damaged or edited database)")
            by = {x: {**side, "weights": j[f"model_{x}_hash"]} for x, side in sides.items()}
            record = {"prompt": j["prompt"], "chosen": chosen, "rejected": rejected, "labeller": j["labeller"],
                      "chosen_by": by[winner], "rejected_by": by[loser], "_where": where}
            if j["comment"]:
                record["comment"] = j["comment"]
            records.append(record)
        return Preferences(records, skipped)

    def export(self, out: Union[str, Path]) -> Preferences:
        """Writes the preference JSONL (atomically); returns what was written and left out."""
        prefs = self.preferences()
        write_preferences(prefs.records, out)
        return prefs
