import os
import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Tiny models saved by transformers, with the logits it computed for them: the reference where
#: transformers cannot run (it needs PyTorch). `make_transformers_fixtures.py` there writes them.
TRANSFORMERS_FIXTURES = REPO / "tests" / "fixtures" / "transformers"
#: Whether this CPU runs bfloat16 products (elsewhere they stay float32, and tests check that).
BF16_CPU = "avx512_bf16" in Path("/proc/cpuinfo").read_text()

# A shell without job control starts `pytest &` with SIGINT ignored, which every interpreter the
# tests start would inherit: the Ctrl-C tests' would never see theirs. A handled signal is reset
# to the default at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def fresh_seed_stream():
    """Each test starts the stream behind unseeded calls afresh (as at import), so its unseeded
    models and samples do not depend on which tests ran before it. Fixtures shared between
    tests pass their seeds."""
    import ferrolm

    ferrolm.manual_seed(0)


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


def seconds_to_interrupt(setup: str, call: str) -> float:
    """Runs `setup`, then `call` with Ctrl-C (SIGINT) sent 0.5 s into it, in a fresh
    interpreter; asserts that `call` raised KeyboardInterrupt and returns how long after the
    signal it did."""
    import subprocess
    import textwrap

    code = f"""
import os, signal, threading, time
{textwrap.dedent(setup)}
sent = []
threading.Timer(0.5, lambda: (sent.append(time.time()), os.kill(os.getpid(), signal.SIGINT))).start()
try:
    {call}
    print("finished")
except KeyboardInterrupt:
    print(f"interrupted {{time.time() - sent[0]:.2f}}")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    outcome, *after = out.stdout.split() or [""]
    assert outcome == "interrupted", out.stdout + out.stderr
    return float(after[0])


def shard_weights(path: Path, parts: int = 2) -> dict:
    """Splits `path`/model.safetensors into `parts` shards beside Hugging Face's index, as
    `save_pretrained` writes a model larger than its shard size; returns the index's map."""
    import json

    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    names, weight_map = sorted(tensors), {}
    for i in range(parts):
        file = f"model-{i + 1:05d}-of-{parts:05d}.safetensors"
        save_file({n: tensors[n] for n in names[i::parts]}, str(path / file))
        weight_map.update(dict.fromkeys(names[i::parts], file))
    (path / "model.safetensors").unlink()
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return weight_map


def assert_same_checkpoint(theirs: Path, ours: Path) -> None:
    """Directory `ours` (saved by ferrolm) holds what `theirs` (saved by transformers) holds: the
    same names, shapes and values in model.safetensors, and a config.json that transformers reads
    as it reads its own but for keys that do not change what the model computes. So transformers
    computes with ours what it computed with its own (tests/fixtures' `--check` runs that, with
    PyTorch, which the test command does not install)."""
    import numpy as np
    import transformers
    from safetensors.numpy import load_file

    weights = [load_file(str(d / "model.safetensors")) for d in (theirs, ours)]
    assert sorted(weights[1]) == sorted(weights[0])
    for name, weight in weights[0].items():
        np.testing.assert_array_equal(weights[1][name], weight, err_msg=name)
    assert_same_config(*(transformers.AutoConfig.from_pretrained(d).to_dict() for d in (theirs, ours)))


def assert_same_config(want: dict, got: dict) -> None:
    """transformers' configs `want` (its own) and `got` (read from ferrolm's config.json) are the
    same but for keys that do not change what the model computes."""
    differ = {k for k in want.keys() | got.keys() if want.get(k) != got.get(k)}
    # Where each was read from, and the scale of a new model's initialisation (training only).
    assert differ <= {"_name_or_path", "initializer_range", "dtype", "bias", "n_ctx", "position_embedding_type"}, differ
    # Unset, the dtype a load takes is float32; GPT-2 always has biases, and reads its context from
    # n_positions; BERT's position embeddings are absolute.
    assert got.get("dtype") in (None, "float32") and want.get("dtype") in (None, "float32")
    assert got.get("bias", True) is True and got.get("n_ctx", got.get("n_positions")) == got.get("n_positions")
    assert got.get("position_embedding_type", "absolute") == "absolute"
