"""GPT: the core model plus its tokenizer, with text-level generation and scoring."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

import ferrolm.functional as F
from ferrolm import _core
from ferrolm._core import Tensor
from ferrolm.conversations import checked_turns, exchanges
from ferrolm.jsonl import located, require_count
from ferrolm.models import CoreModel
from ferrolm.train.memory import check_generation_memory, check_model_memory


class GPT(CoreModel):
    """A GPT-2 language model and (optionally) the tokenizer its ids belong to.

    >>> model = GPT.create(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)
    >>> model(np.zeros((1, 4), dtype=np.int64)).shape
    (1, 4, 65)
    """

    core_class = _core.Gpt

    @classmethod
    def create(cls, *, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
               dropout: float = 0.0, attn_dropout: Optional[float] = None, bias: bool = True,
               activation_function: str = "gelu_new", seed: Optional[int] = None, tokenizer=None) -> "GPT":
        """A freshly initialised model (GPT-2 initialisation from `seed`; None: the next seed of
        the stream `fl.manual_seed` restarts, as torch.manual_seed governs a new model). `dropout` applies to the
        embeddings and residual branches and, unless `attn_dropout` says otherwise, to the
        attention probabilities (nanoGPT's one rate). `bias` defaults to GPT-2's True
        (`ferrolm pretrain` uses nanoGPT's False); `activation_function` to GPT-2's "gelu_new"
        (tanh GELU), or "gelu" for nanoGPT's exact GELU (same quality in
        benches/quality_shakespeare_char.py; the tanh one is faster)."""
        check_model_memory(n_layer, n_embd, vocab_size, block_size)
        core = _core.Gpt(vocab_size, block_size, n_layer, n_head, n_embd, dropout=dropout, attn_dropout=attn_dropout,
                         bias=bias, activation_function=activation_function, seed=seed)
        return cls(core, tokenizer)

    @property
    def block_size(self) -> int:
        return self.config["n_positions"]

    def __call__(self, ids, *, positions=None, attention_mask=None, dropout_seed: Optional[int] = None) -> Tensor:
        """Logits [B, T, V] for integer ids [B, T]. `attention_mask` [B, T] is 1/True for real
        tokens, as in Hugging Face (padding is never attended to; PyTorch's key_padding_mask
        means the opposite); `positions` [B, T] default to 0..T-1; a `dropout_seed` turns on
        dropout."""
        return self.core.forward(ids, positions, attention_mask, dropout_seed)

    def hidden(self, ids, *, positions=None, attention_mask=None, dropout_seed: Optional[int] = None) -> Tensor:
        """Final hidden states [B, T, C] (for value and reward heads); arguments as for calling
        the model."""
        return self.core.hidden(ids, positions, attention_mask, dropout_seed)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.core.logits(hidden)

    # ------------------------------------------------------------ text

    def _tok(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids, or attach one (model.tokenizer = ...)")
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        """The ids of `text` as GPT training sees text: no template tokens (a WordPiece
        tokenizer's [CLS] … [SEP]) around it."""
        return list(self._tok().encode(text, add_special_tokens=False))

    @property
    def is_chat(self) -> bool:
        """Whether the tokenizer has the chat template's tokens (a model from `ferrolm sft`)."""
        from ferrolm.chat import SPECIALS

        return self.tokenizer is not None and all(self.tokenizer.token_to_id(t) is not None for t in SPECIALS)

    def _chat_template(self):
        from ferrolm.chat import ChatTemplate

        if not self.is_chat:
            raise ValueError("chatting needs a chat model (fine-tuned by `ferrolm sft`), whose tokenizer has "
                             "<|user|>, <|assistant|> and <|end|>")
        return ChatTemplate(self.tokenizer)

    def prompt_ids(self, prompt: str, chat: bool = False) -> list[int]:
        """The ids generation continues: the prompt's, or with `chat` its user turn of the chat
        template (its text stays text, whatever special tokens it spells)."""
        return self._chat_template().prompt_ids(prompt) if chat else self.encode(prompt)

    def chat(self, messages: Sequence[Mapping[str, str]] = (), *, temperature: float = 1.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, repetition_penalty: float = 1.0, seed: Optional[int] = None) -> "Chat":
        """A conversation with this chat model (see `is_chat`), from `messages` (earlier user
        and assistant turns, as Hugging Face writes them) if given: `Chat.send(message)`
        answers one message. Sampling as for `generate`:

            chat = model.chat(temperature=0.8, top_k=50)
            print(chat.send("Who art thou?"))
            for piece in chat.send("And whence?", stream=True):
                print(piece, end="", flush=True)
        """
        _check_sizes(top_k=top_k, seed=seed)
        _check_numbers(temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty)
        _core.check_sampling(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
        return Chat(self, messages, temperature=temperature, top_k=top_k, top_p=top_p,
                    repetition_penalty=repetition_penalty, seed=seed)

    def generate(self, prompt: Union[str, Sequence[str], Sequence[Mapping[str, str]], Sequence[int],
                                     Sequence[Sequence[int]], np.ndarray],
                 max_new_tokens: int = 200, *,
                 temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, repetition_penalty: float = 1.0,
                 stop: Union[str, Sequence[str], None] = None, stop_tokens: Union[int, Sequence[int]] = (),
                 seed: Optional[int] = None,
                 stream: bool = False, chat: bool = False):
        """Continues `prompt` (a string, or a list of strings generated as one batch).

        Returns the generated text (without the prompt), a list of texts for a list of
        prompts, or with `stream=True` an iterator of text pieces as tokens arrive (single
        prompt). Generation stops at `max_new_tokens`, a stop token (`stop_tokens`: ids, or
        one id), or a stop string (which is not included; it is matched in the generated
        text, not across the prompt's end); not at an end-of-text token unless it is among
        `stop_tokens` (Hugging Face's generate stops at its generation config's eos_token_id).
        Only ids the tokenizer has are sampled for text (`Tokenizer.unused_ids` aside).

        Sampling: `temperature` scales the logits (0: greedy); `top_k` keeps the k most likely
        tokens (and those tied with the k-th, as Hugging Face's), `top_p` the smallest set whose probability reaches p; `repetition_penalty` > 1
        makes tokens already in the row less likely (CTRL's, as Hugging Face's). `seed` fixes
        the draws; None (the default) takes the next seed of the stream `fl.manual_seed`
        restarts, so each call samples anew, as Hugging Face's generate does. (`ferrolm
        generate` has nanoGPT sample.py's defaults instead: temperature 0.8, top_k 200.)

        Prompts longer than the context raise ValueError, and past the context each row goes
        on from the last half of its window; an empty prompt raises ValueError. With
        `chat=True` (a model from `ferrolm sft`, see `is_chat`) each prompt is a user turn of
        the chat template, or a conversation ending with one (a list of {"role", "content"}
        turns, as Hugging Face writes them), and the answer ends at <|end|>, as the model was
        fine-tuned (or where it would start another turn). `chat()` holds a conversation on
        one KV cache.

        A prompt of token ids (a sequence of ints or a 1-D integer array; a list of them or a
        2-D array for a batch) returns the generated ids instead, and needs no tokenizer; a
        stop token that ended a row is its last id.
        """
        _check_sizes(max_new_tokens=max_new_tokens, top_k=top_k, seed=seed)
        _check_numbers(temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty)
        prompt = _prompt_of(_text_if_bytes(prompt))
        vocab = self.vocab_size  # read once: each read asks the core for the config
        if not _is_id(stop_tokens) and not isinstance(stop_tokens, Iterable):
            raise TypeError(f"stop_tokens must be a token id or a sequence of them, got {type(stop_tokens).__name__}")
        stop_tokens = [stop_tokens] if _is_id(stop_tokens) else list(stop_tokens)  # read once: it may be an iterator
        if not all(_is_id(t) and 0 <= t < vocab for t in stop_tokens):
            raise ValueError(f"stop_tokens must be token ids in [0, {vocab}), got {stop_tokens}")
        stops = _stop_strings(stop)
        if max_new_tokens == 0:
            temperature = 0.0  # nothing is sampled: take no seed from the stream manual_seed restarts
        id_prompts = _id_prompts(prompt)
        if id_prompts is not None:
            if chat or stops or stream:
                raise ValueError("token-id prompts return ids: chat, stop strings and stream need text prompts")
            rows, single = id_prompts
            if not all(rows):
                raise ValueError("a token-id prompt is empty: give at least one token")
            outside = next((t for row in rows for t in row if not 0 <= t < vocab), None)
            if outside is not None:  # said here, as the ids are exact (the core's int64 would wrap or overflow)
                raise IndexError(f"generate: the prompt has token id {outside}, outside the vocabulary of {vocab}")
            session = self._generation(rows, temperature=temperature, top_k=top_k, top_p=top_p,
                                       repetition_penalty=repetition_penalty, seed=seed, stop_tokens=stop_tokens,
                                       reach=max(map(len, rows)) + max_new_tokens)
            generated = session.run(max_new_tokens)
            return generated[0] if single else generated
        single = isinstance(prompt, str) or _is_conversation(prompt) or not isinstance(prompt, Iterable)
        prompts = [prompt] if single else list(prompt)
        if not prompts:  # an iterator of none
            raise ValueError("generate: no prompts given")
        if stream and len(prompts) != 1:
            raise ValueError("stream=True takes a single prompt")
        odd = [p for p in prompts if not isinstance(p, str) and not _is_conversation(p)]
        if odd:
            raise TypeError("a prompt is a text, a list of texts, or token ids (a list or array of integers), and for a "
                            f"chat a conversation; got {'a list holding ' if not single else ''}{type(odd[0]).__name__}")
        template = self._chat_template() if chat else None
        if not chat and any(_is_conversation(p) for p in prompts):
            raise ValueError("a conversation (a list of {'role', 'content'} turns) is a chat prompt: pass chat=True")
        ids = [template.prompt_ids(p) if template else self.encode(p) for p in prompts]
        empty = [i for i, row in enumerate(ids) if not row]
        if empty:
            raise ValueError(f"prompt {empty[0]} is empty: generation continues text, so give at least one character "
                             "(a newline, say)")
        if template:
            stop_tokens = [*stop_tokens, *template.turn_ends]
        tok = self._tok()
        session = self._text_generation(ids, stop_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                        repetition_penalty=repetition_penalty, seed=seed,
                                        reach=max(map(len, ids)) + max_new_tokens)
        texts = [_core.TextStream(stops, stop_tokens, row[-1:]) for row in ids]  # the piece a continuation joins
        if stream:
            return _stream(session, tok, texts[0], max_new_tokens)
        for _ in range(max_new_tokens):
            if session.finished or all(t.done for t in texts):
                break
            for text, token in zip(texts, session.step()):
                if token is not None:
                    text.push(tok, token)
        for t in texts:
            t.flush()  # as the streamed text ends: an unfinished character becomes U+FFFD
        results = [t.text for t in texts]
        return results[0] if single else results

    def _text_generation(self, rows: list[list[int]], stop_tokens: list[int], **sampling):
        """A core generation whose tokens become text: only ids the tokenizer has are sampled
        (a model's vocabulary may be padded past them, or a tokenizer leave gaps)."""
        return self._generation(rows, stop_tokens=stop_tokens, tokenizer=self._tok(), **sampling)

    def _generation(self, rows: list[list[int]], reach: int = 0, **settings):
        """A core generation of `rows`, refused (MemoryError) when its key/value cache would not
        fit in memory (more of it when a row may `reach` past the context)."""
        check_generation_memory(self.config, len(rows), reach)
        return self.core.generation(rows, **settings)

    def score(self, text: Union[str, Sequence[int]], stride: Optional[int] = None) -> np.ndarray:
        """Log-probability of each token of `text` given the ones before it (the first token
        has no prediction, so the result has one entry fewer than the tokens; text of fewer
        than two tokens raises ValueError).

        Text longer than the context is scored through a sliding window (as Hugging Face's
        perplexity guide does): windows of `block_size` tokens, `stride` apart (default half
        the context), each scoring only the tokens the previous one did not, so every token
        is predicted from at least `block_size - stride` tokens before it (all of them near
        the start). The last window ends at the text's end, so its tokens may see more context
        than in the guide's script, which steps its last window by `stride` too. `text` may be
        a str (or UTF-8 bytes) or a sequence of token ids."""
        text = _text_if_bytes(text)
        ids = np.asarray(self.encode(text) if isinstance(text, str) else list(text))[None, :]
        if ids.size and ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise TypeError(f"score takes one text or one sequence of integer token ids, got {ids.dtype} of shape "
                            f"{ids.shape[1:]}")
        if ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max:  # int64 would wrap it
            raise IndexError(f"score: token id {int(ids.max())} is outside the vocabulary of {self.vocab_size}")
        if stride is not None and stride < 0:
            raise ValueError(f"stride must be between 1 and block_size - 1 ({self.block_size - 1}), got {stride}")
        return self.core.score(ids[0].astype(np.int64, copy=False), stride)


class Chat:
    """A conversation with a chat model, made by `GPT.chat`: each `send` answers one user
    message in the context of the turns before it.

    The conversation stays in the model's KV cache, so while it fits in the context each
    message and answer goes through the model once. When a message and room for its answer,
    `max_new_tokens` or at most half the context, no longer fit after it (or an answer has run
    past the context, or was cut short), the conversation starts again from its latest whole
    exchanges that fit with the message (the oldest are forgotten, as a model with a fixed
    context must). A system turn is always kept: it may take at most half the context, and an
    answer after it stops where the context is full rather than slide the system turn out.
    `messages` is the conversation so far, as Hugging Face writes one:
    [{"role": "system", "content": ...} (if given), {"role": "user", "content": ...},
    {"role": "assistant", "content": ...}, ...].
    """

    def __init__(self, model, messages: Sequence[Mapping[str, str]] = (), *, seed: Optional[int] = None,
                 **sampling) -> None:
        self.model, self.template, self.sampling, self.seed = model, model._chat_template(), sampling, seed
        turns = checked_turns(messages)
        for i, m in enumerate(turns):  # refused now, not at every later send
            located(f"message {i}", self.template.system_ids if m["role"] == "system" else self.template.text, m["content"])
        self._messages = exchanges(turns)
        self._system = turns[: len(turns) - len(self._messages)]  # its system turn, if it has one
        self._system_ids = self.template.render_conversation(self._system)  # opens every generation
        if len(self._system_ids) > model.block_size // 2:
            raise ValueError(f"the system turn takes {len(self._system_ids)} tokens, more than half the model's context "
                             f"of {model.block_size}: the conversation needs the rest; shorten it")
        self._turn = 0  # counts messages and resets: an answer's stream stops once either comes after it
        self.reset(keep_messages=True)

    @property
    def messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self._system + self._messages]

    def reset(self, keep_messages: bool = False) -> None:
        """Forgets the conversation but its system turn (and starts its seeds again, so a
        seeded chat answers as a new one would)."""
        if not keep_messages:
            self._messages = []
        self._generation = None  # the conversation in the model's KV cache, once a message is sent
        self._starts = 0  # generations started: a given seed is offset by it, so each draws anew
        self._turn += 1
        self._answering = False  # an answer is under way: cut short, the cache may differ from `messages`

    def send(self, message: str, max_new_tokens: int = 200, *, stop: Union[str, Sequence[str], None] = None,
             stream: bool = False) -> Union[str, Iterator[str]]:
        """The answer to `message` (a user turn), up to <|end|>, a stop string (`stop`: one or a
        list, not included) or `max_new_tokens`; with `stream=True`, an iterator of its text as
        tokens come (it ends early when a later message is sent). Both turns join `messages` at
        once, the answer growing as it comes: an answer cut short (Ctrl-C, a stream left unread)
        is kept as far as it came. After an answer cut short or ended by a stop string, whose
        tokens the cache holds but its text drops, the next message starts again from
        `messages`."""
        _check_sizes(max_new_tokens)
        if not isinstance(message, str):
            raise TypeError(f"a message is a str, got {type(message).__name__}")
        turn = self.template.prompt_ids(message)
        block, kept_turns = self.model.block_size, len(self._system_ids)
        if kept_turns + len(turn) > block:
            also = f" and the system turn's {kept_turns}" if self._system else ""
            raise ValueError(f"the message takes {len(turn)} tokens with its turn markers{also}, more than the model's "
                             f"context of {block}; shorten it")
        # Built before the conversation changes: bad stop strings are refused with it as it was.
        text = _core.TextStream(_stop_strings(stop), list(self.template.turn_ends), turn[-1:])
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
        if self._system:  # the answer stops where the context is full: sliding on would drop the system turn
            max_new_tokens = min(max_new_tokens, self._generation.room)
        answer = {"role": "assistant", "content": ""}
        self._messages += [{"role": "user", "content": message}, answer]
        pieces = self._answer(_stream(self._generation, self.model.tokenizer, text, max_new_tokens), answer, self._turn,
                              text)
        return pieces if stream else "".join(pieces)

    def _start(self, turn: list[int], budget: int):
        """A generation over `turn` after the system turn and the latest whole exchanges that
        fit with it in `budget` tokens."""
        render = lambda kept: self._system_ids + self.template.render_conversation(self._messages[kept:]) + turn
        kept = len(self._messages)
        while kept and len(render(kept - 2)) <= budget:
            kept -= 2
        ids = render(kept)
        seed = None if self.seed is None else (self.seed + self._starts) % 2**64
        self._starts += 1
        return self.model._text_generation([ids], list(self.template.turn_ends), seed=seed, **self.sampling)

    def _answer(self, pieces: Iterator[str], answer: dict, turn: int, text: _core.TextStream) -> Iterator[str]:
        while turn == self._turn:  # a later message has the cache: this answer stays as it is
            piece = next(pieces, None)
            if piece is None:
                # The cache holds a stop string's tokens, which the answer drops.
                self._answering = text.stopped_by_string
                return
            answer["content"] += piece
            yield piece


def _is_conversation(prompt) -> bool:
    """Whether a prompt is one conversation (a list of {"role", "content"} turns)."""
    return isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], Mapping)


