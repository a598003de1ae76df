"""The chat template: a prompt/response pair rendered straight to ids with special tokens,

    <|user|> prompt <|assistant|> response <|end|>

User text is encoded as plain text (special-token look-alikes in it stay text), so the first
<|assistant|> id marks where the response starts: loss masks are built from ids, never from
string matching."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from ferrolm import _core
from ferrolm.conversations import checked_turns, located, prompt_turns

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIALS = (USER, ASSISTANT, END)


class ChatTemplate:
    def __init__(self, tokenizer) -> None:
        missing = [t for t in SPECIALS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"the tokenizer lacks the chat tokens {missing}; prepare the model with ChatTemplate.prepare(model)")
        self.tokenizer = tokenizer
        self.user, self.assistant, self.end = (tokenizer.token_to_id(t) for t in SPECIALS)
        #: What ends an answer: <|end|>, or a marker that starts another turn.
        self.turn_ends = (self.end, self.user, self.assistant)

    @staticmethod
    def prepare(model):
        """Adds the chat tokens to the model's tokenizer, growing its embedding if needed (both
        in place), and returns the model's ChatTemplate."""
        tok = model.tokenizer
        if tok is None:
            raise ValueError("the model has no tokenizer")
        if any(tok.token_to_id(t) is None for t in SPECIALS):
            tok.add_special_tokens(list(SPECIALS))
        if tok.vocab_size > model.vocab_size:
            model.core = model.core.with_vocab(tok.vocab_size, seed=0)
        return ChatTemplate(tok)

    def text(self, s: str) -> list[int]:
        return list(self.tokenizer.encode(s, allowed_special="none", disallowed_special="text", add_special_tokens=False))

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids a response is generated after."""
        return [self.user, *self.text(prompt), self.assistant]

    def render(self, prompt: str, response: str) -> list[int]:
        return self.prompt_ids(prompt) + self.text(response) + [self.end]

    def render_conversation(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Whole exchanges (user, assistant, user, assistant, ...), each rendered as `render`
        renders a prompt and its response, one after another."""
        turns = checked_turns(messages)
        return [i for user, answer in zip(turns[::2], turns[1::2]) for i in self.render(user["content"], answer["content"])]

    def reply_prompt(self, prompt: Union[str, Sequence[Mapping[str, str]]]) -> list[int]:
        """`prompt_ids` for a prompt that is a text or a conversation ending with a user turn
        (its earlier exchanges rendered as `render_conversation` renders them)."""
        turns = prompt_turns(prompt)
        return self.render_conversation(turns[:-1]) + self.prompt_ids(turns[-1]["content"])

    def render_reply(self, prompt: Union[str, Sequence[Mapping[str, str]]], response: str) -> list[int]:
        """`render` for a prompt that is a text or a conversation ending with a user turn."""
        return self.reply_prompt(prompt) + self.text(response) + [self.end]

    def answer_targets(self, ids: np.ndarray) -> np.ndarray:
        """[B, T−1] mask over next-token predictions of right-padded rendered conversations:
        position t predicts ids[:, t+1], which is trained when it is an answer's token or the
        <|end|> that closes it, i.e. when the last turn marker before it is <|assistant|>
        (user text never holds a marker id: special-token look-alikes in it stay text). A
        rendered conversation ends with <|end|>, so its padding is never trained."""
        positions = np.arange(ids.shape[1])
        is_marker = np.isin(ids, (self.user, self.assistant, self.end))
        last_marker = np.maximum.accumulate(np.where(is_marker, positions, -1), axis=1)  # at or before each position
        before = last_marker[:, :-1]  # the last marker before position t+1
        return (before >= 0) & (np.take_along_axis(ids, np.maximum(before, 0), axis=1) == self.assistant)

    def response_start(self, ids) -> int:
        """Index of a rendered reply's first response token: just after the last <|assistant|>
        (a conversation's earlier answers are part of the prompt)."""
        hits = np.flatnonzero(np.asarray(ids) == self.assistant)
        if hits.size == 0:
            raise ValueError("sequence has no <|assistant|> token")
        return int(hits[-1]) + 1

    def decode_response(self, ids) -> str:
        """Text of generated response ids, up to the first of `turn_ends` (the answer has ended)."""
        ids = list(ids)
        ends = [i for i, t in enumerate(ids) if t in self.turn_ends]
        return self.tokenizer.decode(ids[: ends[0]] if ends else ids, skip_special_tokens=True)


