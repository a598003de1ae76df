"""Takes docs/label.png, the README's picture of `ferrolm label`.

Trains a small char-level GPT on the bundled tiny Shakespeare for a few seconds (so the
completions look like something), serves the labelling page on a free loopback port, and
photographs it with Debian's headless Chromium through Playwright. Offline; about a minute.

    python scripts/screenshot_label.py [--out docs/label.png]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["ROMEO:\nWhat light", "JULIET:\nO Romeo, Romeo!", "KING RICHARD II:\nLet's talk of graves",
           "First Citizen:\nBefore we proceed", "HAMLET:\nTo be"]


def train_model(out: Path) -> None:
    import ferrolm as fl
    from ferrolm.data import BUNDLED_CORPUS, prepare_tokens
    from ferrolm.train import CausalLM, TrainConfig, train

    text = BUNDLED_CORPUS.read_text()
    tok = fl.Tokenizer.train_from_iterator([text], kind="char", vocab_size=1 << 20)
    prepare_tokens(text, tok, out / "data")
    model = fl.GPT.create(vocab_size=tok.vocab_size, block_size=128, n_layer=3, n_head=4, n_embd=96, seed=0, tokenizer=tok)
    train(model, CausalLM(out / "data", 128, 16), TrainConfig(max_iters=800, eval_interval=1000, eval_iters=2,
          learning_rate=3e-3, warmup_iters=50, lr_decay_iters=800, min_lr=3e-4, progress=False), out / "model")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "label.png"))
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="ferrolm-screenshot-") as tmp:
        tmp = Path(tmp)
        print("training a small model...", flush=True)
        train_model(tmp)
        # .jsonl prompts may span lines (a plain text file holds one prompt per line).
        (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        cli = [sys.executable, "-c", "import sys; from ferrolm.cli import main; sys.exit(main())"]
        server = subprocess.Popen([*cli, "label", str(tmp / "model"), "--prompts", str(tmp / "prompts.jsonl"),
                                   "--db", str(tmp / "prefs.sqlite"), "--port", "0", "--labeller", "ada",
                                   "--max-new-tokens", "220", "--temperature", "0.8", "--temperature-b", "1.1"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            url = ""
            deadline = time.monotonic() + 120
            while not url and time.monotonic() < deadline:
                line = server.stdout.readline()
                if not line:
                    raise SystemExit("the label server exited")
                match = re.search(r"open (http://\S+)", line)
                url = match.group(1) if match else ""
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 720}, device_scale_factor=1)
                page.set_default_timeout(60_000)
                page.goto(url)
                expect(page.locator("#prompt")).not_to_have_text("")
                page.keyboard.press("1")  # one judgement, so progress and the saved note show
                expect(page.locator("#progress")).to_have_text(f"1 / {len(PROMPTS)} labelled")
                expect(page.locator("#prompt")).not_to_have_text("")
                page.fill("#comment", "B loses the thread halfway")
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