def _text_if_bytes(x: Any) -> Any:
    """Bytes as the UTF-8 text they hold (as the tokenizer reads them, not their byte values
    as ids); anything else as it is."""
    return bytes(x).decode("utf-8") if isinstance(x, (bytes, bytearray, memoryview)) else x


def _stop_strings(stop: Union[str, Sequence[str], None]) -> list[str]:
    """Stop strings given as one string, an iterable of them, or None, as a list."""
    if stop is None:
        stops = []
    elif isinstance(stop, str) or not isinstance(stop, Iterable):
        stops = [stop]  # refused below unless a string
    else:
        stops = list(stop)
    if not all(isinstance(s, str) for s in stops):
        raise TypeError(f"stop must be a string or a list of strings, got {stop!r}")
    return stops


def _is_id(x: Any) -> bool:
    """An integer (Python or numpy, not a boolean): what a token id may be."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_sizes(max_new_tokens: Any = 0, **optional) -> None:
    """Counts must be non-negative integers: `max_new_tokens`, and the `optional` ones (top_k,
    seed), which None leaves unset."""
    for name, value in {"max_new_tokens": max_new_tokens, **optional}.items():
        if value is not None or name not in optional:
            require_count(name, value, least=0)
            if value >= 2**64:  # what the core's counts and seeds hold (str() refuses over 4300 digits)
                shown = value if value.bit_length() <= 1024 else f"an integer of {value.bit_length()} bits"
                raise ValueError(f"{name} must be below 2**64, got {shown}")


def _check_numbers(**values) -> None:
    """Sampling settings must be real numbers (Python or numpy, not booleans); top_p may be None."""
    for name, value in values.items():
        if (value is None and name == "top_p") or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            continue
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


def _prompt_of(prompt):
    """`prompt` with another library's array of ids (a torch tensor) as a numpy array, and
    texts in an array, or prompts in any other iterable (a range of ids), as a list; a mapping,
    which a list of its keys would be taken for, is refused."""
    if isinstance(prompt, Mapping):
        hint = (" (a tokenizer's output: pass its 'input_ids')" if "input_ids" in prompt else
                " (one chat turn: pass a list of turns)" if "content" in prompt else "")
        raise TypeError("a prompt is a text, a list of texts, or token ids (a list or array of integers), and for a "
                        f"chat a conversation (a list of turns); got {type(prompt).__name__}{hint}")
    if hasattr(prompt, "__array__") and not isinstance(prompt, (np.ndarray, str)):
        ids = np.asarray(prompt)
        prompt = prompt if ids.dtype.kind in "OUS" else ids  # texts (a pandas Series) as the iterables they are
    if isinstance(prompt, np.ndarray) and prompt.dtype.kind in "OUS":
        prompt = prompt.tolist()  # texts, a list of them a batch
    elif isinstance(prompt, Iterable) and not isinstance(prompt, (str, list, tuple, np.ndarray)):
        prompt = list(prompt)  # a range of ids, a generator of texts: read once
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise ValueError("generate: no prompts given (an empty list)")
    if isinstance(prompt, np.ndarray) and prompt.ndim == 2 and not len(prompt):
        raise ValueError("generate: no prompts given (an array of no rows)")
    return prompt


def _id_prompts(prompt) -> Optional[tuple[list[list[int]], bool]]:
    """(rows of ids, whether it was a single prompt) when `prompt` is token ids, else None."""
    if isinstance(prompt, np.ndarray):
        if prompt.dtype.kind not in "iu" or prompt.ndim not in (1, 2):
            raise TypeError(f"a prompt array must hold integer token ids in 1 or 2 dimensions, got {prompt.dtype} {prompt.shape}")
        return (prompt.tolist(), False) if prompt.ndim == 2 else ([prompt.tolist()], True)
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return None
    if all(_is_id(x) for x in prompt):
        return [[int(x) for x in prompt]], True
    def row(r) -> Optional[list[int]]:
        if isinstance(r, np.ndarray) and r.ndim == 1 and r.dtype.kind in "iu":
            return r.tolist()
        return [int(x) for x in r] if isinstance(r, (list, tuple)) and all(_is_id(x) for x in r) else None

    rows = [row(r) for r in prompt]
    if all(r is not None for r in rows):
        return rows, False
    return None


def shares_weights(a: Any, b: Any) -> bool:
    """Whether two models have a parameter tensor in common (a reference that is the policy it
    should hold still)."""
    return bool({t.uid for _, t in a.named_parameters()} & {t.uid for _, t in b.named_parameters()})


def sequence_logprobs(model: GPT, ids: np.ndarray, attention_mask=None, temperature: float = 1.0,
                      vocab: Optional[int] = None, excluded: Sequence[int] = ()) -> Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for every position, under the distribution at
    `temperature`: a [B, T−1] tensor that keeps the graph, so post-training objectives can
    backpropagate through it. Rows are read from position 0: pad them on the right (left
    padding would shift their positions). `vocab`, `excluded`: as `tempered_log_softmax`'s."""
    logits = model(ids[:, :-1], attention_mask=None if attention_mask is None else attention_mask[:, :-1])
    return token_logprobs(tempered_log_softmax(logits, temperature, vocab, excluded), ids[:, 1:])


