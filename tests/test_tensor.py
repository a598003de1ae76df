"""Tensor ops through the Python bindings: values against numpy, gradients against finite
differences, autograd semantics, and thread-count independence."""

import json
import math
import os
import warnings

import numpy as np
import pytest

import ferrolm as fl
import ferrolm.functional as F
from conftest import BF16_CPU, run_python

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_forward_values_match_numpy():
    a, b = randn(3, 4), randn(4, 5)
    np.testing.assert_allclose((fl.tensor(a) @ fl.tensor(b)).numpy(), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(fl.tensor(a)), a)  # the array protocol
    assert np.asarray(fl.tensor(a), dtype=np.float64).dtype == np.float64
    x = randn(2, 3, 4)
    np.testing.assert_allclose(F.softmax(fl.tensor(x), axis=1).numpy(), np_softmax(x, axis=1), rtol=1e-5, atol=1e-6)
    w, bias = randn(4), randn(4)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-5) * w + bias
    got = F.layer_norm(fl.tensor(x), fl.tensor(w), fl.tensor(bias)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((fl.tensor(x) + fl.tensor(w)).numpy(), x + w)
    np.testing.assert_allclose((2.0 / fl.tensor(x + 5)).numpy(), 2.0 / (x + 5), rtol=1e-6)
    np.testing.assert_allclose(fl.tensor(x).sum(axis=1, keepdim=True).numpy(), x.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fl.tensor(x).permute(2, 0, 1).numpy(), x.transpose(2, 0, 1))


def test_cross_entropy_and_attention_match_numpy():
    logits, targets = randn(6, 7), np.array([0, 3, -100, 6, 2, -100])
    keep = targets != -100
    lsm = np.log(np_softmax(logits))
    expected = -lsm[np.arange(6)[keep], targets[keep]].mean()
    assert abs(F.cross_entropy(fl.tensor(logits), targets).item() - expected) < 1e-5

    b, h, t, d = 2, 3, 5, 4
    q, k, v = randn(b, h, t, d), randn(b, h, t, d), randn(b, h, t, d)
    pad = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    causal = np.tril(np.ones((t, t), dtype=bool))
    allowed = causal[None, None] & pad[:, None, None, :]
    expected = np_softmax(np.where(allowed, scores, -np.inf)) @ v
    got = F.attention(fl.tensor(q), fl.tensor(k), fl.tensor(v), causal=True, key_padding_mask=pad).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_attention_dropout_drops_what_dropout_drops_and_is_unbiased():
    b, h, t, d = 2, 3, 5, 4
    q, k, v = randn(b, h, t, d), randn(b, h, t, d), randn(b, h, t, d)
    args = (fl.tensor(q), fl.tensor(k), fl.tensor(v))
    causal = np.tril(np.ones((t, t), dtype=bool))
    probs = np_softmax(np.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d), -np.inf)).astype(np.float32)
    plain = probs @ v
    # The fused kernel drops exactly the probabilities F.dropout drops from the [B, H, Tq, Tk] tensor.
    expected = F.dropout(fl.tensor(probs), 0.3, seed=11).numpy() @ v
    got = F.attention(*args, causal=True, dropout_p=0.3, seed=11).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(got - plain).max() > 0.1
    assert not np.allclose(got, F.attention(*args, causal=True, dropout_p=0.3, seed=12).numpy())
    np.testing.assert_array_equal(F.attention(*args, causal=True, dropout_p=0.0, seed=11).numpy(),
                                  F.attention(*args, causal=True).numpy())
    # Inverted dropout: averaged over masks, the output is attention without dropout.
    mean = np.mean([F.attention(*args, causal=True, dropout_p=0.3, seed=s).numpy() for s in range(400)], axis=0)
    assert np.abs(mean - plain).mean() < 0.03
    with pytest.raises(ValueError, match="dropout probability"):
        F.attention_qkv(fl.zeros(1, 2, 6), 1, dropout_p=1.0)


class TwoLayerNet(fl.nn.Module):
    def __init__(self):
        self.fc1 = fl.Linear(5, 8, seed=1)
        self.norm = fl.LayerNorm(8)
        self.fc2 = fl.Linear(8, 4, seed=2)

    def forward(self, x, y):
        h = F.gelu(self.norm(self.fc1(x)))
        return F.cross_entropy(self.fc2(h), y)


def test_two_layer_network_gradients_match_finite_differences():
    net = TwoLayerNet()
    x, y = fl.tensor(randn(6, 5)), np.array([0, 1, 2, 3, 1, 0])
    net(x, y).backward()
    h = 1e-2
    for name, p in net.named_parameters():
        analytic = p.grad.numpy()
        base = p.numpy()
        for idx in list(np.ndindex(base.shape))[:12]:
            values = []
            for sign in (1, -1):
                v = base.copy()
                v[idx] += sign * h
                p.copy_(v)
                with fl.no_grad():
                    values.append(float(np.float64(net(x, y).item())))
            p.copy_(base)
            numeric = (values[0] - values[1]) / (2 * h)
            # f32 loss, h = 1e-2: rounding ≈ 1e-5, truncation ≈ 1e-5 (see the Rust gradcheck).
            assert abs(analytic[idx] - numeric) <= 1e-3 + 1e-2 * abs(numeric), (name, idx, analytic[idx], numeric)


def test_training_a_small_network_lowers_the_loss():
    net = TwoLayerNet()
    x = fl.tensor(randn(64, 5))
    y = (np.asarray(x.numpy()[:, 0] > 0, dtype=np.int64) + 2 * np.asarray(x.numpy()[:, 1] > 0)).astype(np.int64)
    opt = fl.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(200):
        loss = net(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.2 and loss.item() < 0.15, (first, loss.item())


@pytest.mark.parametrize("shape_a,shape_b", [((2, 2, 3, 4), (2, 1, 4, 5)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)),
                                             ((1, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (1, 3, 4, 5)),
                                             ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4,)),
                                             ((4,), (2, 4, 5))])
