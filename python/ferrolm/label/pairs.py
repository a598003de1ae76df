"""Pairs to label, generated ahead of time on a background thread and leased to browser tabs.

The generator thread keeps `lookahead` pairs ready that no tab holds yet, so a request never
waits for the model: while a person reads one pair the next is already sampled (generation
releases the GIL, so the web server keeps answering meanwhile). Each pair is written to the
database the moment it exists.

A tab (identified by a random client id it keeps across reloads) *leases* the pairs it is
shown, so two tabs never get the same pair at once; a lease older than `lease_seconds`
(a closed tab) lapses and the pair goes to whoever asks next. Leases live in memory only:
after a restart every unjudged pair is free again.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ferrolm.conversations import Prompt
from ferrolm.data import files_digest
from ferrolm.label.prompts import prompt_key
from ferrolm.label.store import Conflict, LabelStore, Pair, is_busy


def weights_hash(model_dir: Path) -> str:
    """sha256 of the weights' files (model.safetensors, or the shard index and its shards, one
    after another): which weights produced a completion."""
    from ferrolm import _core

    return files_digest(*_core.model_weights_files(model_dir))


@dataclass
class Sampler:
    """One side of a comparison: a model and how to sample from it."""

    model: object  # a ferrolm GPT with a tokenizer
    model_dir: str
    weights_hash: str
    temperature: float = 0.8
    top_k: Optional[int] = 200
    top_p: Optional[float] = None
    max_new_tokens: int = 128
    chat: bool = False  # prompts as user turns of the chat template, answers ending at <|end|>

    def settings(self, seed: int) -> dict:
        return {"model": self.model_dir, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "chat": self.chat, "seed": seed}

    def sample(self, prompt: Prompt, seed: int, stopped: Callable[[], bool]) -> str:
        """A completion, streamed so that a server shutting down (`stopped`) need not wait for
        a long one (Ctrl-C waited up to 30 s): `Stopped` then."""
        # GPT.generate runs the Rust KV-cache generator (core.generation) without the GIL.
        pieces = []
        for piece in self.model.generate(prompt, self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                                         top_p=self.top_p, seed=seed, chat=self.chat, stream=True):
            if stopped():
                raise Stopped
            pieces.append(piece)
        return "".join(pieces)


class Stopped(Exception):
    """A sample cut short because its queue stopped."""


def _same_sampling(saved: dict, sampler: Sampler) -> bool:
    """Whether a stored pair's side was sampled as `sampler` samples (seed and path aside;
    pairs from before chat mode were raw)."""
    def key(settings: dict) -> dict:
        return {"chat": False, **{k: v for k, v in settings.items() if k not in ("seed", "model")}}

    return key(saved) == key(sampler.settings(0))


class PairQueue:
    """Generates one pair per prompt in the background and hands pairs out to tabs."""

    RETRIES = 3  # new seeds tried when both sides come out identical or one blank (no preference to export)

    def __init__(self, store: LabelStore, prompts: list[Prompt], a: Sampler, b: Sampler, *, seed: int = 0,
                 lookahead: int = 2, lease_seconds: float = 900.0) -> None:
        self.store, self.prompts, self.a, self.b = store, prompts, a, b
        self.seed, self.lookahead, self.lease_seconds = seed, lookahead, lease_seconds
        self._cond = threading.Condition()
        self._stop = False
        self._pool: dict[str, Pair] = {}  # unjudged pairs, by id, in generation order
        self._leases: dict[str, tuple[str, float, float]] = {}  # pair id -> (client, order, time)
        self._judged_by: dict[str, str] = {}  # pair id -> the client that judged it (in this run)
        self.failed: list[str] = []  # messages of prompts that could not be generated
        self._generating = False
        self._wanted = wanted = {prompt_key(p) for p in prompts}
        self._hashes = hashes = (a.weights_hash, b.weights_hash)
        judged = store.judged_prompts(hashes) & wanted
        self.total = len(prompts)
        self._judged = set(judged)
        # Unjudged pairs from an earlier run are offered again if the same weights made them
        # with the same sampling (chat or raw, temperature...; seeds aside).
        pooled: set = set()  # the prompts of the pairs offered again (one pair each)
        for pair in store.unjudged_pairs():
            if pair.key in wanted and pair.key not in judged and (pair.model_a_hash, pair.model_b_hash) == hashes \
                    and all(_same_sampling(pair.settings.get(x, {}), s) for x, s in (("a", a), ("b", b))) \
                    and pair.key not in pooled:
                self._pool[pair.id] = pair
                pooled.add(pair.key)
        have = judged | pooled
        self._todo = [(i, p) for i, p in enumerate(prompts) if prompt_key(p) not in have]
        self._thread = threading.Thread(target=self._run, name="ferrolm-label-generator", daemon=True)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "PairQueue":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------ what the server asks

    @property
    def labelled(self) -> int:
        return len(self._judged)

    @property
    def done(self) -> bool:
        """Nothing left to show: every prompt judged (or failed to generate)."""
        with self._cond:
            return not self._pool and not self._todo and not self._generating

    def held_elsewhere(self, client: str) -> bool:
        """Whether all that is left to label is pairs other tabs hold (the page of `client`
        then says so, rather than that the next pair is being generated)."""
        t = time.monotonic()
        with self._cond:
            if self._todo or self._generating or not self._pool:
                return False
            leases = [self._leases.get(pid) for pid in self._pool]
            return all(lease is not None and lease[0] != client and t - lease[2] <= self.lease_seconds
                       for lease in leases)

    def take(self, client: str, n: int) -> list[Pair]:
        """Up to `n` pairs for `client`: the ones it already holds first (so a reload shows
        the same pair), topped up with free ones."""
        t = time.monotonic()
        with self._cond:
            mine = sorted((lease[1], pid) for pid, lease in self._leases.items() if lease[0] == client)
            pairs = [self._pool[pid] for _, pid in mine if pid in self._pool][:n]
            order = max((lease[1] for lease in self._leases.values()), default=0.0)
            for pid, pair in self._pool.items():
                if len(pairs) >= n:
                    break
                lease = self._leases.get(pid)
                if lease is None or (lease[0] != client and t - lease[2] > self.lease_seconds):
                    order += 1
                    self._leases[pid] = (client, order, t)
                    pairs.append(pair)
            for pair in pairs:  # renew: a tab that is in use keeps its pairs
                client_, order_, _ = self._leases[pair.id]
                self._leases[pair.id] = (client_, order_, t)
            self._cond.notify_all()  # a lease taken: maybe time to generate more
        return pairs

    def claim(self, pair_id: str, client: str) -> None:
        """Lets `client` judge (or undo the judgement of) pair `pair_id`, or raises Conflict:
        another tab judged it, or holds it (this tab left it unlabelled for lease_seconds and
        it was given out again). A pair whose hold ran out and was not given out again is
        this tab's again."""
        with self._cond:
            judge = self._judged_by.get(pair_id)
            if judge is not None and judge != client:
                raise Conflict("another tab judged this pair")
            lease = self._leases.get(pair_id)
            if lease is not None and lease[0] != client:
                if time.monotonic() - lease[2] <= self.lease_seconds:
                    raise Conflict(f"another tab holds this pair (a tab's hold on a pair lapses when it leaves the "
                                   f"pair unlabelled for {self.lease_seconds / 60:g} minutes)")
                self._leases[pair_id] = (client, lease[1], time.monotonic())

    def judged(self, pair: Pair, client: str) -> None:
        with self._cond:
            self._pool.pop(pair.id, None)
            self._leases.pop(pair.id, None)
            self._judged_by[pair.id] = client
            if self._ours(pair):
                self._judged.add(pair.key)

    def _ours(self, pair: Pair) -> bool:
        """Whether `pair` is one of this run's prompts by this run's models (in either order): a
        tab left open across a restart with other weights may still judge an older pair."""
        return pair.key in self._wanted and {pair.model_a_hash, pair.model_b_hash} == set(self._hashes)

    def undone(self, pair: Pair, client: str) -> None:
        """A judgement was undone: its pair goes back, first in line for `client`."""
        with self._cond:
            self._judged_by.pop(pair.id, None)
            if self._ours(pair):
                self._judged.discard(pair.key)
                self._pool = {pair.id: pair, **self._pool}
                first = min((lease[1] for lease in self._leases.values()), default=0.0)
                self._leases[pair.id] = (client, first - 1, time.monotonic())

    # ------------------------------------------------------------ the generator thread

    def _free(self) -> int:
        return sum(1 for pid in self._pool if pid not in self._leases)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._todo or self._free() >= self.lookahead):
                    self._cond.wait()
                if self._stop:
                    return
                index, prompt = self._todo.pop(0)
                self._generating = True
            pair = stopped = None
            try:
                pair = self._generate(index, prompt)
                self._save(pair)  # persisted before anyone can see it
            except Stopped:
                stopped = True
            except Exception as e:  # a bad prompt must not stop the others
                message = f"prompt {index + 1}: generation failed: {e}"
                print(f"ferrolm label: {message}", file=sys.stderr, flush=True)
                pair = None
            with self._cond:
                self._generating = False
                if stopped:
                    return
                if pair is not None:
                    self._pool[pair.id] = pair
                else:
                    self.failed.append(message)
                self._cond.notify_all()

    def _save(self, pair: Pair) -> None:
        """Stores `pair`, trying again while another program holds the database (a SQLite
        editor mid-transaction) past the store's wait: that is no failure of the prompt's.
        `Stopped` if the queue is stopped first."""
        while True:
            try:
                self.store.add_pair(pair)
                return
            except sqlite3.OperationalError as e:
                if not is_busy(e):
                    raise
                print("ferrolm label: the database is busy (another program is writing to it): saving this pair "
                      "again", file=sys.stderr, flush=True)
            with self._cond:
                if self._cond.wait_for(lambda: self._stop, timeout=1.0):
                    raise Stopped

    def _generate(self, index: int, prompt: Prompt) -> Pair:
        rng = random.Random(f"{self.seed}:{index}")
        stopped = lambda: self._stop  # noqa: E731 (read without the lock: a flag, set once)
        for attempt in range(self.RETRIES):
            seed_a = self.seed + 2 * index + 1_000_003 * attempt
            seed_b = seed_a + 1
            text_a, text_b = self.a.sample(prompt, seed_a, stopped), self.b.sample(prompt, seed_b, stopped)
            if text_a != text_b and text_a.strip() and text_b.strip():
                break
        return Pair(prompt=prompt, completion_a=text_a, completion_b=text_b, shown_left=rng.choice("ab"),
                    settings={"a": self.a.settings(seed_a), "b": self.b.settings(seed_b)},
                    model_a_hash=self.a.weights_hash, model_b_hash=self.b.weights_hash)
