"""Reading the prompts to label: one per line of a UTF-8 text file, or, for prompts that span
several lines, JSON Lines of `{"prompt": "..."}` objects (or bare JSON strings): a `.jsonl` or
`.json` file, or any file whose first line is such an object. A record's prompt may also be a
conversation, ending with the user turn to answer (a chat model's).

Every problem is an error naming its line: a prompt is never dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from ferrolm.conversations import Prompt, prompt_turns
from ferrolm.jsonl import lines_of, located, read_utf8


def prompt_key(prompt: Prompt) -> tuple[str, bool]:
    """A prompt as prompts are compared and stored: (its text, False), or (a conversation's
    turns as JSON, True). A conversation of one user turn is that turn's text: a chat model
    is given text as a user turn, so the two are one prompt."""
    if isinstance(prompt, str):
        return prompt, False
    turns = prompt_turns(prompt)
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"], False
    return json.dumps(turns, ensure_ascii=False), True


def prompt_of_key(text: str, conversation: bool) -> Prompt:
    """The prompt `prompt_key` gave (text, conversation) for; ValueError if it is not one. A
    one-turn conversation stored by an earlier ferrolm is its text, as `prompt_key` keys it."""
    if not isinstance(text, str):
        raise ValueError(f"a stored prompt is text, got {type(text).__name__}")
    if not conversation:
        return text
    turns = prompt_turns(json.loads(text))
    return turns[0]["content"] if len(turns) == 1 and turns[0]["role"] == "user" else turns


def read_prompts(path: Union[str, Path], skip_blank: bool = False) -> list[Prompt]:
    """The prompts of `path`, in file order. Raises FileNotFoundError or ValueError. A blank
    line is an error (labelling numbers prompts by line) unless `skip_blank` (PPO's prompts).
    A JSON record's prompt may also be a conversation ending with the user turn to answer (a
    list of {"role", "content"} turns, as TRL's conversational prompts)."""
    return [prompt for _, prompt in numbered_prompts(path, skip_blank)]


def numbered_prompts(path: Union[str, Path], skip_blank: bool = False) -> list[tuple]:
    """`read_prompts`' prompts with their line numbers, (number, prompt)."""
    path = Path(path)
    lines = lines_of(read_utf8(path, "prompts file"))
    jsonl = path.suffix in (".jsonl", ".json") or _is_prompt_object(next((l for l in lines if l.strip()), ""))
    prompts: list[tuple] = []
    for number, line in enumerate(lines, 1):
        if skip_blank and not line.strip():
            continue
        prompt = _parse(line, path, number) if jsonl else line
        if not prompt_turns(prompt)[-1]["content"].strip():
            raise ValueError(f"{path} line {number}: empty prompt (one prompt per line; remove empty lines)")
        prompts.append((number, prompt))
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def _is_prompt_object(line: str) -> bool:
    """Whether a line is a `{"prompt": ...}` record (then the file is JSON Lines, whatever its
    name: read as text, its records would be trained on as literal JSON)."""
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return False
    return isinstance(value, dict) and "prompt" in value


#: Said of a JSON array of prompts (taken for one conversation, or not read).
ONE_PER_PROMPT = ("a prompts file holds one prompt per line (text, a JSON string, {\"prompt\": ...}, or a conversation: "
                  "a list of {\"role\", \"content\"} turns), not an array of prompts")


def _parse(line: str, path: Path, number: int) -> Prompt:
    try:
        value = json.loads(line) if line.strip() else ""
    except (json.JSONDecodeError, RecursionError) as e:
        hint = f"; {ONE_PER_PROMPT}" if line.lstrip().startswith("[") else ""
        raise ValueError(f"{path} line {number}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')}){hint}") from None
    if isinstance(value, list) and value and all(isinstance(v, str) or (isinstance(v, dict) and "prompt" in v)
                                                 for v in value):
        raise ValueError(f"{path} line {number}: {ONE_PER_PROMPT}")  # a conversation's turns have roles
    if isinstance(value, dict):
        value = value.get("prompt")
    if isinstance(value, list):
        return located(f"{path} line {number}", prompt_turns, value)
    if not isinstance(value, str):
        raise ValueError(f'{path} line {number}: expected {{"prompt": "..."}} or a JSON string, or a conversation as '
                         "its prompt")
    return value


def check_prompts(prompts: list[Prompt], model, where: str, chat: bool = False) -> None:
    """Refuses prompts that cannot be labelled: a repeat of an earlier one (its pairs would be
    judged twice), characters outside the model's vocabulary, or no room left in its context
    (generation needs the prompt to fit, with one token to spare)."""
    seen: dict[tuple[str, bool], int] = {}
    for number, prompt in enumerate(prompts, 1):
        key = prompt_key(prompt)
        if key in seen:
            raise ValueError(f"{where} line {number}: repeats the prompt of line {seen[key]}")
        seen[key] = number
        try:
            n = len(model.prompt_ids(prompt, chat))
        except ValueError as e:
            raise ValueError(f"{where} line {number}: {e}") from None
        if n >= model.block_size:
            raise ValueError(f"{where} line {number}: the prompt is {n} tokens long; the model's context is {model.block_size}")
