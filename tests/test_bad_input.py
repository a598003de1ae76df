"""Bad input gets a clear Python exception, never a crash (each case from the core issue)."""

import json
import math

import numpy as np
import pytest

import ferrolm as fl
import ferrolm.functional as F


def test_mismatched_shapes_raise_value_errors():
    with pytest.raises(fl.ShapeError, match="cannot be broadcast"):
        fl.ones(2, 3) + fl.ones(4)
    with pytest.raises(ValueError, match="inner dimensions"):
        fl.ones(2, 3) @ fl.ones(4, 2)
    with pytest.raises(ValueError, match="layer_norm weight"):
        F.layer_norm(fl.ones(2, 3), fl.ones(4))
    with pytest.raises(ValueError, match="key_padding_mask"):
        F.attention(fl.ones(1, 1, 2, 2), fl.ones(1, 1, 2, 2), fl.ones(1, 1, 2, 2), key_padding_mask=np.ones((1, 3), bool))
    with pytest.raises(ValueError, match="reshape"):
        fl.ones(2, 3).reshape(4, -1)


def test_non_float32_input_is_converted_or_rejected():
    # Documented rule: numbers of any numeric dtype are cast to float32 ...
    assert fl.tensor(np.arange(3, dtype=np.int64)).numpy().dtype == np.float32
    np.testing.assert_array_equal(fl.tensor(np.array([0.5, 1.5])).numpy(), [0.5, 1.5])
    # ... non-contiguous arrays are copied in order ...
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(fl.tensor(a).numpy(), a)
    # ... and non-numeric data is refused.
    with pytest.raises((ValueError, TypeError)):
        fl.tensor(np.array(["a", "b"]))
    for data in (None, [1, None], np.array(["2020-01-01"], dtype="datetime64[D]")):
        with pytest.raises(TypeError, match="numeric"):  # not NaN, not a day count
            fl.tensor(data)
    # Indices must be integers: 1.7 is never silently token 1.
    with pytest.raises(TypeError, match="integer"):
        F.embedding(fl.ones(4, 2), np.array([1.7]))