class Chat:
    """A conversation with a chat model, made by `GPT.chat`: each `send` answers one user
    message in the context of the turns before it.

    The conversation stays in the model's KV cache, so while it fits in the context each
    message and answer goes through the model once. When a message and room for its answer,
    `max_new_tokens` or at most half the context, no longer fit after it (or an answer has run
    past the context), the conversation starts again from its latest whole exchanges that fit
    with the message (the oldest are forgotten, as a model with a fixed context must).
    `messages` is the conversation so far, as Hugging Face writes one:
    [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...].
    """

    def __init__(self, model, messages: Sequence[Mapping[str, str]] = (), *, seed: Optional[int] = None,
                 **sampling) -> None:
        self.model, self.template, self.sampling, self.seed = model, model._chat_template(), sampling, seed
        self._messages = checked_turns(messages)
        for i, m in enumerate(self._messages):  # refused now, not at every later send
            located(f"message {i}", self.template.text, m["content"])
        self.reset(keep_messages=True)

    @property
    def messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self._messages]

    def reset(self, keep_messages: bool = False) -> None:
        """Forgets the conversation (and starts its seeds again, so a seeded chat answers as a
        new one would)."""
        if not keep_messages:
            self._messages = []
        self._generation = None  # the conversation in the model's KV cache, once a message is sent
        self._starts = 0  # generations started: a given seed is offset by it, so each draws anew
        self._turn = 0  # messages sent: an answer's stream stops once a later message is sent
        self._answering = False  # an answer is under way: cut short, the cache may differ from `messages`

    def send(self, message: str, max_new_tokens: int = 200, *, stream: bool = False) -> Union[str, Iterator[str]]:
        """The answer to `message` (a user turn), up to <|end|> or `max_new_tokens`; with
        `stream=True`, an iterator of its text as tokens come (it ends early when a later
        message is sent). Both turns join `messages` at once, the answer growing as it comes:
        an answer cut short (Ctrl-C, a stream left unread) is kept as far as it came."""
        from ferrolm.gpt import _check_sizes, _stream

        _check_sizes(max_new_tokens=max_new_tokens)
        if not isinstance(message, str):
            raise TypeError(f"a message is a str, got {type(message).__name__}")
        turn = self.template.prompt_ids(message)
        block = self.model.block_size
        if len(turn) > block:
            raise ValueError(f"the message takes {len(turn)} tokens with its turn markers, more than the model's "
                             f"context of {block}; shorten it")
        answer_room = min(max_new_tokens, block // 2)
        # The previous answer ends with <|end|>, however it stopped (the stop token it sampled was
        # never run through the model: extend drops it).
        follow = [self.template.end, *turn]
        g = self._generation
        reusable = g is not None and not self._answering and not g.windowed and g.room >= len(follow) + answer_room
        self._turn += 1
        self._answering = True
        if reusable:
            g.extend(follow)
        else:
            self._generation = self._start(turn, block - answer_room)
        answer = {"role": "assistant", "content": ""}
        self._messages += [{"role": "user", "content": message}, answer]
        text = _core.TextStream([], list(self.template.turn_ends), turn[-1:])
        pieces = self._answer(_stream(self._generation, self.model.tokenizer, text, max_new_tokens), answer, self._turn)
        return pieces if stream else "".join(pieces)

    def _start(self, turn: list[int], budget: int):
        """A generation over `turn` after the latest whole exchanges that fit with it in
        `budget` tokens."""
        kept = len(self._messages)
        while kept and len(self.template.render_conversation(self._messages[kept - 2 :])) + len(turn) <= budget:
            kept -= 2
        ids = self.template.render_conversation(self._messages[kept:]) + turn
        seed = None if self.seed is None else (self.seed + self._starts) % 2**64
        self._starts += 1
        return self.model._text_generation([ids], list(self.template.turn_ends), seed=seed, **self.sampling)

    def _answer(self, pieces: Iterator[str], answer: dict, turn: int) -> Iterator[str]:
        while turn == self._turn:  # a later message has the cache: this answer stays as it is
            piece = next(pieces, None)
            if piece is None:
                self._answering = False
                return
            answer["content"] += piece
            yield piece


#: The template for Hugging Face's `apply_chat_template` (a user turn, then the assistant's
#: answer ended by <|end|>); the generation prompt is already open after a user turn.
#: Turns other than the user's and the assistant's (a system prompt) are refused, not dropped:
#: the model was fine-tuned without them.
HF_CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}" + ASSISTANT
                    + "{% elif m['role'] == 'assistant' %}{{ m['content'] }}" + END
                    + "{% else %}{{ raise_exception('this chat model knows only user and assistant turns, not ' + "
                    + "m['role']) }}{% endif %}{% endfor %}")


def hf_chat_files(tokenizer) -> dict[str, dict]:
    """For a chat model's directory, what Hugging Face reads to chat with it:
    `tokenizer_config.json` (the template, <|end|> as eos) and `generation_config.json`
    (`generate` stops at <|end|>); nothing for a tokenizer without the chat tokens."""
    if tokenizer is None or any(tokenizer.token_to_id(t) is None for t in SPECIALS):
        return {}
    end = tokenizer.token_to_id(END)
    return {"tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": HF_CHAT_TEMPLATE,
                                      "eos_token": END},
            "generation_config.json": {"eos_token_id": end}}


def pad_right(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [B, T] ids and each row's length (causal attention never looks right, so
    real tokens are unaffected by the padding)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), pad, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def length_batches(lengths, size: int):
    """Row indices in batches of `size`, shortest rows first: batches padded little (their
    results are put back by index)."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), size):
        yield order[start : start + size]


def real_tokens(lengths: np.ndarray, width: int) -> np.ndarray:
    """The [B, width] mask of the real tokens of right-padded rows of these lengths (an
    encoder's attention mask)."""
    return np.arange(width)[None, :] < lengths[:, None]


def response_mask(ids: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """[B, T−1] mask over next-token predictions: position t predicts ids[:, t+1], which is a
    response token when starts ≤ t+1 < length."""
    t = np.arange(1, ids.shape[1])[None, :]
    return (t >= starts[:, None]) & (t < lengths[:, None])


#: What to do about a record that does not fit, for the errors that name one.
TOO_LONG_HINT = ("skip such records with --skip-long (skip_long=True from Python), or start from a model with a longer "
                 "context (`ferrolm pretrain --block-size`)")


def check_fits(ids: list[int], block_size: int, where: str) -> Optional[str]:
    if len(ids) - 1 > block_size:
        return f"{where}: {len(ids)} tokens do not fit the context of {block_size} (+1 for the shifted target)"
    return None


def keep_fitting(checked: list[tuple[Any, Optional[str]]], skip_long: bool) -> tuple[list, int]:
    """The items of (item, `check_fits` problem) pairs that fit, and how many did not. Those
    are an error unless `skip_long`: one that names the first and counts the rest, so a
    dataset is mended in one pass."""
    problems = [problem for _, problem in checked if problem]
    if problems and not skip_long:
        more = f" (and {len(problems) - 1} more records of this split)" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0]}{more}; {TOO_LONG_HINT}")
    return [item for item, problem in checked if not problem], len(problems)


def encode_splits(train: list, val: list, encode, what: str) -> tuple[dict, dict]:
    """{"train", "val"} → the rows `encode(records)` makes of each, and its counts; a split
    left with no rows is an error ("no val {what}")."""
    data, counts = {}, {}
    for split, records in (("train", train), ("val", val)):
        data[split], counts[split] = encode(records)
        if not data[split]:
            raise ValueError(f"no {split} {what}")
    return data, counts
