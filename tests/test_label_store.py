"""The labelling store and pair queue in-process: exactly-once judgements under concurrent
writers and retries, undo, generation ahead of time, and tabs never sharing a pair."""

import json
import threading
import time
import types

import pytest

from ferrolm.label.pairs import PairQueue, Sampler
from ferrolm.label.store import Conflict, LabelStore, Pair


class FakeModel:
    """Deterministic 'completions' so the queue logic is tested without a network."""

    def __init__(self, same: int = 0, blank: int = 0) -> None:
        self.calls = 0
        self.same = same  # the first `same` calls return one fixed text (an identical pair)
        self.blank = blank  # then `blank` calls return whitespace (a pair with a blank side)

    def generate(self, prompt, max_new_tokens, *, temperature, top_k, top_p, seed, chat, stream):
        self.calls += 1
        text = ("same" if self.calls <= self.same else " \n" if self.calls <= self.same + self.blank
                else f"{prompt}/{seed}/{temperature}")
        return iter(text) if stream else text


def samplers(model=None):
    model = model or FakeModel()
    return Sampler(model, "m", "hash", temperature=0.7), Sampler(model, "m", "hash", temperature=1.0)


def pair(i: int) -> Pair:
    return Pair(prompt=f"p{i}", completion_a=f"a{i}", completion_b=f"b{i}", shown_left="a", settings={},
                model_a_hash="h", model_b_hash="h")


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_writers_and_retries_store_each_judgement_once(tmp_path):
    store = LabelStore(tmp_path / "db.sqlite")
    pairs = [pair(i) for i in range(40)]
    for p in pairs:
        store.add_pair(p)
    results, errors = [], []

    def labeller(k):
        try:
            for p in pairs[k::4]:
                for _ in range(2):  # every judgement sent twice, as a browser retry would
                    results.append((p.id, *store.judge(p.id, "left", "", f"l{k}")))
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=labeller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    rows = store.judgements()
    assert len(rows) == 40 and sorted(r["pair_id"] for r in rows) == sorted(p.id for p in pairs)
    by_pair = {}
    for pair_id, judgement_id, duplicate in results:
        by_pair.setdefault(pair_id, []).append((judgement_id, duplicate))
    assert all(v[0][0] == v[1][0] and [d for _, d in v] == [False, True] for v in by_pair.values())


def test_conflicting_judgement_undo_and_unknown_pairs(tmp_path):
    store = LabelStore(tmp_path / "db.sqlite")
    p = pair(0)
    store.add_pair(p)
    first, _ = store.judge(p.id, "right", "meh", "ann")
    with pytest.raises(Conflict):
        store.judge(p.id, "left", "meh", "bob")  # another tab judged it differently
    with pytest.raises(KeyError):
        store.judge("0" * 32, "left", "", "ann")
    with pytest.raises(ValueError, match="choice"):
        store.judge(p.id, "both", "", "ann")
    with pytest.raises(KeyError):  # a judgement is undone only with its pair's id
        store.undo(first, "0" * 32)
    assert store.undo(first, p.id).id == p.id and store.count() == 0
    with pytest.raises(KeyError):
        store.undo(first, p.id)
    second, duplicate = store.judge(p.id, "left", "", "ann")
    assert second > first and not duplicate  # an undone id is never reused
    assert store.judgements()[0]["choice"] == "a"  # left was a


def test_reopening_keeps_everything(tmp_path):
    store = LabelStore(tmp_path / "db.sqlite")
    p = pair(1)
    store.add_pair(p)
    store.judge(p.id, "tie", "", "ann")
    again = LabelStore(tmp_path / "db.sqlite")
    assert again.count() == 1 and again.pair(p.id) == p
    assert again.judgements()[0]["settings"] == {}