def test_sizes_beyond_memory_raise_memory_error():
    # 2**62 + 1 rows of 4 overflows to 4 elements in unchecked arithmetic; 2**32 squared too.
    for shape in ((2**62 + 1, 4), (2**32, 2**32)):
        with pytest.raises(MemoryError):
            fl.zeros(*shape)
    # Valid sizes beyond a 48-bit address space (so refused whatever the overcommit policy):
    # an exception, not an aborted interpreter.
    with pytest.raises(MemoryError):
        fl.randn(2**23, 2**23)
    with pytest.raises(MemoryError):
        fl.GPT.create(vocab_size=10**14, block_size=8, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(MemoryError):
        fl.Linear(2**24, 2**24)
    # Layers that each fit, but not all together (each was drawn, until the kernel ended the process).
    with pytest.raises(MemoryError, match="the model's weights need"):
        fl.GPT.create(vocab_size=50257, block_size=1024, n_layer=10**7, n_head=12, n_embd=768)
    with pytest.raises(MemoryError, match="the model's weights need"):
        fl.BERT.create(vocab_size=30522, num_hidden_layers=10**7, hidden_size=768)
    with pytest.raises(ValueError, match="reshape"):
        fl.ones(4).reshape(2**62 + 1, 4)  # wraps around to 4 elements in unchecked arithmetic
    # Small operands whose batch axes broadcast to 2**40 products (their indices were listed before the output was
    # checked: an abort).
    with pytest.raises(MemoryError):
        fl.zeros(2**20, 1, 1, 1) @ fl.zeros(1, 2**20, 1, 1)


def test_running_out_of_memory_mid_step_raises_memory_error():
    """A training step that runs out of memory part-way (here under an address-space limit,
    raised step by step so that it runs out at many different places) raises MemoryError
    and leaves the process working; an op's output or gradient allocated infallibly aborted
    the interpreter (SIGABRT)."""
    from conftest import run_python

    code = """
import json, resource
import numpy as np, ferrolm as fl, ferrolm.functional as F
model = fl.GPT.create(vocab_size=65, block_size=256, n_layer=2, n_head=4, n_embd=256, seed=0)
opt = fl.AdamW(model.parameters(), lr=1e-3)
outcomes = {}
# A batch of 1 (fewer sequences than threads: attention splits heads instead), and of 16.
for batch, step in ((1, 2), (16, 12)):
    x = np.random.default_rng(0).integers(0, 65, size=(batch, 257))
    outcomes[batch] = []
    for extra in range(step, 1024, step):
        mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + extra * 2**20, resource.RLIM_INFINITY))
        try:
            F.cross_entropy(model(x[:, :-1]), x[:, 1:].reshape(-1)).backward()
            opt.step()
            outcomes[batch].append("ok")
            break
        except MemoryError:
            outcomes[batch].append("MemoryError")
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            opt.zero_grad()
            fl._core.release_memory()
print(json.dumps(outcomes))
"""
    outcomes = json.loads(run_python(code, {"RAYON_NUM_THREADS": "2"}))
    for batch, runs in outcomes.items():
        assert runs.count("MemoryError") >= 3 and runs[-1] == "ok", (batch, runs)


def test_outputs_larger_than_their_inputs_raise_memory_error():
    # Each output holds 2**46 floats (256 TB, beyond the address space) from inputs of 2**23:
    # an exception, not an aborted interpreter.
    column, row = fl.zeros(2**23, 1), fl.zeros(1, 2**23)
    ops = {
        "broadcast": lambda: column + row,
        "where": lambda: F.where(column, row, 0.0),
        "matmul": lambda: column @ row,
        "batched matmul": lambda: column.reshape(1, 2**23, 1) @ row.reshape(1, 1, 2**23),
        "linear": lambda: F.linear(column, column),
        "linear with bias": lambda: F.linear(column, column, fl.zeros(2**23)),
        "index_select": lambda: F.index_select(row, 0, np.zeros(2**23, dtype=np.int64)),
    }
    for name, op in ops.items():
        with pytest.raises(MemoryError):
            op()
            pytest.fail(name)
    tok = fl.Tokenizer.train_from_iterator(["a b c"], kind="char", vocab_size=100)
    with pytest.raises(MemoryError, match="padded batch"):
        tok.encode_batch_padded(["a"], max_length=2**62, padding="max_length")


def test_broadcast_arrays_copied_in_raise_memory_error():
    """A broadcast numpy view takes a few bytes but 2**46 floats once copied: every path that
    copies an array into the core aborted the interpreter ("memory allocation failed")."""
    values = np.broadcast_to(np.float32(1), (2**23, 2**23))
    ids = np.broadcast_to(np.int64(0), (2**23, 2**23))
    mask = np.broadcast_to(True, (2**23, 2**23))
    leaf = fl.zeros(1, requires_grad=True)
    copies = {
        "tensor": lambda: fl.tensor(values),
        "copy_": lambda: fl.zeros(1).copy_(values),
        "operand": lambda: fl.zeros(1) + values,
        "grad": lambda: setattr(leaf, "grad", values),
        "backward": lambda: (leaf * 2).backward(values),
        "where": lambda: F.where(mask, 0.0, 1.0),
        "key_padding_mask": lambda: F.attention(*[fl.zeros(1, 1, 4, 4)] * 3, key_padding_mask=mask),
        "embedding": lambda: F.embedding(fl.zeros(3, 2), ids),
        "cross_entropy": lambda: F.cross_entropy(fl.zeros(2, 3), ids),
    }
    for name, copy in copies.items():
        with pytest.raises(MemoryError):
            copy()
            pytest.fail(name)
    with pytest.raises(MemoryError):  # the absent weight's ones, for an empty batch of 2**46 features
        F.layer_norm(fl.zeros(0, 2**46))


def test_empty_tensors_with_huge_other_dimensions_are_refused_or_handled():
    """Found by fuzzing: an empty tensor's other axes once overflowed buffers sized by them
    (a segfault in numpy conversion, panics, aborts, hangs over 2**40 empty rows)."""
    with pytest.raises(MemoryError):
        fl.zeros(0, 2**62)  # numpy's rule: the non-zero dimensions must be addressable
    with pytest.raises(MemoryError):
        fl.zeros(0, 3, 2**62)
    rows = fl.zeros(2**40, 0)  # addressable, and empty
    assert F.narrow(rows, 1, 0, 0).shape == (2**40, 0) and F.concat([rows, rows], 1).shape == (2**40, 0)
    with pytest.raises(MemoryError):
        rows.sum(1)  # 2**40 zeros
    assert F.cross_entropy(fl.zeros(0, 2**40), np.zeros(0, np.int64), reduction="none").shape == (0,)
    with pytest.raises(MemoryError):
        z = fl.zeros(1, 2**44, 1, 0)
        F.attention(z, z, z)
    with pytest.raises(ValueError, match="head size of at least 1"):
        F.attention_qkv(fl.zeros(2, 5, 0), 2**32)
    x = fl.zeros(0, 3, requires_grad=True)
    F.index_select(x, 0, np.zeros(0, np.int64)).sum().backward()
    assert x.grad.shape == (0, 3)


def test_nan_is_an_error_or_propagates_never_a_number():
    with pytest.raises(ValueError, match="must not be NaN"):
        F.clamp(fl.ones(3), 0.0, float("nan"))
    assert np.isnan(F.tanh(fl.tensor([np.nan])).numpy()).all()
    assert np.isnan(F.softmax(fl.tensor([np.nan, -np.inf])).numpy()).all()
    np.testing.assert_array_equal(F.softmax(fl.tensor([-np.inf, -np.inf])).numpy(), [0.0, 0.0])  # fully masked
    for mask in (None, "x", ["a", "b"]):
        with pytest.raises(TypeError, match="a mask must hold booleans or numbers"):
            F.masked_fill(fl.ones(2), mask, 0.0)
    with pytest.raises(ValueError, match="betas must be two numbers"):
        fl.AdamW([fl.ones(2, requires_grad=True)], betas=(0.9, 0.99, 0.5))
    with pytest.raises(ValueError, match="needs a 'params' list"):
        fl.AdamW([{"lr": 1}])


def test_thousands_of_special_tokens_register_and_match():
    # The matcher is built once, on first use (rebuilt per token, 8,000 took 8.6 s; this test checks
    # only that the result is right: speed is for benchmarks).
    tok = fl.Tokenizer.train_from_iterator(["a b c"], kind="char", vocab_size=100)
    assert tok.add_special_tokens([f"<t{i}>" for i in range(8000)]) == 8000
    ids = tok.encode("a<t7999>b<t0>", add_special_tokens=False)
    assert ids[1] == tok.token_to_id("<t7999>") and ids[3] == tok.token_to_id("<t0>") and len(ids) == 4


def test_nan_and_inf_propagate_without_crashing():
    # Documented: NaN/inf follow IEEE arithmetic like numpy; nothing raises or aborts.
    x = fl.tensor([np.nan, np.inf, -np.inf, 1.0], requires_grad=True)
    y = F.softmax(x)
    assert np.isnan(y.numpy()).all()
    F.exp(x).sum().backward()
    assert np.isnan(x.grad.numpy()[0])
    assert np.isnan(F.cross_entropy(fl.tensor([[np.nan, 0.0]]), np.array([0])).item())
    assert math.isnan(fl.clip_grad_norm([x], 1.0))  # the NaN norm is reported, gradients left as they are


def test_empty_tensors():
    e = fl.zeros(0, 4)
    assert (e @ fl.ones(4, 3)).shape == (0, 3)
    assert F.softmax(e).shape == (0, 4)
    assert fl.zeros(0).sum().item() == 0.0
    assert not np.signbit(fl.zeros(0).sum().item())  # it was -0.0 (Rust's float sum starts there)
    # A mean over an empty axis is NaN, as in numpy and PyTorch (it was a ShapeError); its gradient is empty.
    x = fl.zeros(3, 0, requires_grad=True)
    m = x.mean(axis=1)
    assert m.shape == (3,) and np.isnan(m.numpy()).all()
    m.sum().backward()
    assert x.grad.shape == (3, 0)
    with pytest.raises(ValueError, match="empty"):
        fl.zeros(2, 0).max(axis=1)


def test_out_of_range_indices_raise_index_error():
    with pytest.raises(IndexError, match="out of range"):
        F.embedding(fl.ones(4, 2), np.array([[0, 4]]))
    with pytest.raises(IndexError, match="out of range"):
        F.embedding(fl.ones(4, 2), np.array([-1]))
    with pytest.raises(IndexError):
        F.gather(fl.ones(2, 3), 1, np.array([[0], [3]]))
    with pytest.raises(IndexError):
        F.cross_entropy(fl.ones(2, 3), np.array([0, 5]))
    with pytest.raises(IndexError):
        fl.ones(2, 3).sum(axis=2)


def test_backward_misuse_raises_grad_error():
    w = fl.ones(3, requires_grad=True)
    with pytest.raises(fl.GradError, match="one-element"):
        F.exp(w).backward()
    loss = F.exp(w).sum()
    loss.backward()
    with pytest.raises(fl.GradError, match="already freed"):
        loss.backward()
    with pytest.raises(fl.GradError, match="does not require grad"):
        fl.ones(2).sum().backward()
    with pytest.raises(fl.GradError):
        (w * 2).requires_grad = True
    with pytest.raises(ValueError, match="gradient shape"):
        F.exp(w).backward(np.ones(2))


def test_json_files_with_a_byte_order_mark_load(tmp_path):
    """Some editors start UTF-8 files with a byte-order mark: config.json and tokenizer.json
    read as without it (it was "config.json is not valid JSON: expected value at line 1 column 1")."""
    tok = fl.Tokenizer.train_from_iterator(["to be or not to be"], kind="char", vocab_size=100)
    fl.GPT.create(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8, seed=0, tokenizer=tok).save(tmp_path)
    for name in ("config.json", "tokenizer.json"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    model = fl.load_model(tmp_path)
    assert model.block_size == 8 and model.encode("to be") == tok.encode("to be")
    # A BERT's too, which Python reads to tell the kind (it was loaded as a GPT, and failed).
    bert = tmp_path / "bert"
    fl.BERT.create(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                   max_position_embeddings=8, seed=0, tokenizer=tok).save(bert)
    (bert / "config.json").write_bytes(b"\xef\xbb\xbf" + (bert / "config.json").read_bytes())
    assert isinstance(fl.load_model(bert), fl.BERT)


def test_a_file_in_a_missing_folder_is_refused_naming_the_folder(tmp_path):
    """The error named the atomic write's temporary file (`[Errno 2] ... '.x.jsonl.hicqq7e6.tmp'`)."""
    from ferrolm.jsonl import write_records

    with pytest.raises(FileNotFoundError, match=f"cannot write .*x.jsonl: the folder {tmp_path / 'nowhere'} does not"):
        write_records(tmp_path / "nowhere" / "x.jsonl", [{"prompt": "a"}])


def test_an_empty_save_path_and_a_negative_vocabulary_are_refused(tmp_path, monkeypatch):
    """An empty path saved the model into the working directory; a negative `vocab` of the
    log-probabilities was an OverflowError from deep in the core."""
    from ferrolm.gpt import sequence_logprobs

    model = fl.GPT.create(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, seed=0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="an empty path"):
        model.save("")
    from ferrolm.cli import main
    from ferrolm.train import TrainConfig, train

    with pytest.raises(ValueError, match="an empty path"):  # training wrote its checkpoints there too
        train(model, object(), TrainConfig(max_iters=1, progress=False), "")
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", ""])
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="vocab must be a positive number of ids, got -1"):
        sequence_logprobs(model, np.array([[1, 2, 3]]), vocab=-1)
