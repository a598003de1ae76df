import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO


def run_python(code: str, env_extra: dict) -> str:
    """Runs `code` in a fresh interpreter (so RAYON_NUM_THREADS takes effect) and returns stdout."""
    import subprocess

    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout
