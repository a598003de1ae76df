"""The README's Python snippets run as written (only the number of training steps is cut)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    short = re.sub(r"max_iters=\d+", "max_iters=10", code)
    exec(compile(short, str(README), "exec"), {"__name__": "readme"})
    if "generate(" in code:
        assert capsys.readouterr().out.strip()  # it printed generated text
