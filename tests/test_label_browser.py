"""The labelling page in a real headless browser (Debian's Chromium driven by Playwright):
clicks and keys, undo, reload, the judgements page, export; model output shown as text; and
the loop closing into `ferrolm reward`."""

import json
import shutil
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from label_helpers import LabelServer, make_model, run_cli, write_prompts  # noqa: E402

from ferrolm.label.pairs import Sampler, weights_hash  # noqa: E402
from ferrolm.label.store import LabelStore, Pair  # noqa: E402
from ferrolm.preferences import load_preferences  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("label-model") / "model")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, errors  # no JavaScript error on any page


def shown(page) -> dict:
    """The pair on screen once it has loaded."""
    sync_api.expect(page.locator("#prompt")).not_to_have_text("")
    return {"id": page.locator("body").get_attribute("data-pair"), "prompt": page.inner_text("#prompt"),
            "left": page.locator("#left-text").text_content(), "right": page.locator("#right-text").text_content()}


def expect_progress(page, labelled: int, total: int) -> None:
    sync_api.expect(page.locator("#progress")).to_have_text(f"{labelled} / {total} labelled")


def test_labelling_by_click_and_keyboard_with_undo_reload_and_export(model, tmp_path, page):
    prompts = write_prompts(tmp_path / "prompts.txt", 6)
    db = tmp_path / "prefs.sqlite"
    with LabelServer(model, tmp_path / "prompts.txt", db, "--labeller", "ann") as server:
        page.goto(server.url)
        sync_api.expect(page.locator("#labeller")).to_have_attribute("placeholder", "ann")  # the server's name
        expect_progress(page, 0, 6)
        seen = []

        def judge(how, labelled):
            pair = shown(page)
            how()
            expect_progress(page, labelled, 6)
            sync_api.expect(page.locator("#status")).to_contain_text("Saved")
            seen.append(pair)
            return pair

        judge(lambda: page.click("button[data-choice=left]"), 1)  # a click on "A is better"
        page.fill("#comment", "nicer ending")
        page.press("#comment", "Escape")  # typing in the box does not label; Esc leaves it
        judge(lambda: page.keyboard.press("2"), 2)
        judge(lambda: page.keyboard.press("3"), 3)
        page.fill("#labeller", "Bea")  # a name of this browser's own: typing it does not label
        page.press("#labeller", "Escape")
        judge(lambda: page.keyboard.press("s"), 4)
        undone = judge(lambda: page.keyboard.press("1"), 5)
        page.keyboard.press("u")
        expect_progress(page, 4, 6)
        assert shown(page) == undone  # the undone pair is back on screen
        seen.pop()
        judge(lambda: page.click("button[data-choice=right]"), 5)
        assert [p["prompt"] for p in seen] == prompts[:5]  # the prompts in file order, each once

        current = shown(page)
        page.reload()
        expect_progress(page, 5, 6)
        assert shown(page) == current  # a reload shows the same pair, progress kept
        assert page.input_value("#labeller") == "Bea"  # and the name

        page.goto(server.url + "judgements")
        rows = page.locator("#judgements tbody tr")
        sync_api.expect(rows).to_have_count(5)
        verdicts = [rows.nth(i).get_attribute("data-verdict") for i in range(5)]
        assert verdicts == ["right", "skip", "tie", "right", "left"]  # newest first
        assert page.locator("#judgements tbody tr td.chosen").count() == 3

        result = run_cli("label", "export", "--db", str(db), "--out", str(tmp_path / "prefs.jsonl"))
        assert result.returncode == 0, result.stderr
        assert "wrote 3 preference pairs" in result.stdout and "1 skip" in result.stdout and "1 tie" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    expected = [(seen[0], "left", "right"), (seen[1], "right", "left"), (seen[4], "right", "left")]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records] == \
        [(p["prompt"], p[chosen], p[rejected]) for p, chosen, rejected in expected]
    assert records[1]["comment"] == "nicer ending" and [r["labeller"] for r in records] == ["ann", "ann", "Bea"]
    from_db = [{k: v for k, v in r.items() if k != "_where"} for r in load_preferences(db).records]
    assert from_db == records  # the database reads the same as its export