def test_generation_runs_ahead_by_lookahead_only(tmp_path):
    store = LabelStore(tmp_path / "db.sqlite")
    model = FakeModel()
    queue = PairQueue(store, [f"q{i}" for i in range(6)], *samplers(model), lookahead=2).start()
    try:
        wait_until(lambda: len(store.unjudged_pairs()) == 2)
        time.sleep(0.2)
        assert len(store.unjudged_pairs()) == 2  # no more until someone takes one
        shown = queue.take("tab1", 2)
        assert [p.prompt for p in shown] == ["q0", "q1"]
        wait_until(lambda: len(store.unjudged_pairs()) == 4)  # two new free pairs, ready before asked
        assert queue.take("tab1", 2) == shown  # a reload gets the same pairs back
        other = queue.take("tab2", 2)
        assert {p.id for p in other}.isdisjoint(p.id for p in shown)  # tabs never share a pair
        p = shown[0]
        assert p.settings["a"]["temperature"] == 0.7 and p.settings["b"]["temperature"] == 1.0
        assert p.completion_a == f"q0/{p.settings['a']['seed']}/0.7"
    finally:
        queue.stop()


def test_a_prompt_that_fails_to_generate_is_counted_and_the_rest_go_on(tmp_path):
    class Failing(FakeModel):
        def generate(self, prompt, *args, **kwargs):
            if prompt == "bad":
                raise ValueError("no room")
            return super().generate(prompt, *args, **kwargs)

    store = LabelStore(tmp_path / "db.sqlite")
    queue = PairQueue(store, ["q0", "bad", "q2"], *samplers(Failing()), lookahead=3).start()
    try:
        wait_until(lambda: queue.failed and len(queue.take("tab", 3)) == 2)
        assert queue.failed == ["prompt 2: generation failed: no room"]
        for p in queue.take("tab", 3):
            store.judge(p.id, "tie", "", "ann")
            queue.judged(p, "tab")
        assert queue.done and queue.labelled == 2 and queue.total == 3  # done, but not all labelled
    finally:
        queue.stop()


def test_stopping_the_queue_cuts_a_generation_short(tmp_path):
    """Ctrl-C waited up to 30 s for a generation in progress (the reviewer's took 3,000,000 tokens)."""

    class Endless(FakeModel):
        def generate(self, prompt, *args, stream=False, **kwargs):
            self.calls += 1
            if not stream:  # a long generation, returned whole
                time.sleep(60)
            return self.pieces()

        def pieces(self):
            while True:
                time.sleep(0.001)
                yield "x"

    model = Endless()
    queue = PairQueue(LabelStore(tmp_path / "db.sqlite"), ["q"], *samplers(model), lookahead=1).start()
    wait_until(lambda: model.calls)
    started = time.monotonic()
    queue.stop()
    assert time.monotonic() - started < 5 and not queue._thread.is_alive()
    assert not queue.failed  # stopped, not failed


def test_identical_completions_are_resampled(tmp_path):
    """Identical completions, and a blank one, carry no preference (export leaves them out): new
    seeds are tried (a blank side was shown, judged "Saved", and dropped at export)."""
    for i, model in enumerate((FakeModel(same=2), FakeModel(blank=1), FakeModel(same=1, blank=2))):
        store = LabelStore(tmp_path / f"db{i}.sqlite")
        queue = PairQueue(store, ["q"], *samplers(model), lookahead=1).start()
        try:
            wait_until(lambda: store.unjudged_pairs())
            p = store.unjudged_pairs()[0]
            assert p.completion_a != p.completion_b and p.settings["a"]["seed"] != 0
            assert p.completion_a.strip() and p.completion_b.strip()
        finally:
            queue.stop()