def test_matmul_broadcasts_batch_axes_and_takes_vectors_like_numpy(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_b).astype(np.float32)
    ta, tb = fl.tensor(a, requires_grad=True), fl.tensor(b, requires_grad=True)
    y = ta @ tb
    assert y.shape == (a @ b).shape
    np.testing.assert_allclose(y.numpy(), a @ b, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(fl.tensor(g))

    def summed_to(x, shape):  # a broadcast operand's gradient sums over the axes it was stretched along
        x = x.sum(axis=tuple(range(x.ndim - len(shape))))
        return x.sum(axis=tuple(i for i, d in enumerate(shape) if d == 1 and x.shape[i] != 1), keepdims=True)

    # As matrices: a vector is a row on the left, a column on the right, and g has that axis back.
    A, B = (a[None] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
    G = np.expand_dims(g[..., None] if b.ndim == 1 else g, -2) if a.ndim == 1 else (g[..., None] if b.ndim == 1 else g)
    np.testing.assert_allclose(ta.grad.numpy(), summed_to(G @ np.swapaxes(B, -1, -2), A.shape).reshape(shape_a),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tb.grad.numpy(), summed_to(np.swapaxes(A, -1, -2) @ G, B.shape).reshape(shape_b),
                               rtol=1e-4, atol=1e-4)


def test_matmul_refuses_batch_axes_that_do_not_broadcast_and_scalars():
    with pytest.raises(ValueError, match="do not broadcast"):
        fl.ones(2, 3, 4) @ fl.ones(3, 4, 5)
    with pytest.raises(ValueError, match=r"inner dimensions differ in \[3\] · \[4, 5\]"):
        fl.ones(3) @ fl.ones(4, 5)
    with pytest.raises(ValueError, match="rank ≥ 1"):
        fl.tensor(2.0) @ fl.ones(2)


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.01), (0.8, True, 0.1)])
def test_sgd_follows_torchs_update_rule(momentum, nesterov, weight_decay):
    """torch.optim.SGD (no dampening), written out in numpy: d = g + wd·p; b = μ·b + d (b = d at
    the first step); p -= lr·(d + μ·b if Nesterov else b)."""
    c = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
    w = fl.tensor(np.array([1.0, 2.0, -1.0, 0.5], np.float32), requires_grad=True)
    opt = fl.SGD([w], lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    p, buffer = w.numpy().astype(np.float64), None
    for _ in range(5):
        opt.zero_grad()
        (w * w * fl.tensor(c)).sum().backward()
        opt.step()
        d = 2 * c * p + weight_decay * p
        if momentum:
            buffer = d if buffer is None else momentum * buffer + d
            d = d + momentum * buffer if nesterov else buffer
        p = p - 0.05 * d
    np.testing.assert_allclose(w.numpy(), p, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        fl.SGD([w], lr=0.1, nesterov=True)


@pytest.mark.parametrize("make", [lambda ps: fl.AdamW(ps, lr=0.1, weight_decay=0.1),
                                  lambda ps: fl.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)], ids=["adamw", "sgd"])
def test_an_optimizer_state_dict_saved_and_loaded_continues_exactly(make, tmp_path):
    """save() to a safetensors file, load() into a new optimizer over copies of the weights:
    the next steps equal the uninterrupted run's bit for bit (a fresh optimizer's do not)."""
    c = fl.tensor(np.linspace(-1, 2, 6, dtype=np.float32).reshape(2, 3))

    def run(opt, params, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((params[0] @ params[1].reshape(3, 1)).sum() + (params[0] * params[0] * c).sum()).backward()
            opt.step()

    def like(ps):  # an optimizer over `ps` set up as `opt` is (copies of its weights)
        ps = [fl.tensor(p.numpy(), requires_grad=True) for p in ps]
        return make([{"params": [ps[0]], "weight_decay": 0.1}, {"params": [ps[1], ps[0]], "weight_decay": 0.0}]), ps

    def holds(o, sd):  # o's state is sd's
        return all(np.array_equal(o.state_dict()["state"][i][k], v) for i, e in sd["state"].items() for k, v in e.items())

    params = [fl.randn(2, 3, seed=1, requires_grad=True), fl.randn(3, seed=2, requires_grad=True)]
    opt = make([{"params": [params[0]], "weight_decay": 0.1}, {"params": [params[1], params[0]], "weight_decay": 0.0}])
    run(opt, params, 3)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]  # the tied listing counts once
    assert all(v.shape == p.shape for i, p in enumerate(params) for k, v in sd["state"][i].items() if k != "step")
    opt.save(tmp_path / "opt.safetensors", ["w", "v"], {"note": "kept"})
    (resumed, copies), (restarted, fresh) = like(params), like(params)
    with pytest.raises(ValueError, match="does not hold this optimizer's state"):
        resumed.load(tmp_path / "opt.safetensors")  # saved under other names
    assert resumed.load(tmp_path / "opt.safetensors", ["w", "v"])["note"] == "kept" and holds(resumed, sd)
    # A checkpoint of an earlier ferrolm: arrays flat, step counts in the trainer state.
    flat = {f"{n}.{k}": v.ravel() for n, e in zip(["w", "v"], sd["state"].values()) for k, v in e.items() if k != "step"}
    fl.save_safetensors(tmp_path / "old.safetensors", flat, {"step": "3"})
    older = like(params)[0]
    older.load(tmp_path / "old.safetensors", ["w", "v"], steps={"w": 3, "v": 3})
    assert holds(older, sd)
    # The same through state_dict(), its keys as JSON leaves them.
    again = like(params)[0]
    again.load_state_dict({"state": {str(i): e for i, e in sd["state"].items()}, "param_groups": sd["param_groups"]})
    assert holds(again, sd)
    for o, ps in ((opt, params), (resumed, copies), (restarted, fresh)):
        run(o, ps, 3)
    for p, q, r in zip(params, copies, fresh):
        np.testing.assert_array_equal(q.numpy(), p.numpy())
        assert not np.array_equal(r.numpy(), p.numpy())

    before = resumed.state_dict()
    with_entry = lambda **entry: {**sd, "state": {**sd["state"], 1: {**sd["state"][1], **entry}}}
    buffers = [k for k in sd["state"][1] if k != "step"]
    cases = [(with_entry(**{buffers[0]: np.full(3, np.nan)}), "non-finite"), (with_entry(step=2**63), "step must be a count")]
    if "exp_avg_sq" in buffers:  # a second moment below 0 would make the update NaN
        cases.append((with_entry(exp_avg_sq=np.full(3, -1.0)), "exp_avg_sq is negative"))
    for bad, message in (*cases,
                         ({**sd, "state": {0: sd["state"][0]}}, "has 1 entries"),
                         ({**sd, "state": {**sd["state"], 1: sd["state"][0]}}, r"has shape \(2, 3\)"),
                         ({**sd, "param_groups": [{**g, "weight_decay": 0.5} for g in sd["param_groups"]]}, "other settings"),
                         ({**sd, "param_groups": [{k: v for k, v in g.items() if k != "lr"} for g in sd["param_groups"]]},
                          "one finite learning rate"),
                         ({"state": sd["state"]}, "'state' and 'param_groups'")):
        with pytest.raises(ValueError, match=message):
            resumed.load_state_dict(bad)
    after = resumed.state_dict()  # refused: nothing changed
    assert all(np.array_equal(after["state"][i][k], v) for i, e in before["state"].items() for k, v in e.items())


def test_a_module_registers_models_and_dicts_and_trains_through_the_loop(tmp_path):
    """A classifier on a GPT backbone: the backbone's parameters are the Module's too, and the
    shared training loop takes the Module and a custom objective (numpy metrics and all)."""
    from ferrolm.train import TrainConfig, train

    class Classifier(fl.nn.Module):
        def __init__(self):
            self.gpt = fl.GPT.create(vocab_size=12, block_size=8, n_layer=1, n_head=2, n_embd=8, seed=3)
            self.heads = {"sign": fl.Linear(8, 2, seed=4)}

        def forward(self, ids):
            return self.heads["sign"](self.gpt.hidden(ids)[:, -1])

    class FirstTokenParity:
        kind = "parity"

        def batch(self, split, rng):
            ids = rng.integers(0, 12, size=(16, 6))
            return ids, ids[:, 0] % 2

        def loss(self, model, batch, dropout_seed):
            logits = model(batch[0])
            return F.cross_entropy(logits, batch[1]), {"accuracy": np.mean(logits.numpy().argmax(-1) == batch[1])}

        def tokens(self, batch):
            return batch[0].size

        def state(self):
            return {"classes": np.int64(2)}

    class Nested(fl.nn.Module):  # modules in lists of lists: eval() reached only the first level
        def __init__(self):
            self.blocks = [[fl.nn.Module()]]
            self.heads = {"a": [fl.nn.Module()]}

    nested = Nested().eval()
    assert not any(m.training for m in nested.modules()) and len(list(nested.modules())) == 3
    with pytest.raises(ValueError, match="differ"):  # a list target broadcast to every pair's difference
        F.mse_loss(fl.randn(3, 1), [0.0, 0.0, 0.0])
    model = Classifier()
    names = [n for n, _ in model.named_parameters()]
    assert names[0].startswith("gpt.") and names[-2:] == ["heads.sign.weight", "heads.sign.bias"]
    assert len(names) == len(model.gpt.parameters()) + 2
    evals = train(model, FirstTokenParity(), TrainConfig(max_iters=150, eval_interval=150, learning_rate=3e-3,
                                                         progress=False), tmp_path / "run")
    assert evals[-1]["val_accuracy"] > 0.9  # the backbone learned too: the head alone sees only the last token
    again = Classifier().load_weights(tmp_path / "run")
    np.testing.assert_array_equal(again.gpt.parameters()[0].numpy(), model.gpt.parameters()[0].numpy())
    with pytest.raises(TypeError, match="needs a model with named_parameters\\(\\) and save"):
        train(object(), FirstTokenParity(), TrainConfig(max_iters=1, progress=False), tmp_path / "x")

    class BareLoss(FirstTokenParity):
        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1])

    with pytest.raises(TypeError, match="must return \\(loss, dict of extra metrics\\)"):
        train(Classifier(), BareLoss(), TrainConfig(max_iters=1, progress=False), tmp_path / "y")

    # A loss per row, and a metric that is not a number, are said as such (they failed at .item() and at float()).
    class RowLosses(FirstTokenParity):
        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1], reduction="none"), {}

    class NamedMetric(FirstTokenParity):
        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1]), {"split": "train"}

    with pytest.raises(TypeError, match="RowLosses.loss\\(\\) must return one number as its loss .* shape \\(16,\\)"):
        train(Classifier(), RowLosses(), TrainConfig(max_iters=1, progress=False), tmp_path / "z")
    with pytest.raises(TypeError, match="extra metric 'split' must be a number"):
        train(Classifier(), NamedMetric(), TrainConfig(max_iters=1, progress=False), tmp_path / "w")

    class BoxedLoss(FirstTokenParity):  # one number in a [1, 1] tensor is one number
        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1]).reshape(1, 1), {}

    assert train(Classifier(), BoxedLoss(), TrainConfig(max_iters=1, progress=False), tmp_path / "v")


def test_a_modules_dropout_resumes_exactly_and_is_off_in_evaluation(tmp_path):
    """An nn.Dropout draws from the process-wide stream: the loop seeds it for every
    micro-batch, so a resumed run (in a process whose stream is elsewhere) reproduces the
    uninterrupted one, and evaluation runs the modules in eval mode, restoring each after."""
    from ferrolm.train import TrainConfig, evaluate_model, train

    class Net(fl.nn.Module):
        def __init__(self):
            self.fc1, self.drop, self.fc2 = fl.Linear(8, 32, seed=1), fl.nn.Dropout(0.5), fl.Linear(32, 2, seed=2)

        def forward(self, x):
            return self.fc2(self.drop(F.relu(self.fc1(fl.tensor(x)))))

    class Sign:
        kind = "sign"

        def batch(self, split, rng):
            x = rng.standard_normal((16, 8)).astype(np.float32)
            return x, (x[:, 0] > 0).astype(np.int64)

        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1]), {}

        def tokens(self, batch):
            return len(batch[0])

        def state(self):
            return {}

    def losses(run):
        return [r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    settings = dict(eval_interval=5, eval_iters=3, log_interval=1, learning_rate=1e-2, warmup_iters=0, lr_decay_iters=10,
                    progress=False)
    whole = train(Net(), Sign(), TrainConfig(max_iters=10, **settings), tmp_path / "whole")
    train(Net(), Sign(), TrainConfig(max_iters=5, **settings), tmp_path / "cut")
    fl.manual_seed(99)
    resumed = train(Net().load_weights(tmp_path / "cut"), Sign(), TrainConfig(max_iters=10, **settings), tmp_path / "cut",
                    resume=True)
    assert losses("cut") == losses("whole") and len(losses("whole")) == 10 and resumed == whole
    before = (tmp_path / "cut" / "model.safetensors").stat().st_mtime_ns
    train(Net().load_weights(tmp_path / "cut"), Sign(), TrainConfig(max_iters=10, **settings), tmp_path / "cut",
          resume=True)
    assert (tmp_path / "cut" / "model.safetensors").stat().st_mtime_ns == before  # complete: not written again
    leftover = Net()
    F.cross_entropy(leftover(np.ones((2, 8), np.float32)), [0, 1]).backward()  # a gradient the run must not take
    train(leftover, Sign(), TrainConfig(max_iters=2, **settings), tmp_path / "leftover")
    assert losses("leftover") == losses("whole")[:2]
    model, sign = Net(), Sign()
    fl.manual_seed(1)
    first = evaluate_model(model, sign, 3)
    fl.manual_seed(2)
    assert evaluate_model(model, sign, 3) == first  # no dropout: the stream does not matter
    assert model.training and model.drop.training
    model.drop.training = False  # each module's own mode comes back as it was
    evaluate_model(model, sign, 3)
    assert model.training and not model.drop.training


def test_tied_weights_are_one_parameter_clipped_and_resumed_once(tmp_path):
    """A weight used twice (input embedding and output projection) is one parameter: clipped
    once (it was counted and scaled twice) and given one optimizer state (the states were
    paired with the names by position, so every later name got the next tensor's moments and
    a resume was refused)."""
    from ferrolm.train import TrainConfig, train

    class TiedBigram(fl.nn.Module):
        def __init__(self):
            self.emb = fl.Embedding(10, 6, seed=1)
            self.tied = self.emb.weight
            self.ln = fl.LayerNorm(6)

        def forward(self, ids):
            return self.ln(self.emb(ids)) @ F.transpose(self.tied, 0, 1)

    class NextDigit:
        kind = "next_digit"

        def batch(self, split, rng):
            ids = rng.integers(0, 10, size=32)
            return ids, (ids + 1) % 10

        def loss(self, model, batch, dropout_seed):
            return F.cross_entropy(model(batch[0]), batch[1]), {}

        def tokens(self, batch):
            return batch[0].size

        def state(self):
            return {}

    model = TiedBigram()
    assert model.emb.weight is not model.emb.weight and model.emb.weight.uid == model.tied.uid
    assert [n for n, _ in model.named_parameters()] == ["emb.weight", "ln.weight", "ln.bias"]
    # A layer on its own lists its tensors as PyTorch's do (an AttributeError before).
    for layer in (model.emb, model.ln, fl.Linear(3, 2)):
        assert [t.uid for t in layer.parameters()] == [t.uid for _, t in layer.named_parameters()]
    assert [t.shape for t in fl.Linear(3, 2).parameters()] == [(2, 3), (2,)]

    w = fl.tensor([3.0, 4.0], requires_grad=True)
    (w * w).sum().backward()  # gradient [6, 8], norm 10
    assert fl.clip_grad_norm([w, w], 1.0) == pytest.approx(10.0)
    np.testing.assert_allclose(w.grad.numpy(), [0.6, 0.8], rtol=1e-5)
    assert fl.clip_grad_norm((p for p in [w]), 1.0) == pytest.approx(1.0)  # a generator, as PyTorch's parameters()
    with pytest.raises(TypeError):
        fl.clip_grad_norm([w, "w"], 1.0)
    w.grad = fl.tensor([6.0, 8.0])
    # One tensor, as PyTorch takes it (its rows were clipped: copies, without gradients).
    assert fl.clip_grad_norm(w, 5.0) == pytest.approx(10.0)
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 4.0], rtol=1e-5)
    # Finite gradients whose norm is past float32's range are clipped too (they were left as
    # they were): the norm is inf as a float32, not in the float64 it is taken in.
    w.grad = fl.tensor([3e38, 3e38])
    assert fl.clip_grad_norm(w, 1.0) == math.inf
    np.testing.assert_allclose(w.grad.numpy(), [2**-0.5] * 2, rtol=1e-5)

    config = dict(eval_interval=20, learning_rate=1e-2, lr_decay_iters=40, progress=False)
    train(model, NextDigit(), TrainConfig(max_iters=20, **config), tmp_path / "run")
    resumed = TiedBigram().load_weights(tmp_path / "run")
    evals = train(resumed, NextDigit(), TrainConfig(max_iters=40, **config), tmp_path / "run", resume=True)
    whole = train(TiedBigram(), NextDigit(), TrainConfig(max_iters=40, **config), tmp_path / "whole")
    assert evals[-1]["val_loss"] == pytest.approx(whole[-1]["val_loss"], rel=1e-6)


