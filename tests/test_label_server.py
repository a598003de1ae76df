"""`ferrolm label` as a real server process: the JSON API and its guards (size, shape, Host,
token), bad input at start-up, and durability when the process is killed mid-labelling."""

import http.client
import json
import socket
import sqlite3
import threading
import time
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from label_helpers import LabelServer, make_model, run_cli, write_prompts  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("label-model") / "model")


def test_api_judgements_and_request_guards(model, tmp_path):
    write_prompts(tmp_path / "prompts.txt", 4)
    with LabelServer(model, tmp_path / "prompts.txt", tmp_path / "db.sqlite", "--labeller", "ann") as server:
        # Idle connections do not lock anyone out (64 of them made every request a 503).
        host, port = server.url.split("//")[1].rstrip("/").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(80)]
        first, second = server.wait_for_pairs("tab1", 2)
        for connection in idle:
            connection.close()
        assert first["prompt"] == "Prompt 0: once upon a time" and set(first) == {"id", "prompt", "left", "right"}
        status, r = server.call("POST", "/api/judgements", {"pair_id": first["id"], "client": "tab1", "choice": "left", "comment": "ok"})
        assert status == 200 and r["labelled"] == 1 and r["total"] == 4 and not r["duplicate"]
        # A retry (the answer was lost on the way) is stored once and answered with the same id.
        status, again = server.call("POST", "/api/judgements", {"pair_id": first["id"], "client": "tab1", "choice": "left", "comment": "ok"})
        assert status == 200 and again["id"] == r["id"] and again["duplicate"]
        # Sent again with another choice (the first answer was lost): refused, saying which judgement holds it.
        status, reply = server.call("POST", "/api/judgements", {"pair_id": first["id"], "client": "tab1", "choice": "tie"})
        assert status == 409 and reply["judged"] == {"id": r["id"], "choice": "left"}
        assert server.call("POST", "/api/judgements", {"pair_id": "0" * 32, "client": "tab1", "choice": "tie"})[0] == 404
        # Another tab can neither judge a pair this one holds nor undo this one's judgement.
        assert server.call("POST", "/api/judgements", {"pair_id": second["id"], "client": "tab2", "choice": "left"})[0] == 409
        assert server.call("POST", "/api/undo", {"id": r["id"], "pair_id": first["id"], "client": "tab2"})[0] == 409

        bad = [
            ({"pair_id": second["id"], "client": "tab1", "choice": "both"}, None, None, 400),  # unknown choice
            ({"pair_id": second["id"], "choice": "left"}, None, None, 400),  # no client
            ({"pair_id": "../etc", "choice": "left"}, None, None, 400),  # malformed id
            ({"pair_id": second["id"], "client": "tab1", "choice": "left", "comment": 5}, None, None, 400),
            ({"pair_id": second["id"], "client": "tab1", "choice": "left", "comment": "x" * 1001}, None, None, 400),
            (None, b'{"pair_id": "%s", "client": "tab1", "choice": "left", "comment": "\\ud800"}' % second["id"].encode(), None, 400),
            (None, b"{not json", None, 400),
            (None, b"[1, 2]", None, 400),
            (None, b'{"pair_id": "' + b"a" * 20000 + b'"}', None, 413),  # oversized
            (None, b"pair_id=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),  # a cross-site form
        ]
        for name in (5, 0, False, "x" * 101, "a\nb", "  ", "\u202eevil"):
            bad.append(({"pair_id": second["id"], "client": "tab1", "choice": "left", "labeller": name}, None, None, 400))
        for body, raw, headers, expected in bad:
            status, reply = server.call("POST", "/api/judgements", body, raw=raw,
                                        headers=headers or {"Content-Type": "application/json"})
            assert status == expected and "error" in reply, (body, raw, status, reply)
        for body in ({"client": "bad id"}, {"client": "tab1", "n": 99}, {"client": "tab1", "n": True},
                     {"client": "tab1", "n": 2.0}):  # 2.0 == 2, and was a 500 at slicing
            assert server.call("POST", "/api/pairs", body)[0] == 400
        # Taking pairs reserves them: never on a GET (another site's <img> could send one).
        assert server.call("GET", "/api/pairs?client=tab1")[0] == 405
        assert server.call("POST", "/api/judgements", raw=b"[" * 5000, headers={"Content-Type": "application/json"})[0] == 400
        assert server.call("POST", "/api/undo", {"id": 10**30, "pair_id": first["id"], "client": "tab1"})[0] == 404
        # Only the tab that judged a pair knows its id: a judgement id alone undoes nothing.
        assert server.call("POST", "/api/undo", {"id": r["id"], "pair_id": second["id"], "client": "tab1"})[0] == 404
        # DNS rebinding: a page on another name that resolves to 127.0.0.1 gets nothing.
        assert server.call("GET", "/api/status", headers={"Host": "evil.example:80"})[0] == 400
        # A second server on the database is refused: both handed out and generated pairs for the same prompts.
        # Also when a symlink names it (the lock is the database's resolved path's).
        (tmp_path / "link.sqlite").symlink_to(tmp_path / "db.sqlite")
        second_server = run_cli("label", str(model), "--prompts", str(tmp_path / "prompts.txt"), "--db",
                                str(tmp_path / "link.sqlite"), "--port", "0")
        assert second_server.returncode == 2 and "is in use by another ferrolm label server" in second_server.stderr

        # Nothing bad was stored; the judgements list shows the one judgement by screen side.
        status, listing = server.call("GET", "/api/judgements")
        assert status == 200 and len(listing["judgements"]) == 1
        j = listing["judgements"][0]
        assert (j["verdict"], j["left"], j["right"], j["comment"], j["labeller"]) == \
            ("left", first["left"], first["right"], "ok", "ann")
        status, page = server.call("GET", "/")
        assert status == 200 and "app.js" in page and "cdn" not in page.lower()
        _, undone = server.call("POST", "/api/undo", {"id": r["id"], "pair_id": first["id"], "client": "tab1"})
        assert undone["pair"] == first and undone["labelled"] == 0
        # A page may name its labeller (several people on one server); it is stored trimmed.
        assert server.call("POST", "/api/judgements", {"pair_id": second["id"], "client": "tab1", "choice": "tie", "labeller": " bob "})[0] == 200
        assert server.call("GET", "/api/judgements")[1]["judgements"][0]["labeller"] == "bob"
        assert server.call("POST", "/api/undo", {"id": r["id"], "pair_id": first["id"], "client": "tab1"})[0] == 404


def test_a_token_is_required_when_given(model, tmp_path):
    write_prompts(tmp_path / "prompts.txt", 2)
    with LabelServer(model, tmp_path / "prompts.txt", tmp_path / "db.sqlite", "--token", "s3cret-token") as server:
        for path in ("/", "/api/status", "/static/app.js"):
            status, reply = server.call("GET", path)
            assert status == 401 and "token" in reply["error"], path
        assert server.call("POST", "/api/pairs", {"client": "t"})[0] == 401
        assert server.call("GET", "/api/status", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert server.call("POST", "/api/judgements", {"pair_id": "0" * 32, "choice": "left"})[0] == 401
        assert server.call("GET", "/api/status", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        # Browsers keep cookies per host, not per port: the cookie is named by this server's port,
        # and another server's (or a stale) cookie does not hide a right Bearer header.
        name = f"ferrolm_label_token_{urllib.parse.urlsplit(server.url).port}"
        assert server.call("GET", "/api/status", headers={"Cookie": f"{name}=s3cret-token"})[0] == 200
        assert server.call("GET", "/api/status", headers={"Cookie": "ferrolm_label_token_1=s3cret-token"})[0] == 401
        # The name before ports still opens it: a page open across the upgrade keeps working.
        assert server.call("GET", "/api/status", headers={"Cookie": "ferrolm_label_token=s3cret-token"})[0] == 200
        assert server.call("GET", "/api/status", headers={"Cookie": f"{name}=wrong",
                                                          "Authorization": "Bearer s3cret-token"})[0] == 200
        # Other apps on this host send their cookies here too; odd ones must not hide ours.
        for others in ("theme=dark mode", "a(b)=1", 'prefs={"x": 1}'):
            cookie = f"{others}; {name}=s3cret-token"
            assert server.call("GET", "/api/status", headers={"Cookie": cookie})[0] == 200, others
        # Opening the printed address sets the cookie and drops the token from the address bar.
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args):
                return None

        try:
            urllib.request.build_opener(NoRedirect).open(server.url + "?token=s3cret-token", timeout=10)
            raise AssertionError("expected a redirect")
        except urllib.error.HTTPError as e:
            assert e.code == 303 and e.headers["Location"] == "/"
            assert f"{name}=s3cret-token" in e.headers["Set-Cookie"] and "HttpOnly" in e.headers["Set-Cookie"]
    # Listening beyond this machine without a token is refused before anything is bound.
    result = run_cli("label", str(model), "--prompts", str(tmp_path / "prompts.txt"), "--host", "0.0.0.0",
                     "--db", str(tmp_path / "db.sqlite"))
    assert result.returncode == 2 and "--token" in result.stderr


def test_bad_input_at_start_is_a_clear_error(model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    write_prompts(prompts, 2)
    db = tmp_path / "db.sqlite"

    def label(*args, model_dir=model, prompts_file=prompts):
        result = run_cli("label", str(model_dir), "--prompts", str(prompts_file), "--db", str(db), *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("ferrolm: error: "), result.stderr
        return result.stderr

    # One model sampled greedily twice gives the same text: every pair would be unjudgeable.
    assert "give --model-b, or --temperature-b above 0" in label("--temperature", "0")
    assert "--top-k 1 samples greedily" in label("--top-k", "1")
    # So does the same weights given again as --model-b (every pair was two copies of one text).
    assert "has the same weights as" in label("--temperature", "0", "--model-b", str(model))
    assert "a folder, not a database file" in label("--db", str(tmp_path))
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in label("--db", str(tmp_path / "nowhere" / "x.sqlite"))
    # A byte-order mark (Windows Notepad's) is not text; an error after it names its line and byte.
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfa prompt\nb\xff\n")
    assert "bom.txt line 2: not valid UTF-8 (byte 0xff)" in label(prompts_file=tmp_path / "bom.txt")
    (tmp_path / "gaps.txt").write_text("first prompt\n\nthird prompt\n")
    assert "gaps.txt line 2: empty prompt" in label(prompts_file=tmp_path / "gaps.txt")
    (tmp_path / "latin1.txt").write_bytes("a prompt\ncaf\xe9 au lait\n".encode("latin-1"))
    assert "latin1.txt line 2: not valid UTF-8" in label(prompts_file=tmp_path / "latin1.txt")
    # A JSON array of prompts was read as one conversation ("message 0: expected a {'role': ...} mapping"), and a
    # labelling database as text that is "not valid UTF-8".
    (tmp_path / "array.json").write_text('["Who goes there?", "Stand, ho!"]\n')
    assert "array.json line 1: a prompts file holds one prompt per line" in label(prompts_file=tmp_path / "array.json")
    (tmp_path / "labels.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(100))
    assert "is an SQLite database, not a text file (a `ferrolm label` one?" in label(prompts_file=tmp_path / "labels.sqlite")
    (tmp_path / "unknown.txt").write_text("a prompt with \u00e9\n")
    assert "line 1" in label(prompts_file=tmp_path / "unknown.txt")  # a character the model does not know
    assert "model directory" in label(model_dir=tmp_path / "no-such-model")
    assert "does not exist" in label(prompts_file=tmp_path / "no-such-prompts.txt")
    assert "printable ASCII" in label("--token", "s3cr\u20act")
    assert "--labeller must be a name" in label("--labeller", "a\tb")
    conversation = [{"role": "user", "content": "Who goes there?"}]
    (tmp_path / "chats.jsonl").write_text(json.dumps({"prompt": conversation}) + "\n")
    assert "holds conversations, which only a chat model" in label(prompts_file=tmp_path / "chats.jsonl")
    assert not db.exists()  # nothing created for a run that could not start

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        message = label("--port", str(busy.getsockname()[1]))
        assert "Address already in use" in message and "--port" in message
        assert not db.exists()  # it was made before the port was tried
    finally:
        busy.close()

    corrupt = b"SQLite format 3\x00" + bytes(range(256)) * 20
    db.write_bytes(corrupt)
    assert "damaged" in label() and db.read_bytes() == corrupt  # refused, and left exactly as it was
    db.write_bytes(b"my notes, not a database")
    assert "not a SQLite database" in label() and db.read_bytes() == b"my notes, not a database"

    result = run_cli("label", "export", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run_cli("label", "export", "--db", str(db), "--out", str(tmp_path))  # it named a temporary file
    assert result.returncode == 2 and f"--out {tmp_path} is a folder" in result.stderr
    result = run_cli("label", "export", "--db", str(db), "--out", str(tmp_path / "o.jsonl"), "--labeller", "ann", "--raw",
                     "--port", "8765")  # its default, given
    assert result.returncode == 2 and "not --port, --labeller, --raw (the server's flags)" in result.stderr  # not ignored


def test_killed_server_keeps_every_acknowledged_judgement_exactly_once(model, tmp_path):
    n_prompts = 24
    write_prompts(tmp_path / "prompts.txt", n_prompts)
    db = tmp_path / "db.sqlite"
    acked: list[tuple[str, int, str]] = []  # (pair id, judgement id, choice) answered with 200
    lock = threading.Lock()

    def tab(server, name, stop):
        choices = ["left", "right", "tie", "skip"]
        while not stop.is_set():
            try:
                status, r = server.call("POST", "/api/pairs", {"client": name, "n": 1})
                if status != 200 or not r["pairs"]:
                    time.sleep(0.02)
                    continue
                pair = r["pairs"][0]
                choice = choices[len(acked) % 4]
                status, r = server.call("POST", "/api/judgements", {"pair_id": pair["id"], "client": name, "choice": choice})
                if status == 200:
                    with lock:
                        acked.append((pair["id"], r["id"], choice))
            except (OSError, http.client.HTTPException):  # the server died under us (a refused connection,
                return  # a cut response): requests in flight are not acknowledged

    with LabelServer(model, tmp_path / "prompts.txt", db, "--lookahead", "3") as server:
        stop = threading.Event()
        tabs = [threading.Thread(target=tab, args=(server, f"tab{i}", stop)) for i in range(3)]
        for t in tabs:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL while the tabs are still sending
        stop.set()
        for t in tabs:
            t.join(timeout=30)
    assert 8 <= len(acked) < n_prompts

    def rows():
        con = sqlite3.connect(db)
        try:
            return con.execute("SELECT pair_id, id, choice, shown_left FROM judgements").fetchall()
        finally:
            con.close()

    stored = {pair_id: (jid, choice, left) for pair_id, jid, choice, left in rows()}
    assert len(stored) == len(rows())  # one row per pair
    assert {left for _, _, left in stored.values()} == {"a", "b"}  # left/right order is randomised
    for pair_id, judgement_id, side in acked:
        jid, choice, left = stored[pair_id]
        assert jid == judgement_id
        if side in ("left", "right"):
            assert choice == (left if side == "left" else "ab".replace(left, ""))
        else:
            assert choice == side

    with LabelServer(model, tmp_path / "prompts.txt", db) as server:
        status, r = server.call("GET", "/api/status")
        assert r["labelled"] == len(stored) and r["total"] == n_prompts
        # A judgement acknowledged before the crash, retried after it, is still stored once.
        pair_id, judgement_id, side = acked[0]
        status, r = server.call("POST", "/api/judgements", {"pair_id": pair_id, "client": "tab1", "choice": side})
        assert status == 200 and r["id"] == judgement_id and r["duplicate"]
        # Labelling carries on to the end with nothing lost or doubled.
        stop = threading.Event()
        finisher = threading.Thread(target=tab, args=(server, "tab9", stop))
        finisher.start()
        deadline = time.monotonic() + 60
        while server.call("GET", "/api/status")[1]["labelled"] < n_prompts and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        finisher.join(timeout=30)
        assert server.call("GET", "/api/status")[1]["done"]
    con = sqlite3.connect(db)
    prompts = [p for (p,) in con.execute("SELECT prompt FROM judgements")]
    con.close()
    assert sorted(prompts) == sorted(write_prompts(tmp_path / "prompts.txt", n_prompts))


def test_two_models_one_completion_each_with_settings_and_weight_hashes(model, tmp_path):
    other = make_model(tmp_path / "other", seed=1)
    write_prompts(tmp_path / "prompts.txt", 2)
    db = tmp_path / "db.sqlite"
    with LabelServer(model, tmp_path / "prompts.txt", db, "--model-b", str(other), "--temperature", "0.5",
                     "--seed", "7") as server:
        pair = server.wait_for_pairs("tab", 1)[0]
        assert server.call("POST", "/api/judgements", {"pair_id": pair["id"], "client": "tab", "choice": "right"})[0] == 200
    con = sqlite3.connect(db)
    row = con.execute("SELECT settings, model_a_hash, model_b_hash, shown_left, choice, completion_a, completion_b "
                      "FROM judgements").fetchone()
    con.close()
    import hashlib
    import json

    settings, hash_a, hash_b, left, choice, text_a, text_b = row
    settings = json.loads(settings)
    assert hash_a == hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert hash_b == hashlib.sha256((other / "model.safetensors").read_bytes()).hexdigest() != hash_a
    assert settings["a"]["model"] == str(model) and settings["b"]["model"] == str(other)
    assert settings["a"]["temperature"] == settings["b"]["temperature"] == 0.5
    assert settings["a"]["seed"] == 7 and settings["b"]["seed"] == 8 and settings["a"]["max_new_tokens"] == 24
    assert choice == ("b" if left == "a" else "a")  # "right" is whichever was not on the left
    assert {text_a, text_b} == {pair["left"], pair["right"]}


def test_the_base_package_does_not_need_the_web_server():
    import subprocess
    import sys

    code = ("import sys, ferrolm, ferrolm.cli, ferrolm.preferences, ferrolm.label.store, ferrolm.label.pairs; "
            "assert not {'starlette', 'uvicorn'} & set(sys.modules), sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
