"""GPT from Python: Hugging Face checkpoints against an independent numpy forward, training
(loss target, exact resume), generation (streaming, stop strings) and bad input."""

import json
import os
import re
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import ferrolm as fl
import ferrolm.functional as F
from ferrolm.data import BUNDLED_CORPUS
from ferrolm.gpt import GPT, sequence_logprobs

from conftest import (BF16_CPU, TRANSFORMERS_FIXTURES, assert_same_checkpoint, assert_same_config, run_python,
                      seconds_to_interrupt, shard_weights)

safetensors_numpy = pytest.importorskip("safetensors.numpy")

CORPUS = BUNDLED_CORPUS.read_text()[:200_000]


# ---------------------------------------------------------------- a reference GPT-2 in numpy


def hf_gpt2_checkpoint(path: Path, vocab=23, ctx=16, layers=2, heads=2, width=8, prefix="", seed=0,
                       activation="gelu_new") -> dict:
    """A random GPT-2 checkpoint in Hugging Face's layout (Conv1D weights [in, out])."""
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.normal(0, 0.3, size=s).astype(np.float32)
    t = {f"{prefix}wte.weight": w(vocab, width), f"{prefix}wpe.weight": w(ctx, width),
         f"{prefix}ln_f.weight": 1 + w(width), f"{prefix}ln_f.bias": w(width)}
    for i in range(layers):
        p = f"{prefix}h.{i}."
        t.update({p + "ln_1.weight": 1 + w(width), p + "ln_1.bias": w(width), p + "ln_2.weight": 1 + w(width),
                  p + "ln_2.bias": w(width), p + "attn.c_attn.weight": w(width, 3 * width), p + "attn.c_attn.bias": w(3 * width),
                  p + "attn.c_proj.weight": w(width, width), p + "attn.c_proj.bias": w(width),
                  p + "mlp.c_fc.weight": w(width, 4 * width), p + "mlp.c_fc.bias": w(4 * width),
                  p + "mlp.c_proj.weight": w(4 * width, width), p + "mlp.c_proj.bias": w(width),
                  p + "attn.bias": np.tril(np.ones((ctx, ctx), np.float32))[None, None]})  # an old HF buffer
    path.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(t, str(path / "model.safetensors"))
    config = {"model_type": "gpt2", "vocab_size": vocab, "n_positions": ctx, "n_embd": width, "n_layer": layers,
              "n_head": heads, "layer_norm_epsilon": 1e-5, "activation_function": activation,
              "bos_token_id": vocab - 1, "eos_token_id": vocab - 1}
    (path / "config.json").write_text(json.dumps(config))
    return {k.removeprefix(prefix): v for k, v in t.items()}


def numpy_gpt2_logits(t: dict, ids: np.ndarray, heads: int, activation="gelu_new") -> np.ndarray:
    """GPT-2's forward pass written directly from the paper/HF code's equations, in float64."""
    from math import erf

    def ln(x, g, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g + b

    def gelu(x):
        if activation == "gelu":  # exact, x·Φ(x)
            return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    t = {k: v.astype(np.float64) for k, v in t.items()}
    T = ids.shape[1]
    x = t["wte.weight"][ids] + t["wpe.weight"][np.arange(T)]
    layers = len({k.split(".")[1] for k in t if k.startswith("h.")})
    for i in range(layers):
        p = f"h.{i}."
        h = ln(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"]) @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]
        q, k, v = np.split(h, 3, axis=-1)
        split = lambda z: z.reshape(z.shape[0], T, heads, -1).transpose(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = x + y @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
        m = gelu(ln(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"]) @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"])
        x = x + m @ t[p + "mlp.c_proj.weight"] + t[p + "mlp.c_proj.bias"]
    return ln(x, t["ln_f.weight"], t["ln_f.bias"]) @ t["wte.weight"].T


@pytest.mark.parametrize("prefix, activation", [("", "gelu_new"), ("transformer.", "gelu_new"), ("", "gelu")])
def test_hugging_face_gpt2_checkpoint_matches_numpy_reference(tmp_path, prefix, activation):
    tensors = hf_gpt2_checkpoint(tmp_path, prefix=prefix, activation=activation)
    model = GPT.load(tmp_path)
    assert model.config["activation_function"] == activation
    ids = np.random.default_rng(1).integers(0, 23, size=(2, 16))
    expected = numpy_gpt2_logits(tensors, ids, heads=2, activation=activation)
    np.testing.assert_allclose(model(ids).numpy(), expected, rtol=1e-4, atol=1e-4)
    # Saved again by us and reloaded: the same model.
    model.save(tmp_path / "again")
    np.testing.assert_allclose(GPT.load(tmp_path / "again")(ids).numpy(), expected, rtol=1e-4, atol=1e-4)
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["bos_token_id"] == again["eos_token_id"] == 22  # kept for Hugging Face's generate


def test_a_sharded_hugging_face_checkpoint_loads(tmp_path):
    """Weights in shards, named by model.safetensors.index.json (save_pretrained's layout
    above its shard size), load as the single file would; a bad index is refused clearly."""
    tensors = hf_gpt2_checkpoint(tmp_path)
    weight_map = shard_weights(tmp_path)
    ids = np.random.default_rng(1).integers(0, 23, size=(2, 16))
    expected = numpy_gpt2_logits(tensors, ids, heads=2)
    np.testing.assert_allclose(GPT.load(tmp_path)(ids).numpy(), expected, rtol=1e-4, atol=1e-4)
    index = tmp_path / "model.safetensors.index.json"
    # A parameter's entry (an old file's attention masks are never read, so their shards are not needed).
    name, first = next((k, v) for k, v in weight_map.items() if not k.endswith((".attn.bias", ".attn.masked_bias")))
    other = next(f for f in weight_map.values() if f != first)
    for bad, error, message in [
        ({**weight_map, name: f"../{tmp_path.name}/{first}"}, fl.FormatError, "not a file name in the directory"),
        ({**weight_map, name: "model-00003-of-00003.safetensors"}, FileNotFoundError, "model-00003-of-00003"),
        ({**weight_map, name: other}, fl.FormatError, f"puts {name} in {other}, which does not hold it"),
        ({**weight_map, name: 3}, fl.FormatError, f"puts {name} in 3, which is not a file name string"),
        ({k: v for k, v in weight_map.items() if k != "wpe.weight"}, fl.FormatError,
         "the shards of model.safetensors.index.json: missing tensor transformer.wpe.weight"),
        (None, fl.FormatError, "no \"weight_map\" object"),
    ]:
        index.write_text(json.dumps({"weight_map": bad}))
        with pytest.raises(error, match=message):
            GPT.load(tmp_path)
    index.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GPT.load(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"a pickle")  # older checkpoints: refused by name, never unpickled
    with pytest.raises(fl.FormatError, match="holds its weights as pytorch_model.bin, not safetensors"):
        GPT.load(tmp_path)


def test_a_checkpoint_saved_by_transformers_gives_its_logits(tmp_path):
    directory = TRANSFORMERS_FIXTURES / "gpt2"  # save_pretrained's files, as transformers 5 writes them
    expected = safetensors_numpy.load_file(str(directory / "expected.safetensors"))
    model = GPT.load(directory)
    np.testing.assert_allclose(model(expected["input_ids"]).numpy(), expected["logits"], rtol=1e-4, atol=1e-4)
    # Saved again, the checkpoint is transformers' own: its weights, and a config it reads alike.
    model.save(tmp_path)
    assert_same_checkpoint(directory, tmp_path)


def test_transformers_reads_the_config_of_a_model_ferrolm_made(tmp_path):
    import transformers

    GPT.create(vocab_size=31, block_size=16, n_layer=2, n_head=2, n_embd=8, seed=4).save(tmp_path)
    want = transformers.GPT2Config(vocab_size=31, n_positions=16, n_layer=2, n_head=2, n_embd=8, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    want.architectures = ["GPT2LMHeadModel"]
    assert_same_config(want.to_dict(), transformers.AutoConfig.from_pretrained(tmp_path).to_dict())


# ---------------------------------------------------------------- training


def char_model(tmp_path: Path, **overrides):
    from ferrolm.data import prepare_tokens

    tok = fl.Tokenizer.train_from_iterator([CORPUS], kind="char", vocab_size=1 << 20)
    prepare_tokens(CORPUS, tok, tmp_path / "data")
    cfg = dict(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=48, seed=0, tokenizer=tok)
    cfg.update(overrides)
    return GPT.create(**cfg), tok


def unigram_entropy(text: str) -> float:
    _, counts = np.unique(np.frombuffer(text.encode(), np.uint8), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_beats_the_unigram_entropy(tmp_path, dtype):
    from ferrolm.train import CausalLM, TrainConfig, train

    model, _ = char_model(tmp_path)
    config = TrainConfig(max_iters=400, eval_interval=200, eval_iters=10, learning_rate=3e-3, warmup_iters=20,
                         lr_decay_iters=400, min_lr=3e-4, progress=False, dtype=dtype)
    evals = train(model, CausalLM(tmp_path / "data", 32, 16), config, tmp_path / "run")
    baseline = unigram_entropy(CORPUS)
    # Unigram entropy ≈ 3.30 nats; 400 steps of this 2-layer model reach ≈ 2.39 (seeded).
    assert evals[-1]["val_loss"] < baseline - 0.75, (evals[-1], baseline)
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "metrics.jsonl").exists()
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("tokens_per_sec" in r for r in records) and any("val_ppl" in r for r in records)
    assert fl.matmul_precision() == "float32"  # the loop restores the process's setting


def test_always_save_checkpoint_false_keeps_the_best_model(tmp_path):
    from ferrolm.train import CausalLM, TrainConfig, train

    model, _ = char_model(tmp_path)
    scripted, snapshots = iter([3.3, 3.0, 2.0, 2.5, 2.7]), {}

    class Scripted(CausalLM):
        def evaluate(self, model, rng):
            snapshots[len(snapshots)] = dict(model.named_parameters())["transformer.wte.weight"].numpy().copy()
            return {"val_loss": next(scripted)}

    config = TrainConfig(max_iters=8, eval_interval=2, eval_iters=1, progress=False, always_save_checkpoint=False)
    evals = train(model, Scripted(tmp_path / "data", 32, 4), config, tmp_path / "run")
    assert [(e["step"], e["val_loss"]) for e in evals] == [(0, 3.3), (2, 3.0), (4, 2.0), (6, 2.5), (8, 2.7)]
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["step"] == 4
    kept = dict(GPT.load(tmp_path / "run").named_parameters())["transformer.wte.weight"].numpy()
    np.testing.assert_array_equal(kept, snapshots[2])  # the weights evaluated at step 4
    held = dict(model.named_parameters())["transformer.wte.weight"].numpy()
    np.testing.assert_array_equal(held, snapshots[2])  # and the model ends holding them
    from ferrolm.train.loop import kept_evaluations

    assert kept_evaluations(evals, config)[-1]["step"] == 4  # what the commands report
    # Resumed, and never better: the checkpoint stays, and the model ends holding its weights.
    scripted = iter([2.9, 2.8, 2.95])
    resumed = GPT.load(tmp_path / "run")
    config = TrainConfig(max_iters=10, eval_interval=2, eval_iters=1, progress=False, always_save_checkpoint=False)
    train(resumed, Scripted(tmp_path / "data", 32, 4), config, tmp_path / "run", resume=True)
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["step"] == 4
    held = dict(resumed.named_parameters())["transformer.wte.weight"].numpy()
    np.testing.assert_array_equal(held, snapshots[2])
    # A run that never improves on the model it started from keeps that model (step 0 is evaluated and saved).
    model, _ = char_model(tmp_path)
    start = dict(model.named_parameters())["transformer.wte.weight"].numpy().copy()
    scripted = iter([1.0, 1.5, 1.2])
    config = TrainConfig(max_iters=4, eval_interval=2, eval_iters=1, progress=False, always_save_checkpoint=False)
    train(model, Scripted(tmp_path / "data", 32, 4), config, tmp_path / "never")
    assert json.loads((tmp_path / "never" / "trainer_state.json").read_text())["step"] == 0
    kept = dict(GPT.load(tmp_path / "never").named_parameters())["transformer.wte.weight"].numpy()
    np.testing.assert_array_equal(kept, start)
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(checkpoint_interval=5, always_save_checkpoint=False)


def test_ctrl_c_during_a_checkpoint_is_held_until_it_is_written():
    import signal
    import time

    from ferrolm.train.loop import _interrupts_held

    written = False
    with pytest.raises(KeyboardInterrupt):
        with _interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs signal handlers between bytecodes: this one only records it
            written = True
    assert written and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # SIGTERM too, then handled as it would have been (the command line's handler raises KeyboardInterrupt).
    def terminate_as_interrupt(*received):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate_as_interrupt)
    try:
        written = False
        with pytest.raises(KeyboardInterrupt):
            with _interrupts_held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                written = True
        assert written and signal.getsignal(signal.SIGTERM) is terminate_as_interrupt
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_interrupts_a_long_generation():
    # Token-id prompts generate in Rust without returning to Python; a run of ten million tokens
    # (minutes) must still stop at Ctrl-C, raised as KeyboardInterrupt.
    setup = """
        from ferrolm.gpt import GPT
        model = GPT.create(vocab_size=11, block_size=32, n_layer=1, n_head=2, n_embd=16, seed=1)
    """
    assert seconds_to_interrupt(setup, "model.generate([1, 2, 3], max_new_tokens=10**7)") < 10


def test_ctrl_c_interrupts_scoring_a_long_text():
    # Scoring ran its windows as one call without a look at signals (perplexity of a long
    # held-out text: several seconds); the stop is now seen between windows.
    setup = """
        import numpy as np
        from ferrolm.gpt import GPT
        model = GPT.create(vocab_size=100, block_size=256, n_layer=4, n_head=4, n_embd=128, seed=1)
        ids = np.random.default_rng(0).integers(0, 100, 400_000)
    """
    assert seconds_to_interrupt(setup, "model.score(ids)") < 1.0


def test_training_hands_its_step_buffers_back_when_it_ends(tmp_path):
    """The allocator keeps freed step buffers for the next step (page faults, and for blocks
    above 32 MB unmapping, cost 10-30% of a step); when training ends they go back to the OS,
    so a notebook does not hold a run's peak afterwards (it held all of it)."""
    import ferrolm.functional as F
    from ferrolm.train import TrainConfig, train

    def rss_mb():
        return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024

    class RandomTokens:
        kind = "causal"

        def batch(self, split, rng):
            x = rng.integers(0, 8192, size=(16, 129))
            return x[:, :-1], x[:, 1:]

        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1].reshape(-1)), {}

        def tokens(self, batch):
            return batch[0].size

        def state(self):
            return {}

    model = fl.GPT.create(vocab_size=8192, block_size=128, n_layer=1, n_head=2, n_embd=32, seed=0)
    before = rss_mb()
    train(model, RandomTokens(), TrainConfig(max_iters=2, eval_interval=1000, eval_iters=1, progress=False),
          tmp_path / "run")
    # Each step's logits and their gradient are 64 MB each, kept without the hand-back (for a 50k
    # vocabulary, measured: 684 MB kept, 52 MB with it).
    assert rss_mb() < before + 60
    # A loop of one's own hands them back with fl.release_memory() (in a fresh process: pytest's
    # heap holds other tests' freed blocks, which the logits may reuse).
    code = """
import numpy as np, ferrolm as fl
def rss_mb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024
model = fl.GPT.create(vocab_size=8192, block_size=128, n_layer=1, n_head=2, n_embd=32, seed=0)
with fl.no_grad():
    model(np.random.default_rng(0).integers(0, 8192, size=(32, 128)))  # 128 MB of logits, freed
kept = rss_mb()
fl.release_memory()
print(kept, rss_mb())
"""
    kept, released = map(float, run_python(code, {}).split())
    assert released < kept - 100, (kept, released)


def test_a_step_with_nothing_to_learn_from_makes_no_update(tmp_path):
    """A step whose batches all weigh 0 (a custom objective's targets all ignored) logged loss
    0.0 and still moved the weights by AdamW's momentum; an evaluation over such batches read
    0.0, which a keep-best run would take as its best model."""
    import ferrolm.functional as F
    from ferrolm.train import TrainConfig, train

    class EveryOtherIgnored:
        """Every second train batch has all its targets ignored (or, with `empty`, every one)."""
        kind = "causal"

        def __init__(self, empty=False):
            self.drawn, self.empty = 0, empty

        def batch(self, split, rng):
            x = rng.integers(0, 16, size=(2, 9))
            if split == "train":
                self.drawn += 1
                if self.empty or self.drawn % 2 == 0:
                    x[:, 1:] = -100
            return x

        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(np.maximum(batch[:, :-1], 0)), batch[:, 1:].reshape(-1)), {}

        def loss_weight(self, batch):
            return int((batch[:, 1:] != -100).sum())

        def tokens(self, batch):
            return batch[:, :-1].size

        def state(self):
            return {}

    def trained(steps, out):
        model = fl.GPT.create(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16, seed=0)
        config = TrainConfig(max_iters=steps, eval_interval=1000, eval_iters=2, warmup_iters=0, log_interval=1,
                             progress=False)
        train(model, EveryOtherIgnored(), config, tmp_path / out)  # evaluation draws train batches 1, 2
        return {k: v.numpy() for k, v in model.named_parameters()}

    once = trained(1, "once")  # batch 3
    with pytest.warns(UserWarning, match="step 1: no batch holds anything to learn from .* skipped without an update"):
        twice = trained(2, "twice")  # batches 3 and 4, of nothing
    for name in once:
        np.testing.assert_array_equal(twice[name], once[name], err_msg=name)
    records = [json.loads(line) for line in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if "lr" in r}
    assert "loss" in steps[1] and "loss" not in steps[2] and "grad_norm" not in steps[2]
    model = fl.GPT.create(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16, seed=0)
    with pytest.raises(ValueError, match="evaluation: none of the 2 train batches of EveryOtherIgnored holds anything "
                                         "to score"):
        train(model, EveryOtherIgnored(empty=True), TrainConfig(max_iters=1, eval_iters=2, progress=False),
              tmp_path / "none")