def test_autograd_semantics():
    w = fl.tensor([1.0, 2.0], requires_grad=True)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [6.0, 6.0])
    w.zero_grad()
    assert w.grad is None
    with fl.no_grad():
        assert not (w * 2).requires_grad
    assert fl.is_grad_enabled()
    d = (w * 2).detach()
    assert d.is_leaf and not d.requires_grad
    assert not fl.tensor([1.0]).requires_grad


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_threads_do_not_change_results(precision):
    """The pool's size from RAYON_NUM_THREADS, and counts chosen in the process (that a call
    runs on the count chosen is checked in Rust: rust/ferrolm/tests/threads.rs)."""
    code = f"""
import json, warnings, numpy as np, ferrolm as fl, ferrolm.functional as F
warnings.simplefilter("ignore")
fl.set_matmul_precision("{precision}")

def step():
    rng = np.random.default_rng(1)
    qkv = fl.Linear(64, 192, seed=3); head = fl.Linear(64, 50, seed=4)
    x = fl.tensor(rng.standard_normal((4, 32, 64)).astype(np.float32))
    a = F.attention_qkv(qkv(x), 4, causal=True, dropout_p=0.1, seed=5)
    loss = F.cross_entropy(head(F.gelu(a)), rng.integers(0, 50, size=(4 * 32,)))
    loss.backward()
    decode = fl.Linear(64, 5000, seed=6)(fl.tensor(rng.standard_normal((2, 64)).astype(np.float32)))  # two rows, split by columns
    return {{"threads": fl.num_threads(), "loss": loss.item(), "grad": qkv.weight.grad.numpy().ravel()[::97].tolist(),
            "decode": decode.numpy().ravel().tolist()}}

runs = [step()]
for n in (1, 3):
    fl.set_num_threads(n)
    runs.append(step())
print(json.dumps(runs))
"""
    one = json.loads(run_python(code, {"RAYON_NUM_THREADS": "1"}))
    two = json.loads(run_python(code, {"RAYON_NUM_THREADS": "2"}))
    assert [r["threads"] for r in one + two] == [1, 1, 3, 2, 1, 3]
    for run in one[1:] + two:
        assert abs(one[0]["loss"] - run["loss"]) <= 1e-6 * abs(one[0]["loss"])
        np.testing.assert_allclose(one[0]["grad"], run["grad"], rtol=1e-5, atol=1e-7)
        assert run["decode"] == one[0]["decode"]  # each output one thread's sum, in one order


def test_a_thread_count_beyond_the_limit_is_an_import_error():
    """RAYON_NUM_THREADS=100000 started threads for minutes (an import that seemed to hang)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "import ferrolm"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RAYON_NUM_THREADS": "100000"})
    assert run.returncode == 1 and "ImportError: ferrolm: invalid argument: RAYON_NUM_THREADS=100000 asks for more than 1024" in run.stderr


def test_set_num_threads_checks_its_count_and_goes_back_with_none():
    pool = fl.num_threads()
    try:
        for bad in (0, -1, 10**6):
            with pytest.raises(ValueError, match="number of threads"):
                fl.set_num_threads(bad)
            assert fl.num_threads() == pool, "a refused count changes nothing"
        fl.set_num_threads(1)
        assert fl.num_threads() == 1
        w = fl.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
        (w @ w.T).sum().backward()  # computes on the chosen pool, gradients and all
        np.testing.assert_array_equal(w.grad.numpy(), 2 * np.tile(w.numpy().sum(0), (2, 1)))
    finally:
        fl.set_num_threads(None)
    assert fl.num_threads() == pool


def test_threads_sharing_an_optimizer_or_a_generation_take_turns():
    import threading

    from ferrolm.gpt import GPT

    w = fl.tensor(np.ones(1 << 22, np.float32), requires_grad=True)
    (w * w).sum().backward()  # the gradient stays 2 everywhere: each step subtracts lr·2
    opt = fl.SGD([w], lr=1e-3)
    model = GPT.create(vocab_size=11, block_size=64, n_layer=1, n_head=2, n_embd=16, seed=1)
    shared = model.core.generation([[1, 2, 3]], temperature=0.0)
    errors = []

    def work():
        try:
            for _ in range(20):
                opt.step()
                shared.step()
        except Exception as e:  # pyo3 raised "Already borrowed" before the state was locked
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    np.testing.assert_allclose(w.numpy()[::4096], 1 - 40 * 2e-3, rtol=1e-5)
    alone = model.core.generation([[1, 2, 3]], temperature=0.0).run(40)
    assert shared.run(0) == [[]] and alone == [model.generate([1, 2, 3], max_new_tokens=40, temperature=0.0)]


def test_calls_from_other_python_threads():
    # The importing thread is one of the compute pool's threads; calls from other threads, alone
    # or alongside it, run in a second pool kept for them, and must give the same results (with
    # one thread too, where the importing thread is the global pool's only one).
    code = """
import json, threading, numpy as np, ferrolm as fl, ferrolm.functional as F
rng = np.random.default_rng(0)
a, b = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((200, 250)).astype(np.float32)
def product():
    x = fl.tensor(a, requires_grad=True)
    F.tanh(x @ fl.tensor(b)).sum().backward()
    # Layers large enough to be initialised in parallel, made from this thread.
    layers = fl.Linear(512, 256, seed=1), fl.Embedding(300, 256, seed=2), fl.randn(300, 256, seed=3)
    assert all(np.isfinite(t.numpy()).all() for t in (layers[0].weight, layers[1].weight, layers[2]))
    return x.grad.numpy()
main = product()
results = []
workers = [threading.Thread(target=lambda: results.append(product())) for _ in range(3)]
for w in workers: w.start()
alongside = product()
for w in workers: w.join()
print(json.dumps({"threads": fl.num_threads(), "equal": all(np.array_equal(main, r) for r in results + [alongside]),
                  "n": len(results)}))
"""
    for threads in ("1", "2"):
        out = json.loads(run_python(code, {"RAYON_NUM_THREADS": threads}))
        assert out == {"threads": int(threads), "equal": True, "n": 3}


def test_other_threads_updating_and_reading_the_same_weights_finish():
    # Two threads besides the importing one: one steps an optimizer (writing w) while the
    # other multiplies by w. Both used to run in the second pool at once, where a pool thread
    # waiting inside the product picked up the step, which waited for the product's read of w:
    # a hang, every time. Calls from outside a pool now take turns.
    code = """
import threading, numpy as np, ferrolm as fl, ferrolm.functional as F, os
w = fl.tensor(np.full((512, 512), 0.01, np.float32), requires_grad=True)
x = fl.tensor(np.full((256, 512), 0.5, np.float32))
(x @ w).sum().backward()  # every gradient is 256 * 0.5 = 128
opt, done, sums = fl.SGD([w], lr=1e-6), [], []
def stepper():
    for _ in range(200):
        opt.step()
    done.append("steps")
def reader():
    for _ in range(200):
        sums.append(F.gelu(x @ w).sum().item())
    done.append("products")
threads = [threading.Thread(target=f, daemon=True) for f in (stepper, reader)]
[t.start() for t in threads]
[t.join(60) for t in threads]
if len(done) < 2:  # hung: reading w would hang too, and a hung thread would keep us alive
    print(done, flush=True)
    os._exit(0)
print(sorted(done), float(w.numpy().mean()), int(np.isfinite(sums).all()))
"""
    out = run_python(code, {"RAYON_NUM_THREADS": "2"})
    assert out.startswith("['products', 'steps']"), f"a thread hung: only {out} finished"
    mean, finite = out.split()[-2:]
    assert float(mean) == pytest.approx(0.01 - 200 * 1e-6 * 128, rel=1e-5) and finite == "1"


def test_forked_child_computes():
    # multiprocessing's fork start method copies only the forking thread; ferrolm must keep
    # working in the child on that thread alone (a pool thread it waited on would never come),
    # whether it forked from the importing thread or from another one that had computed (whose
    # calls ran in the second pool), and with tokenizer batches on a pool of chosen size.
    code = """
import os, threading, numpy as np, ferrolm as fl, ferrolm.functional as F
x = fl.tensor(np.full((400, 300), 0.5, np.float32), requires_grad=True)
w = fl.tensor(np.full((300, 200), 0.25, np.float32))
tok = fl.Tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50, vocab_size=300)
texts = ["the lazy fox", "quick brown dog"] * 20
before, ids = F.gelu(x @ w).sum().item(), tok.encode_batch(texts, num_threads=2)
def fork_and_compute():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        F.gelu(x @ w).sum().backward()
        same = F.gelu(x @ w).sum().item() == before and tok.encode_batch(texts, num_threads=2) == ids
        os.write(write, f"{int(same)} {x.grad.numpy().sum()}".encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    print(status, os.read(read, 100).decode())
fork_and_compute()
other = threading.Thread(target=lambda: (F.gelu(x @ w).sum().item(), fork_and_compute()))
other.start(); other.join()
"""
    for threads in ("1", "2"):
        lines = run_python(code, {"RAYON_NUM_THREADS": threads}).splitlines()
        assert len(lines) == 2  # a child forked from each thread
        for line in lines:
            status, same, grad_sum = line.split()
            assert (int(status), same) == (0, "1")
            # Every pre-activation is 37.5, where GELU's slope is 1: each dloss/dx is a row sum of w.
            assert float(grad_sum) == pytest.approx(400 * 300 * 0.25 * 200, rel=1e-5)


def bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to bfloat16 (to nearest even; finite normal values), as float64."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def test_bfloat16_products_round_operands_and_sum_in_float32():
    x, w, r = randn(70, 49), randn(129, 49), randn(70, 129)
    with pytest.raises(ValueError, match="float32' or 'bfloat16"):
        fl.set_matmul_precision("float16")
    with warnings.catch_warnings():  # PyTorch's names (a CPU without bf16 products warns)
        warnings.simplefilter("ignore")
        for name, means in (("medium", "bfloat16"), ("high", "float32"), ("highest", "float32")):
            fl.set_matmul_precision(name)
            assert fl.matmul_precision() == means, name
    full = F.linear(fl.tensor(x), fl.tensor(w)).numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fl.set_matmul_precision("bfloat16") == "float32"
    assert [str(w.message) for w in caught] == ([] if BF16_CPU else ["this CPU has no AVX512-BF16: matrix products stay float32"])
    try:
        assert fl.matmul_precision() == "bfloat16"
        xt, wt = fl.tensor(x, requires_grad=True), fl.tensor(w, requires_grad=True)
        y = F.linear(xt, wt)
        (y * fl.tensor(r)).sum().backward()  # upstream gradient dY = r
        got = [y.numpy(), xt.grad.numpy(), wt.grad.numpy()]
    finally:
        fl.set_matmul_precision("float32")
    if not BF16_CPU:  # products stay float32 (and the warning said so)
        np.testing.assert_array_equal(got[0], full)
        return
    # Forward x·Wᵀ, and backward dX = dY·W, dW = dYᵀ·X: all from rounded operands.
    want = [bf16(x) @ bf16(w).T, bf16(r) @ bf16(w), bf16(r).T @ bf16(x)]
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert np.abs(got[0] - full).max() > 1e-3  # really rounded: float32 products differ


def test_bfloat16_decoding_reads_a_rounded_copy_of_the_weight():
    """Under bfloat16, products of fewer than 16 rows by a layer's weight (token-by-token
    decoding) round the weight only, x staying float32; the weight's copy follows its changes."""
    x1, x12, x16, b = randn(1, 301), randn(12, 301), randn(16, 301), randn(1100)
    w = fl.tensor(randn(1100, 301), requires_grad=True)  # 662 KB in bfloat16: streamed, on both threads
    small = fl.tensor(randn(7, 49), requires_grad=True)  # in cache: four columns at a time
    x_small = randn(2, 49)

    def check(x, weight, bias=None, rounded_x=False):
        got = F.linear(fl.tensor(x), weight, None if bias is None else fl.tensor(bias)).numpy()
        w64 = weight.numpy().astype(np.float64)
        want = (bf16(x) if rounded_x else x) @ (bf16(w64) if BF16_CPU else w64).T + (0 if bias is None else bias)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        return got

    previous = fl.set_matmul_precision("bfloat16") if BF16_CPU else None
    try:
        got = check(x1, w, b)
        check(x12, w, b), check(x_small, small)
        if BF16_CPU:
            assert np.abs(got - (x1 @ w.numpy().T + b)).max() > 1e-3  # the weight really was rounded
            check(x16, w, b, rounded_x=True)  # sixteen rows: the packed product, both operands rounded
        w.copy_(randn(1100, 301))  # written in place: read anew
        check(x1, w, b)
        (F.linear(fl.tensor(x1), w) ** 2).sum().backward()
        fl.SGD([w], lr=0.1).step()  # an optimizer's step
        check(x1, w, b)
        check(x1, w * 0.5, b)  # a weight made by ops has a copy of its own
    finally:
        if previous is not None:
            fl.set_matmul_precision(previous)



def test_values_changed_in_place_after_the_forward_pass_refuse_backward():
    """Backward reads saved values; if they were overwritten since the forward pass (copy_, an
    optimizer step, a write through a detached view) it refuses rather than return wrong
    gradients, and leaves every .grad as it was."""
    w = fl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (w * w).sum()
    w.copy_([10.0, 20.0, 30.0])
    with pytest.raises(fl.GradError, match="modified in place"):
        y.backward()
    x = fl.tensor([0.0, 1.0], requires_grad=True)
    y = F.exp(x)
    y.detach().copy_([0.0, 0.0])  # the output exp's backward reads
    with pytest.raises(fl.GradError, match="modified in place"):
        y.sum().backward()
    a, c = fl.ones(3, requires_grad=True), fl.ones(3, requires_grad=True)
    loss = (c * c).sum() + (a * 2.0).sum()  # a's branch would be reached first
    c.copy_(np.full(3, 5, np.float32))
    with pytest.raises(fl.GradError, match="modified in place"):
        loss.backward()
    assert a.grad is None and c.grad is None
    w = fl.tensor([1.0, 2.0], requires_grad=True)
    opt = fl.AdamW([w], lr=0.1)
    loss = (w * w).sum()
    loss.backward()
    opt.step()
    y = (w * w).sum()  # a forward pass after the step is fine
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.array([1.0, 2.0]) + 2 * w.numpy(), rtol=1e-6)


def test_tensor_exponents_match_numpy_with_torchs_gradients():
    """x ** y with a tensor exponent (it was a TypeError), 2 ** t, and F.pow with either."""
    xv, yv = np.array([[0.5, 1.5, 3.0], [0.0, 2.0, 1.0]], np.float32), np.array([2.0, -0.5, 1.5], np.float32)
    x, y = fl.tensor(xv, requires_grad=True), fl.tensor(yv, requires_grad=True)
    out = x ** y
    np.testing.assert_allclose(out.numpy(), np.power(xv, yv), rtol=1e-6)
    out.sum().backward()
    with np.errstate(divide="ignore", invalid="ignore"):
        dy = np.where(xv == 0, 0.0, np.power(xv, yv) * np.log(xv)).sum(0)  # 0 at a zero base, as torch
        dx = yv * np.power(xv, yv - 1)
    np.testing.assert_allclose(x.grad.numpy()[0], dx[0], rtol=1e-5)
    np.testing.assert_allclose(y.grad.numpy(), dy, rtol=1e-5)
    t = fl.tensor([0.0, 1.0, 3.0], requires_grad=True)
    (2 ** t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 2 ** np.array([0.0, 1.0, 3.0]) * np.log(2), rtol=1e-6)
    np.testing.assert_allclose(F.pow(xv, yv).numpy(), np.power(xv, yv), rtol=1e-6)
    assert F.pow(x, 2.0).numpy().tolist() == (xv**2).tolist()
    assert np.isnan((fl.tensor([-2.0]) ** fl.tensor([0.5])).numpy()).all()  # as numpy
    # A one-element tensor is an exponent with a gradient, not a float (its gradient was lost).
    s = fl.tensor(2.0, requires_grad=True)
    (fl.tensor([1.0, 2.0, 3.0]) ** s).sum().backward()
    assert s.grad.item() == pytest.approx(sum(v**2 * np.log(v) for v in (1.0, 2.0, 3.0)), rel=1e-5)
    assert (fl.tensor(3.0) ** fl.tensor([2.0])).shape == (1,)  # broadcast as numpy


def test_numerical_edges_match_numpy_and_torch():
    nan = np.float32("nan")
    assert np.isnan(F.maximum(fl.tensor([nan]), fl.tensor([0.0])).numpy()).all()
    assert np.isnan(F.minimum(fl.tensor([0.0]), fl.tensor([nan])).numpy()).all()
    # A tie splits the gradient evenly, as in torch (it all went to the first operand).
    for extremum in (F.maximum, F.minimum):
        a, b = fl.tensor([1.0, 2.0, 3.0], requires_grad=True), fl.tensor([1.0, 5.0, 0.0], requires_grad=True)
        (extremum(a, b) * fl.tensor([2.0, 4.0, 8.0])).sum().backward()
        wins = [0, 0, 1] if extremum is F.maximum else [0, 1, 0]
        np.testing.assert_array_equal(a.grad.numpy(), [1.0, 4.0 * wins[1], 8.0 * wins[2]])
        np.testing.assert_array_equal(b.grad.numpy(), [1.0, 4.0 * (1 - wins[1]), 8.0 * (1 - wins[2])])
        w = fl.tensor([3.0], requires_grad=True)
        extremum(w, w).sum().backward()
        assert w.grad.numpy().tolist() == [1.0]
    assert np.isnan(F.relu(fl.tensor([nan, -1.0])).numpy()[0]) and F.relu(fl.tensor([nan, -1.0])).numpy()[1] == 0
    edges = np.array([88.6, 88.7228, -86.9, -87.3], np.float32)  # e^x near float32's largest and smallest normals
    np.testing.assert_allclose(F.exp(fl.tensor(edges)).numpy(), np.exp(edges.astype(np.float64)), rtol=1e-6)
    big = fl.tensor([1e30, 1e30, 0.0])
    np.testing.assert_allclose(F.log_softmax(big).numpy()[:2], [-np.log(2)] * 2, rtol=1e-6)
    assert F.cross_entropy(fl.tensor([[1e30, 1e30, 0.0]]), [0]).item() == pytest.approx(np.log(2), rel=1e-6)
    x = fl.tensor([0.0, 2.0], requires_grad=True)
    (x**0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])  # d/dx x^0 = 0, also at 0
    ones = fl.ones(2**25, 1)  # a float32 running sum stops at 2^24
    assert ones.mean(0).item() == 1.0 and ones.sum(0).item() == 2**25
    assert (fl.ones(2**24 + 64, 2).sum(0).numpy() == 2**24 + 64).all()  # the strided path too
    for shape in ((300, 13), (7, 1000), (64, 8)):  # contiguous rows, with and without a tail
        a = randn(*shape)
        np.testing.assert_allclose(fl.tensor(a).sum(-1).numpy(), a.astype(np.float64).sum(-1), rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexError, match="do not fit"):
        F.narrow(fl.randn(2, 3), 0, 2**62, 2**64 - 1)  # start + len overflows
    # round: halves to even at every number of decimals, as numpy's (in float32 alike), with a zero gradient.
    values = np.concatenate([np.arange(-4, 4.5, 0.5), [1.25, 2.675, 123.456, -0.0, np.inf, nan]]).astype(np.float32)
    # Negative decimals divide by 10**-d, as numpy does (multiplying by 0.001, inexact in float32, gave 1999.9999).
    values = np.concatenate([values, np.random.default_rng(5).uniform(-1e8, 1e8, 2000), [2500, 3500, 99999]])
    values = values.astype(np.float32)
    for decimals in (0, 1, 2, 3, 6, -1, -2, -3, -4, -6, 40, -40):
        got = F.round(fl.tensor(values), decimals).numpy()
        np.testing.assert_array_equal(got, np.round(values, decimals))
        np.testing.assert_array_equal(np.signbit(got), np.signbit(np.round(values, decimals)))
    t = fl.tensor(values[:4], requires_grad=True)
    assert round(t).numpy().tolist() == t.round().numpy().tolist() == [-4.0, -4.0, -3.0, -2.0]  # -3.5 and -2.5: halves to even
    # A row whose squared deviations overflow float32 is still normalised (its variance was inf: every output 0).
    # So is one whose float32 sum overflows (its mean was inf: every output NaN).
    wide = np.array([[1e20, -1e20, 3e20, 0.0], [1.0, 2.0, 3.0, 4.0], [3e38, 3e38, 1e38, 2e38]], np.float32)
    centred = wide.astype(np.float64) - wide.mean(-1, keepdims=True, dtype=np.float64)
    want = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5)
    x = fl.tensor(wide, requires_grad=True)
    y = F.layer_norm(x)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)
    (y * fl.tensor([[1.0, 2.0, 3.0, 4.0]] * 3)).sum().backward()
    assert np.isfinite(x.grad.numpy()[:2]).all() and np.abs(x.grad.numpy()[0]).max() > 0  # (row 2's nears float32's max)
    assert np.isnan(F.layer_norm(fl.tensor([[np.inf, 1.0]])).numpy()).all()  # as before, and as torch
    # A constant row is normalised to exactly 0 (the bias), as torch's: its float32 mean was off
    # by the sum's rounding, and the deviations' ulp² beat a small eps (BERT's 1e-12): outputs of ±1.
    for value, width in ((7.3, 768), (1000.1, 3072), (0.1, 7), (-3.3e-3, 100), (1e6, 768)):
        for eps in (1e-5, 1e-12):
            out = F.layer_norm(fl.tensor(np.full((2, width), value, np.float32)), bias=fl.full(width, 0.25), eps=eps)
            assert (out.numpy() == 0.25).all(), (value, width, eps)
    (round(t) * 3).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [0.0] * 4)