def tempered_log_softmax(logits: Tensor, temperature: float = 1.0, vocab: Optional[int] = None,
                         excluded: Sequence[int] = ()) -> Tensor:
    """Log-probabilities of the distribution sampled at `temperature` (logits / T, T > 0); with
    `vocab`, among the first `vocab` ids only, and without the `excluded` ids, as text
    generation samples among the tokenizer's ids when the model's vocabulary is padded past
    them or the tokenizer leaves gaps (`Tokenizer.unused_ids`)."""
    if not 0 < float(temperature) < math.inf:
        raise ValueError(f"temperature must be > 0 and finite to give log-probabilities, got {temperature!r}")
    if vocab is not None and not 0 < vocab:
        raise ValueError(f"vocab must be a positive number of ids, got {vocab!r}")
    if vocab is not None and vocab < logits.shape[-1]:
        logits = F.narrow(logits, logits.ndim - 1, 0, vocab)
    if len(excluded):
        mask = np.zeros(logits.shape[-1], bool)
        mask[[i for i in excluded if i < mask.size]] = True
        logits = F.masked_fill(logits, mask, -math.inf)
    return F.log_softmax(logits if temperature == 1.0 else logits * (1.0 / temperature), axis=-1)


def token_logprobs(log_probs: Tensor, targets: np.ndarray) -> Tensor:
    """log_probs[b, t, targets[b, t]]: the [B, T] log-probabilities of given tokens."""
    b, t = targets.shape
    return F.gather(log_probs, 2, targets.reshape(b, t, 1)).reshape(b, t)


def _stream(session, tok, text: _core.TextStream, max_new_tokens: int) -> Iterator[str]:
    for _ in range(max_new_tokens):
        if session.finished or text.done:
            break
        token = session.step()[0]
        if token is not None:
            piece = text.push(tok, token)
            if piece:
                yield piece
    tail = text.flush()
    if tail:
        yield tail
