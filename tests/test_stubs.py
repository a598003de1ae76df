"""The hand-written stubs (`python/ferrolm/_core.pyi`) must match the built extension.

Runs mypy's stubtest against the installed `ferrolm._core`: every runtime name must be in the
stub with the same parameters and defaults, and the stub must declare nothing the module lacks.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALLOWLIST = REPO / "tests" / "stubtest-allowlist.txt"


def test_stubs_match_extension() -> None:
    cmd = [sys.executable, "-m", "mypy.stubtest", "ferrolm._core"]
    if ALLOWLIST.exists():
        cmd += ["--allowlist", str(ALLOWLIST)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"stubtest failed:\n{out.stdout}\n{out.stderr}"
