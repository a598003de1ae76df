"""The chat template: conversations rendered straight to ids with special tokens,

    <|user|> prompt <|assistant|> answer <|end|> <|user|> ... <|assistant|> answer <|end|>

User and answer text is encoded as plain text (special-token look-alikes in it stay text), so
marker ids alone say where each answer starts and ends: loss masks are built from ids, never
from string matching. The core renders the ids (`ferrolm::chat`, which Rust programs use too);
this module checks the turns and builds the masks. A chat model's directory also carries the
same template for Hugging Face (`hf_chat_files`)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ferrolm import _core
from ferrolm.conversations import Prompt, checked_turns, prompt_turns

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIALS = (USER, ASSISTANT, END)
#: Opens a conversation's system turn: a model has it once fine-tuned on system turns.
SYSTEM = "<|system|>"


class ChatTemplate:
    def __init__(self, tokenizer) -> None:
        missing = [t for t in SPECIALS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"the tokenizer lacks the chat tokens {missing}; prepare the model with ChatTemplate.prepare(model)")
        self.tokenizer = tokenizer
        self.user, self.assistant, self.end = (tokenizer.token_to_id(t) for t in SPECIALS)
        self.system = tokenizer.token_to_id(SYSTEM)  # None: this model has no system role
        self.markers = tuple(t for t in (self.user, self.assistant, self.end, self.system) if t is not None)
        #: What ends an answer: <|end|>, or a marker that starts another turn.
        self.turn_ends = (self.end, *(t for t in self.markers if t != self.end))

    @staticmethod
    def prepare(model, system: bool = False):
        """Adds the chat tokens (and with `system`, <|system|>) to the model's tokenizer,
        growing its embedding if needed (both in place), and returns the model's ChatTemplate."""
        tok = model.tokenizer
        if tok is None:
            raise ValueError("the model has no tokenizer")
        wanted = [*SPECIALS, SYSTEM] if system else list(SPECIALS)
        missing = [t for t in wanted if tok.token_to_id(t) is None]
        if missing:
            tok.add_special_tokens(missing)
        if tok.vocab_size > model.vocab_size:
            model.core = model.core.with_vocab(tok.vocab_size, seed=0)
        return ChatTemplate(tok)

    def check_reads(self, model, what: str) -> None:
        """ValueError unless `model` (`what` it is: "the reference") reads ids as this template's
        tokenizer writes them: by the same vocabulary, or without a tokenizer, one as large."""
        tok = model.tokenizer
        if tok is not None and tok.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(f"{what} reads ids with a different tokenizer than the one the data is encoded with"
                             f"{_vocab_difference(tok.get_vocab(), self.tokenizer.get_vocab())}: "
                             "what it makes of them would be meaningless")
        if model.vocab_size < self.tokenizer.vocab_size:
            raise ValueError(f"{what} has {model.vocab_size} token embeddings, fewer than the tokenizer's "
                             f"{self.tokenizer.vocab_size} ids")

    def text(self, s: str) -> list[int]:
        return list(self.tokenizer.encode(s, allowed_special="none", disallowed_special="text", add_special_tokens=False))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The ids an answer is generated after: a text's user turn, or a conversation (ending
        with the user turn to answer) with its earlier exchanges rendered as `render` renders
        them."""
        return self._ids(prompt_turns(prompt), open=True)

    def render(self, prompt: Prompt, answer: str) -> list[int]:
        """A prompt (a text or a conversation, as for `prompt_ids`) and its answer."""
        return self._ids([*prompt_turns(prompt), {"role": "assistant", "content": answer}], open=False)

    def render_conversation(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """A system turn if there is one (<|system|> text), then whole exchanges (user,
        assistant, ...), each rendered as `render` renders a prompt and its answer."""
        return self._ids(checked_turns(messages), open=False)

    def system_ids(self, text: str) -> list[int]:
        return self._ids([{"role": "system", "content": text}], open=False)

    def _ids(self, turns: list, open: bool) -> list[int]:
        """Checked turns rendered by the core's template (`ferrolm::chat`, which Rust programs
        use too)."""
        return _core.chat_ids(self.tokenizer, [(t["role"], t["content"]) for t in turns], open)

    def answer_targets(self, ids: np.ndarray) -> np.ndarray:
        """[B, T−1] mask over next-token predictions of right-padded rendered conversations:
        position t predicts ids[:, t+1], which is trained when it is an answer's token or the
        <|end|> that closes it, i.e. when the last turn marker before it is <|assistant|>
        (user and system text never hold a marker id: special-token look-alikes in them stay
        text). A rendered conversation ends with <|end|>, so its padding is never trained."""
        positions = np.arange(ids.shape[1])
        is_marker = np.isin(ids, self.markers)
        last_marker = np.maximum.accumulate(np.where(is_marker, positions, -1), axis=1)  # at or before each position
        before = last_marker[:, :-1]  # the last marker before position t+1
        return (before >= 0) & (np.take_along_axis(ids, np.maximum(before, 0), axis=1) == self.assistant)

    def response_start(self, ids) -> int:
        """Index of a rendered prompt and answer's first answer token: just after the last
        <|assistant|> (a conversation's earlier answers are part of the prompt)."""
        hits = np.flatnonzero(np.asarray(ids) == self.assistant)
        if hits.size == 0:
            raise ValueError("sequence has no <|assistant|> token")
        return int(hits[-1]) + 1

    def decode_response(self, ids) -> str:
        """Text of generated response ids, up to the first of `turn_ends` (the answer has ended)."""
        ids = list(ids)
        ends = [i for i, t in enumerate(ids) if t in self.turn_ends]
        return self.tokenizer.decode(ids[: ends[0]] if ends else ids, skip_special_tokens=True)


def hf_chat_template(system: bool) -> str:
    """The template for Hugging Face's `apply_chat_template`: an optional system turn (for a
    model with <|system|>), then a user turn and the assistant's answer ended by <|end|>; the
    generation prompt is already open after a user turn. Any other turn is refused, not
    dropped: the model was fine-tuned without it."""
    turn = ("{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}" + ASSISTANT
            + "{% elif m['role'] == 'assistant' %}{{ m['content'] }}" + END)
    if system:
        turn += "{% elif m['role'] == 'system' and loop.first %}" + SYSTEM + "{{ m['content'] }}"
    known = "an optional first system turn, then user and assistant turns" if system else "only user and assistant turns"
    return ("{% for m in messages %}" + turn + "{% else %}{{ raise_exception('this chat model knows " + known
            + ", not ' + m['role']) }}{% endif %}{% endfor %}")


def hf_chat_files(tokenizer) -> dict[str, dict]:
    """For a chat model's directory, what Hugging Face reads to chat with it:
    `tokenizer_config.json` (the template, <|end|> as eos) and `generation_config.json`
    (`generate` stops where ferrolm's chat does: at <|end|>, or a marker that starts another
    turn); nothing for a tokenizer without the chat tokens."""
    if tokenizer is None or any(tokenizer.token_to_id(t) is None for t in SPECIALS):
        return {}
    system = tokenizer.token_to_id(SYSTEM) is not None
    return {"tokenizer_config.json": {"chat_template": hf_chat_template(system), "eos_token": END},
            "generation_config.json": {"eos_token_id": list(ChatTemplate(tokenizer).turn_ends)}}


def _vocab_difference(theirs: Mapping[str, int], ours: Mapping[str, int]) -> str:
    """What sets a model's vocabulary (`theirs`) apart from the data's, for a message: the
    tokens only one has (as <|system|>, when one model was fine-tuned on system turns), else
    the first token whose id differs."""
    def listed(tokens: set) -> str:
        first = sorted(tokens, key=lambda t: theirs.get(t, ours.get(t)))
        return ", ".join(map(repr, first[:3])) + (f" and {len(first) - 3} more" if len(first) > 3 else "")

    if set(theirs) - set(ours):
        return f" (it has {listed(set(theirs) - set(ours))}, which the data's tokenizer does not)"
    if set(ours) - set(theirs):
        return f" (the data's tokenizer has {listed(set(ours) - set(theirs))}, which it does not)"
    token = min((t for t in ours if theirs[t] != ours[t]), key=ours.__getitem__)
    return f" ({token!r} is id {theirs[token]} to it, {ours[token]} to the data's tokenizer)"