def test_a_tab_is_told_when_the_pairs_left_are_held_by_another(tmp_path):
    """Another tab holding the last pairs (one shown, one fetched ahead): this tab's page said
    "Generating the next pair…" until the hold lapsed."""
    store = LabelStore(tmp_path / "db.sqlite")
    queue = PairQueue(store, ["q0", "q1"], *samplers(), lookahead=2).start()
    try:
        wait_until(lambda: len(store.unjudged_pairs()) == 2 and not queue._generating)  # both made, none under way
        assert not queue.held_elsewhere("B")  # free pairs: B may take them
        held = queue.take("A", 2)
        assert len(held) == 2 and queue.take("B", 2) == []
        assert queue.held_elsewhere("B") and not queue.held_elsewhere("A")
        store.judge(held[0].id, "left", "", "ann")
        queue.judged(held[0], "A")
        assert queue.held_elsewhere("B")  # the pair fetched ahead is still A's
    finally:
        queue.stop()


def test_restart_reoffers_unjudged_pairs_and_skips_judged_prompts(tmp_path):
    store = LabelStore(tmp_path / "db.sqlite")
    prompts = ["q0", "q1", "q2"]
    queue = PairQueue(store, prompts, *samplers(), lookahead=2).start()
    wait_until(lambda: len(store.unjudged_pairs()) == 2)
    first = queue.take("tab", 1)[0]
    store.judge(first.id, "left", "", "ann")
    queue.judged(first, "tab")
    queue.stop()
    before = {p.id for p in store.unjudged_pairs()}
    model = FakeModel()
    restarted = PairQueue(store, prompts, *samplers(model), lookahead=5)
    assert restarted.labelled == 1 and restarted.total == 3
    assert {p.id for p in restarted.take("tab", 5)} == before  # nothing regenerated, nothing lost
    assert model.calls == 0
    # Pairs made by other weights are not offered for these ones.
    other = PairQueue(store, prompts, Sampler(FakeModel(), "m2", "other"), Sampler(FakeModel(), "m2", "other"))
    assert other.take("tab", 5) == []
    # Nor are pairs sampled otherwise: chat answers instead of raw continuations, another temperature.
    for a, b in ((Sampler(model, "m", "hash", temperature=0.7, chat=True), Sampler(model, "m", "hash", temperature=1.0, chat=True)),
                 (Sampler(model, "m", "hash", temperature=0.2), Sampler(model, "m", "hash", temperature=1.0))):
        assert PairQueue(store, prompts, a, b).take("tab", 5) == []
    moved = PairQueue(store, prompts, Sampler(model, "moved/m", "hash", temperature=0.7), Sampler(model, "m", "hash", temperature=1.0))
    assert {p.id for p in moved.take("tab", 5)} == before  # a moved directory with the same weights is the same
    # Prompts judged between other models are a comparison still to make with these ones; the
    # same two models in the other order are the same comparison.
    swapped = Pair(prompt="q2", completion_a="x", completion_b="y", shown_left="a", settings={},
                   model_a_hash="other", model_b_hash="hash")
    store.add_pair(swapped)
    store.judge(swapped.id, "tie", "", "ann")
    for hashes, judged in ((("hash", "hash"), 1), (("other", "other"), 0), (("hash", "other"), 1)):
        assert PairQueue(store, prompts, *(Sampler(model, "m", h) for h in hashes)).labelled == judged, hashes
    # A pair of other models, judged in a tab left open since they were served, counts for them.
    current = PairQueue(store, prompts, *samplers(model))
    current.judged(swapped, "old tab")
    assert current.labelled == 1


def test_undo_puts_the_pair_first_for_that_tab(tmp_path):
    store = LabelStore(tmp_path / "db.sqlite")
    queue = PairQueue(store, ["q0", "q1", "q2"], *samplers(), lookahead=3).start()
    try:
        wait_until(lambda: len(store.unjudged_pairs()) == 3)
        a, b = queue.take("tab", 2)
        judgement, _ = store.judge(a.id, "left", "", "ann")
        queue.judged(a, "tab")
        assert queue.labelled == 1 and queue.take("tab", 2)[0] == b
        queue.undone(store.undo(judgement, a.id), "tab")
        assert queue.labelled == 0 and [p.id for p in queue.take("tab", 2)] == [a.id, b.id]
    finally:
        queue.stop()


def test_a_pair_held_or_judged_by_another_tab_cannot_be_judged_or_undone_from_this_one(tmp_path, monkeypatch):
    store = LabelStore(tmp_path / "db.sqlite")
    queue = PairQueue(store, ["q0", "q1", "q2"], *samplers(), lookahead=3, lease_seconds=60).start()
    try:
        wait_until(lambda: len(store.unjudged_pairs()) == 3)
        a, b = queue.take("idle", 2)
        with pytest.raises(Conflict, match="another tab holds this pair"):
            queue.claim(a.id, "other")  # held by "idle"
        queue.claim(a.id, "idle")
        # "idle" leaves its pairs for over a minute: they go to the next tab that asks ...
        clock = time.monotonic() + 61
        monkeypatch.setattr(time, "monotonic", lambda: clock)
        assert {a.id, b.id} <= {p.id for p in queue.take("busy", 3)}
        with pytest.raises(Conflict, match="another tab holds this pair .* unlabelled for 1 minutes"):
            queue.claim(a.id, "idle")  # ... and "idle" can no longer judge them
        queue.claim(a.id, "busy")
        store.judge(a.id, "left", "", "bea")
        queue.judged(a, "busy")
        with pytest.raises(Conflict, match="another tab judged this pair"):
            queue.claim(a.id, "idle")  # the same choice would look like a retry of "busy"'s: refused
        # An expired hold can be taken back by the tab that lost it, while no other tab has judged.
        clock += 61
        queue.claim(b.id, "idle")
        assert queue.take("third", 3)[0].id != b.id
    finally:
        queue.stop()


CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who goes there?"},
                {"role": "assistant", "content": "A friend."}, {"role": "user", "content": "Stand and unfold yourself."}]


def test_a_busy_database_delays_a_pair_but_fails_no_prompt(tmp_path):
    """Another program writing to the database (a SQLite editor mid-transaction) past the
    store's wait: the generator saves the pair again a second later (it was counted a failed
    generation, never retried), and the server answers 503."""
    import asyncio
    import sqlite3

    from ferrolm.label.server import _database_error
    from ferrolm.label.store import is_busy

    store = LabelStore(tmp_path / "db.sqlite")
    real, calls = store.add_pair, []

    def busy_once(pair):
        calls.append(pair.id)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(pair)

    store.add_pair = busy_once
    queue = PairQueue(store, ["Who goes there?"], *samplers(), lookahead=1).start()
    try:
        wait_until(lambda: len(store.unjudged_pairs()) == 1)
    finally:
        queue.stop()
    assert len(calls) == 2 and queue.failed == []
    def broken(pair):
        raise sqlite3.OperationalError("disk I/O error")  # not busy: the prompt fails

    store.add_pair = broken
    queue = PairQueue(store, ["Stand, ho!"], *samplers(), lookahead=1).start()
    try:
        wait_until(lambda: queue.failed)
    finally:
        queue.stop()
    assert queue.failed == ["prompt 1: generation failed: disk I/O error"]
    answer = asyncio.run(_database_error(None, sqlite3.OperationalError("database is locked")))
    assert answer.status_code == 503 and b"busy" in answer.body
    # SQLite's own errors: another connection's write transaction is busy; a locked table is not.
    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    waiter = sqlite3.connect(tmp_path / "db.sqlite", timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError) as busy:
            waiter.execute("BEGIN IMMEDIATE")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.close()
    assert is_busy(busy.value) and not is_busy(sqlite3.OperationalError("database table is locked"))