def test_a_pair_left_in_an_idle_tab_goes_to_another_and_the_idle_tab_moves_on(model, tmp_path, browser, page):
    write_prompts(tmp_path / "prompts.txt", 6)
    db = tmp_path / "prefs.sqlite"
    with LabelServer(model, tmp_path / "prompts.txt", db, "--lease-minutes", "0.03") as server:
        deadline = time.monotonic() + 30
        while len(LabelStore.open_existing(db).unjudged_pairs()) < 2:  # the page's first ask gets both its pairs,
            assert time.monotonic() < deadline, "no pairs generated"  # so it asks again only a minute later
            time.sleep(0.05)
        page.goto(server.url)
        idle = shown(page)
        page.wait_for_timeout(2500)  # past the hold of 1.8 s
        other = browser.new_context().new_page()
        other.goto(server.url)
        assert shown(other) == idle  # the next tab that asks gets the idle tab's pair
        page.keyboard.press("1")
        sync_api.expect(page.locator("#status")).to_contain_text("another tab holds this pair")
        sync_api.expect(page.locator("body")).not_to_have_attribute("data-pair", idle["id"])  # it moved on
        other.keyboard.press("2")
        expect_progress(other, 1, 6)
        verdicts = [j["verdict"] for j in server.call("GET", "/api/judgements")[1]["judgements"]]
        assert verdicts == ["right"]  # the other tab's; the idle tab's key press recorded nothing
        other.context.close()


def test_a_judgement_whose_answer_was_lost_is_said_saved_and_can_be_undone(model, tmp_path, page):
    """A judgement stored whose answer never reached the page, chosen again differently: the
    page said "Not saved" (the pair was judged) and could not undo it."""
    write_prompts(tmp_path / "prompts.txt", 3)
    with LabelServer(model, tmp_path / "prompts.txt", tmp_path / "prefs.sqlite") as server:
        page.goto(server.url)
        pair = shown(page)
        client = page.evaluate("sessionStorage.getItem('clientId')")
        status, _ = server.call("POST", "/api/judgements", {"pair_id": pair["id"], "client": client, "choice": "left"})
        assert status == 200  # the lost answer: stored, never seen by the page
        page.keyboard.press("2")
        sync_api.expect(page.locator("#status")).to_contain_text("Already saved: A is better")
        sync_api.expect(page.locator("body")).not_to_have_attribute("data-pair", pair["id"])
        page.keyboard.press("u")
        sync_api.expect(page.locator("#status")).to_contain_text("Undone")
        sync_api.expect(page.locator("body")).to_have_attribute("data-pair", pair["id"])
        page.keyboard.press("2")
        sync_api.expect(page.locator("#status")).to_contain_text("Saved: B is better")
        verdicts = [j["verdict"] for j in server.call("GET", "/api/judgements")[1]["judgements"]]
        assert verdicts == ["right"]


