"""Loading a model directory whatever its architecture (config.json's model_type)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union


def load_model(path: Union[str, Path]):
    """A GPT or BERT from a model directory, chosen by config.json's `model_type`."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} does not exist (not a model directory)")
    try:
        kind = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from None
    if kind == "bert":
        from ferrolm.bert import BERT

        return BERT.load(path)
    if kind in ("gpt2", None):
        from ferrolm.model import GPT

        return GPT.load(path)
    raise ValueError(f"{config_file}: model_type {kind!r} is not supported (gpt2 or bert)")