def test_a_one_turn_conversation_is_the_prompt_of_its_text(tmp_path):
    """A chat model is given a text prompt as a user turn: the file's `{"prompt": "Hi"}` and
    `{"prompt": [{"role": "user", "content": "Hi"}]}` are one prompt (they were judged twice),
    also against judgements an earlier ferrolm stored as a conversation."""
    from ferrolm.label.prompts import check_prompts, prompt_key

    turn = [{"role": "user", "content": "Stand, ho!"}]
    assert prompt_key(turn) == prompt_key("Stand, ho!") == ("Stand, ho!", False)
    with pytest.raises(ValueError, match="line 2: repeats the prompt of line 1"):
        check_prompts(["Stand, ho!", turn], types.SimpleNamespace(prompt_ids=lambda p, chat: [0], block_size=8),
                      where="p.jsonl", chat=True)
    store = LabelStore(tmp_path / "db.sqlite")
    with store._write() as con:  # as stored before: the turn's JSON, marked a conversation
        con.execute("INSERT INTO judgements (pair_id, prompt, conversation, completion_a, completion_b, shown_left, "
                    "choice, comment, labeller, created_at, settings, model_a_hash, model_b_hash) VALUES ('p', ?, 1, 'x',"
                    " 'y', 'a', 'a', '', 'ann', '2026-01-01', '{}', 'h1', 'h2')", (json.dumps(turn),))
    assert store.judged_prompts(("h1", "h2")) == {("Stand, ho!", False)}
    assert store.judgements()[0]["prompt"] == "Stand, ho!"  # read as its text everywhere: exported as text too
    assert store.preferences().records[0]["prompt"] == "Stand, ho!"


def test_conversation_prompts_are_labelled_exported_and_remembered(tmp_path):
    """A prompt may be a conversation ending with the user turn to answer: its pair holds the
    turns, its preference record is in TRL's conversational form, and a restart knows it judged."""
    from ferrolm.conversations import preference
    from ferrolm.preferences import load_preferences

    store = LabelStore(tmp_path / "db.sqlite")
    same_text = CONVERSATION[-1]["content"]  # the same words as a text prompt: another prompt
    prompts = [CONVERSATION, same_text]
    queue = PairQueue(store, prompts, *samplers(), lookahead=2).start()
    try:
        wait_until(lambda: len(store.unjudged_pairs()) == 2)
        first, second = queue.take("tab", 2)
    finally:
        queue.stop()
    assert first.prompt == CONVERSATION and second.prompt == same_text
    assert first.public()["prompt"] == CONVERSATION and LabelStore(tmp_path / "db.sqlite").pair(first.id) == first
    store.judge(first.id, "left", "", "ann")
    chosen, rejected = (first.completion_a, first.completion_b)[:: 1 if first.side("left") == "a" else -1]
    assert store.judgements()[0]["prompt"] == CONVERSATION
    restarted = PairQueue(store, prompts, *samplers(FakeModel()), lookahead=2)
    assert restarted.labelled == 1 and [p.id for p in restarted.take("tab", 2)] == [second.id]
    store.export(tmp_path / "prefs.jsonl")
    [record] = load_preferences(tmp_path / "prefs.jsonl")
    assert preference(record) == (CONVERSATION, chosen, rejected)
    written = json.loads((tmp_path / "prefs.jsonl").read_text())
    assert (written["prompt"], written["chosen"]) == (CONVERSATION, chosen)  # the turns, and the answer's text
    # Which sampler wrote each side: one database may hold several comparisons.
    winner, loser = ("a", "b") if first.side("left") == "a" else ("b", "a")
    for key, side in (("chosen_by", winner), ("rejected_by", loser)):
        assert written[key] == {**first.settings[side], "weights": getattr(first, f"model_{side}_hash")}


