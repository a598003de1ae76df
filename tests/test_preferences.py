"""Preference data in and out: strict JSONL validation (every bad line named), a labelling
database read directly (ties and skips counted, not silently dropped), atomic writes."""

import json

import pytest

from ferrolm.label.store import LabelStore, Pair
from ferrolm.preferences import Preferences, load_preferences, write_preferences

GOOD = {"prompt": "Q", "chosen": "good", "rejected": "bad"}


def public(records):
    """Records without the "_" keys a reader adds (where each came from)."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def write_lines(path, *lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_round_trip_keeps_extra_keys(tmp_path):
    records = [GOOD, {"prompt": "", "chosen": "x", "rejected": "y", "labeller": "ann", "comment": "ünïcode"}]
    assert write_preferences(records, tmp_path / "p.jsonl") == 2
    prefs = load_preferences(tmp_path / "p.jsonl")
    assert isinstance(prefs, Preferences) and public(prefs.records) == records and prefs.skipped == {}
    assert len(prefs) == 2 and public(prefs) == records
    assert [r["_where"] for r in prefs] == [f"{tmp_path / 'p.jsonl'} line {n}" for n in (1, 2)]
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize("bad, message", [
    ("{not json", " line 2: invalid JSON"),
    (json.dumps({"prompt": "Q", "chosen": "a"}), " line 2: no 'rejected' field"),
    (json.dumps({"prompt": "Q", "chosen": 3, "rejected": "b"}), " line 2: field 'chosen' must be a string"),
    (json.dumps({"prompt": "Q", "chosen": "", "rejected": "b"}), " line 2: field 'chosen' is empty"),
    (json.dumps({"prompt": "Q", "chosen": "a", "rejected": " \n"}), " line 2: field 'rejected' is empty"),
    (json.dumps({"prompt": "Q", "chosen": "same", "rejected": "same"}), " line 2: 'chosen' and 'rejected' are the same"),
    (json.dumps(["Q", "a", "b"]), " line 2: a JSON Lines file holds one JSON object per line, not a JSON array"),
])
def test_bad_jsonl_lines_are_errors_naming_the_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "p.jsonl", json.dumps(GOOD), bad, json.dumps(GOOD))
    with pytest.raises(ValueError, match=message):
        load_preferences(path)


def _turn(role, content):
    return {"role": role, "content": content}


HISTORY = [_turn("user", "Who goes there?"), _turn("assistant", "A friend."), _turn("user", "What friend?")]


def test_conversational_records_read_as_a_conversation_prompt_and_two_answers(tmp_path):
    thine, none = _turn("assistant", "Thine own."), _turn("assistant", "None.")
    forms = [{"prompt": HISTORY, "chosen": [thine], "rejected": [none]},  # TRL: explicit prompt
             {"prompt": HISTORY, "chosen": thine, "rejected": "None."},
             {"chosen": HISTORY + [thine], "rejected": HISTORY + [none], "labeller": "ann"},  # implicit (HH-RLHF)
             {"prompt": HISTORY, "chosen": HISTORY + [thine], "rejected": HISTORY + [none]}]
    path = write_lines(tmp_path / "p.jsonl", *(json.dumps(r) for r in forms))
    expected = {"prompt": HISTORY, "chosen": "Thine own.", "rejected": "None."}
    assert public(load_preferences(path).records) == [expected, expected, {**expected, "labeller": "ann"}, expected]
    # UltraFeedback's: the prompt as text and one-exchange conversations, read as a text record.
    ultra = {"prompt": "What friend?", "chosen": [_turn("user", "What friend?"), thine],
             "rejected": [_turn("user", "What friend?"), none]}
    assert public(load_preferences(write_lines(tmp_path / "u.jsonl", json.dumps(ultra))).records) == \
        [{"prompt": "What friend?", "chosen": "Thine own.", "rejected": "None."}]
    # A system turn opens the prompt conversation, in either form.
    system = [_turn("system", "Answer as a herald.")]
    with_system = [{"prompt": system + HISTORY, "chosen": "Thine own.", "rejected": "None."},
                   {"chosen": system + HISTORY + [thine], "rejected": system + HISTORY + [none]}]
    path = write_lines(tmp_path / "s.jsonl", *(json.dumps(r) for r in with_system))
    assert public(load_preferences(path).records) == [{**expected, "prompt": system + HISTORY}] * 2
    assert write_preferences([forms[2]], tmp_path / "out.jsonl") == 1  # written in the plain form
    assert public(load_preferences(tmp_path / "out.jsonl").records) == [{**expected, "labeller": "ann"}]


@pytest.mark.parametrize("bad, message", [
    ({"chosen": HISTORY + [_turn("assistant", "a")], "rejected": [_turn("user", "Hm?"), _turn("assistant", "b")]},
     "differ only in their last answer"),
    ({"prompt": HISTORY[:2], "chosen": "a", "rejected": "b"}, "ends with the user turn to answer"),
    ({"prompt": HISTORY, "chosen": [_turn("assistant", "a"), _turn("assistant", "b")], "rejected": "b"},
     "field 'chosen' must be a string or one"),
    ({"prompt": [HISTORY[0], _turn("system", "Be brief."), *HISTORY[1:]], "chosen": "a", "rejected": "b"},
     "message 1 is 'system': a conversation is an optional system turn"),
    ({"prompt": HISTORY, "chosen": [_turn("assistant", " ")], "rejected": "b"}, "field 'chosen' is empty"),
    ({"prompt": HISTORY, "chosen": "a", "rejected": [_turn("assistant", "a")]}, "the same text"),
    ({"chosen": HISTORY[:2], "rejected": "b"}, "both be whole conversations, or both answers"),
    ({"chosen": "a", "rejected": "b"}, "no 'prompt' field"),
    ({"prompt": "Hm?", "chosen": HISTORY + [_turn("assistant", "a")], "rejected": HISTORY + [_turn("assistant", "b")]},
     "'prompt' is not the turns"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "a prompt is a string or a conversation"),
])
def test_bad_conversational_records_are_errors_naming_the_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "p.jsonl", json.dumps(GOOD), json.dumps(bad))
    with pytest.raises(ValueError, match=" line 2: .*" + message):
        load_preferences(path)


def test_missing_empty_and_binary_files_are_refused(tmp_path):
    import os

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_preferences(tmp_path / "none.jsonl")
    with pytest.raises(IsADirectoryError, match="is a directory, not a file"):  # it said "does not exist"
        load_preferences(tmp_path)
    os.mkfifo(tmp_path / "pipe")  # the SQLite check would swallow what a pipe holds
    with pytest.raises(ValueError, match="is not a regular file"):
        load_preferences(tmp_path / "pipe")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        load_preferences(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        load_preferences(tmp_path / "bin.jsonl")


def test_writer_refuses_invalid_records_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "p.jsonl"
    write_preferences([GOOD], path)
    with pytest.raises(ValueError, match="record 2: field 'rejected' is empty"):
        write_preferences([GOOD, {"prompt": "Q", "chosen": "a", "rejected": ""}], path)
    assert public(load_preferences(path).records) == [GOOD]
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


def judged_store(path):
    """A database with one judgement of each kind (and one pair never judged)."""
    store = LabelStore(path)
    kinds = [("left", "a", "A wins"), ("right", "a", ""), ("tie", "b", ""), ("skip", "a", ""), ("left", "b", "")]
    for i, (side, shown_left, comment) in enumerate(kinds):
        pair = Pair(prompt=f"p{i}", completion_a=f"a{i}", completion_b=f"b{i}", shown_left=shown_left,
                    settings={"a": {"seed": 1}, "b": {"seed": 2}}, model_a_hash="h", model_b_hash="h")
        store.add_pair(pair)
        store.judge(pair.id, side, comment, "ann")
    identical = Pair(prompt="p9", completion_a="same", completion_b="same", shown_left="a", settings={},
                     model_a_hash="h", model_b_hash="h")
    store.add_pair(identical)
    store.judge(identical.id, "left", "", "ann")
    store.add_pair(Pair(prompt="unjudged", completion_a="x", completion_b="y", shown_left="a", settings={},
                        model_a_hash="h", model_b_hash="h"))
    return store


def test_sqlite_database_is_read_directly_with_left_out_counts(tmp_path):
    judged_store(tmp_path / "prefs.sqlite")
    prefs = load_preferences(tmp_path / "prefs.sqlite")
    # left shown "a" and chosen -> a wins; right with "a" on the left -> b wins; left with "b" on the left -> b wins.
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in prefs.records] == [
        ("p0", "a0", "b0"), ("p1", "b1", "a1"), ("p4", "b4", "a4")]
    assert prefs.records[0]["comment"] == "A wins" and prefs.records[0]["labeller"] == "ann"
    assert prefs.skipped == {"tie": 1, "skip": 1, "identical": 1}


def test_export_writes_the_same_records_as_jsonl(tmp_path):
    store = judged_store(tmp_path / "prefs.sqlite")
    exported = store.export(tmp_path / "prefs.jsonl")
    assert public(load_preferences(tmp_path / "prefs.jsonl").records) == public(exported.records) \
        == public(load_preferences(tmp_path / "prefs.sqlite").records)
    # Export never writes over a database, the one it reads included.
    with pytest.raises(ValueError, match="is a SQLite database"):
        store.export(tmp_path / "prefs.sqlite")
    assert LabelStore.open_existing(tmp_path / "prefs.sqlite").count() == 6  # every judgement still there


def test_corrupt_or_foreign_databases_are_errors_and_left_untouched(tmp_path):
    import sqlite3

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x13" * 5000)
    with pytest.raises(ValueError, match="damaged|not a"):
        load_preferences(garbage)
    assert garbage.read_bytes() == b"SQLite format 3\x00" + b"\x13" * 5000
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="not a ferrolm labelling database"):
        load_preferences(other)
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE meta (version INTEGER)")  # another program's: was "damaged (no such column: key)"
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="is a SQLite database but not a ferrolm labelling database"):
        load_preferences(other)
    # An empty SQLite database is not made a labelling database by reading it.
    blank = tmp_path / "blank.sqlite"
    con = sqlite3.connect(blank)
    con.execute("PRAGMA user_version = 1")
    con.close()
    before = blank.read_bytes()
    with pytest.raises(ValueError, match="not a ferrolm labelling database"):
        load_preferences(blank)
    assert blank.read_bytes() == before
    # Edited rows (a crafted file need not keep the schema's constraints) are errors naming the
    # judgement, not tracebacks or a silent "b wins".
    for column, value, message in (("choice", "zzz", "choice 'zzz' is not a, b, tie or skip"),
                                   ("completion_a", None, "its completions must be text"),
                                   ("prompt", None, "its prompt is not a text or a conversation's turns"),
                                   ("conversation", 1, "its prompt is not a text or a conversation's turns"),
                                   ("settings", None, "its settings are not a JSON object")):
        edited = tmp_path / f"edited-{column}.sqlite"
        judged_store(edited)
        con = sqlite3.connect(edited)
        con.execute("ALTER TABLE judgements RENAME TO constrained")
        con.execute("CREATE TABLE judgements AS SELECT * FROM constrained")
        con.execute(f"UPDATE judgements SET {column} = ?", (value,))
        con.commit()
        con.close()
        with pytest.raises(ValueError, match=f"judgement \\d+: {message}"):
            load_preferences(edited)


def test_line_and_paragraph_separators_inside_strings_are_text(tmp_path):
    # JSON may carry U+2028, U+0085 and \x1c raw; str.splitlines would cut the record there.
    odd = {"prompt": "Q\u2028", "chosen": "a\x85b", "rejected": "c\x1cd"}
    write_preferences([odd], tmp_path / "p.jsonl")
    assert public(load_preferences(tmp_path / "p.jsonl").records) == [odd]
    from ferrolm.jsonl import read_records

    assert public(read_records(tmp_path / "p.jsonl", ("prompt", "chosen", "rejected"))) == [odd]