def test_model_output_is_shown_as_text_never_as_html(model, tmp_path, page):
    prompt = "<i>hi</i>"
    (tmp_path / "prompts.txt").write_text(prompt + "\n")
    hostile_a = "<script>document.title='pwned'</script><b>bold</b>"
    hostile_b = "<img src=x onerror=\"document.title='pwned'\"> & </pre><p>escape</p>"
    # A pair already in the database is shown before anything is generated (as after a restart),
    # sampled as the server samples (the CLI's defaults, 24 new tokens).
    db = tmp_path / "prefs.sqlite"
    h = weights_hash(model)
    settings = Sampler(None, str(model), h, max_new_tokens=24).settings(0)
    LabelStore(db).add_pair(Pair(prompt=prompt, completion_a=hostile_a, completion_b=hostile_b, shown_left="a",
                                 settings={"a": settings, "b": settings}, model_a_hash=h, model_b_hash=h))
    with LabelServer(model, tmp_path / "prompts.txt", db) as server:
        page.goto(server.url)
        assert shown(page)["left"] == hostile_a and shown(page)["right"] == hostile_b
        assert page.inner_text("#prompt") == prompt
        for tag in ("script", "b", "img", "p", "i"):
            assert page.locator(f"main pre {tag}").count() == 0, tag
        page.keyboard.press("1")
        expect_progress(page, 1, 1)
        page.goto(server.url + "judgements")
        sync_api.expect(page.locator("#judgements tbody tr")).to_have_count(1)
        cells = page.locator("#judgements tbody td.text")
        assert [cells.nth(i).text_content() for i in range(3)] == [prompt, hostile_a, hostile_b]
        assert page.locator("#judgements tbody img, #judgements tbody b, #judgements tbody script").count() == 0
        assert page.title() == "Judgements · ferrolm label"  # no injected script ever ran


def test_judgements_from_the_page_train_a_reward_model(model, tmp_path, page):
    from ferrolm.cli import main

    write_prompts(tmp_path / "prompts.txt", 4)
    db = tmp_path / "prefs.sqlite"
    with LabelServer(model, tmp_path / "prompts.txt", db) as server:
        page.goto(server.url)
        for labelled, key in enumerate("1212", 1):
            shown(page)
            page.keyboard.press(key)
            expect_progress(page, labelled, 4)
    assert run_cli("label", "export", "--db", str(db), "--out", str(tmp_path / "prefs.jsonl")).returncode == 0
    for data, out in ((tmp_path / "prefs.jsonl", tmp_path / "rm-jsonl"), (db, tmp_path / "rm-sqlite")):
        assert main(["reward", str(model), "--data", str(data), "--out", str(out), "--max-iters", "20"]) == 0
        assert (out / "reward_head.safetensors").stat().st_size > 0


def test_a_conversation_is_shown_turn_by_turn_and_exported_as_one(tmp_path, page):
    """A chat model's prompt may be a conversation: the page shows each turn under its role
    (as text), and the export keeps the turns, in TRL's conversational form."""
    from ferrolm.conversations import preference

    chat_model = make_model(tmp_path / "chat-model", chat=True)
    conversation = [{"role": "user", "content": "<b>Who</b> goes there?"}, {"role": "assistant", "content": "A friend."},
                    {"role": "user", "content": "Unfold yourself."}]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": conversation}) + "\n" + json.dumps({"prompt": "Just a text."}) + "\n")
    db = tmp_path / "prefs.sqlite"
    with LabelServer(chat_model, prompts, db) as server:
        page.goto(server.url)
        first = shown(page)
        turns = page.locator("#prompt .turn")
        sync_api.expect(turns).to_have_count(3)
        assert [turns.nth(i).get_attribute("data-role") for i in range(3)] == ["user", "assistant", "user"]
        assert [turns.nth(i).locator(".role").text_content() for i in range(3)] == ["user", "assistant", "user"]
        assert turns.nth(0).text_content() == "user<b>Who</b> goes there?" and page.locator("#prompt b").count() == 0
        page.keyboard.press("1")
        sync_api.expect(page.locator("#prompt")).to_have_text("Just a text.")
        assert page.locator("#prompt .turn").count() == 0
        page.keyboard.press("s")
        expect_progress(page, 2, 2)
        page.goto(server.url + "judgements")
        sync_api.expect(page.locator("#judgements tbody tr")).to_have_count(2)
        assert page.locator("#judgements tbody tr").nth(1).locator(".turn").count() == 3
    out = tmp_path / "prefs.jsonl"
    assert run_cli("label", "export", "--db", str(db), "--out", str(out)).returncode == 0
    [record] = load_preferences(out)  # the skipped text prompt is left out
    assert preference(record) == (conversation, first["left"], first["right"])
