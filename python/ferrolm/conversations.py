"""Conversations, checked under one set of rules: those a chat continues or generation
answers, and training records in the forms Hugging Face TRL's datasets come in, read into one
plain form.

A conversation is a list of {"role", "content"} turns: an optional "system" turn first, then
user and assistant turns alternating from the user's (the chat template has no other roles).
Every content is a string; an answer that is trained on or judged must not be blank.

* Supervised fine-tuning (`sft_turns`): {"prompt", "response"} or TRL's {"prompt",
  "completion"}, each side a text or (TRL's conversational prompt-completion) a conversation
  ending with a user turn and one assistant message, trained on the completion only (answers
  in the prompt are context, as in TRL); or {"messages": a conversation}, trained on every
  answer.
* Preferences (`preference`): {"prompt", "chosen", "rejected"} as texts; a prompt conversation
  ending with a user turn, each answer a text or one assistant message; or "chosen" and
  "rejected" as whole conversations that differ only in their last answer (TRL's implicit
  prompt, Anthropic's HH-RLHF; UltraFeedback also gives the prompt, as text).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

Turn = dict[str, str]
#: A prompt: a text (one user turn), or a conversation ending with the user turn to answer.
Prompt = Union[str, Sequence[Mapping[str, str]]]


def checked_turns(messages: Sequence[Mapping[str, str]], open_turn: bool = False) -> list[Turn]:
    """A conversation: an optional system turn, then user and assistant turns alternating from
    the user's, in whole exchanges (its last turn the assistant's), or with `open_turn` a
    prompt (its last turn the user's, to be answered)."""
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"a conversation is a list of {{'role': ..., 'content': str}} mappings, got {type(messages).__name__}")
    turns: list[Turn] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise TypeError(f"message {i}: expected a {{'role': ..., 'content': str}} mapping, got {m!r}")
        if i == 0 and m.get("role") == "system":
            turns.append({"role": "system", "content": m["content"]})
            continue
        expected = "user" if len(exchanges(turns)) % 2 == 0 else "assistant"
        if m.get("role") != expected:
            raise ValueError(f"message {i} is {m.get('role')!r}: a conversation is an optional system turn, then user and "
                             f"assistant turns alternating from the user's, so it should be {expected!r}")
        turns.append({"role": expected, "content": m["content"]})
    if open_turn and len(exchanges(turns)) % 2 == 0:
        raise ValueError("a prompt conversation ends with the user turn to answer")
    if not open_turn and len(exchanges(turns)) % 2:
        raise ValueError("the conversation ends with a user turn: whole exchanges end with the assistant's answer")
    return turns


def opens_with_system(conversation: Union[str, Sequence[Mapping[str, str]]]) -> bool:
    """Whether a prompt or conversation (a text, or a list of turns) opens with a system turn."""
    return not isinstance(conversation, str) and bool(conversation) and conversation[0].get("role") == "system"


def exchanges(turns: list[Turn]) -> list[Turn]:
    """A checked conversation's turns after its system turn, if it has one."""
    return turns[1:] if turns and turns[0]["role"] == "system" else turns


def prompt_turns(prompt: Prompt) -> list[Turn]:
    """A prompt as turns: a text is one user turn; a conversation ends with the user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Mapping) or not isinstance(prompt, Sequence):
        raise ValueError(f"a prompt is a string or a conversation (a list of turns), got {type(prompt).__name__}")
    return checked_turns(prompt, open_turn=True)


def answer_text(value: Any, name: str) -> str:
    """An answer given as a text, one assistant message, or a list of one; not blank."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, Mapping) and value.get("role") == "assistant":
        value = value.get("content")
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string or one {{'role': 'assistant', 'content': str}} message, got "
                         f"{type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {name!r} is empty")
    return value


def _record(record: Any) -> Mapping:
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    return record


def completion_only(record: Any) -> bool:
    """Whether a fine-tuning record trains its last answer only (a prompt and its completion,
    whose prompt may hold earlier answers) rather than every answer ({"messages"})."""
    return "messages" not in _record(record)


def sft_turns(record: Any) -> list[Turn]:
    """The whole exchanges a fine-tuning record holds (see the module's docstring)."""
    record = _record(record)
    given = [k for k in ("messages", "prompt", "response", "completion") if record.get(k) is not None]
    if "messages" in given and len(given) > 1 or {"response", "completion"} <= set(given):
        # which would be trained on? (the others were ignored without a word)
        raise ValueError(f"give either 'messages' or 'prompt' and 'response' (or 'completion'), not {' and '.join(map(repr, given))}")
    if "messages" in given:
        turns = checked_turns(record["messages"])
        if not exchanges(turns):
            raise ValueError("no exchange of a user and an assistant turn")
        first = len(turns) - len(exchanges(turns))
        for i in range(first + 1, len(turns), 2):
            if not turns[i]["content"].strip():
                raise ValueError(f"message {i}, an answer, is empty")
        return turns
    answer = next((k for k in ("response", "completion") if record.get(k) is not None), None)
    if "prompt" not in record or answer is None:
        missing = "prompt" if "prompt" not in record else "response"
        also = "; a {'text'} record is pretraining text: train on it with `ferrolm pretrain`" if "text" in record else ""
        raise ValueError(f"no {missing!r} field (each record needs 'prompt' and 'response' (or TRL's 'completion'), or "
                         f"'messages'){also}")
    return [*prompt_turns(record["prompt"]), {"role": "assistant", "content": answer_text(record[answer], answer)}]


def preference(record: Any) -> tuple[Union[str, list[Turn]], str, str]:
    """(prompt, chosen, rejected) of a preference record (see the module's docstring): the
    prompt a text, or a conversation ending with a user turn when it holds a system turn or
    earlier exchanges."""
    record = _record(record)
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ValueError(f"no {key!r} field (each record needs 'prompt', 'chosen' and 'rejected', or 'chosen' and "
                             "'rejected' as whole conversations)")
    whole = [_is_whole(record[k]) for k in ("chosen", "rejected")]
    if any(whole):
        if not all(whole):
            raise ValueError("'chosen' and 'rejected' must both be whole conversations, or both answers")
        chosen, rejected = (checked_turns(record[k]) for k in ("chosen", "rejected"))
        if chosen[:-1] != rejected[:-1]:
            raise ValueError("'chosen' and 'rejected' are conversations that must differ only in their last answer")
        turns = chosen[:-1]
        if "prompt" in record and prompt_turns(record["prompt"]) != turns:
            raise ValueError("'prompt' is not the turns 'chosen' and 'rejected' share before their answers")
        answers = [answer_text(c[-1], k) for c, k in ((chosen, "chosen"), (rejected, "rejected"))]
    else:
        if "prompt" not in record:
            raise ValueError("no 'prompt' field (each record needs 'prompt', 'chosen' and 'rejected', or 'chosen' and "
                             "'rejected' as whole conversations)")
        turns = prompt_turns(record["prompt"])
        answers = [answer_text(record[k], k) for k in ("chosen", "rejected")]
    if answers[0] == answers[1]:
        raise ValueError("'chosen' and 'rejected' are the same text (no preference)")
    prompt = turns[0]["content"] if len(turns) == 1 else turns
    return prompt, answers[0], answers[1]


def _is_whole(value: Any) -> bool:
    """Whether an answer field holds a whole conversation (from its user turn), not one answer."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], Mapping) and value[0].get("role") != "assistant"
