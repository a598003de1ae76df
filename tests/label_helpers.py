"""Helpers for the labelling tests: a tiny model directory, and `ferrolm label` run as a real
server process on a free loopback port (always stopped, with bounded waits)."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import ferrolm as fl

# Characters the tiny model knows: letters for prompts, and HTML's for the escaping test.
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'\n<>/=\"()"
STARTUP_SECONDS = 60
# The `ferrolm` console script, run by this interpreter (so the test venv's ferrolm is used).
CLI = [sys.executable, "-c", "import sys; from ferrolm.cli import main; sys.exit(main())"]


def make_model(path: Path, seed: int = 0, chat: bool = False) -> Path:
    """An untrained char-level GPT (its output is gibberish, which is all the page needs); with
    `chat`, its tokenizer has the chat template's tokens, as a model from `ferrolm sft`."""
    from ferrolm.chat import SPECIALS

    tok = fl.Tokenizer.train_from_iterator([ALPHABET], kind="char", vocab_size=1 << 20)
    if chat:
        tok.add_special_tokens(list(SPECIALS))
    fl.GPT.create(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32, seed=seed,
                  tokenizer=tok).save(path)
    return path


def write_prompts(path: Path, n: int) -> list[str]:
    prompts = [f"Prompt {i}: once upon a time" for i in range(n)]
    path.write_text("\n".join(prompts) + "\n")
    return prompts


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class LabelServer:
    """`ferrolm label ... --port 0` in a subprocess; `url` is where it listens."""

    def __init__(self, model: Path, prompts: Path, db: Path, *extra: str) -> None:
        self.args = [*CLI, "label", str(model), "--prompts", str(prompts), "--db", str(db),
                     "--port", "0", "--max-new-tokens", "24", *extra]
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""
        self.output: list[str] = []

    def __enter__(self) -> "LabelServer":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL)
        lines: "queue.Queue[str]" = queue.Queue()

        def pump() -> None:  # keeps reading so the pipe never fills and blocks the server
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.url:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {''.join(self.output)}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"server did not start: {''.join(self.output)}") from None
                continue
            match = re.search(r"open (http://\S+)", line)
            if match:
                self.url = match.group(1).split("?")[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush — what a crash or power cut looks like to the process."""
        self.proc.kill()
        self.proc.wait(timeout=15)

    def call(self, method: str, path: str, body=None, *, headers: Optional[dict] = None, raw: Optional[bytes] = None):
        return http(method, self.url + path.lstrip("/"), body, headers=headers, raw=raw)

    def wait_for_pairs(self, client: str, n: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            status, r = self.call("POST", "/api/pairs", {"client": client, "n": n})
            assert status == 200, r
            if len(r["pairs"]) >= n or r["done"] or time.monotonic() > deadline:
                return r["pairs"]
            time.sleep(0.1)


def http(method: str, url: str, body=None, *, headers: Optional[dict] = None, raw: Optional[bytes] = None):
    """(status, decoded JSON or text) of one request, errors included."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    request = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")