def test_a_version_1_database_opens_with_its_text_prompts(tmp_path):
    """Databases from before conversations (schema version 1) gain the column on opening."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('app', 'ferrolm-label'), ('schema_version', '1');
        CREATE TABLE pairs (id TEXT PRIMARY KEY, prompt TEXT NOT NULL, completion_a TEXT NOT NULL,
            completion_b TEXT NOT NULL, shown_left TEXT NOT NULL, settings TEXT NOT NULL,
            model_a_hash TEXT NOT NULL, model_b_hash TEXT NOT NULL, created_at TEXT NOT NULL);
        CREATE TABLE judgements (id INTEGER PRIMARY KEY AUTOINCREMENT, pair_id TEXT NOT NULL UNIQUE,
            prompt TEXT NOT NULL, completion_a TEXT NOT NULL, completion_b TEXT NOT NULL, shown_left TEXT NOT NULL,
            choice TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', labeller TEXT NOT NULL, created_at TEXT NOT NULL,
            settings TEXT NOT NULL, model_a_hash TEXT NOT NULL, model_b_hash TEXT NOT NULL);
        INSERT INTO pairs VALUES ('p1', '["not", "a conversation"]', 'x', 'y', 'a', '{}', 'h', 'h', '2026-01-01');
        INSERT INTO judgements (pair_id, prompt, completion_a, completion_b, shown_left, choice, labeller, created_at,
            settings, model_a_hash, model_b_hash)
            VALUES ('p1', '["not", "a conversation"]', 'x', 'y', 'a', 'b', 'ann', '2026-01-01', '{}', 'h', 'h');
    """)
    con.close()
    before = path.read_bytes()
    # Read (an export, training) as it is: a copy that cannot be written still reads.
    assert [r["choice"] for r in LabelStore.open_existing(path).judgements()] == ["b"]
    assert LabelStore.open_existing(path).pair("p1").prompt == '["not", "a conversation"]'
    assert path.read_bytes() == before
    for _ in range(2):  # opened to label into, it gains the column; the second opening finds version 2
        store = LabelStore(path)
        assert store.pair("p1").prompt == '["not", "a conversation"]'  # a text that looks like JSON stays text
        assert [r["choice"] for r in store.judgements()] == ["b"]
    old_models = (Sampler(FakeModel(), "m", "h"), Sampler(FakeModel(), "m", "h"))
    assert PairQueue(store, ['["not", "a conversation"]'], *old_models).labelled == 1
    store.add_pair(Pair(prompt=CONVERSATION, completion_a="a", completion_b="b", shown_left="b", settings={},
                        model_a_hash="h", model_b_hash="h", id="p2"))
    assert store.pair("p2").prompt == CONVERSATION
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    con.execute("UPDATE pairs SET prompt = ? WHERE id = 'p2'", ('[{"role": "assistant"}]',))
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="pair p2: its prompt is not a text or a conversation"):
        store.pair("p2")


def test_the_weights_hash_covers_every_shard(tmp_path):
    """A completion is tied to the weights that made it: model.safetensors' sha256 (as stored
    before shards were read), or the shard index and every shard it names."""
    import hashlib

    from ferrolm.label.pairs import weights_hash

    single = tmp_path / "single"
    single.mkdir()
    (single / "model.safetensors").write_bytes(b"weights")
    assert weights_hash(single) == hashlib.sha256(b"weights").hexdigest()
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1", "b": "s2", "c": "s1"}}))
    (sharded / "s1").write_bytes(b"one")
    (sharded / "s2").write_bytes(b"two")
    before = weights_hash(sharded)
    (sharded / "s2").write_bytes(b"TWO")
    assert weights_hash(sharded) != before
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../single/model.safetensors"}}))
    with pytest.raises(ValueError, match="not a file name in the directory"):  # never read from elsewhere
        weights_hash(sharded)


def test_labeller_names():
    from ferrolm.label.store import is_labeller_name

    assert all(is_labeller_name(n) for n in ("ann", "Zoë", "\u0632\u0647\u200c\u0631\u0627", "x" * 100))  # ZWNJ (Persian) too
    assert not any(is_labeller_name(n) for n in ("", " ", "x" * 101, "a\tb", "a\u2028b", "\u202eevil", "\ud800", 5, None))
    # Names that look empty: a zero-width space, a byte-order mark, direction marks, Braille's blank, Hangul's filler.
    assert not any(is_labeller_name(n) for n in ("\u200b", "\ufeff", "\u200e\u200f", "\u2800", "\u3164", " \u200b "))
    assert is_labeller_name("\U0001f469\u200d\U0001f4bb")  # an emoji joined by a zero-width joiner is visible
