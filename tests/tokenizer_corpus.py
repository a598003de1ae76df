"""Corpora for the tokenizer tests: the bundled tiny Shakespeare (or ../shared/data's copy) and
an adversarial Unicode corpus generated here, deterministically, so tests never download."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "python" / "ferrolm" / "corpora" / "tinyshakespeare.txt"


def shakespeare_path() -> Path:
    """tiny Shakespeare: <repo>/../shared/data if present, else the copy shipped in the package."""
    shared = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    return shared if shared.is_file() else BUNDLED


SCRIPTS = [
    "hello", "World", "naïve", "café", "Straße", "ÆØÅ", "İstanbul", "ǅemal",
    "Ελληνικά", "кириллица", "ПРИВЕТ", "עברית", "العربية", "हिन्दी", "ไทย",
    "中文文本", "日本語のテキスト", "カタカナ", "한국어", "ㄱㄴ", "각",
]
EMOJI = [
    "👩‍👩‍👧‍👦", "👍🏽", "🧑🏿‍🚀", "🏳️‍🌈", "❤️", "🇫🇷🇯🇵", "😀😃", "👨‍💻", "🤷‍♀️", "✊🏾",
]
MARKS = ["e\u0301", "a\u0308\u0304", "Z\u0351\u0337\u0322a\u0360l\u0489", "n\u0303", "\u0301"]
DIGITS = ["0", "42", "1234567890", "3.14159", "1,000,000", "٣٤٥", "²³", "½", "Ⅻ", "１２３"]
CONTRACTIONS = ["don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "IT'S", "WE'LL", "'tis", "'", "''"]
SPACES = [" ", "  ", " " * 17, "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n ", "\u00a0", "\u3000", "\u2028", "\x0b\x0c"]
CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\u200b", "\ufeff", "\u200d", "\ufffd", "\ue000", "\uffff"]
PUNCT = ["!", "?!", "...", "—", "«", "»", "(", ")", "[x]", "{}", "#", "$", "%", "&", "@", "<|", "|>", "¿", "、", "。"]


def adversarial_corpus(n_lines: int = 600, seed: int = 1234) -> list[str]:
    """Lines mixing scripts, emoji with ZWJ and skin tones, combining marks, long white-space
    runs, tabs, CRLF, digits, contractions, control characters and punctuation."""
    rng = random.Random(seed)
    groups = [SCRIPTS, EMOJI, MARKS, DIGITS, CONTRACTIONS, SPACES, CONTROLS, PUNCT]
    weights = [8, 2, 1, 2, 3, 5, 1, 2]
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(rng.randint(1, 14)):
            group = rng.choices(groups, weights)[0]
            parts.append(rng.choice(group))
            if rng.random() < 0.6:
                parts.append(" ")
        if rng.random() < 0.05:
            parts.append(" " * rng.randint(20, 300))
        lines.append("".join(parts))
    return lines


def write_corpus(lines: list[str], path: Path) -> Path:
    # newline="" keeps \r\n inside lines as written.
    with open(path, "w", encoding="utf-8", newline="") as f:
        for line in lines:
            f.write(line.replace("\n", " ") + "\n")
    return path


def run_python(code: str, env_extra: dict) -> str:
    """Runs `code` in a fresh interpreter (so RAYON_NUM_THREADS takes effect); returns stdout."""
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout
