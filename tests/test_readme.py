"""The README's Python snippets run as written (only their step counts are cut, and warmup with them)."""

import json
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
    # Step counts cut a hundredfold, and a one-step warmup, so the resume trains on past the decay as written.
    short = re.sub(r"(max_iters|lr_decay_iters)=(\d+)", lambda m: f"{m[1]}={max(1, int(m[2]) // 100)}", code)
    short = re.sub(r"warmup_iters=\d+", "warmup_iters=1", short) if "warmup_iters=" in short else \
        short.replace("TrainConfig(", "TrainConfig(warmup_iters=1, ")
    exec(compile(short, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr()
    if "generate(" in code:
        assert printed.out.strip()  # it printed generated text
    if "resume=True" in code:  # it trained on to step 15 at min_lr, no setting said to differ
        records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in records) == 15 and "differ" not in printed.err, printed.err
        assert [r["lr"] for r in records if "lr" in r][-1] == pytest.approx(1e-4)  # 1e-3 / 10