def test_arguments_that_numpy_and_torch_users_pass():
    t = fl.tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    np.testing.assert_array_equal(t.permute(-1, 0, 1).numpy(), np.transpose(t.numpy(), (2, 0, 1)))
    np.testing.assert_array_equal(F.permute(t, [-1, 0, 1]).numpy(), np.transpose(t.numpy(), (2, 0, 1)))
    assert t.max(axis=None).item() == 23 and t.max(axis=None, keepdim=True).shape == (1, 1, 1)
    # Reductions default to every element (as numpy and torch), and keepdim keeps every axis.
    for reduce in ("sum", "mean", "max"):
        assert getattr(t, reduce)().shape == () and getattr(F, reduce)(t, keepdim=True).shape == (1, 1, 1)
    assert t.max().item() == 23 and F.min(t).item() == 0 and t.max(axis=-1).shape == (2, 3)
    assert float(t.sum()) == 276.0
    # narrow's start counts from the end when negative, as torch's; ids may be an empty list (numpy's float64 []).
    np.testing.assert_array_equal(F.narrow(t, 2, -3, 2).numpy(), t.numpy()[:, :, 1:3])
    with pytest.raises(IndexError, match="start -5 is out of range for an axis of size 4"):
        F.narrow(t, 2, -5, 1)
    assert F.index_select(t, 1, []).shape == (2, 0, 4)
    # uint64 ids above int64's range wrapped to negative ones: -100 is cross-entropy's ignored target.
    for huge in (2**64 - 100, 2**63):
        with pytest.raises(IndexError, match=f"index {huge} is out of range"):
            F.cross_entropy(fl.tensor([[1.0, 2.0]]), np.array([huge], np.uint64))
    x = fl.tensor([-2.0, 3.0], requires_grad=True)
    (abs(x) * +x).sum().backward()  # |x|·x: its derivative is 2|x|
    assert abs(x).numpy().tolist() == [2.0, 3.0] and x.grad.numpy().tolist() == [4.0, 6.0]
    # copy_ broadcasts its values and returns the tensor, as torch's.
    w = fl.zeros(2, 3)
    assert w.copy_(1.5) is w and w.numpy().tolist() == [[1.5] * 3] * 2
    assert w.copy_([1.0, 2.0, 3.0]).numpy().tolist() == [[1.0, 2.0, 3.0]] * 2
    with pytest.raises(ValueError, match=r"copy_: shape \[2\] does not broadcast to \[2, 3\]"):
        w.copy_([1.0, 2.0])
    # full takes (shape, fill_value), as numpy's and torch's: full(4, 7) made a 4×7 tensor of zeros.
    assert fl.full(4, 7).numpy().tolist() == [7.0] * 4 and fl.full((2, 3), 7.5).numpy().tolist() == [[7.5] * 3] * 2
    assert fl.full((), 2.0).shape == () and fl.zeros(()).shape == () and fl.ones().shape == ()
    # True is the int 1 in Python: as an axis it would sum over axis 1 where keepdim was meant.
    for takes_axis in (t.sum, t.mean, t.max, t.min, t.argmax, t.softmax, t.log_softmax, t.unsqueeze, t.squeeze,
                       t.size, t.transpose, lambda *a: F.sum(t, *a), lambda *a: F.min(t, *a),
                       lambda *a: F.softmax(t, *a), lambda *a: F.concat([t, t], *a), lambda *a: F.stack([t], *a),
                       lambda *a: F.narrow(t, *a, 0, 1), lambda *a: F.index_select(t, *a, [0]),
                       lambda *a: F.gather(t, *a, np.zeros((2, 3, 4), np.int64))):
        with pytest.raises(TypeError, match="an axis must be an int, not a bool"):
            takes_axis(True)

    # x -= y updates x in place, as in PyTorch (it made a new tensor: a model's parameter
    # dropped out of its optimizer and its saves); a parameter only outside the graph.
    w = fl.ones(3, requires_grad=True)
    holder = [w]
    with pytest.raises(fl.GradError, match="inside `with fl.no_grad\\(\\):`"):
        w -= 1
    with fl.no_grad():
        w -= 0.5 * fl.ones(3)
        w *= np.array([1.0, 2.0, 4.0], np.float32)
        w /= 2
        w += 1
    assert holder[0] is w and w.requires_grad
    np.testing.assert_array_equal(holder[0].numpy(), [1.25, 1.5, 2.0])
    with fl.no_grad(), pytest.raises(ValueError, match="keeps x's shape"):
        w += fl.ones(2, 3)
    y = fl.ones(2, 3) * 3  # no grad needed: in place anywhere
    y -= fl.ones(3)
    np.testing.assert_array_equal(y.numpy(), np.full((2, 3), 2.0))
    # ...but an operand that requires grad is refused there: the change is not recorded, and
    # backward silently missed its path (b's gradient was [3, 6], not [6, 12]).
    b = fl.tensor([1.0, 2.0], requires_grad=True)
    acc = fl.zeros(2)
    with pytest.raises(fl.GradError, match="y requires grad, and x \\+= y .* write x = x \\+ y"):
        acc += b * 3
    with pytest.raises(fl.GradError, match="copy_ copies values without recording it"):
        acc.copy_(b * 3)
    np.testing.assert_array_equal(acc.numpy(), [0.0, 0.0])
    acc = acc + b * 3  # recorded
    (acc * b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [6.0, 12.0])
    with fl.no_grad():  # values only: allowed
        acc = fl.zeros(2)
        acc += b
        acc.copy_(b)
    acc.copy_(b.detach())
    np.testing.assert_array_equal(acc.numpy(), [1.0, 2.0])
    # A tensor read as a number (a fill value, a bound) would lose its gradient the same way.
    for read_as_number in (lambda: F.masked_fill(b, np.array([True, False]), b[0]), lambda: F.clamp(b, min=b[0]),
                           lambda: b.clamp(max=b[1])):
        with pytest.raises(fl.GradError, match="read here as a number"):
            read_as_number()
    np.testing.assert_array_equal(F.masked_fill(b, np.array([True, False]), b[0].detach()).numpy(), [1.0, 2.0])
    # layer.weight -= step changes the weight and puts the same tensor back (it changed the
    # weight, then raised "not writable"); another tensor is refused, the weight unchanged.
    layer = fl.Linear(2, 2, seed=0)
    before = layer.weight.numpy()
    with fl.no_grad():
        layer.weight -= fl.ones(2, 2)
        layer.bias += 1
    np.testing.assert_allclose(layer.weight.numpy(), before - 1)
    for module, name in ((layer, "weight"), (layer, "bias"), (fl.Embedding(3, 2), "weight"), (fl.LayerNorm(2), "bias")):
        kept = getattr(module, name).numpy()
        with pytest.raises(AttributeError, match=f"a layer's {name} is not replaced"):
            setattr(module, name, fl.zeros(*kept.shape))
        np.testing.assert_array_equal(getattr(module, name).numpy(), kept)

    class OneElementArray:  # as numpy before 2.4 has it: float() of a one-element array works
        def __float__(self):
            return 5.0

        def __array__(self, dtype=None, copy=None):
            return np.array([[5.0]], np.float32)

    # Only Python numbers are scalars: a one-element array keeps its shape (it became 0-d, so
    # a (1,)-shaped bias could not be loaded), in constructors and operands alike.
    assert fl.tensor(OneElementArray()).shape == (1, 1) and (fl.ones(2) + OneElementArray()).shape == (1, 2)
    assert fl.tensor(np.float64(2.5)).shape == () and fl.tensor(7).item() == 7.0
    with pytest.raises(TypeError, match="complex128"):
        fl.tensor(np.complex128(1 + 2j))  # was 1.0, the imaginary part dropped

    @fl.no_grad  # without parentheses too
    def doubled(x):
        return x * 2

    assert not doubled(fl.ones(2, requires_grad=True)).requires_grad and fl.is_grad_enabled()

    @fl.no_grad()  # a generator's body, at every resume (only the call that made it was covered)
    def doubles(x, n):
        for _ in range(n):
            sent = yield x * 2
            assert sent in (None, "more")
        return "done"

    w = fl.ones(2, requires_grad=True)
    seen = [(d.requires_grad, fl.is_grad_enabled()) for d in doubles(w, 3)]
    assert seen == [(False, True)] * 3  # the caller's mode between resumes is its own

    def delegating():
        return (yield from doubles(w, 1))

    g = delegating()
    next(g)
    with pytest.raises(StopIteration) as stop:
        g.send("more")
    assert stop.value.value == "done"
    assert bool(fl.tensor([2.0])) and not bool(fl.tensor(0.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t)
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(t, copy=False)
    logits = fl.randn(2, 3, 4)
    with pytest.raises(ValueError, match="classes are the last axis"):
        F.cross_entropy(logits, np.zeros((3, 2), dtype=np.int64))
    assert F.cross_entropy(logits, np.zeros((2, 3), dtype=np.int64)).item() == \
        F.cross_entropy(logits, np.zeros(6, dtype=np.int64)).item()
    with pytest.raises(ValueError, match="one-dimensional"):
        F.index_select(fl.randn(4, 2), 0, np.zeros((2, 2), dtype=np.int64))
    opt = fl.AdamW([fl.randn(2, requires_grad=True)])
    with pytest.raises(ValueError, match="learning rate"):
        opt.lr = -1.0
    # torch's per-group learning rates were accepted and silently ignored; a bare tensor was
    # iterated into its rows ("parameters must be leaf tensors").
    w = fl.randn(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"param group keys \['lr'\] are not supported"):
        fl.AdamW([{"params": [w], "lr": 0.5}], lr=0.1)
    with pytest.raises(TypeError, match="not a Tensor: pass \\[tensor\\]"):
        fl.SGD(w, lr=0.1)
    with pytest.raises(ValueError, match=r"prediction shape \(2, 1\) and target shape \(2,\) differ"):
        F.mse_loss(fl.tensor([[1.0], [2.0]]), fl.tensor([0.0, 0.0]))  # would be every pair's difference


def test_a_frozen_tensor_stays_a_parameter_of_its_module(tmp_path):
    class Scaled(fl.nn.Module):
        def __init__(self):
            self.fc = fl.Linear(2, 2, seed=1)
            self.scale = fl.ones(2, requires_grad=True)
            self.mask = fl.ones(2)  # assigned without requires_grad: not a parameter

    model = Scaled()
    model.scale.copy_([5.0, 7.0])
    model.scale.requires_grad = model.fc.weight.requires_grad = False  # frozen, as a Python tensor and a layer's
    assert [n for n, _ in model.named_parameters()] == ["fc.weight", "fc.bias", "scale"]  # scale was dropped
    model.save(tmp_path)
    again = Scaled().load_weights(tmp_path)  # it was refused: scale missing from the file
    np.testing.assert_array_equal(again.scale.numpy(), [5.0, 7.0])
    opt = fl.AdamW(model.parameters(), lr=0.1)
    model.fc(fl.ones(1, 2)).sum().backward()
    opt.step()  # a frozen parameter has no gradient and is left as it is
    np.testing.assert_array_equal(model.scale.numpy(), [5.0, 7.0])

    class Listed(fl.nn.Module):
        def __init__(self):
            self.scales = [fl.ones(2, requires_grad=True), {"b": fl.ones(3, requires_grad=True)}]

        def forward(self, x):
            self.last = x * self.scales[0]  # a cached result: not a parameter, with or without grad
            return self.last

    listed = Listed()
    listed.scales[0].requires_grad = listed.scales[1]["b"].requires_grad = False
    listed(fl.ones(2, requires_grad=True))
    assert [n for n, _ in listed.named_parameters()] == ["scales.0", "scales.1.b"]
    listed.save(tmp_path / "listed")
    Listed().load_weights(tmp_path / "listed")
    listed.scales = [fl.zeros(2)]  # reassigned without grad: no longer a parameter
    assert listed.named_parameters() == []


def test_calls_without_a_seed_draw_from_the_stream_manual_seed_restarts():
    """Two layers or tensors made without a seed differ (every call used seed 0, so two
    fl.Linear(64, 64) started equal and F.dropout(x, p) dropped the same elements each step);
    manual_seed makes a script repeat itself; an explicit seed is unaffected."""
    def draws():
        x = fl.ones(64, 64)
        return [fl.randn(4, 4), fl.rand(4, 4), fl.Linear(4, 4).weight, fl.Embedding(4, 4).weight,
                F.dropout(x, 0.5), F.dropout(x, 0.5), fl.nn.Dropout(0.5)(x)]

    fl.manual_seed(7)
    first = [t.numpy() for t in draws()]
    assert not np.array_equal(first[0], fl.randn(4, 4).numpy())
    assert not np.array_equal(first[4], first[5]) and not np.array_equal(first[5], first[6])
    fl.manual_seed(7)
    for a, b in zip(first, draws()):
        np.testing.assert_array_equal(a, b.numpy())
    fl.manual_seed(8)
    assert not np.array_equal(first[0], fl.randn(4, 4).numpy())
    np.testing.assert_array_equal(fl.randn(4, 4, seed=3).numpy(), fl.randn(4, 4, seed=3).numpy())
    q = fl.randn(1, 2, 8, 4)
    with_seed = [F.attention(q, q, q, dropout_p=0.5, seed=1).numpy() for _ in range(2)]
    np.testing.assert_array_equal(*with_seed)
    assert not np.array_equal(*[F.attention(q, q, q, dropout_p=0.5).numpy() for _ in range(2)])
    drop = fl.nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(drop(fl.ones(8)).numpy(), np.ones(8))
    with pytest.raises(ValueError, match="dropout probability must be in \\[0, 1\\)"):
        fl.nn.Dropout(1.0)
    for bad, message in ((lambda: fl.rand(3, low=1.0, high=0.0), "low <= high"),
                         (lambda: fl.randn(3, std=-1.0), "std a finite number >= 0"),
                         (lambda: fl.randn(3, mean=float("nan")), "mean must be finite")):
        with pytest.raises(ValueError, match=message):  # accepted before: samples from an empty or mirrored range
            bad()
    # Seeds out of a u64's range were an OverflowError naming no seed ("can't convert negative int
    # to unsigned"); the largest one is taken.
    for seed in (-1, 2**64, -2**200):
        for call in (fl.manual_seed, lambda s: fl.randn(2, seed=s), lambda s: fl.Linear(2, 2, seed=s),
                     lambda s: F.dropout(fl.ones(4), 0.5, seed=s), lambda s: F.attention(q, q, q, dropout_p=0.5, seed=s)):
            with pytest.raises(ValueError, match=f"a seed must be an integer from 0 to 2\\*\\*64 - 1, got {seed}"):
                call(seed)
    np.testing.assert_array_equal(fl.randn(3, seed=2**64 - 1).numpy(), fl.randn(3, seed=np.uint64(2**64 - 1)).numpy())
    with pytest.raises(TypeError):
        fl.manual_seed(1.5)


def test_new_models_and_samples_follow_manual_seed():
    """GPT.create and BERT.create without a seed, and sampling without one, draw from the stream:
    a seed sweep with manual_seed gave identical models, and every sampling call the same text.
    Greedy decoding draws nothing."""
    def gpt():
        return fl.GPT.create(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)

    def weights(model):
        return np.concatenate([t.numpy().ravel() for _, t in model.named_parameters()])

    fl.manual_seed(1)
    a, a_bert = gpt(), fl.BERT.create(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    samples = [a.generate([1, 2, 3], 12) for _ in range(2)]
    fl.manual_seed(2)
    b, b_bert = gpt(), fl.BERT.create(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    assert not np.array_equal(weights(a), weights(b)) and not np.array_equal(weights(a_bert), weights(b_bert))
    assert samples[0] != samples[1]  # 12 tokens of 50 from a random model
    fl.manual_seed(1)
    np.testing.assert_array_equal(weights(gpt()), weights(a))
    fl.BERT.create(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    a.generate([1, 2, 3], 12, temperature=0)  # greedy: leaves the stream where it was
    assert [a.generate([1, 2, 3], 12) for _ in range(2)] == samples
    assert a.generate([1, 2, 3], 12, seed=5) == a.generate([1, 2, 3], 12, seed=5)


def test_deepcopy_gives_independent_models_layers_and_tensors():
    """copy.deepcopy (PyTorch's way to a reference model) raised TypeError for models, layers
    and tensors. Copies own their weights; frozen parameters stay frozen and stay parameters."""
    import copy

    class Net(fl.nn.Module):
        def __init__(self):
            self.emb, self.norm = fl.Embedding(10, 8), fl.LayerNorm(8)
            self.layers = [fl.Linear(8, 8), fl.Linear(8, 3, bias=False)]
            self.scale = fl.ones(8, requires_grad=True)

    net = Net()
    net.scale.requires_grad = False  # frozen after assignment: still a parameter
    twin = copy.deepcopy(net)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in net.named_parameters()]
    for (_, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert a.uid != b.uid and a.requires_grad == b.requires_grad
    net.layers[0].weight.copy_(np.zeros((8, 8), np.float32))
    assert twin.layers[0].weight.numpy().any()  # its own storage
    gpt = fl.GPT.create(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)
    bert = fl.BERT.create(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, pooler=True)
    bert.core.named_parameters()[0][1].requires_grad = False
    for model in (gpt, bert):
        ref = copy.deepcopy(model)
        assert type(ref) is type(model) and ref.config == model.config
        for (na, a), (nb, b) in zip(model.named_parameters(), ref.named_parameters()):
            assert na == nb and a.uid != b.uid and a.requires_grad == b.requires_grad
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = fl.randn(2, 2, requires_grad=True)
    (x * x).sum().backward()
    for x_copy in (copy.deepcopy(x), copy.copy(x)):  # copy.copy copies the data too, as numpy's
        assert x_copy.requires_grad and x_copy.uid != x.uid and np.array_equal(x_copy.grad.numpy(), x.grad.numpy())
        with fl.no_grad():
            x_copy -= 1
        assert not np.array_equal(x_copy.numpy(), x.numpy())
    with pytest.raises(TypeError, match="only leaf tensors can be deep-copied"):
        copy.deepcopy(x * 2)
    with pytest.raises(TypeError, match="only leaf tensors can be copied"):
        copy.copy(x * 2)

    class Tied(fl.nn.Module):  # a tensor tied to a layer's weight, and to a model's
        def __init__(self):
            self.head = fl.Embedding(20, 8).weight  # listed before its layer: copied after it all the same
            self.emb = fl.Embedding(20, 8)
            self.gpt = gpt
            self.wte = gpt.named_parameters()[0][1]
            self.emb_again = self.emb.weight

    tied = Tied()
    tied.head = tied.emb.weight
    twin = copy.deepcopy(tied)
    assert len(twin.named_parameters()) == len(tied.named_parameters())  # a tie copied apart was a parameter more
    assert twin.head.uid == twin.emb.weight.uid == twin.emb_again.uid != tied.emb.weight.uid
    assert twin.wte.uid == twin.gpt.named_parameters()[0][1].uid != gpt.named_parameters()[0][1].uid
    gpt.note, gpt.tokenizer = "policy", fl.Tokenizer.train_from_iterator(["ab"], kind="char", vocab_size=10)
    gpt.same_tokenizer = gpt.tokenizer
    for twin in (copy.deepcopy(gpt), gpt.copy()):  # its attributes come along, one tokenizer still one
        assert twin.note == "policy" and twin.same_tokenizer is twin.tokenizer is not gpt.tokenizer
    assert isinstance(copy.deepcopy(gpt.core), type(gpt.core))


def test_one_element_tensors_format_and_convert_as_numbers():
    """f"{loss:.4f}" (a training loop's most common line) and int(t) raised TypeError."""
    loss = fl.tensor(2.71828)
    assert f"{loss:.3f}" == "2.718" and f"{fl.tensor(7.5):>6.1f}" == "   7.5" and int(loss) == 2 and int(-loss) == -2
    assert f"{fl.ones(2)}" == repr(fl.ones(2)) and int(fl.tensor([[3.9]])) == 3
    for t in (fl.ones(2), fl.ones(1)):  # as PyTorch: format specs are for 0-d tensors
        with pytest.raises(TypeError, match="needs a 0-d tensor"):
            f"{t:.2f}"
    with pytest.raises(ValueError):
        int(fl.tensor(float("nan")))


def test_saving_arrays_streams_them_to_the_file(tmp_path):
    """save_safetensors writes float32 arrays from their own memory (an optimizer's 1 GB state
    took 3 GB more to save: two copies and the whole file in memory); peak memory stays near
    the arrays' own, and they read back the same."""
    code = f"""
import numpy as np, ferrolm as fl
arrays = {{f"p{{i}}": np.full((64, 1024, 1024), i, np.float32) for i in range(2)}}  # 512 MB
before = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
fl._core.save_safetensors({str(tmp_path / "s.safetensors")!r}, arrays)
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024
back, _ = fl._core.load_safetensors({str(tmp_path / "s.safetensors")!r})
assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
print(peak - before)
"""
    assert int(run_python(code, {})) < 100  # MB above the arrays' 512


def test_numpy_reductions_of_a_tensor_give_tensors():
    """np.mean(t) and np.sum(t) call t.mean(axis=None, dtype=None, out=None); they raised
    TypeError naming arguments the user never passed. They give tensors, as for PyTorch's."""
    t = fl.tensor([[1.0, 2.0, 6.0], [3.0, -4.0, 5.0]])
    for fn, method in ((np.sum, "sum"), (np.mean, "mean"), (np.max, "max"), (np.min, "min")):
        got = fn(t, axis=0)
        assert isinstance(got, fl.Tensor)
        np.testing.assert_allclose(got.numpy(), getattr(t.numpy(), method)(axis=0), rtol=1e-6)
        assert float(fn(t)) == pytest.approx(float(getattr(t.numpy(), method)()))
        # numpy's keepdims (it was an unexpected keyword argument).
        kept = fn(t, axis=1, keepdims=True)
        assert kept.shape == (2, 1)
        np.testing.assert_allclose(kept.numpy(), getattr(t.numpy(), method)(axis=1, keepdims=True), rtol=1e-6)
    with pytest.raises(TypeError, match="dtype= and out= must be None"):
        np.sum(t, dtype=np.float64)


def test_layers_models_and_optimizers_print_what_they_are():
    """Modules print their layers as PyTorch prints a model; optimizers their settings (all
    showed `<... object at 0x...>`)."""
    class Block(fl.nn.Module):
        def __init__(self):
            self.norm, self.proj, self.drop = fl.LayerNorm(4), [fl.Linear(4, 2, bias=False)], fl.nn.Dropout(0.1)

    class Net(fl.nn.Module):
        def __init__(self):
            self.emb, self.block = fl.Embedding(10, 4), Block()

    assert repr(Net()) == ("Net(\n  (emb): Embedding(10, 4)\n  (block): Block(\n    (norm): LayerNorm(4, eps=1e-5, bias=True)\n"
                           "    (proj.0): Linear(in_features=4, out_features=2, bias=False)\n    (drop): Dropout(p=0.1)\n  )\n)")
    w, b = fl.ones(2, 2, requires_grad=True), fl.ones(2, requires_grad=True)
    opt = fl.AdamW([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=3e-4)
    assert repr(opt) == ("AdamW(lr=0.0003, betas=(0.9, 0.999), eps=1e-08; parameters: 1 with weight_decay=0.1, "
                         "1 with weight_decay=0.0)")
    assert repr(fl.SGD([w], lr=0.1, momentum=0.9)).startswith("SGD(lr=0.1, momentum=0.9, nesterov=False;")
    assert repr(fl.zeros(2, 0, 3)) == "Tensor([], size=(2, 0, 3))" and repr(fl.zeros(0)) == "Tensor([], size=(0,))"  # was "Tensor([])", shape lost


def test_comparisons_are_elementwise_and_argmax_gives_indices():
    """`==` compared identity (two equal tensors were unequal) and there was no argmax, so an
    accuracy written the PyTorch way was silently wrong."""
    a = fl.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 7.0]])
    b = np.array([[1.0, 4.0, 3.0], [0.0, 2.0, 8.0]], dtype=np.float32)
    an = a.numpy()
    for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        for other in (b, fl.tensor(b), 3.0, b[0]):  # arrays, tensors, numbers, broadcast rows
            got = getattr(a, op)(other)
            expected = getattr(an, op)(np.asarray(other.numpy() if isinstance(other, fl.Tensor) else other))
            assert isinstance(got, fl.Tensor) and not got.requires_grad, op
            np.testing.assert_array_equal(got.numpy(), expected.astype(np.float32), err_msg=op)
    assert bool(fl.tensor([2.0]) == 2) and (fl.tensor([1.0, 2.0]) == fl.tensor([1.0, 2.0])).numpy().all()
    assert (a == "text") is False and (a != None) is True  # noqa: E711  (not numeric: unequal)
    w = fl.randn(3, requires_grad=True)
    assert not (w > 0).requires_grad
    assert len({a, fl.tensor(an)}) == 2 and a in [a]  # hashed by identity, as PyTorch's
    layer = fl.Linear(3, 3, seed=1)  # whose weight is a new object per read, of one tensor
    assert len({layer.weight, layer.bias} | {layer.weight, layer.bias}) == 4 and {layer.weight: 1}.get(layer.weight) is None
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a == a)
    np.testing.assert_array_equal(a.argmax(1), [1, 0])  # the first of a tie
    np.testing.assert_array_equal(a.argmax(0), an.argmax(0))
    assert a.argmax(-1).dtype == np.int64 and a.argmax(1, keepdim=True).shape == (2, 1)
    assert a.argmax() == 3 and isinstance(a.argmax(), int)
    assert a.argmax(None, keepdim=True).tolist() == [[3]]  # shaped as max(None, keepdim=True), as numpy's
    logits, targets = fl.randn(50, 4, seed=1), np.arange(50) % 4
    accuracy = (fl.tensor(logits.argmax(-1)) == targets).mean().item()
    assert accuracy == pytest.approx(np.mean(logits.numpy().argmax(-1) == targets))
    with pytest.raises(IndexError):
        a.argmax(2)


def test_tensor_methods_are_the_functional_ops():
    x = fl.randn(2, 1, 3, seed=4, requires_grad=True)
    xn = x.numpy()
    for name in ("abs", "sqrt", "tanh", "sigmoid", "relu", "softmax", "log_softmax", "exp", "gelu", "silu", "sin", "cos"):
        np.testing.assert_array_equal(getattr(x, name)().numpy(), getattr(F, name)(x).numpy(), err_msg=name)
    # PyTorch's other common spellings: pow, clamp, matmul, view, size.
    np.testing.assert_array_equal(x.pow(2).numpy(), (x ** 2).numpy())
    np.testing.assert_array_equal(x.clamp(-0.5, 0.5).numpy(), F.clamp(x, -0.5, 0.5).numpy())
    np.testing.assert_array_equal(x.clamp(max=0.0).numpy(), np.minimum(xn, 0.0))
    m = fl.randn(3, 4, seed=5)
    np.testing.assert_array_equal(x.matmul(m).numpy(), (x @ m).numpy())
    assert x.view(3, 2).shape == (3, 2) and x.view(-1).shape == (6,)
    assert x.size() == (2, 1, 3) and x.size(-1) == 3 and x.size(0) == 2
    for dim in (3, -4):
        with pytest.raises(IndexError, match="out of range"):  # 3 was a panic
            x.size(dim)
    np.testing.assert_array_equal(x.softmax(0).numpy(), F.softmax(x, 0).numpy())
    np.testing.assert_array_equal(x.min(2).numpy(), xn.min(2))
    np.testing.assert_array_equal(x.min(2, keepdim=True).numpy(), xn.min(2, keepdims=True))
    assert x.min().item() == xn.min()
    assert x.unsqueeze(0).shape == (1, 2, 1, 3) and x.unsqueeze(-1).shape == (2, 1, 3, 1)
    assert x.unsqueeze(3).shape == (2, 1, 3, 1) and x.squeeze().shape == (2, 3)
    assert x.squeeze(1).shape == (2, 3) and x.squeeze(0).shape == (2, 1, 3)  # only a size-1 axis goes
    assert x.flatten().shape == (6,) and x.T.shape == (3, 1, 2)
    np.testing.assert_array_equal(x.T.numpy(), xn.T)
    for bad in (lambda: x.unsqueeze(4), lambda: x.unsqueeze(-5)):
        with pytest.raises(IndexError, match="out of range"):
            bad()
    with pytest.raises(IndexError, match="squeeze: dimension 3 is out of range for a tensor of rank 3"):
        x.squeeze(3)
    assert fl.tensor(2.0).squeeze(0).shape == () and fl.tensor(2.0).squeeze(-1).shape == ()  # as PyTorch
    (x.T.flatten() * fl.tensor(np.arange(6.0))).sum().backward()  # gradients flow through the views
    np.testing.assert_array_equal(x.grad.numpy(), np.arange(6.0).reshape(3, 1, 2).T)


def test_a_gradient_is_changed_by_assignment():
    w = fl.ones(2, 2, requires_grad=True)
    (w * 3).sum().backward()
    w.grad = w.grad * 0.5  # hand-written scaling (an in-place change of the copy did nothing, silently)
    np.testing.assert_array_equal(w.grad.numpy(), np.full((2, 2), 1.5))
    w.grad = [[1.0, 2.0], [3.0, 4.0]]
    opt = fl.SGD([w], lr=1.0)
    opt.step()
    np.testing.assert_array_equal(w.numpy(), [[0.0, -1.0], [-2.0, -3.0]])
    with pytest.raises(fl.ShapeError, match="a gradient of shape \\[3\\] for a tensor of shape \\[2, 2\\]"):
        w.grad = [1.0, 2.0, 3.0]
    w.grad = None
    assert w.grad is None


def test_set_grad_enabled_as_a_call_and_as_a_context_manager():
    w = fl.randn(2, requires_grad=True)
    with fl.set_grad_enabled(False):  # it raised TypeError here, with recording left off
        assert not (w * 2).requires_grad
        with fl.set_grad_enabled(True):
            assert (w * 2).requires_grad
        assert not fl.is_grad_enabled()
    assert fl.is_grad_enabled() and (w * 2).requires_grad
    fl.set_grad_enabled(False)  # as a call: in effect until turned back on
    try:
        assert not (w * 2).requires_grad
    finally:
        fl.set_grad_enabled(True)
    with pytest.raises(TypeError, match="True or False"):
        fl.set_grad_enabled("no")
    assert fl.is_grad_enabled()

    @fl.set_grad_enabled(False)  # as torch's: the mode holds inside the function only
    def doubled(x):
        return x * 2

    assert fl.is_grad_enabled() and not doubled(w).requires_grad and fl.is_grad_enabled()


def test_no_grad_used_as_a_decorator_from_two_threads():
    """One no_grad object shared by threads (a module-level decorator) restores each thread's
    own mode."""
    import threading

    guard = fl.no_grad()
    inside, a_left, after = threading.Barrier(2), threading.Event(), {}

    @guard
    def work(name):
        inside.wait()  # both threads are inside; "a" (entered first or not) leaves first
        if name == "b":
            a_left.wait()

    def run(name, enabled):
        fl._core.set_grad_enabled(enabled)
        work(name)
        after[name] = fl.is_grad_enabled()
        if name == "a":
            a_left.set()

    threads = [threading.Thread(target=run, args=("a", True)), threading.Thread(target=run, args=("b", False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert after == {"a": True, "b": False}


@pytest.mark.parametrize("name, reference", [
    ("abs", np.abs), ("sin", np.sin), ("cos", np.cos), ("silu", lambda x: x / (1 + np.exp(-x))),
])
def test_unary_ops_values_and_finite_difference_gradients(name, reference):
    op = getattr(F, name)
    x = randn(5, 7).astype(np.float64)
    x[np.abs(x) < 0.05] += 0.1  # away from abs's kink
    t = fl.tensor(x.astype(np.float32), requires_grad=True)
    y = op(t)
    np.testing.assert_allclose(y.numpy(), reference(x), rtol=1e-5, atol=1e-6)
    weights = randn(5, 7)
    (y * weights).sum().backward()
    h = 1e-4
    numeric = (reference(x + h) - reference(x - h)) / (2 * h) * weights
    np.testing.assert_allclose(t.grad.numpy(), numeric, rtol=1e-3, atol=1e-4)


def test_indexing_slices_and_losses():
    a = randn(4, 5, 6)
    t = fl.tensor(a, requires_grad=True)
    for index in (1, -1, slice(1, 3), (2, slice(None, 4)), (slice(None), 3), (-2, slice(-3, None), 0), slice(5, 9),
                  ..., (..., -1), (1, ..., slice(2, 4)), (..., 2, slice(1, 3)), (0, 1, 2, ...), (slice(1, 2), ..., 1, 5)):
        np.testing.assert_array_equal(t[index].numpy(), a[index])
    (t[1:3, 0] * 2).sum().backward()
    (t[..., 1] * 3).sum().backward()  # an ellipsis stands for whole axes: the gradient reaches every row
    expected = np.zeros_like(a)
    expected[1:3, 0] = 2
    expected[..., 1] += 3
    np.testing.assert_array_equal(t.grad.numpy(), expected)
    with pytest.raises(IndexError, match="single ellipsis"):
        t[..., 0, ...]
    with pytest.raises(IndexError, match="4 indices for a tensor of rank 3"):
        t[0, ..., 0, 0, 0]
    with pytest.raises(IndexError, match="out of range"):
        t[4]
    with pytest.raises(IndexError, match="step-1"):
        t[::2]
    with pytest.raises(TypeError, match="integers and slices"):
        t["x"]
    with pytest.raises(TypeError, match="booleans"):
        t[True]
    with pytest.raises(IndexError, match="out of range"):
        t[2**70]
    # Slices with bounds are copies, even bounds over a whole axis (those shared t's data); a bare `:` shares.
    d = fl.tensor([1.0, 2.0, 3.0, 4.0])
    for index in (slice(0, 2), slice(0, 4), slice(-9, 9), slice(None, 4)):
        part = d[index]
        part -= 100
        assert d.numpy().tolist() == [1.0, 2.0, 3.0, 4.0], index
    for whole in (d[:], d[::1]):  # no bounds: a step of 1 is none
        whole -= 50
    assert d.numpy().tolist() == [-99.0, -98.0, -97.0, -96.0]
    # Iteration gives the rows, as numpy's; a 0-d tensor has none (it gave an empty sequence).
    rows = list(fl.tensor(a[0]))
    assert len(rows) == 5 and all(np.array_equal(r.numpy(), row) for r, row in zip(rows, a[0]))
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(fl.tensor(3.0))
    np.testing.assert_allclose(F.min(fl.tensor(a), 1).numpy(), a.min(1), rtol=1e-6)
    b = randn(4, 5, 6)
    assert F.mse_loss(fl.tensor(a), fl.tensor(b)).item() == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-5)
    assert F.mse_loss(fl.tensor(a), fl.tensor(b), "sum").item() == pytest.approx(float(((a - b) ** 2).sum()), rel=1e-5)


def test_clone_stays_in_the_graph_and_clamp_passes_no_gradient_at_its_bounds():
    """As PyTorch 2.15 (checked by hand): a skip connection kept with h.clone() lost its gradient
    (clone made a new leaf: 160x below, where torch gives 200x), and a clone's source may change
    in place after it (a snapshot of a weight before an optimizer step); clamp's gradient was 1
    at a bound, where torch's, and relu's at 0, is 0."""
    x = fl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * 2
    kept = h.clone()
    assert kept.requires_grad and not kept.is_leaf
    ((h * 4) + kept).pow(2).sum().backward()  # d/dx (10x)^2 = 200x: the clone's share is there
    np.testing.assert_allclose(x.grad.numpy(), [200.0, 400.0, 600.0])
    w = fl.tensor([1.0, 2.0], requires_grad=True)
    snapshot = w.clone()
    opt = fl.SGD([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    opt.zero_grad()
    ((w - snapshot) ** 2).sum().backward()  # torch's answer: the clone's and w's shares cancel
    np.testing.assert_allclose(w.grad.numpy(), [0.0, 0.0])
    overwritten = w.clone()  # the clone itself changed: its gradient would pass through values not w's
    overwritten.copy_(np.zeros(2, np.float32))
    with pytest.raises(fl.GradError, match="`clone` used was modified in place"):
        (overwritten + 1).sum().backward()
    copy = x.detach().clone()
    copy += 1  # a copy, cut off from the graph: x keeps its values
    assert not copy.requires_grad and x.numpy().tolist() == [1.0, 2.0, 3.0]
    with fl.no_grad():
        assert not x.clone().requires_grad
    for bounds, grad in (((0.0, None), [0.0, 1.0, 1.0]), ((None, 1.0), [1.0, 0.0, 1.0]), ((0.0, 1.0), [0.0, 0.0, 1.0]),
                         ((None, None), [1.0, 1.0, 1.0])):
        x = fl.tensor([0.0, 1.0, 0.5], requires_grad=True)
        x.clamp(*bounds).sum().backward()
        assert x.grad.numpy().tolist() == grad, bounds
    x = fl.tensor([-np.inf, np.inf], requires_grad=True)
    x.clamp(min=0.0).sum().backward()  # an absent bound passes infinities
    assert x.grad.numpy().tolist() == [0.0, 1.0]
    # Bounds of several values are said to be numbers ("item() needs a tensor with one element", "only 0-dimensional
    # arrays can be converted").
    for bound in (fl.tensor([2.0, 2.0]), np.array([2.0, 2.0])):
        with pytest.raises(TypeError, match="a number is expected here, got (Tensor|ndarray) of shape \\(2,\\)"):
            F.clamp(fl.tensor([1.0, 5.0]), bound)
    assert F.clamp(fl.tensor([1.0, 5.0]), fl.tensor([2.0])).numpy().tolist() == [2.0, 5.0]  # one element: a number


def test_a_whole_tensor_is_assigned_by_index():
    """`w[:] -= lr * w.grad` (a hand-written update) changed w through the shared `w[:]`, then
    failed: Tensor had no item assignment. Parts are refused before anything changes."""
    w = fl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (w * w).sum().backward()
    with fl.no_grad():
        w[:] -= 0.1 * w.grad
    np.testing.assert_allclose(w.numpy(), [0.8, 1.6, 2.4], rtol=1e-6)
    with pytest.raises(fl.GradError, match="x\\[:\\] = y changes x in place, which requires grad"):
        w[:] = 0.0
    t = fl.zeros(2, 3)
    t[...] = np.array([1.0, 2.0, 3.0])  # broadcast, as x += y
    assert t.numpy().tolist() == [[1.0, 2.0, 3.0]] * 2
    for part in (0, slice(0, 1), (slice(None), 1)):
        with pytest.raises(TypeError, match="only a whole tensor is assigned by index"):
            t[part] = 5.0
        with pytest.raises(TypeError, match="only a whole tensor is assigned by index"):
            t[part] -= 1.0
    assert t.numpy().tolist() == [[1.0, 2.0, 3.0]] * 2
    with pytest.raises(fl.ShapeError):
        t[:] = fl.ones(3, 3)
    with pytest.raises(fl.ShapeError, match="does not broadcast"):  # its own data in another shape is no `t[:] op= y`
        t[:] = t.reshape(3, 2)
    with pytest.raises(fl.GradError, match="the values given to x\\[:\\] = y require grad"):
        t[:] = fl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    t[:] = t.reshape(2, 3)[:]  # its own values: nothing changes
    assert t.numpy().tolist() == [[1.0, 2.0, 3.0]] * 2


def test_a_mask_holds_booleans_or_zeros_and_ones():
    """Masks read nonzero as True, so an additive mask (PyTorch's float attn_mask, Hugging
    Face's extended one: 0 keeps, -inf or -1e4 drops) attended to the padding only, silently.
    Values other than 0 and 1 are refused; 0/1 numbers and booleans mean the same."""
    q = fl.randn(1, 1, 3, 4, seed=0)
    keep = F.attention(q, q, q, key_padding_mask=[[True, True, False]]).numpy()
    for same in ([[1, 1, 0]], np.array([[1.0, 1.0, 0.0]]), fl.tensor([[1.0, 1.0, 0.0]])):
        np.testing.assert_array_equal(F.attention(q, q, q, key_padding_mask=same).numpy(), keep)
    for additive, shown in (([[0.0, 0.0, -np.inf]], "-inf"), ([[0.0, 0.0, -1e4]], "-10000.0"),
                            ([[1.0, np.nan, 1.0]], "nan"), (fl.tensor([[1.0, 0.0, 2.0]]), "2")):
        with pytest.raises(ValueError, match=f"a mask holds booleans, or 0 and 1, got {shown}: an additive mask"):
            F.attention(q, q, q, key_padding_mask=additive)
    model = fl.BERT.create(vocab_size=20, max_position_embeddings=8, num_hidden_layers=1, num_attention_heads=2,
                           hidden_size=8, seed=0)
    with pytest.raises(ValueError, match="got -10000.0: an additive mask"):
        model.core.hidden(np.array([[1, 2, 3]]), attention_mask=np.array([[0.0, 0.0, -1e4]]))
    for fn in (lambda m: F.masked_fill(fl.ones(3), m, 0.0), lambda m: F.where(m, fl.ones(3), fl.zeros(3))):
        assert fn(np.array([1, 0, 1])).numpy().tolist() == fn(np.array([True, False, True])).numpy().tolist()
        with pytest.raises(ValueError, match="got 2"):
            fn(np.array([2, 0, 1]))


def test_small_pytorch_habits_get_pytorchs_answers(tmp_path):
    """From a hands-on review against PyTorch: each was an odd result or error."""
    # Shape errors are ShapeErrors (they were plain ValueErrors, which `except fl.ShapeError` missed).
    for bad in (lambda: (fl.zeros(3, requires_grad=True) * 2).backward(np.ones(4)),
                lambda: fl.zeros(3).__iadd__(fl.zeros(2, 3)),
                lambda: fl.zeros(2, 3).copy_(np.ones(2)),
                lambda: F.attention(*[fl.zeros(1, 1, 5, 4)] * 3, key_padding_mask=np.ones((1, 4), bool)),
                lambda: F.index_select(fl.zeros(3, 2), 0, np.zeros((2, 2), np.int64))):
        with pytest.raises(fl.ShapeError):
            bad()
    # Asking a file for a tensor it does not hold is a KeyError (it returned {}).
    fl.save_safetensors(tmp_path / "w.safetensors", {"a": fl.ones(2)})
    assert list(fl.load_safetensors(tmp_path / "w.safetensors", ["a"])[0]) == ["a"]
    with pytest.raises(KeyError, match='no tensor named "missing"'):
        fl.load_safetensors(tmp_path / "w.safetensors", ["a", "missing"])
    with pytest.raises(ValueError, match="eps must be non-negative"):  # refused at its first call only
        fl.LayerNorm(4, eps=-1.0)
    opt = fl.AdamW([fl.ones(2, requires_grad=True)], lr=0.1)  # read back as float32's 0.10000000149011612
    assert opt.lr == 0.1 and opt.state_dict()["param_groups"][0]["lr"] == 0.1
    opt.lr = 0.3
    assert opt.lr == 0.3 and fl.SGD([fl.ones(1, requires_grad=True)], lr=0.7).lr == 0.7
    norm = fl.clip_grad_norm([], 1.0)
    assert norm == 0.0 and math.copysign(1.0, norm) == 1.0  # was -0.0
    with pytest.raises(fl.ShapeError, match="mse_loss: prediction shape"):
        F.mse_loss(fl.ones(3, 1), fl.ones(3))
    gpt = fl.GPT.create(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=4, seed=0)
    with pytest.raises(fl.ShapeError, match="positions must have the ids' shape"):
        gpt.core.forward(np.zeros((1, 3), np.int64), positions=np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="got an integer too long to print"):  # and no "Exception ignored" traceback
        fl.manual_seed(2**20000)
    loss = F.mse_loss(1.0, 3.0)  # numbers: an AttributeError ('float' has no mean)
    assert isinstance(loss, fl.Tensor) and loss.item() == 4.0
    with pytest.raises(fl.GradError, match="maximum or minimum of ferrolm.functional"):  # fl.where does not exist
        F.clamp(fl.ones(2), min=fl.ones(1, requires_grad=True)[0])