def test_training_restores_the_matmul_precision_when_it_fails(tmp_path):
    from ferrolm.train import CausalLM, TrainConfig, train

    class Failing(CausalLM):
        def loss(self, model, batch, dropout_seed):
            assert fl.matmul_precision() == "bfloat16"
            raise RuntimeError("objective failed")

    model, _ = char_model(tmp_path)
    config = TrainConfig(max_iters=5, progress=False, dtype="bfloat16")
    with pytest.raises(RuntimeError, match="objective failed"):
        train(model, Failing(tmp_path / "data", 32, 4), config, tmp_path / "run")
    assert fl.matmul_precision() == "float32"


def test_a_config_changed_after_creation_trains_with_its_new_values(tmp_path):
    """A notebook's next cell sets fields of an existing TrainConfig: the decay follows the new
    max_iters and learning rate (they were fixed at creation, so 3e-5 trained at 1e-4), and a
    contradiction made after creation is still refused."""
    import json

    from ferrolm.train import CausalLM, TrainConfig, train

    model, _ = char_model(tmp_path)
    config = TrainConfig(max_iters=20, warmup_iters=2, eval_iters=1, log_interval=1, progress=False)
    config.max_iters, config.learning_rate = 40, 3e-5
    train(model, CausalLM(tmp_path / "data", 32, 4), config, tmp_path / "run")
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert len(lrs) == 40 and max(lrs) <= 3e-5 and lrs[-1] == pytest.approx(config.lr_at(39)) and lrs[-1] < 4e-6
    assert lrs[20] > 1.5e-5  # mid-decay at step 20, not at its end
    config.min_lr = 1e-3
    with pytest.raises(ValueError, match="min_lr in \\[0, learning_rate\\]"):
        train(model, CausalLM(tmp_path / "data", 32, 4), config, tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
    # Counts the command line refuses, refused in Python too (a negative checkpoint interval
    # acted as its absolute value, a negative warmup started down the cosine).
    for bad, message in [({"warmup_iters": -10}, "warmup_iters must be a non-negative integer"),
                         ({"lr_decay_iters": -1}, "lr_decay_iters must be"), ({"checkpoint_interval": -5}, "checkpoint_int"),
                         ({"max_iters": 2.5}, "max_iters must be"), ({"grad_accum": 0}, "grad_accum must be a positive"),
                         ({"eval_iters": True}, "eval_iters must be")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    for sizes in [(0, 4), (32, -1), (32, 2.0)]:
        with pytest.raises(ValueError, match="must be a positive integer"):
            CausalLM(tmp_path / "data", *sizes)


def test_a_warmup_longer_than_the_run_is_said(tmp_path):
    """A quick trial run with the default 100-step warmup never reaches its learning rate."""
    from ferrolm.train import CausalLM, TrainConfig, train

    model, _ = char_model(tmp_path)
    for warmup, said in ((2, False), (100, True)):
        config = TrainConfig(max_iters=4, warmup_iters=warmup, eval_iters=1, progress=False)
        with warnings.catch_warnings(record=True) as caught:  # a warning Python users can filter
            warnings.simplefilter("always")
            train(model, CausalLM(tmp_path / "data", 32, 4), config, tmp_path / "run")
        said_so = [str(w.message) for w in caught if "outlasts" in str(w.message)]
        assert said_so == ["the warmup (100 steps) outlasts the run (4 steps): the learning rate rises to 3.96e-05 "
                           "only, not 0.001 (give a smaller warmup_iters, --warmup-iters)"] * said, said_so
    # A resume was said to outlast the run when it started; resumed past max_iters, it is refused, not warned of.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="past max_iters=2"):
            train(GPT.load(tmp_path / "run"), CausalLM(tmp_path / "data", 32, 4),
                  TrainConfig(max_iters=2, eval_iters=1, progress=False), tmp_path / "run", resume=True)
    assert not [w for w in caught if "outlasts" in str(w.message)]
    with pytest.warns(UserWarning, match="outlasts the run \\(6 steps\\)"):  # a schedule changed on resume is checked
        train(GPT.load(tmp_path / "run"), CausalLM(tmp_path / "data", 32, 4),
              TrainConfig(max_iters=6, eval_iters=1, progress=False), tmp_path / "run", resume=True)
    # A warmup past the decay's end jumps from near the peak to min_lr (nanoGPT's schedule does too).
    config = TrainConfig(max_iters=6, warmup_iters=4, lr_decay_iters=3, eval_iters=1, progress=False)
    with pytest.warns(UserWarning, match="warmup \\(4 steps\\) outlasts the decay \\(lr_decay_iters 3\\): the learning "
                                         "rate drops from 0.0008 to min_lr 0.0001 at step 4"):
        train(model, CausalLM(tmp_path / "data", 32, 4), config, tmp_path / "run")
    assert config.lr_at(3) == pytest.approx(8e-4) and config.lr_at(4) == pytest.approx(1e-4)


def test_the_memory_estimate_is_a_low_one_that_training_reaches(tmp_path):
    """What training is refused on (see the next test) must not exceed what it would take:
    measured as the peak resident memory a run adds to a fresh process's. (Its peak, VmHWM:
    getrusage's ru_maxrss also counts the forking parent's memory, pytest's, 300 MB and more
    after the tokenizer tests, and failed the test when run after them.)"""
    code = f"""
import json, resource
import ferrolm as fl
from ferrolm.data import prepare_tokens
from ferrolm.train import CausalLM, TrainConfig, train
from ferrolm.train.memory import training_bytes
text = open({str(BUNDLED_CORPUS)!r}, encoding="utf-8").read()[:200_000]
tok = fl.Tokenizer.train_from_iterator([text], kind="char", vocab_size=1 << 20)
prepare_tokens(text, tok, {str(tmp_path / "data")!r})
model = fl.GPT.create(vocab_size=tok.vocab_size, block_size=256, n_layer=4, n_head=4, n_embd=256, tokenizer=tok)
objective = CausalLM({str(tmp_path / "data")!r}, 256, 8)
need = training_bytes(model, objective, model.num_parameters())[0]
before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
train(model, objective, TrainConfig(max_iters=2, warmup_iters=0, eval_iters=1, progress=False), {str(tmp_path / "run")!r})
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
print(json.dumps([need, peak - before]))
"""
    need, used = json.loads(run_python(code, {"RAYON_NUM_THREADS": "2"}).splitlines()[-1])
    assert need <= used <= 2 * need, (need, used)


def test_training_that_cannot_fit_in_memory_is_refused_before_it_starts(tmp_path, monkeypatch):
    """Instead of the out-of-memory killer ending the process in its first step."""
    from ferrolm.train import CausalLM, TrainConfig, memory, train

    assert memory.available_bytes() > 2**20  # this machine's, read from /proc/meminfo
    model, _ = char_model(tmp_path)
    objective = CausalLM(tmp_path / "data", 32, 4)
    need, parts = memory.training_bytes(model, objective, model.num_parameters())
    assert "activations of a 4 x 32 batch" in parts
    monkeypatch.setattr(memory, "available_bytes", lambda: need - 1)
    with pytest.raises(MemoryError, match=r"training needs at least .* GB more memory .*--batch-size"):
        train(model, objective, TrainConfig(max_iters=2, progress=False), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(memory, "available_bytes", lambda: need)
    train(model, objective, TrainConfig(max_iters=2, warmup_iters=0, progress=False), tmp_path / "run")


def test_a_generation_whose_cache_cannot_fit_in_memory_is_refused_before_it_starts(monkeypatch):
    """A batch of a million prompts allocated each layer's cache (7.8 GB apiece, granted one by
    one) and the out-of-memory killer ended the process. Counted with the second cache that
    decoding past the context makes (its last half, recomputed)."""
    from ferrolm.train import memory

    model = fl.GPT.create(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=8, seed=0)
    prompts = np.ones((3, 1), np.int64)
    cache = 2 * 2 * 3 * 8 * 8 * 4  # keys and values: layers x rows x positions x width float32s
    monkeypatch.setattr(memory, "available_bytes", lambda: cache - 1)
    with pytest.raises(MemoryError, match="generating 3 rows at once needs a key/value cache of .* fewer rows"):
        model.generate(prompts, 2)
    monkeypatch.setattr(memory, "available_bytes", lambda: cache)
    assert [len(row) for row in model.generate(prompts, 7)] == [7, 7, 7]  # 8 positions: within the context
    with pytest.raises(MemoryError, match="needs a key/value cache"):  # past it, a second cache of 3 positions
        model.generate(prompts, 8)
    monkeypatch.setattr(memory, "available_bytes", lambda: cache // 8 * (8 + 3))
    assert [len(row) for row in model.generate(prompts, 12)] == [12, 12, 12]


def test_an_address_space_limit_counts_as_the_memory_available():
    """Under `ulimit -v`, a run refused before it starts rather than aborted mid-step."""
    code = """
import json, resource
from ferrolm.train.memory import available_bytes
mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + 200 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
print(json.dumps(available_bytes()))
"""
    assert 150 * 2**20 < json.loads(run_python(code, {})) <= 200 * 2**20


def test_a_containers_memory_limit_counts_as_the_memory_available(tmp_path, monkeypatch):
    """Inside a container, /proc/meminfo shows the host's memory: the cgroup's limit is what
    its out-of-memory killer acts on (page cache it can drop does not count as used)."""
    from ferrolm.train import memory

    def tree(name: str, cgroup: str, files: dict) -> Path:
        root = tmp_path / name
        (root / "proc/self").mkdir(parents=True)
        (root / "proc/self/cgroup").write_text(cgroup)
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        return root

    v2 = "sys/fs/cgroup/user.slice"
    nested = tree("v2", "0::/user.slice/app\n", {  # the tighter limit is the parent's
        f"{v2}/memory.max": "1000000000\n", f"{v2}/memory.current": "600000000\n",
        f"{v2}/memory.stat": "anon 500000000\ninactive_file 100000000\n",
        f"{v2}/app/memory.max": "max\n", f"{v2}/app/memory.current": "600000000\n", f"{v2}/app/memory.stat": "",
    })
    assert memory.cgroup_room(nested) == 1_000_000_000 - (600_000_000 - 100_000_000)
    container = tree("docker", "0::/docker/abc\n", {  # the host's path is not in the container's mount
        "sys/fs/cgroup/memory.max": "2000000000", "sys/fs/cgroup/memory.current": "500000000",
        "sys/fs/cgroup/memory.stat": "inactive_file 0"})
    assert memory.cgroup_room(container) == 1_500_000_000
    v1 = "sys/fs/cgroup/memory/process_api"
    unlimited = "9223372036854771712"
    old = tree("v1", "5:cpu:/\n4:memory,blkio:/process_api/x\n", {  # the parent's limit, counting its children's use
        f"{v1}/memory.limit_in_bytes": "3000000000\n", f"{v1}/memory.usage_in_bytes": "2000000000\n",
        f"{v1}/memory.stat": "cache 1\ntotal_inactive_file 500000000\n",
        f"{v1}/x/memory.limit_in_bytes": unlimited, f"{v1}/x/memory.usage_in_bytes": "100", f"{v1}/x/memory.stat": ""})
    assert memory.cgroup_room(old) == 3_000_000_000 - (2_000_000_000 - 500_000_000)
    (old / v1 / "memory.limit_in_bytes").write_text(unlimited)
    assert memory.cgroup_room(old) is None  # no limit
    (old / v1 / "memory.limit_in_bytes").write_text("1000")
    (old / v1 / "memory.usage_in_bytes").write_text("100")  # less than its page cache (stats lag): the limit at most
    assert memory.cgroup_room(old) == 1000
    odd = tree("odd", "0::/caf\xe9\n\nnonsense\n", {"sys/fs/cgroup/memory.max": "5000",
                                                     "sys/fs/cgroup/memory.current": "1000"})  # no memory.stat
    (odd / "proc/self/cgroup").write_bytes(b"0::/caf\xe9\n\nnonsense\n")  # not UTF-8, a blank line, no colons
    assert memory.cgroup_room(odd) is None
    assert memory.cgroup_room(tmp_path / "nowhere") is None
    monkeypatch.setattr(memory, "cgroup_room", lambda: 12345)
    assert memory.available_bytes() == 12345


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    from ferrolm.train import CausalLM, TrainConfig, train

    def run(out, iters, resume=False, **settings):
        model = GPT.load(out) if resume else char_model(tmp_path, dropout=0.1)[0]
        cfg = TrainConfig(**{**dict(max_iters=iters, eval_interval=10, eval_iters=2, log_interval=1, warmup_iters=5,
                                    lr_decay_iters=30, grad_accum=2, progress=False), **settings})
        train(model, CausalLM(tmp_path / "data", 32, 4), cfg, out, resume=resume)
        return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]

    full = run(tmp_path / "full", 30)
    run(tmp_path / "split", 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run(tmp_path / "split", 30, resume=True)
    assert not [w for w in caught if "differ from the run's" in str(w.message)]
    losses = lambda records, lo: [r["loss"] for r in records if "loss" in r and r["step"] > lo]
    assert losses(resumed, 20) == losses(full, 20) and len(losses(full, 20)) == 10
    a = GPT.load(tmp_path / "full").parameters()[3].numpy()
    b = GPT.load(tmp_path / "split").parameters()[3].numpy()
    np.testing.assert_array_equal(a, b)
    # Resumed with a schedule of its own (the default decay span follows max_iters): said so, in a warning a user can
    # filter.
    with pytest.warns(UserWarning, match="settings that differ from the run's \\(lr_decay_iters 30 -> 40\\)"):
        run(tmp_path / "split", 40, resume=True, lr_decay_iters=None)


def test_resume_refuses_inconsistent_or_missing_checkpoints(tmp_path):
    from ferrolm.train import CausalLM, TrainConfig, train

    model, _ = char_model(tmp_path)
    cfg = TrainConfig(max_iters=3, eval_interval=10, eval_iters=1, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(model, CausalLM(tmp_path / "data", 32, 4), cfg, tmp_path / "none", resume=True)
    train(model, CausalLM(tmp_path / "data", 32, 4), cfg, tmp_path / "run")
    opt_file = tmp_path / "run" / "optimizer.safetensors"
    opt_file.write_bytes(opt_file.read_bytes()[:-8] + b"\0" * 8)  # a torn write
    with pytest.raises(ValueError, match="interrupted"):
        train(GPT.load(tmp_path / "run"), CausalLM(tmp_path / "data", 32, 4), cfg, tmp_path / "run", resume=True)
    other = GPT.create(vocab_size=model.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=48)
    train(model, CausalLM(tmp_path / "data", 32, 4), cfg, tmp_path / "run")
    # A model made afresh (same architecture or not) went on from its initialisation with the
    # checkpoint's optimizer state, silently: the weights are the caller's to load.
    more = TrainConfig(max_iters=4, eval_iters=1, progress=False)
    for fresh in (other, char_model(tmp_path)[0]):
        with pytest.raises(ValueError, match="does not hold the weights of the checkpoint"):
            train(fresh, CausalLM(tmp_path / "data", 32, 4), more, tmp_path / "run", resume=True)
    train(GPT.load(tmp_path / "run"), CausalLM(tmp_path / "data", 32, 4), more, tmp_path / "run", resume=True)
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]


def test_a_save_that_fails_or_dies_midway_leaves_a_checkpoint_to_resume(tmp_path, monkeypatch):
    # A checkpoint's files were written over the previous ones one by one: a full disk at the
    # optimizer file left step 10's weights beside step 5's state, and no resumable checkpoint.
    import ferrolm.atomic
    from ferrolm.train import CausalLM, TrainConfig, train
    from ferrolm.train import loop

    cfg = TrainConfig(max_iters=10, eval_interval=5, eval_iters=1, progress=False)
    objective = lambda: CausalLM(tmp_path / "data", 32, 4)
    whole = tmp_path / "whole"
    train(char_model(tmp_path)[0], objective(), cfg, whole)

    class Killed(BaseException):
        pass

    def disk_full_at_step_10(path, tensors, metadata=None):
        if metadata and metadata.get("step") == "10":
            raise OSError(28, "No space left on device")
        return real_save(path, tensors, metadata)

    real_save = loop._core.save_safetensors
    with monkeypatch.context() as m:
        m.setattr(loop._core, "save_safetensors", disk_full_at_step_10)
        with pytest.raises(OSError, match="No space left"):
            train(char_model(tmp_path)[0], objective(), cfg, tmp_path / "full")
    assert loop.read_state(tmp_path / "full" / "trainer_state.json")["step"] == 5
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == sorted(p.name for p in whole.iterdir())
    train(GPT.load(tmp_path / "full"), objective(), cfg, tmp_path / "full", resume=True)

    def dies_after_moving_step_10s_weights(directory, last=None):
        written = directory / ferrolm.atomic._WRITTEN
        if last != loop.STATE_FILE or json.loads((written / last).read_text())["step"] < 10:
            return real_finish(directory, last)  # the model's own set, inside the checkpoint's; or step 5
        (written / "model.safetensors").replace(directory / "model.safetensors")
        raise Killed

    real_finish = ferrolm.atomic.finish_atomic_files

    with monkeypatch.context() as m:
        m.setattr(ferrolm.atomic, "finish_atomic_files", dies_after_moving_step_10s_weights)
        with pytest.raises(Killed):
            train(char_model(tmp_path)[0], objective(), cfg, tmp_path / "killed")
    # The save was written whole before it was moved in: resuming moves in the rest.
    assert loop.read_state(tmp_path / "killed" / "trainer_state.json")["step"] == 10
    train(GPT.load(tmp_path / "killed"), objective(), cfg, tmp_path / "killed", resume=True)
    for run in ("full", "killed"):
        for a, b in zip(GPT.load(tmp_path / run).parameters(), GPT.load(whole).parameters()):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_model_directory_is_saved_as_a_set_with_shareable_files(tmp_path, monkeypatch):
    """A save that fails part-way leaves the old model whole (its weights had been replaced,
    beside the old tokenizer, and loaded silently); a save that died while moving its files in
    is finished by the next load; the files are readable by others, as the umask allows
    (safetensors files were private, 0600, so no other user could load a shared model)."""
    import ferrolm.atomic
    import ferrolm.chat
    from ferrolm.chat import ChatTemplate
    from ferrolm.models import load_model
    from ferrolm.train.reward import RewardModel

    old, _ = char_model(tmp_path)
    new = GPT.create(vocab_size=old.config["vocab_size"], block_size=32, n_layer=2, n_head=2, n_embd=48, seed=7,
                     tokenizer=fl.Tokenizer.train_from_iterator(["other text"], kind="char", vocab_size=1 << 20))
    directory = tmp_path / "m"
    previous = os.umask(0o022)
    try:
        old.save(directory)
        fl.save_safetensors(str(tmp_path / "t.safetensors"), {"x": np.ones(3, np.float32)})
    finally:
        os.umask(previous)
    for f in [*directory.iterdir(), tmp_path / "t.safetensors"]:
        assert f.stat().st_mode & 0o777 == 0o644, f
    before = {f.name: f.read_bytes() for f in directory.iterdir()}

    def disk_full(tokenizer):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(ferrolm.chat, "hf_chat_files", disk_full)  # after the weights and the tokenizer are written
        with pytest.raises(OSError, match="No space left"):
            new.save(directory)
    assert {f.name: f.read_bytes() for f in directory.iterdir()} == before  # nothing changed, nothing left over

    class Killed(BaseException):
        pass

    real_finish = ferrolm.atomic.finish_atomic_files

    def dies_before_moving(into):
        def finish(directory, last=None):  # nested sets (a model's, in a reward model's) move in as ever
            if directory == into:
                raise Killed
            real_finish(directory, last)
        return finish

    with monkeypatch.context() as m:
        m.setattr(ferrolm.atomic, "finish_atomic_files", dies_before_moving(directory))
        with pytest.raises(Killed):
            new.save(directory)
    assert (directory / "model.safetensors").read_bytes() == before["model.safetensors"]
    def cannot_write(directory, last=None):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:  # another user's directory: Python warns, and reads it as it is ...
        m.setattr(ferrolm.atomic, "finish_atomic_files", cannot_write)
        with pytest.warns(UserWarning, match="save that was not finished"):
            load_model(directory)
    # ... as the core does when it cannot move the files either; here it can, and did: the core
    # finishes a save cut short itself, so Rust programs loading the directory do too.
    assert not (directory / ".files-written").exists()
    (directory / ".files-written").mkdir()
    for name in ("model.safetensors", "config.json"):
        (directory / name).rename(directory / ".files-written" / name)
        (directory / name).write_bytes(before[name])
    loaded = load_model(directory)  # finishes the move first
    assert loaded.tokenizer.vocab_size == new.tokenizer.vocab_size and not (directory / ".files-written").exists()
    np.testing.assert_array_equal(loaded.parameters()[0].numpy(), new.parameters()[0].numpy())
    # A reward model's head goes with its weights (a head of one save beside another's weights).
    first, second = (RewardModel(m) for m in (new, old) if ChatTemplate.prepare(m))
    first.save(tmp_path / "rm")
    with monkeypatch.context() as m:
        m.setattr(ferrolm.atomic, "finish_atomic_files", dies_before_moving(tmp_path / "rm"))
        with pytest.raises(Killed):
            second.save(tmp_path / "rm")
    back = RewardModel.load(tmp_path / "rm")
    assert [n for n, _ in back.named_parameters()] == [n for n, _ in second.named_parameters()]
    for a, b in zip(back.named_parameters(), second.named_parameters()):
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


def test_resume_refuses_tampered_state_and_data(tmp_path):
    from ferrolm.data import load_tokens
    from ferrolm.train import CausalLM, TrainConfig, train

    model, _ = char_model(tmp_path)
    cfg = TrainConfig(max_iters=3, eval_interval=10, eval_iters=1, progress=False)
    run = tmp_path / "run"
    train(model, CausalLM(tmp_path / "data", 32, 4), cfg, run)
    state_file, pristine = run / "trainer_state.json", (run / "trainer_state.json").read_text()

    def resume_with(edit, message):
        state = json.loads(pristine)
        edit(state)
        state_file.write_text(json.dumps(state))
        with pytest.raises(ValueError, match=message):
            train(GPT.load(run), CausalLM(tmp_path / "data", 32, 4), cfg, run, resume=True)

    resume_with(lambda s: s["digests"].update({"/dev/zero": "0"}), "digests must name")  # never read
    resume_with(lambda s: s.update(step=4.5), "step 4.5 is not")
    resume_with(lambda s: s.pop("config"), "config entry is missing")
    resume_with(lambda s: s.pop("objective"), "does not name its objective")
    resume_with(lambda s: s.pop("rng"), "rng entry is not a PCG64 state")
    resume_with(lambda s: s.update(rng={"bit_generator": "PCG64", "state": "x"}), "not a PCG64 state")
    # numpy takes a state of 1.5 (the run resumed), and refused -1 in a message naming nothing.
    for field, value in (("state", 1.5), ("inc", -1), ("state", 2**128), ("state", True)):
        resume_with(lambda s: s["rng"]["state"].update({field: value}), "rng entry is not a PCG64 state")
    resume_with(lambda s: s["rng"].update(has_uint32=2), "rng entry is not a PCG64 state")
    # The step is the one number no digest holds: it must be the optimizer state's (an edit resumed from there).
    resume_with(lambda s: s.update(step=2), "says step 2, but its optimizer state was saved at step 3")
    # Settings of the wrong type (a TypeError from a comparison, later).
    resume_with(lambda s: s["config"].update(learning_rate="0.001"), "config's learning_rate is '0.001', not a float")
    resume_with(lambda s: s["config"].update(beta1=None), "config's beta1 is None, not a float")
    resume_with(lambda s: s["config"].update(seed=True), "config's seed is True, not a int")
    state_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        train(GPT.load(run), CausalLM(tmp_path / "data", 32, 4), cfg, run, resume=True)
    # A damaged byte in the log spoils its line only (the resume stopped on a UnicodeDecodeError naming no file).
    state_file.write_text(pristine)
    log = run / "metrics.jsonl"
    records = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(records[:-1]) + b'{"step": \xff}\n' + records[-1])
    train(GPT.load(run), CausalLM(tmp_path / "data", 32, 4), replace(cfg, max_iters=4), run, resume=True)
    resumed = log.read_bytes().splitlines(keepends=True)
    assert resumed[:len(records)] == records and json.loads(resumed[-1])["step"] == 4

    # Tokens are read with the dtype meta.json names: only what prepare_tokens writes is taken
    # (numpy's "object" would read the file's bytes as pointers).
    meta_file = tmp_path / "data" / "meta.json"
    meta = json.loads(meta_file.read_text())
    for edit, message in (({"dtype": "object"}, "dtype 'object' is not the uint16"), ({"train_tokens": 5}, "not the 5 uint16 tokens"),
                          ({"vocab_size": -1}, "non-negative integer")):
        meta_file.write_text(json.dumps({**meta, **edit}))
        with pytest.raises(ValueError, match=message):
            load_tokens(tmp_path / "data", "train")


def test_training_stops_when_the_loss_diverges(tmp_path):
    from ferrolm.train import CausalLM, TrainConfig, train

    class Diverging(CausalLM):  # the second update's loss is infinite
        def loss(self, model, batch, dropout_seed):
            loss, extra = super().loss(model, batch, dropout_seed)
            self.updates = getattr(self, "updates", 0) + (dropout_seed is not None)
            return (loss * float("inf") if dropout_seed is not None and self.updates == 2 else loss), extra

    model, _ = char_model(tmp_path)
    before = model.parameters()[0].numpy().copy()
    with pytest.raises(FloatingPointError, match="diverged at step 1"):
        train(model, Diverging(tmp_path / "data", 32, 4), TrainConfig(max_iters=5, progress=False), tmp_path / "run")
    assert np.isfinite(model.parameters()[0].numpy()).all() and not np.array_equal(before, model.parameters()[0].numpy())

    class NanGradient(CausalLM):  # a finite loss whose gradient is not: caught with clipping off too
        def loss(self, model, batch, dropout_seed):
            loss, extra = super().loss(model, batch, dropout_seed)
            return loss + 0.0 * F.sqrt(loss - loss), extra  # sqrt's slope at 0 is infinite: 0·∞

    class DivergedUpdate(CausalLM):  # finite gradients whose update diverged: its evaluation is NaN
        def loss(self, model, batch, dropout_seed):
            loss, extra = super().loss(model, batch, dropout_seed)
            self.updates = getattr(self, "updates", 0) + (dropout_seed is not None)
            return (loss * float("nan") if dropout_seed is None and self.updates > 3 else loss), extra

    class Broken(CausalLM):  # a model whose loss is NaN before any update: said so at step 0, nothing saved
        def loss(self, model, batch, dropout_seed):
            loss, extra = super().loss(model, batch, dropout_seed)
            return loss * float("nan"), extra

    model, _ = char_model(tmp_path)
    with pytest.raises(FloatingPointError, match="model gives train loss nan, val loss nan before any update.*none yet"):
        train(model, Broken(tmp_path / "data", 32, 4), TrainConfig(max_iters=4, eval_interval=2, progress=False),
              tmp_path / "broken")
    assert not (tmp_path / "broken" / "model.safetensors").exists()

    # The last evaluation was NaN, and the run saved that model and ended "done"; mid-run, its checkpoint was the one
    # the next step's divergence offered to resume from.
    model, _ = char_model(tmp_path)
    run = tmp_path / "diverged"
    with pytest.raises(FloatingPointError, match=f"diverged before step 4: its evaluation gave train loss nan, val loss "
                                                 f"nan .*last checkpoint in {run}: step 2"):
        train(model, DivergedUpdate(tmp_path / "data", 32, 4), TrainConfig(max_iters=4, eval_interval=2, progress=False),
              run)
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 2
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4  # logged, then refused
    # Keeping only the best checkpoint, the model ends holding its weights (it was left with the diverged ones).
    model, _ = char_model(tmp_path)
    with pytest.raises(FloatingPointError, match="step 2, whose weights the model holds"):
        train(model, DivergedUpdate(tmp_path / "data", 32, 4),
              TrainConfig(max_iters=4, eval_interval=2, always_save_checkpoint=False, progress=False), tmp_path / "best")
    saved = dict(GPT.load(tmp_path / "best").named_parameters())
    for name, tensor in model.named_parameters():
        np.testing.assert_array_equal(tensor.numpy(), saved[name].numpy())
    # A checkpoint taken at the start of the step that diverges holds the diverged weights: said.
    model, _ = char_model(tmp_path)
    with pytest.raises(FloatingPointError, match="step 1 \\(saved with the weights that diverged"):
        train(model, Diverging(tmp_path / "data", 32, 4),
              TrainConfig(max_iters=5, checkpoint_interval=1, progress=False), tmp_path / "interval")

    model, _ = char_model(tmp_path)
    with pytest.raises(FloatingPointError, match="diverged at step 0: loss [0-9.]+, gradient norm nan"):
        train(model, NanGradient(tmp_path / "data", 32, 4), TrainConfig(max_iters=5, grad_clip=0.0, progress=False),
              tmp_path / "run")
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


# ---------------------------------------------------------------- generation and scoring


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ferrolm.train import CausalLM, TrainConfig, train

    tmp = tmp_path_factory.mktemp("gpt")
    model, _ = char_model(tmp)
    train(model, CausalLM(tmp / "data", 32, 16), TrainConfig(max_iters=120, eval_interval=200, eval_iters=2,
          learning_rate=3e-3, warmup_iters=10, lr_decay_iters=120, progress=False), tmp / "run")
    return tmp / "run"


def test_generate_stream_and_stop(trained):
    model = GPT.load(trained)
    text = model.generate("ROMEO:", 80, temperature=0.8, top_k=20, seed=3)
    assert len(text) == 80  # char-level: one character per token
    assert "".join(model.generate("ROMEO:", 80, temperature=0.8, top_k=20, seed=3, stream=True)) == text
    greedy = model.generate("ROMEO:", 60, temperature=0)
    assert greedy == model.generate("ROMEO:", 60, temperature=0, seed=99)  # greedy ignores the seed
    stop = greedy[10:12]
    cut = model.generate("ROMEO:", 60, temperature=0, stop=stop)
    assert cut == greedy[: greedy.index(stop)]
    assert "".join(model.generate("ROMEO:", 60, temperature=0, stop=stop, stream=True)) == cut
    # A batch of prompts of different lengths gives each prompt's own continuation.
    batch = model.generate(["ROMEO:", "A"], 20, temperature=0)
    assert batch == [model.generate("ROMEO:", 20, temperature=0), model.generate("A", 20, temperature=0)]
    # Past the context (32) generation continues.
    assert len(model.generate("A", 100, temperature=0.5)) == 100
    # Token ids in, token ids out (no tokenizer needed): the same continuation.
    ids = model.generate(model.encode("ROMEO:"), 60, temperature=0)
    assert model.tokenizer.decode(ids) == greedy and ids == model.generate(np.array(model.encode("ROMEO:")), 60, temperature=0)
    assert model.generate([np.array(model.encode("ROMEO:")), model.encode("A")], 20, temperature=0) == \
        [list(model.tokenizer.encode(t, add_special_tokens=False)) for t in batch]


def test_score_matches_full_forward(trained):
    model = GPT.load(trained)
    ids = np.array([model.encode("To be, or not to be")])
    logits = model(ids).numpy()[0]
    lsm = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    expected = lsm[np.arange(ids.shape[1] - 1), ids[0, 1:]]
    np.testing.assert_allclose(model.score("To be, or not to be"), expected, rtol=1e-5, atol=1e-5)
    lp = sequence_logprobs(model, ids)
    assert lp.shape == (1, ids.shape[1] - 1)


def test_bfloat16_decoding_keeps_the_model(trained):
    """Under bfloat16, decoding reads bfloat16 copies of the weights: scores of texts short
    enough for its path (under 16 tokens) move by rounding only, greedy text stays this model's,
    and the copies follow a change of the weights."""
    from ferrolm.train.loop import using_precision

    model = GPT.load(trained)
    texts = ["RO", "ROM", "To "]
    weight = dict(model.named_parameters())["transformer.h.0.mlp.c_fc.weight"]
    exact = [model.score(t) for t in texts]
    greedy = model.generate("ROMEO:", 60, temperature=0)
    with using_precision("bfloat16"):
        rounded = [model.score(t) for t in texts]
        assert model.generate("ROMEO:", 60, temperature=0) == greedy
        assert "".join(model.generate("ROMEO:", 60, temperature=0, stream=True)) == greedy
        weight.copy_(weight.numpy() * -2.0)
        changed = model.score(texts[0])
    for e, r in zip(exact, rounded):
        np.testing.assert_allclose(r, e, atol=0.01)
        assert (e != r).any() == BF16_CPU  # rounded where the CPU runs bfloat16
    np.testing.assert_allclose(changed, model.score(texts[0]), atol=0.01)
    assert np.abs(changed - exact[0]).max() > 1  # the change mattered, and was read


def test_rust_greedy_equals_python(trained, repo, tmp_path):
    from ferrolm.train.loop import using_precision

    model = GPT.load(trained)
    stop = model.generate("ROMEO:", 40, temperature=0)[10:12]
    # A model whose greedy choice rounding decides: its blocks and positions are zero and every
    # token embeds as e (exactly bfloat16) but token 7, e·(1 + 2⁻¹²): float32 picks 7, and its
    # bfloat16 copy, e again, ties every token (argmax: id 0). The Rust example's --dtype must
    # round as Python does.
    tied = GPT.create(vocab_size=model.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=48, seed=5,
                      tokenizer=model.tokenizer)
    for name, t in tied.named_parameters():
        if ".attn." in name or ".mlp." in name or name.endswith("wpe.weight"):
            t.copy_(np.zeros(t.shape, np.float32))
    e = (np.random.default_rng(0).standard_normal(48).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    wte = np.tile(e, (model.vocab_size, 1))
    wte[7] *= 1 + 2**-12
    dict(tied.named_parameters())["transformer.wte.weight"].copy_(wte)
    tied.save(tmp_path / "tied")
    runs = [(trained, [], "float32", None), (trained, ["--stop", stop], "float32", stop),
            (tmp_path / "tied", [], "float32", None), (tmp_path / "tied", ["--dtype", "bfloat16"], "bfloat16", None)]
    texts = []
    for directory, flags, dtype, stops in runs:
        with using_precision(dtype):
            texts.append(GPT.load(directory).generate("ROMEO:", 40, temperature=0, stop=stops))
        out = subprocess.run(["cargo", "run", "--release", "-q", "-p", "ferrolm", "--example", "generate", "--",
                              str(directory), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0",
                              *flags], cwd=repo, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "ROMEO:" + texts[-1] + "\n", flags
    tok = model.tokenizer
    assert texts[2] == tok.decode([7]) * 40 and texts[3] == tok.decode([0 if BF16_CPU else 7]) * 40


# ---------------------------------------------------------------- bad input


def test_bad_input_is_refused_clearly(trained, tmp_path):
    model = GPT.load(trained)
    with pytest.raises(ValueError, match="context"):
        model.generate("x" * 40, 5)
    with pytest.raises(ValueError, match="empty"):
        model.generate("", 5)
    for stop_tokens in ([-1], [model.vocab_size], [1.0]):  # -1 was an OverflowError after the prefill, or accepted
        with pytest.raises(ValueError, match="stop_tokens must be token ids"):
            model.generate("x", 3, stop_tokens=stop_tokens)
    diverged = GPT.load(trained)
    weight = next(t for n, t in diverged.named_parameters() if "ln_f" in n)
    weight.copy_(np.full(weight.shape, np.nan, np.float32))
    for temperature in (0.0, 1.0):  # greedy gave id 0 at every step, sampling the last id
        with pytest.raises(ValueError, match="NaN or infinite"):
            diverged.generate("x", 3, temperature=temperature)
    with pytest.raises(ValueError, match="log-probabilities hold NaN or infinite"):  # perplexity printed "loss nan"
        diverged.score("some text")
    with pytest.raises(IndexError, match="vocabulary"):
        model(np.array([[0, model.vocab_size]]))
    with pytest.raises(IndexError, match="context"):
        model(np.zeros((1, 33), dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        model(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="integer"):
        model.score([1.7, 2.2])  # never token 1 and 2
    with pytest.raises(TypeError, match="one sequence"):
        model.score(np.array([[1, 2, 3]]))  # a batch: was "needs at least two tokens"
    # Bytes are UTF-8 text, as the tokenizer reads them (they were taken as ids, their byte values).
    np.testing.assert_array_equal(model.score(b"To be or"), model.score("To be or"))
    np.testing.assert_array_equal(model.score(bytearray(b"To be or")), model.score("To be or"))
    assert model.generate(b"To", 4, temperature=0) == model.generate("To", 4, temperature=0)
    for prompt in ([1.0, 2.0], ["To", 5], [None], None, 7.5):  # None and 7.5: "object is not iterable"
        with pytest.raises(TypeError, match="a prompt is a text, a list of texts, or token ids"):
            model.generate(prompt, 3)
    with pytest.raises(TypeError, match="stop_tokens must be a token id or a sequence of them, got float"):
        model.generate("To", 3, stop_tokens=1.0)
    # A mapping was generated from as a list of its keys: a tokenizer's output gave continuations of "input_ids" and
    # "attention_mask", one chat turn answered the user turns "role" and "content".
    for prompt, hint in (({"input_ids": [1, 2], "attention_mask": [1, 1]}, "a tokenizer's output: pass its 'input_ids'"),
                         ({"role": "user", "content": "hi"}, "one chat turn: pass a list of turns")):
        with pytest.raises(TypeError, match=f"got dict \\({hint}\\)"):
            model.generate(prompt, 3)
    for empty in ([], (), np.zeros((0, 3), np.int64), iter([])):  # "max() arg is an empty sequence"
        with pytest.raises(ValueError, match="generate: no prompts given"):
            model.generate(empty, 3)
    # Another library's array of ids (a torch tensor) is read as an array: it was "got a list holding Tensor".
    class Ids:
        def __init__(self, ids):
            self.ids = ids

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.ids, dtype=dtype)

    assert model.generate(Ids([1, 2]), 4, temperature=0) == model.generate([1, 2], 4, temperature=0)
    assert model.generate(Ids([[1, 2], [3, 4]]), 4, temperature=0) == model.generate([[1, 2], [3, 4]], 4, temperature=0)
    with pytest.raises(TypeError, match="a prompt array must hold integer token ids"):  # not "a list holding Ids"
        model.generate(Ids([1.0, 2.0]), 4)
    with pytest.raises(ValueError, match="seed must be below 2\\*\\*64, got an integer of 20001 bits"):
        model.generate("To", 2, seed=2**20000)  # str() refuses it: "Exceeds the limit (4300 digits)"

    class Texts(list):  # a pandas Series of texts is an array-like too: generated from as texts, as it was
        def __array__(self, dtype=None, copy=None):
            return np.array(list(self), dtype=object)

    assert model.generate(Texts(["To", "be"]), 4, temperature=0) == model.generate(["To", "be"], 4, temperature=0)
    # So is a numpy array of texts, and a range is ids (refused as an array of no integer ids, and as "a list holding
    # int").
    assert model.generate(np.array(["To", "be"]), 4, temperature=0) == model.generate(["To", "be"], 4, temperature=0)
    assert model.generate(range(1, 3), 4, temperature=0) == model.generate([1, 2], 4, temperature=0)
    # Sampling settings that are not numbers are said by name (was "must be real number, not NoneType"), and a
    # boolean is refused as top_k's and seed's are (temperature=True was 1.0).
    for bad in (dict(repetition_penalty=None), dict(temperature="1"), dict(temperature=True), dict(top_p=True)):
        for call in (lambda: model.generate("To", 2, **bad), lambda: model.chat(**bad)):
            with pytest.raises(TypeError, match=f"{next(iter(bad))} must be a number, got"):
                call()
    with pytest.raises(IndexError, match=f"score: token id {2**63} is outside the vocabulary"):  # it wrapped to -2**63
        model.score(np.array([1, 2**63], np.uint64))
    # Ids beyond int64 are said as given: a uint64 id wrapped to a negative one in the message, a large Python
    # int was an OverflowError naming no id.
    for prompt, said in ((np.array([2**63 + 5], np.uint64), 2**63 + 5), ([[1], [2**64]], 2**64), ([-(2**70)], -(2**70))):
        with pytest.raises(IndexError, match=f"token id {said}, outside the vocabulary of {model.vocab_size}"):
            model.generate(prompt, 3)
    for stop in (5, [None], ["a", 1]):
        with pytest.raises(TypeError, match="stop must be a string or a list of strings"):
            model.generate("To", 3, stop=stop)
    for stop in ("", ["x", ""]):  # ignored, silently
        with pytest.raises(ValueError, match="an empty stop string stops at nothing"):
            model.generate("To", 3, stop=stop)
    with pytest.raises(ValueError, match="temperature must be ≥ 0 and finite, got inf"):
        model.generate("To", 3, temperature=float("inf"))
    end = model.encode("e")[0]
    assert model.generate([1, 2], 8, temperature=0, stop_tokens=end) == model.generate([1, 2], 8, temperature=0,
                                                                                        stop_tokens=[end])  # one id
    with pytest.raises(ValueError, match="seed must be below 2\\*\\*64"):
        model.generate("To", 3, seed=2**64)
    with pytest.raises(ValueError, match="stride must be between 1 and block_size - 1"):
        model.score("To be or", stride=100)  # also for text shorter than the context
    one = GPT.create(vocab_size=8, block_size=1, n_layer=1, n_head=1, n_embd=8, seed=0)
    with pytest.raises(ValueError, match="a context of one token cannot slide over 5 tokens"):
        one.score([1, 2, 3, 4, 5])  # an index underflow before
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (broken / f).write_bytes((trained / f).read_bytes())
    data = (trained / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(fl.FormatError, match="safetensors"):
        GPT.load(broken)
    (broken / "model.safetensors").write_bytes(data)
    cfg = json.loads((trained / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "n_layer": cfg["n_layer"] + 1}))
    with pytest.raises(fl.FormatError, match="does config.json belong to these weights"):
        GPT.load(broken)
    # A corrupt size is refused before anything is allocated (a MemoryError or an abort otherwise).
    (broken / "config.json").write_text(json.dumps({**cfg, "vocab_size": 10**10}))
    with pytest.raises(fl.FormatError, match="does config.json belong to these weights"):
        GPT.load(broken)
    # A layer fewer: the weights of the last layer are left over.
    (broken / "config.json").write_text(json.dumps({**cfg, "n_layer": cfg["n_layer"] - 1}))
    with pytest.raises(fl.FormatError, match="unexpected tensor"):
        GPT.load(broken)
    (broken / "config.json").write_text(json.dumps({**cfg, "n_positions": 16, "n_ctx": 16}))
    with pytest.raises(fl.ShapeError, match="wpe"):
        GPT.load(broken)
    # Fields of the wrong type are errors, not silent defaults; GPT-2 variants this model does
    # not compute (an untied head, other attention scaling) are refused, not run wrongly.
    for edit, message in (({"resid_pdrop": "0.5"}, "resid_pdrop must be a finite number"),
                          ({"bias": "false"}, "bias must be true or false"),
                          ({"vocab_size": -5}, "vocab_size must be a non-negative integer"),
                          ({"layer_norm_epsilon": 1e39}, "layer_norm_epsilon must be a finite number"),
                          ({"tie_word_embeddings": False}, "tie_word_embeddings = false is not supported"),
                          ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx = true")):
        (broken / "config.json").write_text(json.dumps({**cfg, **edit}))
        with pytest.raises(fl.FormatError, match=message):
            GPT.load(broken)
    # A tokenizer larger than the model: the message names the directory.
    (broken / "config.json").write_text(json.dumps(cfg))
    kept = (broken / "tokenizer.json").read_bytes()
    fl.Tokenizer.train_from_iterator(["".join(map(chr, range(32, 400)))], kind="char").save(str(broken / "tokenizer.json"))
    with pytest.raises(fl.FormatError, match=f"^{re.escape(str(broken))}: the tokenizer has 368 ids, more than the "
                                             "model's [0-9]+ embeddings: it is not the tokenizer"):
        GPT.load(broken)
    (broken / "tokenizer.json").write_bytes(kept)
    # A model_type that is not a string (a list: a TypeError traceback from GPT.load).
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": ["gpt2"]}))
    for load in (GPT.load, fl.load_model, fl.BERT.load):
        with pytest.raises(ValueError, match=r"model_type \['gpt2'\] is not supported"):
            load(broken)
    (broken / "config.json").write_text(json.dumps(cfg))
    tensors, meta = fl._core.load_safetensors(str(trained / "model.safetensors"))
    wte, ln_f = tensors["transformer.wte.weight"], tensors["transformer.ln_f.weight"]
    for name, value, message in (("lm_head.weight", np.zeros_like(wte), "lm_head.weight differs"),
                                 ("transformer.ln_f.weight", np.full_like(ln_f, np.nan), "ln_f.weight holds NaN or infinite")):
        fl._core.save_safetensors(str(broken / "model.safetensors"), {**tensors, name: value}, meta)
        with pytest.raises(fl.FormatError, match=message):
            GPT.load(broken)
    fl._core.save_safetensors(str(broken / "model.safetensors"), {**tensors, "lm_head.weight": wte}, meta)
    GPT.load(broken)  # a stored copy of the tied head is fine
    (broken / "config.json").write_text(json.dumps({**cfg, "n_inner": 3 * cfg["n_embd"]}))
    with pytest.raises(fl.FormatError, match="n_inner"):
        GPT.load(broken)
    (broken / "config.json").write_text(json.dumps(cfg))
    (broken / "config.json").unlink()
    os.mkfifo(broken / "config.json")  # would block a reader forever
    with pytest.raises(fl.FormatError, match="not a regular file"):
        GPT.load(broken)
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json: no model was saved there \\(a model directory"):
        GPT.load(broken)
    (broken / "metrics.jsonl").write_text("")  # a run that has not saved yet
    with pytest.raises(FileNotFoundError, match="no model was saved there yet"):
        GPT.load(broken)
    (broken / "trainer_state.json").write_text("{}")  # a checkpoint whose config.json was deleted
    with pytest.raises(FileNotFoundError, match="has no config.json: the checkpoint there lacks it"):
        GPT.load(broken)
    with pytest.raises(FileNotFoundError, match="model directory .*does-not-exist does not exist"):
        GPT.load(tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError, match="model.safetensors is a file: give the model directory"):
        GPT.load(broken / "model.safetensors")  # it said the existing file "does not exist"


def test_a_bias_free_gpt_loads_back_with_the_zero_biases_hugging_face_adds(tmp_path):
    """HF's GPT-2 always has biases: it loads nanoGPT's bias-free model with zeros and saves
    them, keeping config.json's "bias": false. Zeros are the same model; trained ones (a model
    fine-tuned there) are computed with, as HF does (the file was refused)."""
    model = GPT.create(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False, seed=1)
    model.save(tmp_path)
    tensors, meta = fl._core.load_safetensors(str(tmp_path / "model.safetensors"))
    zeros = {"transformer.h.0.attn.c_attn.bias": np.zeros(24, np.float32), "transformer.ln_f.bias": np.zeros(8, np.float32)}
    fl._core.save_safetensors(str(tmp_path / "model.safetensors"), {**tensors, **zeros}, meta)
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(GPT.load(tmp_path)(ids).numpy(), model(ids).numpy())
    assert GPT.load(tmp_path).config["bias"] is False
    # Fine-tuned in HF: every bias there, trained. The same as a model with biases.
    with_biases = GPT.create(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=True, seed=2)
    with_biases.save(tmp_path / "hf")
    trained = {n: np.full_like(t, 0.1) if n.endswith(".bias") else t
               for n, t in fl._core.load_safetensors(str(tmp_path / "hf" / "model.safetensors"))[0].items()}
    fl._core.save_safetensors(str(tmp_path / "hf" / "model.safetensors"), trained, meta)
    expected = GPT.load(tmp_path / "hf")(ids).numpy()
    assert not np.allclose(expected, with_biases(ids).numpy())  # the trained biases count
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "bias": False}))
    loaded = GPT.load(tmp_path / "hf")
    assert loaded.config["bias"] is True
    np.testing.assert_array_equal(loaded(ids).numpy(), expected)
    # Some biases trained, the others missing: no model has that.
    fl._core.save_safetensors(str(tmp_path / "model.safetensors"), {**tensors, **zeros, "transformer.ln_f.bias": np.ones(8, np.float32)}, meta)
    with pytest.raises(fl.FormatError, match="missing tensor"):
        GPT.load(tmp_path)


def test_hugging_face_gpt2_variants_load_as_transformers_reads_them(tmp_path):
    """From a hands-on comparison with transformers: a task head's directory (TRL's reward
    models are GPT2ForSequenceClassification) loads its GPT-2 as AutoModelForCausalLM does (it
    was "unexpected tensor score.weight: does config.json match the weights?"); GPT2Config's
    aliases and HF's exact-GELU spelling are read; cross-attention, which this model does not
    compute, is refused by name."""
    model = GPT.create(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, seed=1)
    model.save(tmp_path)
    ids = np.array([[1, 2, 3]])
    expected = model(ids).numpy()
    tensors, meta = fl._core.load_safetensors(str(tmp_path / "model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    heads = {"GPT2ForSequenceClassification": {"score.weight": np.ones((2, 8), np.float32)},
             "GPT2ForTokenClassification": {"classifier.weight": np.ones((3, 8), np.float32),
                                            "classifier.bias": np.ones(3, np.float32)},
             "GPT2DoubleHeadsModel": {"multiple_choice_head.summary.weight": np.ones((1, 8), np.float32),
                                      "multiple_choice_head.summary.bias": np.ones(1, np.float32)}}
    for architecture, head in heads.items():
        fl._core.save_safetensors(str(tmp_path / "model.safetensors"), {**tensors, **head}, meta)
        (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
        np.testing.assert_array_equal(GPT.load(tmp_path)(ids).numpy(), expected)
        with pytest.warns(UserWarning, match=f"holds a {architecture}: only its backbone is loaded, without the head$"):
            fl.load_model(tmp_path)
    fl._core.save_safetensors(str(tmp_path / "model.safetensors"), tensors, meta)
    aliases = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
               "n_positions": "max_position_embeddings"}
    renamed = {aliases.get(k, k): v for k, v in config.items() if k != "n_ctx"}
    (tmp_path / "config.json").write_text(json.dumps(renamed))
    np.testing.assert_array_equal(GPT.load(tmp_path)(ids).numpy(), expected)
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "gelu_python"}))
    exact = GPT.create(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, seed=1, activation_function="gelu")
    np.testing.assert_array_equal(GPT.load(tmp_path)(ids).numpy(), exact(ids).numpy())
    (tmp_path / "config.json").write_text(json.dumps({**config, "add_cross_attention": True}))
    with pytest.raises(fl.FormatError, match="add_cross_attention"):
        GPT.load(tmp_path)


def test_a_gpt_with_a_wordpiece_tokenizer_encodes_prompts_as_it_trained():
    """GPT training data has no [CLS] … [SEP] around it (prepare_tokens), so prompts have none."""
    wp = fl.Tokenizer.train_from_iterator(["to be or not to be " * 20], kind="wordpiece", vocab_size=60)
    model = GPT.create(vocab_size=wp.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, tokenizer=wp)
    assert wp.token_to_id("[CLS]") not in model.encode("to be") and wp.token_to_id("[SEP]") not in model.encode("to be")
    assert wp.decode(model.encode("to be")) == "to be"


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_stream_text_equals_decoding_all_ids(kind):
    """Streaming decodes byte-level BPE token by token; invalid and split UTF-8 (random ids)
    and stop strings must come out exactly as decoding the whole sequence at once."""
    tok = fl.Tokenizer.train_from_iterator(["naïve café, 日本語 🙂 ok " * 30], kind=kind, vocab_size=300)
    for seed in range(4):  # some end inside a character: flush gives U+FFFD, as decode does
        ids = [int(i) for i in np.random.default_rng(seed).integers(0, tok.vocab_size, 500)]
        whole = tok.decode(ids)
        for stops in ([], [whole[300:303]], [whole[300:303], whole[100:103]]):  # the earliest stop wins
            stream = fl._core.TextStream(stops)
            text = "".join(stream.push(tok, i) for i in ids)
            assert stream.done == stream.stopped_by_string == bool(stops)
            text += stream.flush()
            assert text == whole[: min((whole.index(s) for s in stops), default=len(whole))] == stream.text
            assert stream.stopped_by_string == bool(stops)  # not set by flush
    if kind == "bpe":  # one token completing two stop strings: the cut is at the earlier one
        stream = fl._core.TextStream(["bc", "abc"])
        ids = [tok.token_to_id(c) for c in "xabcd"]
        assert "".join(stream.push(tok, i) for i in ids) + stream.flush() == "x"
    def encode(text):
        return tok.encode(text, add_special_tokens=False)

    stop_token = encode(" ok")[-1]
    stream = fl._core.TextStream([], [stop_token])
    assert "".join(stream.push(tok, i) for i in encode("café") + [stop_token] + encode("日本")) == tok.decode(encode("café"))
    assert stream.done and not stream.stopped_by_string


def test_text_generation_picks_only_ids_the_tokenizer_has():
    """A model's vocabulary may be padded past its tokenizer's (nanoGPT pads GPT-2's): the
    padding ids are never sampled for text (they raised IndexError mid-stream). Nor are the
    gaps a tokenizer leaves below its size (an added token above the model's ids, tiktoken's
    ids around its special tokens): they raised IndexError, in a stream after some text."""
    tok = fl.Tokenizer.train_from_iterator(["abcde"], kind="char", vocab_size=100)
    model = GPT.create(vocab_size=tok.vocab_size + 6, block_size=16, n_layer=1, n_head=2, n_embd=16, tokenizer=tok, seed=1)
    for seed in range(5):
        text = model.generate("ab", 20, seed=seed)
        assert len(text) == 20 and set(text) <= set("abcde")
        assert "".join(model.generate("ab", 20, seed=seed, stream=True)) == text
    spec = json.loads(tok.to_str())
    spec["added_tokens"].append({"id": tok.vocab_size + 4, "content": "<|far|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    gapped = fl.Tokenizer.from_str(json.dumps(spec))
    gaps = set(range(tok.vocab_size, gapped.vocab_size - 1))
    assert gapped.unused_ids() == sorted(gaps) and all(gapped.id_to_token(i) is None for i in gaps)
    assert tok.unused_ids() == []
    model = GPT.create(vocab_size=gapped.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, tokenizer=gapped,
                       seed=1)
    for seed in range(5):  # near-uniform at this temperature: a gap id ~40% of the time
        text = model.generate("ab", 30, seed=seed, temperature=3.0)
        assert set(text.replace("<|far|>", "")) <= set("abcde")
        assert "".join(model.generate("ab", 30, seed=seed, temperature=3.0, stream=True)) == text
    # The id path samples every id of the model, the gaps too.
    assert gaps & set(model.generate(model.encode("ab"), 30, seed=0, temperature=3.0))
    # Log-probabilities of the distribution text is sampled from (PPO's) give the gaps none.
    from ferrolm.gpt import tempered_log_softmax

    logits = fl.randn(2, 3, gapped.vocab_size + 2, seed=0)
    p = np.exp(tempered_log_softmax(logits, 2.0, gapped.vocab_size, gapped.unused_ids()).numpy())
    assert p.shape == (2, 3, gapped.vocab_size) and (p[..., sorted(gaps)] == 0).all()
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-6)
    kept = [i for i in range(gapped.vocab_size) if i not in gaps]
    z = logits.numpy()[..., kept] / 2.0
    np.testing.assert_allclose(p[..., kept], np.exp(z) / np.exp(z).sum(-1, keepdims=True), rtol=1e-5)


def test_a_wordpiece_continuation_is_decoded_after_its_prompt():
    """WordPiece spaces a piece from the one before it, or joins a `##` piece to it: the
    generated text is what decoding prompt and continuation together adds to the prompt (it
    was decoded alone: glued to the prompt, and `##` shown)."""
    wp = fl.Tokenizer.train_from_iterator(["to be or not to be, that is the question " * 20], kind="wordpiece",
                                          vocab_size=80)
    model = GPT.create(vocab_size=wp.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, tokenizer=wp, seed=2)
    prompt = model.encode("to be")
    joined = 0
    for seed in range(12):
        ids = model.generate(prompt, 6, seed=seed)
        expected = wp.decode(prompt + ids)[len(wp.decode(prompt)):]
        assert model.generate("to be", 6, seed=seed) == expected
        assert "".join(model.generate("to be", 6, seed=seed, stream=True)) == expected
        joined += wp.id_to_token(ids[0]).startswith("##")
    assert joined  # some continuations start inside the prompt's last word


def test_generation_arguments_are_checked():
    model = GPT.create(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, seed=1)
    for kwargs, name in (({"max_new_tokens": -4}, "max_new_tokens"), ({"top_k": -1}, "top_k"), ({"seed": -1}, "seed"),
                         ({"repetition_penalty": float("inf")}, "repetition_penalty"),
                         ({"repetition_penalty": float("nan")}, "repetition_penalty")):
        with pytest.raises(ValueError, match=name):
            model.generate([1, 2], **{"max_new_tokens": 4, **kwargs})
    # Values valid in Python's floats stay valid in float32's (top_p=1e-50 became 0, "got 0").
    greedy = model.generate([1, 2], 8, temperature=0)
    assert model.generate([1, 2], 8, seed=3, top_p=1e-50) == greedy
    assert len(model.generate([1, 2], 8, seed=3, temperature=1e39, repetition_penalty=1e-50)) == 8
    with pytest.raises(ValueError, match="top_p must be in \\(0, 1\\], got 0"):
        model.generate([1, 2], 8, top_p=0.0)
    # top_p=1 keeps every token: the same draws as no nucleus at all (it re-sorted them).
    assert model.generate([1, 2], 30, seed=3, top_p=1.0) == model.generate([1, 2], 30, seed=3)
    # Stop tokens may come as any iterable (an iterator was used up before the text saw it).
    first = model.generate([1, 2], 1, seed=4)[0]
    assert model.generate([1, 2], 10, seed=4, stop_tokens=iter([first])) == [first]
    # A call that samples nothing, or is refused, takes no seed from the stream manual_seed
    # restarts (the next unseeded text differed after one).
    texts = fl.Tokenizer.train_from_iterator(["abcdefgh"], kind="char", vocab_size=20)
    model = GPT.create(vocab_size=texts.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, tokenizer=texts, seed=1)
    fl.manual_seed(3)
    expected = model.generate("ab", 12)
    fl.manual_seed(3)
    assert model.generate("ab", 0) == "" and model.generate([1, 2], 0) == []
    with pytest.raises(ValueError, match="stream=True takes a single prompt"):
        model.generate(["a", "b"], 4, stream=True)
    assert model.generate("ab", 12) == expected


def test_streamed_and_returned_text_agree_on_split_characters():
    """A byte-level model may stop inside a character: both paths end it as U+FFFD."""
    tok = fl.Tokenizer.train_from_iterator(["naïve café, 日本語 🙂 ok " * 30], kind="bpe", vocab_size=300)
    model = GPT.create(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=16, tokenizer=tok, seed=1)
    for seed in range(20):
        text = model.generate("ok", 3, temperature=1.0, seed=seed)
        assert "".join(model.generate("ok", 3, temperature=1.0, seed=seed, stream=True)) == text
    stream = fl._core.TextStream(["ab"])
    stream.push(tok, tok.token_to_id("a"))
    stream.flush()  # ends the stream: nothing more comes, and nothing panics
    assert stream.push(tok, tok.token_to_id("b")) == "" and stream.done


def test_score_slides_a_window_over_long_text(trained):
    """Text longer than the context (32) is scored window by window: each token with the
    context the window gives it, which a direct forward pass over that window reproduces."""
    model = GPT.load(trained)
    ids = model.encode("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer")
    assert len(ids) > 80
    for stride in (16, 5, 31):
        lp = model.score(ids, stride=stride)
        assert lp.shape == (len(ids) - 1,) and np.isfinite(lp).all()
        # Token t is scored by the window ending where it was first covered.
        end, expected = 32, {}
        while True:
            window = sequence_logprobs(model, np.array([ids[end - 32 : end]])).numpy()[0]
            for t in range(end - 32 + 1, end):
                expected.setdefault(t, window[t - (end - 32) - 1])
            if end == len(ids):
                break
            end = min(len(ids), end + stride)
        np.testing.assert_allclose(lp, [expected[t] for t in range(1, len(ids))], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.score(ids[:32]), model.score(ids)[:31], rtol=1e-5, atol=1e-5)
    # Independently of the window loop: with stride 1, token t is predicted from the 31 before it.
    lp = model.score(ids, stride=1)
    for t in range(32, len(ids)):
        last = sequence_logprobs(model, np.array([ids[t - 31 : t + 1]])).numpy()[0, -1]
        assert lp[t - 1] == pytest.approx(last, rel=1e-5, abs=1e-5), t
    with pytest.raises(ValueError, match="stride"):
        model.score(ids, stride=32)


def test_dropout_reaches_the_attention_probabilities_and_is_saved(tmp_path):
    ids = np.arange(12).reshape(2, 6) % 7
    common = dict(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8, seed=0)
    attention_only = GPT.create(dropout=0.0, attn_dropout=0.5, **common)
    assert not np.allclose(attention_only(ids, dropout_seed=1).numpy(), attention_only(ids).numpy())
    assert (attention_only.config["attn_pdrop"], attention_only.config["resid_pdrop"]) == (0.5, 0.0)
    without = GPT.create(dropout=0.0, **common)
    np.testing.assert_array_equal(without(ids, dropout_seed=1).numpy(), without(ids).numpy())
    nanogpt = GPT.create(dropout=0.25, **common)  # one rate everywhere, as nanoGPT
    nanogpt.save(tmp_path / "m")
    assert GPT.load(tmp_path / "m").config["attn_pdrop"] == 0.25
    # Another rate on the same weights (shared, so training one trains the other).
    tuned = without.with_dropout(0.0, attn_dropout=0.5)
    assert tuned.config["attn_pdrop"] == 0.5 and without.config["attn_pdrop"] == 0.0
    np.testing.assert_array_equal(tuned(ids).numpy(), without(ids).numpy())
    assert not np.allclose(tuned(ids, dropout_seed=1).numpy(), without(ids).numpy())
    bias = dict(tuned.named_parameters())["transformer.ln_f.bias"]
    bias.detach().copy_(np.full(8, 0.5, np.float32))
    np.testing.assert_array_equal(dict(without.named_parameters())["transformer.ln_f.bias"].numpy(), 0.5)
    with pytest.raises(ValueError, match="dropout must be in"):
        without.with_dropout(1.0)


def test_a_chat_model_directory_gives_hugging_face_its_template_and_end_token(tmp_path):
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # how transformers renders chat templates

    from ferrolm.chat import ChatTemplate

    tok = fl.Tokenizer.train_from_iterator(["to be or not to be, who goes there?"], kind="char", vocab_size=100)
    model = GPT.create(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=8, tokenizer=tok)
    model.save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "generation_config.json").exists()
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert config["bos_token_id"] is None and config["eos_token_id"] is None  # not GPT-2's 50256
    template = ChatTemplate.prepare(model)
    model.save(tmp_path / "chat")
    eos = json.loads((tmp_path / "chat" / "generation_config.json").read_text())["eos_token_id"]
    ends = [model.tokenizer.token_to_id(t) for t in ("<|end|>", "<|user|>", "<|assistant|>")]
    assert eos[0] == ends[0] and sorted(eos) == sorted(ends)  # where ferrolm's chat stops, <|end|> first
    tokenizer_config = json.loads((tmp_path / "chat" / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|end|>"
    assert (tmp_path / "chat" / "chat_template.jinja").read_text() == tokenizer_config["chat_template"]
    # A model without the chat tokens saved over the chat model, directly or as a run's checkpoint,
    # replaces its chat files with ones that have no template or end ids (Hugging Face would chat
    # through the old template); a save without a tokenizer leaves the directory's tokenizer files
    # as they are.
    import shutil

    from ferrolm.data import prepare_tokens
    from ferrolm.train import CausalLM, TrainConfig, train

    prepare_tokens("to be or not to be, who goes there? " * 30, tok, tmp_path / "data")
    for resaved, save in ((False, lambda out: GPT.load(tmp_path / "plain").save(out)),
                          (False, lambda out: train(GPT.load(tmp_path / "plain"), CausalLM(tmp_path / "data", 16, 2),
                                                    TrainConfig(max_iters=1, eval_iters=1, progress=False), out)),
                          (True, lambda out: GPT.load(tmp_path / "plain").save(out))):
        shutil.copytree(tmp_path / "chat", tmp_path / "over", dirs_exist_ok=True)
        if resaved:  # as transformers' GenerationConfig.save_pretrained writes ours (it kept the chat's end ids)
            generation = tmp_path / "over" / "generation_config.json"
            generation.write_text(json.dumps({**json.loads(generation.read_text()), "transformers_version": "5.24.0",
                                              "_from_model_config": True}))
        save(tmp_path / "over")
        assert json.loads((tmp_path / "over" / "tokenizer_config.json").read_text()) == \
            {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 32,
             "model_input_names": ["input_ids", "attention_mask"]}
        assert json.loads((tmp_path / "over" / "generation_config.json").read_text()) == {}
        assert "not a chat model" in (tmp_path / "over" / "chat_template.jinja").read_text()  # Hugging Face prefers it
    # Hugging Face's own files stay: a save without a tokenizer leaves the tokenizer they describe,
    # and a chat template of its own (transformers' save writes one there) is not ferrolm's.
    theirs = {"do_lower_case": False, "model_max_length": 512}  # bert-base-cased's
    (tmp_path / "plain" / "tokenizer_config.json").write_text(json.dumps(theirs))
    (tmp_path / "plain" / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    GPT(GPT.load(tmp_path / "plain").core).save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "tokenizer_config.json").read_text()) == theirs
    GPT.load(tmp_path / "plain").save(tmp_path / "plain")
    assert (tmp_path / "plain" / "chat_template.jinja").read_text() == "{{ messages[0]['content'] }}"
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):  # as Hugging Face's template environment has it
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    render = env.from_string(tokenizer_config["chat_template"]).render
    encode = lambda text: list(tok.encode(text, allowed_special="all", add_special_tokens=False))
    question = [{"role": "user", "content": "who goes there?"}]
    assert encode(render(messages=question, add_generation_prompt=True)) == template.prompt_ids("who goes there?")
    exchange = question + [{"role": "assistant", "content": "to be"}]
    assert encode(render(messages=exchange)) == template.render("who goes there?", "to be")
    system = [{"role": "system", "content": "be short"}]
    with pytest.raises(ValueError, match="only user and assistant turns, not system"):  # was dropped silently
        render(messages=system + question)
    # A model fine-tuned on system turns has the role, and its template renders it first.
    template = ChatTemplate.prepare(model, system=True)
    model.save(tmp_path / "system")
    render = env.from_string(json.loads((tmp_path / "system" / "tokenizer_config.json").read_text())["chat_template"]).render
    assert encode(render(messages=system + question, add_generation_prompt=True)) == template.prompt_ids(system + question)
    assert encode(render(messages=system + exchange)) == template.render(system + question, "to be")
    with pytest.raises(ValueError, match="an optional first system turn, then user and assistant turns, not system"):
        render(messages=question + system)
