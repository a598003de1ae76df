"""Post-training: each loss and its gradient against numpy on fixed numbers, GAE by hand, SFT
masking, the reward read at the last real token, the CLI end to end on a tiny model, and bad
input."""

import io
import json
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

import ferrolm as fl
import ferrolm.functional as F
from ferrolm.batching import pad_right
from ferrolm.chat import ChatTemplate
from ferrolm.cli import main as ferrolm
from ferrolm.data import BUNDLED_CORPUS, prepare_tokens
from ferrolm.gpt import GPT
from ferrolm.train import CausalLM, TrainConfig, train
from ferrolm.train.dpo import DPO, response_logprobs
from ferrolm.train.ppo import gae
from ferrolm.train.reward import Preferences, RewardModel
from ferrolm.train.sft import SFT


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- losses on fixed numbers


def test_bradley_terry_loss_and_gradient_match_numpy():
    rc, rr = np.array([1.5, -0.2, 0.3], np.float32), np.array([0.5, 0.4, 0.3], np.float32)
    tc, tr = fl.tensor(rc, requires_grad=True), fl.tensor(rr, requires_grad=True)
    loss = -F.log_sigmoid(tc - tr).mean()
    loss.backward()
    m = rc - rr
    assert abs(loss.item() - (-np.log(sigmoid(m)).mean())) < 1e-6
    np.testing.assert_allclose(tc.grad.numpy(), -(1 - sigmoid(m)) / 3, rtol=1e-5)
    np.testing.assert_allclose(tr.grad.numpy(), (1 - sigmoid(m)) / 3, rtol=1e-5)


def test_dpo_loss_and_gradient_match_numpy():
    beta = 0.5
    pc, pr = np.array([-3.0, -5.0], np.float32), np.array([-4.0, -4.5], np.float32)
    refc, refr = np.array([-3.5, -5.5], np.float32), np.array([-3.8, -4.0], np.float32)
    tc, tr = fl.tensor(pc, requires_grad=True), fl.tensor(pr, requires_grad=True)
    logits = ((tc - refc) - (tr - refr)) * beta
    loss = -F.log_sigmoid(logits).mean()
    loss.backward()
    z = beta * ((pc - refc) - (pr - refr))
    assert abs(loss.item() - (-np.log(sigmoid(z)).mean())) < 1e-6
    np.testing.assert_allclose(tc.grad.numpy(), -beta * (1 - sigmoid(z)) / 2, rtol=1e-5)
    np.testing.assert_allclose(tr.grad.numpy(), beta * (1 - sigmoid(z)) / 2, rtol=1e-5)


def test_ppo_clipped_objective_matches_numpy():
    new, old = np.array([-1.0, -0.5, -2.0, -0.1], np.float32), np.array([-1.3, -0.4, -1.5, -0.1], np.float32)
    adv = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    mask = np.array([1, 1, 1, 0], bool)
    t = fl.tensor(new, requires_grad=True)
    ratio = F.exp(t - old)
    obj = F.minimum(ratio * adv, F.clamp(ratio, 0.8, 1.2) * adv)
    loss = -F.sum(obj * mask.astype(np.float32)) * (1 / mask.sum())
    loss.backward()
    r = np.exp(new - old)
    o = np.minimum(r * adv, np.clip(r, 0.8, 1.2) * adv)
    assert abs(loss.item() - (-(o * mask).sum() / 3)) < 1e-6
    # The gradient flows only where the unclipped term is the minimum (or the ratio is inside the clip range).
    unclipped_active = (r * adv <= np.clip(r, 0.8, 1.2) * adv) | ((r >= 0.8) & (r <= 1.2))
    expected = np.where(mask & unclipped_active, -r * adv / 3, 0.0)
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_gae_against_a_hand_computed_example():
    # One row, three response steps (mask), γ = 0.9, λ = 0.8:
    r, v = np.array([[0.0, 1.0, 0.0, 2.0, 0.0]]), np.array([[0.0, 0.5, 1.0, 1.5, 0.0]])
    mask = np.array([[0, 1, 1, 1, 0]], bool)
    adv, ret = gae(r, v, mask, gamma=0.9, lam=0.8)
    d3 = 2.0 + 0.9 * 0.0 - 1.5          # 0.5
    d2 = 0.0 + 0.9 * 1.5 - 1.0          # 0.35
    d1 = 1.0 + 0.9 * 1.0 - 0.5          # 1.4
    a3, a2 = d3, d2 + 0.72 * d3
    a1 = d1 + 0.72 * a2
    np.testing.assert_allclose(adv[0], [0, a1, a2, a3, 0], rtol=1e-9)
    np.testing.assert_allclose(ret[0], [0, a1 + 0.5, a2 + 1.0, a3 + 1.5, 0], rtol=1e-9)


# ---------------------------------------------------------------- a tiny chat model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small char-level GPT pretrained briefly on tiny Shakespeare."""
    tmp = tmp_path_factory.mktemp("post")
    text = BUNDLED_CORPUS.read_text()[:300_000]
    tok = fl.Tokenizer.train_from_iterator([BUNDLED_CORPUS.read_text()], kind="char", vocab_size=1 << 20)
    prepare_tokens(text, tok, tmp / "data")
    model = GPT.create(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=64, seed=0, tokenizer=tok)
    train(model, CausalLM(tmp / "data", 64, 16), TrainConfig(max_iters=150, eval_interval=1000, eval_iters=2,
          learning_rate=3e-3, warmup_iters=10, lr_decay_iters=150, progress=False), tmp / "base")
    return tmp / "base"


def chat_data(n=120, seed=0):
    """Prompt/response pairs from consecutive corpus lines; preferences: questions preferred."""
    lines = [l for l in BUNDLED_CORPUS.read_text().splitlines() if 8 < len(l) < 40]
    rng = np.random.default_rng(seed)
    pairs, prefs = [], []
    for i in rng.choice(len(lines) - 1, size=n, replace=False):
        pairs.append({"prompt": lines[i], "response": lines[i + 1]})
        a, b = lines[i + 1].rstrip("?.!,;:") + "?", lines[i + 1].rstrip("?.!,;:") + "."
        prefs.append({"prompt": lines[i], "chosen": a, "rejected": b})
    return pairs, prefs


def test_sft_masks_prompt_tokens(base):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    assert model.vocab_size == model.tokenizer.vocab_size  # embedding grew for the chat tokens
    pairs, _ = chat_data(8)
    sft = SFT(pairs, pairs, template, model.block_size, batch_size=4)
    x, targets = sft.batch("train", np.random.default_rng(0))
    for row, t in zip(x, targets):
        start = template.response_start(row)  # from the ids: just after <|assistant|>
        assert (t[: start - 1] == -100).all()  # no loss on the prompt ...
        real = t[start - 1 :][t[start - 1 :] != -100]
        assert real[-1] == template.end and len(real) > 1  # ... loss on the response and <|end|>
    # Prompt text that imitates a chat token stays plain text: it cannot move the boundary
    # (a byte-level BPE tokenizer can spell "<|assistant|>" as text).
    from ferrolm.chat import SPECIALS

    bpe = fl.Tokenizer.train_from_iterator([BUNDLED_CORPUS.read_text()[:50_000]], kind="bpe", vocab_size=300)
    bpe.add_special_tokens(list(SPECIALS))
    chat = ChatTemplate(bpe)
    ids = chat.render("say <|assistant|> now", "ok")
    assert ids.count(chat.assistant) == 1 and chat.response_start(ids) == len(chat.prompt_ids("say <|assistant|> now"))


def _answer_positions(template, talk):
    """Where the answers of rendered exchanges `talk` are, with the <|end|> after each: found
    from the rendered pieces' lengths."""
    positions, at = [], 0
    for u, a in talk:
        prompt, answer = len(template.prompt_ids(u)), len(template.text(a)) + 1
        positions += list(range(at + prompt, at + prompt + answer))
        at += prompt + answer
    return positions


def test_sft_on_conversations_trains_on_every_answer_only(base, tmp_path, capsys):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    talk = [("Who goes there?", "A friend."), ("What friend?", "Thine own."), ("Pass.", "I thank thee.")]
    messages = [{"role": role, "content": text} for pair in talk for role, text in zip(("user", "assistant"), pair)]
    one, short = {"messages": messages}, {"prompt": "Stand!", "response": "I stand."}
    sft = SFT([one, short], [one], template, model.block_size, batch_size=8)
    x, targets = sft.batch("train", np.random.default_rng(0))
    # Trained: each answer's tokens and the <|end|> after it, nothing else, in rows padded to
    # the batch's longest.
    for row, t in zip(x, targets):
        exchanges = talk if row[1] == template.text("Who")[0] else [("Stand!", "I stand.")]
        ids, expected = sum((template.render(u, a) for u, a in exchanges), []), _answer_positions(template, exchanges)
        assert row[: len(ids) - 1].tolist() == ids[:-1]
        assert np.flatnonzero(t != -100).tolist() == [p - 1 for p in expected]
        assert t[t != -100].tolist() == [ids[p] for p in expected]
    assert len({len(np.flatnonzero(t != -100)) for t in targets}) == 2  # both kinds were drawn
    # A prompt/response record is the one-exchange conversation, in each of TRL's forms too.
    user, answer = messages[0], messages[1]
    forms = [{"prompt": "Who goes there?", "response": "A friend."}, {"prompt": "Who goes there?", "completion": "A friend."},
             {"prompt": [user], "completion": [answer]}, {"prompt": [user], "completion": answer}, {"messages": [user, answer]}]
    rng = lambda: np.random.default_rng(0)
    batches = [SFT([r], [one], template, model.block_size, 1).batch("train", rng()) for r in forms]
    assert all((a == b).all() for batch in batches[1:] for a, b in zip(batches[0], batch))
    # From the command line, records of both kinds in one file; bad ones name their line.
    data = tmp_path / "talk.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [one, short] * 4))
    fast = ["--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--no-progress"]
    assert ferrolm(["sft", str(base), "--data", str(data), "--out", str(tmp_path / "sft"), *fast]) == 0
    assert "sft: 7 train / 1 val examples" in capsys.readouterr().out
    for bad, message in [({"messages": [user, {"role": "system", "content": "Be brief."}, *messages[1:]]},
                          "message 1 is 'system': a conversation is an optional system turn"),
                         ({"messages": messages[:3]}, "ends with a user turn"),
                         ({"messages": "Hail!"}, "list of"),
                         ({"messages": []}, "no exchange"),
                         ({"messages": [{"role": "system", "content": "Be brief."}]}, "no exchange"),
                         ({"messages": [user, {"role": "assistant", "content": " "}]}, "message 1, an answer, is empty"),
                         ({"messages": messages, "prompt": "Hail!"}, "not 'messages' and 'prompt'"),
                         # Which answer, or which exchange? One was trained on, the other ignored without a word.
                         ({"messages": messages, "completion": "Hail."}, "not 'messages' and 'completion'"),
                         ({"prompt": "Hail!", "response": "Hail.", "completion": "Ho."}, "not 'prompt' and 'response' and"),
                         ({"prompt": "Hail!", "response": None, "completion": None}, "no 'response' field"),
                         ({"prompt": [user, answer], "completion": "Hail."}, "ends with the user turn"),
                         ({"prompt": "Hail!", "completion": [answer, answer]}, "field 'completion' must be a string or one"),
                         ({"prompt": "Hail!", "answer": "Hail."}, "no 'response' field"),
                         ([one, one], "holds one JSON object per line, not a JSON array")]:  # "expected a JSON object"
        data.write_text(json.dumps(one) + "\n" + json.dumps(bad) + "\n")
        assert ferrolm(["sft", str(base), "--data", str(data), "--out", str(tmp_path / "bad"), *fast]) == 2
        err = capsys.readouterr().err
        assert "talk.jsonl line 2" in err and message in err, err
    # A null field is no field (pandas writes merged data sets so): one answer, no ambiguity.
    from ferrolm.conversations import sft_turns

    assert sft_turns({"prompt": "Hail!", "response": "Hail.", "completion": None})[-1]["content"] == "Hail."
    # The Python objective reads the same forms, and names a bad record.
    with pytest.raises(ValueError, match="a record: no 'prompt' field"):
        SFT([{"response": "A friend."}], [one], template, model.block_size, 1)
    with pytest.raises(ValueError, match="pretraining text: train on it with `ferrolm pretrain`"):
        SFT([{"text": "A friend."}], [one], template, model.block_size, 1)
    # Records too long for the context: the first is named and the rest counted.
    long = {"prompt": "Who goes there?", "response": "a" * model.block_size}
    with pytest.raises(ValueError, match=r"a record: .* do not fit .* \(and 2 more records of this split\); skip such"):
        SFT([one, long, long, long], [one], template, model.block_size, 1)
    assert SFT([one, long, long], [one], template, model.block_size, 1, skip_long=True).counts["train"] == \
        {"skipped_too_long": 2}
    data.write_bytes(json.dumps(one).encode() + b"\n" + b'{"prompt": "caf\xe9", "response": "x"}\n')
    assert ferrolm(["sft", str(base), "--data", str(data), "--out", str(tmp_path / "bad"), *fast]) == 2
    assert "talk.jsonl line 2: not valid UTF-8 (byte 0xe9)" in capsys.readouterr().err
    # A missing file or a directory is said with its flag (it was "[Errno 2] No such file or directory").
    for path, said in ((tmp_path / "missing.jsonl", "does not exist"), (tmp_path, "is a directory, not a file")):
        for command in ("sft", "reward", "dpo"):  # reward and dpo said "preference data ... does not exist"
            assert ferrolm([command, str(base), "--data", str(path), "--out", str(tmp_path / "bad"), *fast]) == 2
            assert f"--data {path} {said}" in capsys.readouterr().err, command


def test_a_prompt_conversation_s_answers_are_context_not_trained(base):
    """TRL's conversational prompt-completion: the completion is trained, the answers inside
    the prompt are not (they were); {"messages"} trains every answer."""
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    talk = [("Who goes there?", "A friend."), ("What friend?", "Thine own.")]
    turns = [{"role": role, "content": text} for pair in talk for role, text in zip(("user", "assistant"), pair)]
    prompt_completion = {"prompt": turns[:3], "completion": [turns[3]]}
    for record, trained in ((prompt_completion, _answer_positions(template, talk)[-len(template.text("Thine own.")) - 1:]),
                            ({"messages": turns}, _answer_positions(template, talk))):
        sft = SFT([record], [record], template, model.block_size, batch_size=1)
        _, targets = sft.batch("train", np.random.default_rng(0))
        assert np.flatnonzero(targets[0] != -100).tolist() == [p - 1 for p in trained], record


def test_grad_accum_pools_answer_tokens_as_one_batch_would(base, tmp_path):
    """Micro-batches with 3 and 60 answer tokens: the step's loss, gradient and evaluation are
    one batch's holding both, not the mean of two means (which weighs a short answer's tokens
    20 times more)."""
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    records = [{"prompt": "Who goes there?", "response": "Ay."}, {"prompt": "Speak.", "response": "I will speak. " * 4}]
    sft = SFT(records, records, template, model.block_size, batch_size=1)
    short, long = (SFT([r], [r], template, model.block_size, 1).batch("train", np.random.default_rng(0)) for r in records)
    width = long[0].shape[1]
    padded = (np.pad(short[0], ((0, 0), (0, width - short[0].shape[1])), constant_values=template.end),
              np.pad(short[1], ((0, 0), (0, width - short[1].shape[1])), constant_values=-100))
    both = (np.concatenate([padded[0], long[0]]), np.concatenate([padded[1], long[1]]))
    counts = [sft.loss_weight(b) for b in (short, long)]
    assert counts[0] <= 5 and counts[1] >= 50 and sft.loss_weight(both) == sum(counts)
    with fl.no_grad():
        means = [sft.loss(model, b, None)[0].item() for b in (short, long, both)]
    assert abs((means[0] + means[1]) / 2 - means[2]) > 0.05  # the old weighting would be far off

    def step(batches, grad_accum, out):
        sequence = iter(batches * 8)
        sft.batch = lambda split, rng: next(sequence)
        fresh = GPT.load(base)
        ChatTemplate.prepare(fresh)
        train(fresh, sft, TrainConfig(max_iters=1, grad_accum=grad_accum, eval_iters=grad_accum, warmup_iters=0,
                                              learning_rate=1e-6, log_interval=1, progress=False), out)
        return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()][-2:]  # the step, its evaluation

    (log, final), (one_log, one_final) = step([short, long], 2, tmp_path / "two"), step([both], 1, tmp_path / "one")
    for key in ("loss", "grad_norm"):
        assert log[key] == pytest.approx(one_log[key], rel=1e-5), key
    assert log["loss"] == pytest.approx(means[2], rel=1e-5)
    for key in ("train_loss", "val_loss"):  # evaluation pools the batches' tokens too
        assert final[key] == pytest.approx(one_final[key], rel=1e-5), key


def test_system_turns_are_trained_on_and_kept_by_a_chat(base, tmp_path, monkeypatch, capsys, repo):
    system = {"role": "system", "content": "Answer as a herald."}
    talk = [{"role": "user", "content": "Who goes there?"}, {"role": "assistant", "content": "A friend."}]
    # A model without the role refuses system turns, naming the way to get it.
    plain = GPT.load(base)
    with pytest.raises(ValueError, match=r"has no system role .*system turns \(`ferrolm sft` adds the role for them; from Python, "
                                         r"ChatTemplate.prepare\(model, system=True\)\)"):
        SFT([{"messages": [system, *talk]}], [{"messages": talk}], ChatTemplate.prepare(plain), plain.block_size, 1)
    # `ferrolm sft` adds it when the data has system turns; the system text is not trained on.
    data = tmp_path / "talk.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [system, *talk]} if i % 2 else {"messages": talk}) for i in range(8)))
    fast = ["--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1", "--no-progress"]
    assert ferrolm(["sft", str(base), "--data", str(data), "--out", str(tmp_path / "sft"), *fast]) == 0
    model = GPT.load(tmp_path / "sft")
    template = ChatTemplate(model.tokenizer)
    assert template.system is not None and model.vocab_size == model.tokenizer.vocab_size
    ids = template.render_conversation([system, *talk])
    assert ids[0] == template.system and ids[len(template.system_ids(system["content"]))] == template.user
    targets = SFT([{"messages": [system, *talk]}], [{"messages": talk}], template, model.block_size, 1).batch(
        "train", np.random.default_rng(0))[1][0]
    assert np.flatnonzero(targets != -100).tolist() == [p - 1 for p in range(len(ids) - len(template.text("A friend.")) - 1,
                                                                             len(ids))]
    # A chat keeps its system turn through restarts and resets; an answer stops where the
    # context is full rather than slide the system turn out.
    chat = model.chat([system], temperature=0.0)
    questions = [(f"Question {c}: what news from the court, my lord?", 30) for c in "abc"]
    for message, n in questions:
        before = chat._generation
        answer = chat.send(message, n)
        assert chat._generation is not before and not chat._generation.windowed  # each starts again here: ...
        prompt = template.prompt_ids([system, {"role": "user", "content": message}])
        assert len(prompt) + n > model.block_size
        assert answer == _greedy_answer(model, template, prompt, model.block_size - len(prompt))  # ... from both
    assert chat.messages[0] == system
    chat.reset()
    assert chat.messages == [system]
    with pytest.raises(ValueError, match="and the system turn's"):
        chat.send("x" * (model.block_size - 3))
    with pytest.raises(ValueError, match="the system turn takes 50 tokens, more than half"):
        model.chat([{"role": "system", "content": "x" * 49}])
    # Preference data with system turns trains a model that has the role, and is refused by one
    # that has not (reward, DPO and PPO do not add it: it is learnt in fine-tuning).
    prefs = tmp_path / "prefs.jsonl"
    record = {"chosen": [system, *talk], "rejected": [system, talk[0], {"role": "assistant", "content": "None."}]}
    prefs.write_text("\n".join(json.dumps(record) for _ in range(4)) + "\n")
    assert ferrolm(["dpo", str(tmp_path / "sft"), "--data", str(prefs), "--out", str(tmp_path / "dpo"), *fast]) == 0
    assert ferrolm(["dpo", str(base), "--data", str(prefs), "--out", str(tmp_path / "dpo-plain"), *fast]) == 2
    assert "prefs.jsonl line " in capsys.readouterr().err
    # From the command line; a model without the role says so.
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("Who goes there?\n"))
    assert ferrolm(["chat", str(tmp_path / "sft"), "--system", system["content"], "--temperature", "0",
                    "--max-new-tokens", "12"]) == 0
    expected = _greedy_answer(model, template, template.prompt_ids([system, talk[0]]), 12)
    assert capsys.readouterr().out == expected + "\n"
    greedy = ["--temperature", "0", "--max-new-tokens", "12"]
    assert ferrolm(["generate", str(tmp_path / "sft"), "--system", system["content"], "--prompt", talk[0]["content"],
                    *greedy]) == 0
    assert capsys.readouterr().out == expected + "\n"
    plain.save(tmp_path / "plain")  # a chat model without the role
    for command in (["chat", str(tmp_path / "plain")], ["generate", str(tmp_path / "plain")]):
        assert ferrolm([*command, "--system", "x"]) == 2
        err = capsys.readouterr().err
        assert "--system: " in err and "has no system role" in err, err
    assert ferrolm(["generate", str(tmp_path / "sft"), "--system", "x", "--raw"]) == 2
    assert "leave out --raw" in capsys.readouterr().err
    # `ferrolm generate` and Rust's example answer a system turn, and a whole conversation, as the API does.
    conversation = [system, *talk, {"role": "user", "content": "What friend?"}]
    (tmp_path / "talk.json").write_text(json.dumps({"messages": conversation}))

    def python(*flags):
        try:
            code = ferrolm(["generate", str(tmp_path / "sft"), *greedy, *flags])
        except SystemExit as e:  # argparse's refusals
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    def rust(*flags):
        out = subprocess.run(["cargo", "run", "--release", "-q", "-p", "ferrolm", "--example", "generate", "--",
                              str(tmp_path / "sft"), *greedy, *flags], cwd=repo, capture_output=True, text=True,
                             timeout=900)
        return out.returncode, out.stdout, out.stderr

    for run in (python, rust):
        for flags, asked in ((["--system", system["content"], "--prompt", talk[0]["content"]], [system, talk[0]]),
                             (["--conversation", str(tmp_path / "talk.json")], conversation)):
            code, out, err = run(*flags)
            assert code == 0, err
            assert out == model.generate(asked, 12, temperature=0, chat=True) + "\n", (run, flags)
    (tmp_path / "answered.json").write_text("\ufeff" + json.dumps([system, *talk]))  # a byte-order mark is dropped
    (tmp_path / "talk.json").write_text(json.dumps([talk[0], {"role": "judge", "content": "x"}]))
    for flags, error in ((["--conversation", str(tmp_path / "talk.json")], r"talk.json: (turn|message) 1"),
                         (["--conversation", str(tmp_path / "answered.json")], r"answered.json: .*ends with the user turn"),
                         (["--conversation", str(tmp_path / "talk.json"), "--prompt", "x"], "not both|not allowed with"),
                         (["--conversation", str(tmp_path / "talk.json"), "--system", "x"], "in the file, not --system"),
                         (["--system", "x", "--raw"], "--raw.* plain text")):
        for run in (python, rust):
            code, _, err = run(*flags)
            assert code == 2 and re.search(error, err), (run, err)
    assert "judge" in rust("--conversation", str(tmp_path / "talk.json"))[2]


def test_preferences_on_conversations_score_only_the_last_answer(base, tmp_path, capsys):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    history = [{"role": "user", "content": "Who goes there?"}, {"role": "assistant", "content": "A friend."},
               {"role": "user", "content": "What friend?"}]
    record = {"prompt": history, "chosen": "Thine own.", "rejected": "None, sir."}
    dpo = DPO(model, [record], [record], template, model.block_size, 1)
    chosen, rejected = dpo.data["train"][0]
    prompt = template.render_conversation(history[:2]) + template.prompt_ids("What friend?")
    assert chosen == prompt + template.text("Thine own.") + [template.end]
    assert rejected == prompt + template.text("None, sir.") + [template.end]
    # DPO's log-probability of a side is its last answer's (and <|end|>'s), not the earlier one's.
    expected = [model.score(ids)[len(prompt) - 1 :].sum() for ids in (chosen, rejected)]
    assert np.allclose(dpo._logprobs(model, dpo.data["train"])[0], expected, rtol=1e-5)
    rm = RewardModel(model)
    assert rm.score(history, "Thine own.") == pytest.approx(float(rm.score_ids([chosen])[0]), rel=1e-5)
    # From the command line, in TRL's conversational form with the prompt implicit.
    data = tmp_path / "prefs.jsonl"
    implicit = {"chosen": [*history, {"role": "assistant", "content": "Thine own."}],
                "rejected": [*history, {"role": "assistant", "content": "None, sir."}]}
    data.write_text("\n".join(json.dumps(implicit) for _ in range(6)) + "\n")
    fast = ["--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1", "--no-progress"]
    assert ferrolm(["dpo", str(base), "--data", str(data), "--out", str(tmp_path / "dpo"), *fast]) == 0
    assert "dpo: 5 train / 1 val pairs" in capsys.readouterr().out
    # The Python objectives read the same forms, and name a bad record.
    assert DPO(model, [implicit], [implicit], template, model.block_size, 1).data == dpo.data
    with pytest.raises(ValueError, match="a record: no 'chosen' field"):
        DPO(model, [{"prompt": history}], [record], template, model.block_size, 1)
    for beta in (float("nan"), float("inf"), 0.0):  # NaN passed, and the first step said "training diverged"
        with pytest.raises(ValueError, match="beta must be > 0 and finite"):
            DPO(model, [record], [record], template, model.block_size, 1, beta=beta)
    # PPO samples answers to conversations too: its prompts end with the user turn to answer.
    from ferrolm.label.prompts import read_prompts
    from ferrolm.train.ppo import PPO, PolicyWithValue

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": history}) + "\n" + json.dumps({"prompt": "Stand!"}) + "\n")
    read = read_prompts(prompts, skip_blank=True)
    assert read == [history, "Stand!"]
    # A prompt the policy cannot read is refused with its line, before any model is trained.
    prompts.write_text(json.dumps({"prompt": "Stand!"}) + "\n\n" + json.dumps({"prompt": [{"role": "user", "content": "7"}]}))
    assert ferrolm(["ppo", str(base), "--reward-model", str(tmp_path / "none"), "--prompts", str(prompts),
                    "--out", str(tmp_path / "ppo")]) == 2
    assert "prompts.jsonl line 3: " in capsys.readouterr().err
    prompts.write_text(json.dumps({"prompt": [{"role": "user", "content": " "}]}) + "\n")
    with pytest.raises(ValueError, match="line 1: empty prompt"):
        read_prompts(prompts)
    ppo = PPO(PolicyWithValue(model), model.copy(), RewardModel(model.copy()), read, read, template, rollout_size=2,
              minibatch_size=2, max_new_tokens=8)
    assert ppo.prompts["train"] == [prompt, template.prompt_ids("Stand!")]
    with pytest.raises(ValueError, match="train prompt 1: .*ends with the user turn"):  # from Python: its index
        PPO(PolicyWithValue(model), model.copy(), RewardModel(model.copy()), ["Stand!", [{"role": "system", "content": "x"}]],
            read, template, rollout_size=2, minibatch_size=2, max_new_tokens=8)


def test_reward_is_read_at_the_last_real_token(base):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    rm = RewardModel(model)
    a = template.render("Who goes there?", "A friend.")
    b = template.render("Who goes there?", "A friend to this ground, and liegemen to the Dane.")
    ids, lengths = pad_right([a, b], template.end)
    with fl.no_grad():
        batched = rm(ids, lengths).numpy()
        alone = rm(np.array([a]), np.array([len(a)])).numpy()
        # Changing what sits in the padding must not change the reward.
        ids2 = ids.copy()
        ids2[0, len(a):] = 5
        repadded = rm(ids2, lengths).numpy()
    np.testing.assert_allclose(batched[0], alone[0], rtol=1e-5)
    np.testing.assert_allclose(repadded, batched, rtol=1e-6)


def test_reward_model_learns_preferences_and_dpo_improves(base, tmp_path):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    _, prefs = chat_data(160)
    rm = RewardModel(model.copy())
    objective = Preferences(prefs[:120], prefs[120:], template, model.block_size, batch_size=16)
    before = objective.accuracy(rm)
    train(rm, objective, TrainConfig(max_iters=60, eval_interval=1000, eval_iters=2, learning_rate=1e-3, warmup_iters=5,
          lr_decay_iters=60, weight_decay=0.0, progress=False), tmp_path / "rm")
    assert objective.accuracy(rm) >= 0.9 > before
    policy = model.copy()
    dpo = DPO(model.copy(), prefs[:120], prefs[120:], template, model.block_size, batch_size=16, beta=0.5)
    assert dpo.accuracy(policy) == 0.0  # policy == reference: every implicit reward margin is exactly 0
    train(policy, dpo, TrainConfig(max_iters=40, eval_interval=1000, eval_iters=2, learning_rate=3e-4, warmup_iters=5,
          lr_decay_iters=40, weight_decay=0.0, progress=False), tmp_path / "dpo")
    assert dpo.accuracy(policy) >= 0.9
    # The logged implicit rewards (TRL's rewards/chosen and rewards/rejected) are β × the batch's log-ratios.
    batch = dpo.batch("val", np.random.default_rng(5))
    picked = np.random.default_rng(5).integers(0, len(dpo.data["val"]), size=dpo.batch_size)
    _, extra = dpo.loss(policy, batch, dropout_seed=0)
    ratios = dpo.log_ratios(policy)[picked]
    assert extra["chosen_reward"] == pytest.approx(0.5 * ratios[:, 0].mean(), rel=1e-4, abs=1e-4)
    assert extra["rejected_reward"] == pytest.approx(0.5 * ratios[:, 1].mean(), rel=1e-4, abs=1e-4)
    assert extra["margin"] == pytest.approx(extra["chosen_reward"] - extra["rejected_reward"], rel=1e-4, abs=1e-4)


def test_cli_end_to_end_and_ppo_runs(base, tmp_path, capsys):
    pairs, prefs = chat_data(60)
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    (tmp_path / "prefs.jsonl").write_text("\n".join(json.dumps(p) for p in prefs))
    (tmp_path / "prompts.txt").write_text("\n".join(p["prompt"] for p in pairs[:20]))
    fast = ["--max-iters", "10", "--eval-interval", "5", "--eval-iters", "1", "--no-progress"]
    assert ferrolm(["sft", str(base), "--data", str(tmp_path / "sft.jsonl"), "--out", str(tmp_path / "sft"), *fast]) == 0
    assert ferrolm(["reward", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "rm"), *fast]) == 0
    assert (tmp_path / "rm" / "reward_head.safetensors").exists()
    # The saved head is the trained one, not a fresh initialisation, and a single score equals
    # the same sequence scored inside a padded batch.
    rm = RewardModel.load(tmp_path / "rm")
    assert not np.allclose(rm.head.weight.numpy(), RewardModel(rm.gpt).head.weight.numpy())
    # A plain model given as the reward model is said to be one (its missing chat tokens were said first).
    with pytest.raises(FileNotFoundError, match=f"{base} is not a reward model: it has no reward_head.safetensors"):
        RewardModel.load(base)
    # load_model gives the backbone, and says so (the head was dropped without a word); so does the command line.
    said = "holds a RewardModel: only its backbone is loaded, without the head"
    with pytest.warns(UserWarning, match=said):
        assert isinstance(fl.load_model(tmp_path / "rm"), GPT)
    with pytest.warns(UserWarning, match=said):
        assert ferrolm(["generate", str(tmp_path / "rm"), "--max-new-tokens", "2", "--num-samples", "1"]) == 0
    rows = [rm.template.render("Who goes there?", "Nay, answer me?"), rm.template.render("Stand, ho!", "A friend.")]
    assert rm.score("Who goes there?", "Nay, answer me?") == pytest.approx(float(rm.score_ids(rows)[0]), rel=1e-5)
    with pytest.raises(ValueError, match="row 1 is empty"):  # it was given row 0's reward
        rm.score_ids([rows[0], []])
    assert rm.score_ids([]).shape == (0,)
    assert ferrolm(["dpo", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "dpo"), *fast]) == 0
    assert "log-probability against the reference: chosen " in capsys.readouterr().out  # TRL's rewards/chosen, in nats
    assert {"val_chosen_reward", "val_rejected_reward"} <= set(json.loads((tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()[-1]))
    # A reward model given where a policy is trained is said to lose its head; `reward` trains its head on.
    with pytest.warns(UserWarning, match="holds a RewardModel: only its backbone is loaded"):
        assert ferrolm(["dpo", str(tmp_path / "rm"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "dpo-rm"),
                        "--max-iters", "0"]) == 0
    assert ferrolm(["reward", str(tmp_path / "rm"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "rm-on"),
                    "--max-iters", "0"]) == 0
    assert "is a reward model: its head trains on" in capsys.readouterr().err
    np.testing.assert_array_equal(RewardModel.load(tmp_path / "rm-on").head.weight.numpy(), rm.head.weight.numpy())
    # Held-out records that are also training records (a file holding each one four times) are counted.
    (tmp_path / "prefs4.jsonl").write_text("\n".join([(tmp_path / "prefs.jsonl").read_text().strip()] * 4))
    assert ferrolm(["reward", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs4.jsonl"), "--out", str(tmp_path / "rm4"),
                    "--max-iters", "0"]) == 0
    assert re.search(r"\b[1-9]\d* of the \d+ held-out pairs are also training pairs", capsys.readouterr().err)
    assert ferrolm(["reward", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "rm1"),
                    "--max-iters", "0"]) == 0
    assert "held-out pairs are also" not in capsys.readouterr().err  # distinct pairs: nothing said
    # A model saved over the reward model's weights leaves its head behind: refused, not scored with.
    shutil.copytree(tmp_path / "rm", tmp_path / "rm-over")
    GPT.load(tmp_path / "dpo").save(tmp_path / "rm-over")
    with pytest.raises(ValueError, match="model.safetensors is not the one its reward_head.safetensors was saved with"):
        RewardModel.load(tmp_path / "rm-over")
    with warnings.catch_warnings():  # a head left over from other weights is not this model's: no warning of it
        warnings.simplefilter("error")
        fl.load_model(tmp_path / "rm-over")
    RewardModel.load(tmp_path / "rm").save(tmp_path / "rm-over")  # the two saved together again: consistent
    assert RewardModel.load(tmp_path / "rm-over").score("a", "b") == pytest.approx(rm.score("a", "b"), rel=1e-5)
    shutil.copytree(tmp_path / "sft", tmp_path / "sft-then-rm")  # into another objective's run: the digest vouches
    rm.save(tmp_path / "sft-then-rm")
    assert RewardModel.load(tmp_path / "sft-then-rm").score("a", "b") == pytest.approx(rm.score("a", "b"), rel=1e-5)
    # A head saved before heads recorded the digest: the run's checkpoint vouches for it, or not.
    old = tmp_path / "rm-old"
    shutil.copytree(tmp_path / "rm", old)
    head, _ = fl.load_safetensors(str(old / "reward_head.safetensors"))
    fl.save_safetensors(str(old / "reward_head.safetensors"), head)
    assert RewardModel.load(old).score("a", "b") == pytest.approx(rm.score("a", "b"), rel=1e-5)
    GPT.load(tmp_path / "dpo").save(old)
    with pytest.raises(ValueError, match="is not the one its `reward` run saved with its reward_head.safetensors"):
        RewardModel.load(old)
    # Writing over the starting model is refused for every command, not just those that keep it as a reference.
    assert ferrolm(["reward", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "sft"), *fast]) == 2
    assert "would overwrite the model it starts from" in capsys.readouterr().err
    assert ferrolm(["ppo", str(tmp_path / "sft"), "--reward-model", str(tmp_path / "rm"), "--prompts", str(tmp_path / "prompts.txt"),
                    "--out", str(tmp_path / "ppo"), "--rollout-size", "8", "--max-new-tokens", "12", "--ppo-epochs", "2",
                    "--batch-size", "4", "--max-iters", "8", "--eval-interval", "4", "--no-progress"]) == 0
    records = [json.loads(l) for l in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    assert all(k in trained[-1] for k in ("reward", "kl", "entropy", "clip_fraction", "rollout_tokens_per_sec", "generation_share"))
    assert any("val_reward" in r for r in records)
    assert (tmp_path / "ppo" / "value_head.safetensors").exists()
    GPT.load(tmp_path / "ppo").generate("Who goes there?", 5)
    # A chat model answers a prompt as a user turn and stops at <|end|>, which it does not print;
    # the CLI does so by default, and --raw continues the text instead.
    sft = GPT.load(tmp_path / "sft")
    assert sft.is_chat and not GPT.load(base).is_chat
    end = sft.tokenizer.token_to_id("<|end|>")
    for seed in range(3):
        answer = sft.generate("Who goes there?", 40, temperature=0.8, seed=seed, chat=True)
        ids = sft.core.generation([sft.prompt_ids("Who goes there?", chat=True)], temperature=0.8, seed=seed,
                                  stop_tokens=[end]).run(40)[0]
        assert "<|end|>" not in answer and answer == sft.tokenizer.decode([i for i in ids if i != end])
    with pytest.raises(ValueError, match="needs a chat model"):
        GPT.load(base).generate("Who goes there?", 5, chat=True)
    capsys.readouterr()
    assert ferrolm(["generate", str(tmp_path / "sft"), "--prompt", "Who goes there?", "--max-new-tokens", "20", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "chat model" in err and out == sft.generate("Who goes there?", 20, temperature=0.8, top_k=200, seed=1, chat=True) + "\n"
    # A prompt file's last line end is not part of the message (it changed the answer).
    (tmp_path / "question.txt").write_text("Who goes there?\n")
    assert ferrolm(["generate", str(tmp_path / "sft"), "--prompt-file", str(tmp_path / "question.txt"),
                    "--max-new-tokens", "20", "--seed", "1"]) == 0
    assert capsys.readouterr()[0] == out
    assert ferrolm(["generate", str(tmp_path / "sft"), "--prompt", "Who goes there?", "--max-new-tokens", "20", "--raw"]) == 0
    out, err = capsys.readouterr()
    assert "chat model" not in err and out.startswith("Who goes there?")


def _greedy_answer(model, template, ids, max_new_tokens):
    """A chat answer generated from scratch after `ids`: what a conversation's cache must give."""
    out = model.core.generation([ids], temperature=0.0, stop_tokens=list(template.turn_ends)).run(max_new_tokens)[0]
    return template.decode_response(out)


def _check_conversation(model, template, chat, turns):
    """Sends (message, max_new_tokens) `turns` one by one; each (greedy) answer must be a fresh generation's from what
    the conversation's cache should hold: the previous turns after it, or on a restart the
    latest whole exchanges that fit with the message, leaving min(max_new_tokens, half the
    context) free. Returns, per restart, how many exchanges it kept, and how many answers ran
    past the context."""
    block, held, previous, restarts, slid = model.block_size, None, None, [], 0
    for message, max_new_tokens in turns:
        before, windowed = chat._generation, chat._generation is not None and chat._generation.windowed
        answer = chat.send(message, max_new_tokens)
        turn = template.prompt_ids(message)
        slid += windowed
        if chat._generation is before:  # the cache went on: nothing before the message ran again
            assert not windowed
            held = held + template.text(previous) + [template.end] + turn
        else:
            earlier = chat.messages[:-2]
            kept = [template.render_conversation(earlier[k:]) + turn for k in range(0, len(earlier) + 1, 2)]
            held = next((ids for ids in kept if len(ids) <= block - min(max_new_tokens, block // 2)), kept[-1])
            restarts.append(len(earlier) // 2 - kept.index(held))
        assert answer == _greedy_answer(model, template, held, max_new_tokens)
        previous = answer
    return restarts, slid


def test_a_chat_keeps_its_turns_in_the_cache_and_answers_as_a_fresh_generation(base):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    chat = model.chat(temperature=0.0)
    first = chat.send("Who goes there?", 20)
    assert first == _greedy_answer(model, template, template.prompt_ids("Who goes there?"), 20)
    cache = chat._generation
    second = chat.send("Stand, ho!", 20)
    assert chat._generation is cache  # the first exchange was not run through the model again
    history = template.render("Who goes there?", first) + template.prompt_ids("Stand, ho!")
    assert second == _greedy_answer(model, template, history, 20)
    assert chat.messages == [{"role": "user", "content": "Who goes there?"}, {"role": "assistant", "content": first},
                             {"role": "user", "content": "Stand, ho!"}, {"role": "assistant", "content": second}]
    # Short answers (10 tokens of a context of 96): some turns go on in the cache, some start
    # again, keeping earlier exchanges. Long ones (60) run past the context: the next turn starts
    # again from the messages, not from the window the cache slid to.
    short = [f"Question {c}: what news?" for c in "abcdefgh"]
    restarts, slid = _check_conversation(model, template, model.chat(temperature=0.0), [(m, 10) for m in short])
    assert 2 < len(restarts) < len(short) and restarts[0] == 0 and min(restarts[1:]) == 1 and not slid
    long = [(f"Question {c}: what news from the court, my lord?", 60) for c in "abcd"]
    restarts, slid = _check_conversation(model, template, model.chat(temperature=0.0), long + [("Hark!", 5)])
    assert restarts == [0, 0, 0, 0, 0] and slid == 4  # after a slide even a short turn that fits starts again


def test_a_chat_answer_cut_short_is_kept_and_the_next_turn_starts_from_the_messages(base, monkeypatch):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    chat = model.chat(temperature=0.0)
    whole = "".join(chat.send("Who goes there?", 20, stream=True))
    assert whole == chat.messages[1]["content"] == model.chat(temperature=0.0).send("Who goes there?", 20)
    # A stream read in part, then left: the answer keeps what was read, and the next message
    # starts again from the messages (the cache holds tokens the text does not show yet).
    pieces = chat.send("Hark!", 20, stream=True)
    read = next(pieces)
    later = chat.send("Speak.", 5)
    assert list(pieces) == []  # a later message has the cache: the old stream ends
    assert chat.messages[3] == {"role": "assistant", "content": read}
    assert later == _greedy_answer(model, template, template.render_conversation(chat.messages[:4])
                                   + template.prompt_ids("Speak."), 5)
    # Left unread, the same.
    unread = chat.send("Who art thou?", 20, stream=True)
    chat.send("Answer me.", 5)
    assert list(unread) == [] and chat.messages[7]["content"] == ""
    # Ctrl-C after a token went through the model but before its text came: the cache holds
    # more than the messages, so the next turn starts again from them.
    def interrupted(session, *_):
        session.step()
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("ferrolm.gpt._stream", interrupted)
        with pytest.raises(KeyboardInterrupt):
            chat.send("Hark!", 20)
    cut = chat._generation
    assert chat.messages[-1]["content"] == ""
    answer = chat.send("Speak.", 5)
    earlier = chat.messages[:-2]  # the latest whole exchanges that fit with the message, leaving 5 free
    kept = (template.render_conversation(earlier[k:]) + template.prompt_ids("Speak.") for k in range(0, len(earlier) + 1, 2))
    assert chat._generation is not cut and answer == _greedy_answer(model, template, next(i for i in kept if len(i) <= 91), 5)
    # Seeds: a seeded chat after reset() answers as a new one.
    sampled = model.chat(temperature=0.8, seed=3)
    first = sampled.send("Who goes there?", 20)
    sampled.send("Stand, ho!", 20)
    sampled.reset()
    assert sampled.messages == [] and sampled.send("Who goes there?", 20) == first
    # The seed of a chat's k-th generation is seed + k, wrapping past 2^64.
    wrapping = model.chat(temperature=0.8, seed=2**64 - 1)
    assert wrapping.send("Hail!", 3) == model.generate("Hail!", 3, temperature=0.8, seed=2**64 - 1, chat=True)
    wrapping._generation = None  # as after an answer cut short: the next message starts a generation
    history = wrapping.messages + [{"role": "user", "content": "Hail!"}]
    assert wrapping.send("Hail!", 3) == model.generate(history, 3, temperature=0.8, seed=0, chat=True)


def test_a_chat_answer_ends_at_a_stop_string_and_the_next_turn_starts_from_the_messages(base):
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    whole = model.chat(temperature=0.0).send("Who goes there?", 20)
    stop = whole[4:6]  # two characters inside the answer: it must end before their first occurrence
    assert len(stop) == 2
    chat = model.chat(temperature=0.0)
    answer = chat.send("Who goes there?", 20, stop=[stop, "never said"])
    assert answer == whole[: whole.index(stop)] == model.generate("Who goes there?", 20, temperature=0.0, stop=stop,
                                                                   chat=True)
    assert chat.messages[1]["content"] == answer
    cache = chat._generation
    later = chat.send("Speak.", 5)
    assert chat._generation is not cache  # the cache held the stop string's tokens: started again from the messages
    assert later == _greedy_answer(model, template, template.render_conversation(chat.messages[:2])
                                   + template.prompt_ids("Speak."), 5)
    # A stop string never reached: the answer ends as without it, and the next turn goes on in the cache.
    cache = chat._generation
    assert chat.send("Hark!", 5, stop="never said") == model.chat(chat.messages[:4], temperature=0.0).send("Hark!", 5)
    chat.send("Speak again.", 5)
    assert chat._generation is cache
    # Streamed, the same text.
    assert "".join(model.chat(temperature=0.0).send("Who goes there?", 20, stop=stop, stream=True)) == answer
    # A stop string that is not one is refused before the conversation changes.
    before = chat.messages
    for bad in ([5], ["\ud800"]):
        with pytest.raises((TypeError, ValueError, UnicodeEncodeError)):
            chat.send("Hark!", 5, stop=bad)
        assert chat.messages == before
    # A stream from before reset() ends, even once as many messages were sent again (a fresh
    # chat: its first stream and the first message after the reset had the same turn number).
    fresh = model.chat(temperature=0.0)
    old = fresh.send("Hark!", 20, stream=True)
    next(old)
    fresh.reset()
    fresh.send("Who goes there?", 5)
    assert list(old) == [] and len(fresh.messages) == 2


def test_a_chat_refuses_what_it_cannot_continue(base):
    model = GPT.load(base)
    with pytest.raises(ValueError, match="needs a chat model"):
        model.chat()
    ChatTemplate.prepare(model)
    with pytest.raises(ValueError, match="message 0: this chat model has no system role"):
        model.chat([{"role": "system", "content": "Be brief."}])
    with pytest.raises(ValueError, match="should be 'user'"):
        model.chat([{"role": "assistant", "content": "Hail."}])
    with pytest.raises(ValueError, match="ends with a user turn"):
        model.chat([{"role": "user", "content": "Hail!"}])
    with pytest.raises(ValueError, match="message 1: .*'7'"):  # a history the model cannot read: now, not at each send
        model.chat([{"role": "user", "content": "Hail!"}, {"role": "assistant", "content": "Hail 7"}])
    with pytest.raises(TypeError, match="mapping"):
        model.chat(["Hail!", "Hail."])
    chat = model.chat()
    with pytest.raises(ValueError, match="more than the model's context of 96"):
        chat.send("x" * 95)
    with pytest.raises(TypeError, match="a message is a str"):
        chat.send(["Hail!"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        chat.send("Hail!", -1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        chat.send("Hail!", None)
    assert chat.messages == []
    for bad, name in [({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature"),
                      ({"repetition_penalty": 0.0}, "repetition_penalty")]:
        with pytest.raises(ValueError, match=name):  # at once, not at the first message
            model.chat(**bad)
    # A conversation may be any sequence of turns, a tuple too.
    turns = ({"role": "user", "content": "Hail!"},)
    assert model.generate(turns, 3, temperature=0.0, chat=True) == model.generate("Hail!", 3, temperature=0.0, chat=True)


def test_the_chat_command_answers_each_line(base, tmp_path, monkeypatch, capsys):
    model = GPT.load(base)
    ChatTemplate.prepare(model)
    model.save(tmp_path / "chat")
    monkeypatch.setattr("sys.stdin", io.StringIO("Who goes there?\n\n/reset\nStand, ho!\n"))
    assert ferrolm(["chat", str(tmp_path / "chat"), "--max-new-tokens", "15", "--seed", "3"]) == 0
    expected = model.chat(temperature=0.8, top_k=200, seed=3)
    first = expected.send("Who goes there?", 15)
    expected.reset()
    assert capsys.readouterr().out == first + "\n" + expected.send("Stand, ho!", 15) + "\n"
    # A message the model cannot take is reported and the chat goes on (exit status 2 for
    # piped input); /help lists the commands, /exit ends the chat.
    lines = f"Stand 7!\n/help\n{'x' * 200}\n".encode() + b"Who \xff\n" + b"Who goes there?\n/exit\nHo!\n"
    # A byte that is not UTF-8, from a stream that decodes strictly (as a UTF-8 desktop's does).
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines), encoding="utf-8", errors="strict"))
    assert ferrolm(["chat", str(tmp_path / "chat"), "--max-new-tokens", "15", "--seed", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == first + "\n"  # the conversation went on as if the refused messages were never sent
    assert "character '7'" in err and "/reset forgets the conversation" in err and "more than the model's context" in err
    assert "this message is not UTF-8 text" in err  # it was "not valid Unicode (it contains an unpaired surrogate"
    assert ferrolm(["chat", str(base)]) == 2
    assert "is not a chat model" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("Who goes there?\n"))
    stop = first[3:5]
    assert ferrolm(["chat", str(tmp_path / "chat"), "--max-new-tokens", "15", "--seed", "3", "--stop", stop]) == 0
    assert capsys.readouterr().out == first[: first.index(stop)] + "\n"
    # generate() takes a conversation as a chat prompt too.
    history = [{"role": "user", "content": "Who goes there?"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "Stand, ho!"}]
    conversation = model.chat(history[:2], temperature=0.0)
    assert model.generate(history, 15, temperature=0.0, chat=True) == conversation.send("Stand, ho!", 15)
    with pytest.raises(ValueError, match="pass chat=True"):
        model.generate(history, 15)


def test_the_rust_chat_template_renders_conversations_as_this_one():
    # Rendered by the core (ferrolm::chat), whose own test asserts the same ids for the same
    # conversation and tokenizer: the layout both languages were trained and tested on.
    tok = fl.Tokenizer.train_from_iterator(["abc xyz<|end>"], kind="char", vocab_size=100)
    tok.add_special_tokens(["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"])
    template = ChatTemplate(tok)
    turns = [{"role": "system", "content": "x"}, {"role": "user", "content": "ab"},
             {"role": "assistant", "content": "c"}, {"role": "user", "content": "<|end|>"}]
    assert template.prompt_ids(turns) == [16, 9, 13, 3, 4, 14, 5, 15, 13, 1, 12, 7, 8, 6, 12, 2, 14]
    assert template.turn_ends == (15, 13, 14, 16)


def test_rust_answers_a_chat_model_s_prompt_as_python_does(base, tmp_path, repo):
    # Fine-tuned to answer "A friend." and end: the answer must stop at <|end|> in Rust too.
    data = tmp_path / "talk.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p, "response": "A friend."}) for p in ("Who goes there?", "Stand!")))
    assert ferrolm(["sft", str(base), "--data", str(data), "--out", str(tmp_path / "sft"), "--max-iters", "60",
                    "--learning-rate", "3e-3", "--warmup-iters", "5", "--eval-interval", "60", "--eval-iters", "1",
                    "--no-progress"]) == 0
    model = GPT.load(tmp_path / "sft")
    rust = lambda prompt, *flags: subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "ferrolm", "--example", "generate", "--", str(tmp_path / "sft"),
         "--prompt", prompt, "--max-new-tokens", "40", "--temperature", "0", *flags], cwd=repo, capture_output=True,
        text=True, timeout=900)
    for prompt, flags in (("Who goes there?", []), ("Who goes there?", ["--raw"]), ("Stand, ho!", ["--stop", "end"])):
        chat = not flags or flags[0] != "--raw"
        expected = model.generate(prompt, 40, temperature=0, chat=chat, stop=flags[1:] or None)
        out = rust(prompt, *flags)
        assert out.returncode == 0, out.stderr
        assert out.stdout == ("" if chat else prompt) + expected + "\n", flags
        assert ("(chat model: the prompt is a user turn" in out.stderr) == chat
    # Refused as `ferrolm generate` refuses them, before the chat note.
    for prompt, error in (("", "--prompt is empty"), ("x" * model.block_size, "context")):
        out = rust(prompt)
        assert out.returncode == 2 and error in out.stderr and "chat model" not in out.stderr, out.stderr
    assert model.generate("Who goes there?", 40, temperature=0, chat=True) == "A friend."  # ended at <|end|>


# ---------------------------------------------------------------- bad input


def test_bad_input_names_the_line(base, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    with pytest.raises(ValueError, match=" line 2: invalid JSON"):
        from ferrolm.jsonl import read_records

        read_records(bad, ("prompt", "response"))
    bad.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "a", "response": "   "}\n')
    assert ferrolm(["sft", str(base), "--data", str(bad), "--out", str(tmp_path / "o"), "--max-iters", "1"]) == 2
    with pytest.raises(ValueError, match=" line 3: field 'response' is empty"):
        read_records(bad, ("prompt", "response"))
    bad.write_text('{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(ValueError, match=" line 1: no 'rejected' field"):
        read_records(bad, ("prompt", "chosen", "rejected"))
    bad.write_bytes(b'{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match="UTF-8"):
        read_records(bad, ("prompt",))
    # A prompt longer than the context: a clear error naming the line, or skipped and counted.
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    long = [{"prompt": "x" * 200, "response": "y", "_where": "d.jsonl line 7"},
            {"prompt": "a", "response": "b", "_where": "d.jsonl line 8"}]
    with pytest.raises(ValueError, match="d.jsonl line 7: .* do not fit the context"):
        SFT(long, long, template, model.block_size, 2)
    sft = SFT(long, long, template, model.block_size, 2, skip_long=True)
    assert sft.counts["train"] == {"skipped_too_long": 1} and len(sft.data["train"]) == 1
    # A reward model reads a sequence without a shifted target: its count is the sequence's (it said one more).
    from ferrolm.train.reward import RewardModel

    answer = "y" * (model.block_size - len(template.render("a", "")) + 1)
    with pytest.raises(ValueError, match=f"score: {model.block_size + 1} tokens do not fit the context of "
                                         f"{model.block_size}$"):
        RewardModel(model).score("a", answer)
    RewardModel(model).score("a", answer[:-1])  # exactly the context


def test_ppo_refuses_a_reward_model_that_reads_another_tokenizer(base):
    from ferrolm.train.ppo import PPO, PolicyWithValue

    policy = GPT.load(base)
    template = ChatTemplate.prepare(policy)
    bpe = fl.Tokenizer.train_from_iterator([BUNDLED_CORPUS.read_text()[:50_000]], kind="bpe", vocab_size=300)
    other = GPT.create(vocab_size=bpe.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=16, tokenizer=bpe)
    ChatTemplate.prepare(other)
    with pytest.raises(ValueError, match="different tokenizer"):
        PPO(PolicyWithValue(policy), policy.copy(), RewardModel(other), ["Who goes there?"], ["Stand, ho!"], template)
    # One fine-tuned on system turns has a token more: the message names it.
    with_system = policy.copy()
    ChatTemplate.prepare(with_system, system=True)
    with pytest.raises(ValueError, match=r"the reward model reads ids with a different tokenizer than the one the data "
                                         r"is encoded with \(it has '<\|system\|>', which the data's tokenizer does not\)"):
        PPO(PolicyWithValue(policy), policy.copy(), RewardModel(with_system), ["Who goes there?"], ["Stand, ho!"],
            template)
    # The policy's own tokenizer is accepted.
    PPO(PolicyWithValue(policy), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"], ["Stand, ho!"], template)
    # A reward model on the policy's own weights would move with it; counts the CLI refuses are refused here too.
    with pytest.raises(ValueError, match="reward model shares its weights with the policy"):
        PPO(PolicyWithValue(policy), policy.copy(), RewardModel(policy), ["Who goes there?"], ["Stand, ho!"], template)
    for bad in ({"ppo_epochs": 0}, {"minibatch_size": 0}, {"max_new_tokens": 0}, {"rollout_size": -8}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive integer"):
            PPO(PolicyWithValue(policy), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"], ["Stand, ho!"],
                template, **bad)


def test_post_training_resumes_exactly(base, tmp_path, capsys):
    """A run stopped and resumed with --resume logs the uninterrupted run's losses: SFT, and
    PPO stopped in the middle of a rollout (its remaining minibatches, KL controller and score
    statistics are part of the checkpoint)."""
    pairs, prefs = chat_data(60)
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    (tmp_path / "prefs.jsonl").write_text("\n".join(json.dumps(p) for p in prefs))
    (tmp_path / "prompts.txt").write_text("\n".join(p["prompt"] for p in pairs[:20]))
    quiet = ["--eval-interval", "100", "--eval-iters", "1", "--log-interval", "1", "--no-progress"]

    def logged(out, keys=("loss",)):
        records = [json.loads(l) for l in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], *(r[k] for k in keys)) for r in records if "loss" in r]

    sft = ["sft", str(base), "--data", str(tmp_path / "sft.jsonl"), *quiet]
    assert ferrolm([*sft, "--out", str(tmp_path / "sft"), "--max-iters", "6"]) == 0
    shutil.copytree(base, tmp_path / "start")  # gone before the resume, which needs only --out
    sft = ["sft", str(tmp_path / "start"), "--data", str(tmp_path / "sft.jsonl"), *quiet]
    assert ferrolm([*sft, "--out", str(tmp_path / "sft-split"), "--max-iters", "3"]) == 0
    shutil.rmtree(tmp_path / "start")
    # Data edited in place since the run started is refused, not silently trained on.
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps(p) for p in pairs[::-1]))
    assert ferrolm([*sft, "--out", str(tmp_path / "sft-split"), "--max-iters", "6", "--resume"]) == 2
    assert "the training data differs" in capsys.readouterr().err
    # So is data with system turns, which add <|system|> to the model (said as weights that differ).
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": p["prompt"]},
        {"role": "assistant", "content": p["response"]}]}) for p in pairs))
    assert ferrolm([*sft, "--out", str(tmp_path / "sft-split"), "--max-iters", "6", "--resume"]) == 2
    assert "the training data differs" in capsys.readouterr().err
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    # Another seed would draw another train/val split: refused as such, not as other data.
    assert ferrolm([*sft, "--out", str(tmp_path / "sft-split"), "--max-iters", "6", "--resume", "--seed", "1"]) == 2
    assert "--seed 1 is not the run's" in capsys.readouterr().err
    assert ferrolm([*sft, "--out", str(tmp_path / "sft-split"), "--max-iters", "6", "--resume"]) == 0
    assert logged("sft-split") == logged("sft") and len(logged("sft")) == 6

    assert ferrolm(["reward", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "rm"),
                    "--max-iters", "4", *quiet]) == 0
    ppo_quiet = ["--eval-interval", "100", "--log-interval", "1", "--no-progress"]  # PPO scores every held-out prompt
    ppo_run = ["ppo", str(tmp_path / "sft"), "--reward-model", str(tmp_path / "rm"), "--prompts", str(tmp_path / "prompts.txt"), *ppo_quiet]
    ppo = [*ppo_run, "--rollout-size", "8", "--max-new-tokens", "8", "--ppo-epochs", "2", "--batch-size", "4"]
    assert ferrolm([*ppo, "--out", str(tmp_path / "ppo"), "--max-iters", "6"]) == 0
    assert ferrolm([*ppo, "--out", str(tmp_path / "ppo-split"), "--max-iters", "3"]) == 0  # 4 steps per rollout
    # A flag that would change the run is refused; the others come from the checkpoint.
    assert ferrolm([*ppo_run, "--out", str(tmp_path / "ppo-split"), "--max-iters", "6", "--resume", "--rollout-size", "16"]) == 2
    # A reward model trained again into its directory since is refused: the run would score with another.
    shutil.copytree(tmp_path / "rm", tmp_path / "rm-kept")
    assert ferrolm(["reward", str(tmp_path / "sft"), "--data", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "rm"),
                    "--max-iters", "2", *quiet]) == 0
    capsys.readouterr()
    assert ferrolm([*ppo_run, "--out", str(tmp_path / "ppo-split"), "--max-iters", "6", "--resume"]) == 2
    assert "the reward model differs" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "rm")
    (tmp_path / "rm-kept").rename(tmp_path / "rm")
    assert ferrolm([*ppo_run, "--out", str(tmp_path / "ppo-split"), "--max-iters", "6", "--resume"]) == 0
    keys = ("loss", "value_loss", "reward", "kl_coef")
    assert logged("ppo-split", keys) == logged("ppo", keys) and len(logged("ppo", keys)) == 6
    state_file = tmp_path / "ppo-split" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["objective_state"]["kl_coef"]
    state_file.write_text(json.dumps(state))
    assert ferrolm([*ppo_run, "--out", str(tmp_path / "ppo-split"), "--max-iters", "8", "--resume"]) == 2
    assert "the PPO state in the checkpoint is damaged (KeyError" in capsys.readouterr().err
    # A reward head left over from an earlier run in the same directory is not trusted.
    assert ferrolm(["sft", str(base), "--data", str(tmp_path / "sft.jsonl"), "--out", str(tmp_path / "rm"),
                    "--max-iters", "1", *quiet]) == 0
    with pytest.raises(ValueError, match="not the one its reward_head.safetensors was saved with"):
        RewardModel.load(tmp_path / "rm")


def _dropout_chat_model(base):
    """A chat-ready GPT with dropout 0.1 (its config keeps it), on the base model's tokenizer."""
    tok = GPT.load(base).tokenizer
    model = GPT.create(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=32, dropout=0.1, tokenizer=tok)
    return model, ChatTemplate.prepare(model)


def test_ppo_room_for_a_cut_response_and_its_end(base):
    """A response cut at max_new_tokens is scored with <|end|> appended, so prompt, response and
    <|end|> must fit the reward model's context: a setup that would overflow it is refused
    when PPO is built, not at its first rollout."""
    from ferrolm.train.ppo import PPO, PolicyWithValue

    policy = GPT.load(base)
    template = ChatTemplate.prepare(policy)
    prompt = "Who goes there?"
    fits = policy.block_size - len(template.prompt_ids(prompt)) - 1
    args = (PolicyWithValue(policy), policy.copy(), RewardModel(policy.copy()), [prompt], [prompt], template)
    with pytest.raises(ValueError, match="no room for .* with <|end|>"):
        PPO(*args, max_new_tokens=fits + 1)
    # With skip_long, prompts that leave no room are dropped and counted, as SFT does records.
    longer = "Who goes there, I say?"
    mixed = PPO(PolicyWithValue(policy), policy.copy(), RewardModel(policy.copy()), [prompt, longer], [prompt], template,
                rollout_size=4, minibatch_size=4, max_new_tokens=fits, skip_long=True)
    assert mixed.prompts["train"] == [template.prompt_ids(prompt)] and mixed.counts["train"] == {"skipped_too_long": 1}
    with pytest.raises(ValueError, match="no val prompts leave room"):
        PPO(*args[:4], [longer], template, max_new_tokens=fits, skip_long=True)
    # At the limit, responses cut there are scored (a high temperature keeps <|end|> unlikely).
    ppo = PPO(*args, rollout_size=4, minibatch_size=4, max_new_tokens=fits, temperature=3.0)
    mb = ppo.batch("train", np.random.default_rng(0))
    assert np.isfinite(mb["scores"]).all()
    short = GPT.create(vocab_size=policy.vocab_size, block_size=24, n_layer=1, n_head=2, n_embd=16, tokenizer=policy.tokenizer)
    with pytest.raises(ValueError, match="reward model's of 24"):
        PPO(*args[:2], RewardModel(short), *args[3:], max_new_tokens=8)


def test_ppo_ratio_is_one_before_an_update_with_dropout_and_temperature(base):
    """The loss's log-probs are those the rollout recorded: no dropout in the policy's forward
    pass, and the tempered distribution the responses were sampled from."""
    from ferrolm.train.ppo import PPO, PolicyWithValue

    model, template = _dropout_chat_model(base)
    sampled = template.tokenizer.vocab_size
    for padding in (0, 8):  # 8: a vocabulary padded past the tokenizer's, as nanoGPT's 50304
        if padding:
            model.core = model.core.with_vocab(sampled + padding, seed=1)
        ppo = PPO(PolicyWithValue(model), model.copy(), RewardModel(model.copy()), ["Who goes there?"] * 2,
                  ["Stand, ho!"], template, rollout_size=4, minibatch_size=4, max_new_tokens=8, temperature=0.7)
        mb = ppo.batch("train", np.random.default_rng(0))
        _, extra = ppo.loss(ppo.policy, mb, dropout_seed=123)
        assert extra["clip_fraction"] == 0.0
        np.testing.assert_allclose(mb["kl"], 0.0, atol=1e-5)  # the reference (the same weights) is tempered too
        # Log-probs of the distribution the responses were drawn from: the tokenizer's ids only.
        logits = model(mb["x"]).numpy().astype(np.float64)[..., :sampled] / 0.7
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        expected = np.take_along_axis(log_probs, mb["targets"][..., None], axis=-1)[..., 0] * mb["mask"]
        np.testing.assert_allclose(mb["old_logp"], expected, atol=1e-4)


def test_dpo_starts_at_zero_log_ratio_in_bfloat16_and_with_dropout(base):
    """With the policy equal to the reference, every log-ratio is 0 at the start: the reference
    is computed in the precision training runs in, and the policy runs without dropout."""
    model, template = _dropout_chat_model(base)
    _, prefs = chat_data(16)
    dpo = DPO(model.copy(), prefs[:12], prefs[12:], template, model.block_size, 4)
    previous = fl.set_matmul_precision("bfloat16")
    try:
        for seed in range(3):
            batch = dpo.batch("train", np.random.default_rng(seed))
            ids, lengths, starts, ref = batch
            with fl.no_grad():
                lp = response_logprobs(model, ids, lengths, starts).numpy()
            # Equal up to rounding (a batch is padded to another width than the reference's
            # chunks, so its rows sum in another order: 2e-5 at most, measured); a float32
            # reference is 1e-3 off and more.
            np.testing.assert_allclose(np.stack([lp[:4], lp[4:]], 1), ref, rtol=0, atol=2e-4)
            _, extra = dpo.loss(model, batch, dropout_seed=seed)
            assert abs(extra["margin"]) < 1e-4  # measured: 4e-7; with dropout in the policy, 3e-3 to 2e-2
    finally:
        fl.set_matmul_precision(previous)
    assert dpo.accuracy(model) == 0.0  # float32 reference, float32 policy


def test_ppo_rollouts_stop_where_chat_generation_does(base):
    """Chat generation ends an answer at <|end|> or at a marker that starts another turn; PPO
    stopped only at <|end|>, so it scored and trained on text no chat user would see."""
    from ferrolm.train.ppo import PPO, PolicyWithValue

    policy = GPT.load(base)
    template = ChatTemplate.prepare(policy)
    ppo = PPO(PolicyWithValue(policy), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"], ["Stand, ho!"],
              template, max_new_tokens=40, temperature=3.0)
    prompts = [template.prompt_ids("Who goes there?")] * 16
    responses = ppo.generate(policy, prompts, seed=0, temperature=3.0)
    markers = set(template.turn_ends)
    assert all(not markers & set(r[:-1]) for r in responses)
    assert any(r[-1] in (template.user, template.assistant) for r in responses)
    for seed in range(4):  # the same tokens as a chat answer sampled alike
        ids = policy.generate(prompts[0], 40, temperature=3.0, seed=seed, stop_tokens=sorted(markers))
        assert ppo.generate(policy, prompts[:1], seed=seed, temperature=3.0)[0] == ids


def test_preference_pairs_that_encode_alike_are_skipped():
    """Texts that differ only in what the tokenizer drops carry no preference: a margin of 0,
    a constant loss, and a miss in the accuracy. They are skipped and counted."""
    from ferrolm.train.reward import encode_preferences

    wp = fl.Tokenizer.train_from_iterator(["yes my lord who goes there " * 30], kind="wordpiece", vocab_size=80)
    model = GPT.create(vocab_size=wp.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16, tokenizer=wp)
    template = ChatTemplate.prepare(model)
    records = [{"prompt": "who goes there", "chosen": "yes, my lord.", "rejected": "yes,  my lord. "},
               {"prompt": "who goes there", "chosen": "yes, my lord.", "rejected": "no"}]
    pairs, counts = encode_preferences(records, template, 64, skip_long=False, shifted=False)
    assert len(pairs) == 1 and counts == {"skipped_too_long": 0, "skipped_identical": 1}
    # A reward model reads the whole sequence; DPO predicts a sequence's next tokens, so one more fits.
    chosen = template.render("who goes there", "yes, my lord.")
    fits = [{"prompt": "who goes there", "chosen": "yes, my lord.", "rejected": "no"}]
    assert encode_preferences(fits, template, len(chosen) - 1, skip_long=False, shifted=True)[0]
    with pytest.raises(ValueError, match=f"{len(chosen)} tokens do not fit the context of {len(chosen) - 1}; skip"):
        encode_preferences(fits, template, len(chosen) - 1, skip_long=False, shifted=False)


def test_an_adaptive_kl_target_needs_a_coefficient_to_scale(base):
    from ferrolm.train.ppo import PPO, PolicyWithValue

    policy = GPT.load(base)
    template = ChatTemplate.prepare(policy)
    with pytest.raises(ValueError, match="cannot grow from 0"):
        PPO(PolicyWithValue(policy), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"], ["Stand, ho!"],
            template, kl_coef=0.0, target_kl=6.0)


def test_ppo_missing_end_penalty_lowers_the_score_of_cut_responses(base):
    """A response cut at max_new_tokens earns its normalised score minus the penalty, in
    kl_coef's units, as TRL's missing_eos_penalty is in its reward's; the running statistics
    and the logged reward stay the reward model's. (Penalised before normalising, the penalty
    moved the statistics: at most 1/sqrt(f(1-f)) standard deviations whatever its size, none
    when every response was cut.)"""
    from ferrolm.train.ppo import PPO, PolicyWithValue

    policy = GPT.load(base)
    template = ChatTemplate.prepare(policy)
    runs = []
    for penalty in (0.0, 5.0):
        ppo = PPO(PolicyWithValue(policy.copy()), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"] * 4,
                  ["Stand, ho!"], template, rollout_size=8, minibatch_size=8, max_new_tokens=6, temperature=3.0,
                  missing_end_penalty=penalty)
        mb = ppo.batch("train", np.random.default_rng(0))
        runs.append((ppo, mb["scores"]))
    cut = np.array([row[mask][-1] not in template.turn_ends for row, mask in zip(mb["targets"], mb["mask"])])
    assert cut.mean() > 0.5  # a high temperature rarely says <|end|> within 6 tokens
    whitened = mb["advantages"][mb["mask"]]  # as TRL's masked_whiten: by the unbiased variance
    assert abs(whitened.mean()) < 1e-5 and whitened.std(ddof=1) == pytest.approx(1.0, abs=1e-4)
    (plain, scores), (penalised, same_scores) = runs
    np.testing.assert_array_equal(scores, same_scores)  # the logged reward is the reward model's
    assert penalised.score_stats.mean == plain.score_stats.mean and penalised.score_stats.m2 == plain.score_stats.m2
    for everything_cut in (cut, np.ones_like(cut)):
        gap = plain._final_rewards(scores, everything_cut, learn=False) - penalised._final_rewards(scores, everything_cut, learn=False)
        np.testing.assert_allclose(gap, 5.0 * everything_cut, atol=1e-5)
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="missing_end_penalty must be >= 0 and finite"):
            PPO(PolicyWithValue(policy.copy()), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"],
                ["Stand, ho!"], template, missing_end_penalty=bad)
    with pytest.raises(ValueError, match="temperature must be > 0 and finite"):
        PPO(PolicyWithValue(policy.copy()), policy.copy(), RewardModel(policy.copy()), ["Who goes there?"],
            ["Stand, ho!"], template, temperature=float("inf"))


def test_ppo_running_statistics_are_float64_and_unbiased_as_trls():
    """Scores of ±1e20 overflowed float32's squares: every normalised score became 0."""
    from ferrolm.train.ppo import RunningStats

    stats = RunningStats()
    halves = (np.array([1e20, -1e20, 5e19], np.float32), np.array([-5e19, 2e19], np.float32))
    for half in halves:
        stats.update(half)
    every = np.concatenate(halves).astype(np.float64)
    np.testing.assert_allclose(stats.normalise(every), (every - every.mean()) / every.std(ddof=1), rtol=1e-6)


def test_a_reference_that_is_the_policy_and_a_policy_ppo_does_not_sample_are_refused(base, tmp_path):
    """TRL refuses a reference that is the policy: the KL to it stays 0 (PPO) and DPO's reference
    log-probs of a split first computed mid-run come from the updated policy."""
    from ferrolm.train.ppo import PPO, PolicyWithValue

    policy = GPT.load(base)
    template = ChatTemplate.prepare(policy)
    _, prefs = chat_data(40)
    config = TrainConfig(max_iters=2, eval_interval=1000, eval_iters=1, progress=False)
    with pytest.raises(ValueError, match="shares its weights with the policy"):
        train(policy, DPO(policy, prefs[:30], prefs[30:], template, policy.block_size, 4), config, tmp_path / "dpo")
    rm = RewardModel(policy.copy())
    args = (rm, ["Who goes there?"], ["Stand, ho!"], template)
    with pytest.raises(ValueError, match="shares its weights with the policy"):
        PPO(PolicyWithValue(policy), policy, *args)
    # Rollouts came from the policy given to PPO while another model was updated.
    ppo = PPO(PolicyWithValue(policy), policy.copy(), *args, rollout_size=4, minibatch_size=4, max_new_tokens=8)
    with pytest.raises(ValueError, match="train\\(\\) that same policy"):
        train(PolicyWithValue(policy.copy()), ppo, config, tmp_path / "ppo")
    for bad, message in ((dict(target_kl=0.0), "target_kl must be > 0"), (dict(kl_coef=-0.1, target_kl=None), "need kl_coef"),
                         (dict(gamma=1.5), "need kl_coef"), (dict(clip=0.0), "need kl_coef")):
        with pytest.raises(ValueError, match=message):
            PPO(PolicyWithValue(policy), policy.copy(), *args, **bad)


def test_a_resume_refuses_a_model_whose_head_was_not_loaded(base, tmp_path):
    """A reward model rebuilt as RewardModel(GPT.load(dir)) has a fresh head (a file of its own):
    the resume went on with it, silently."""
    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    _, prefs = chat_data(40)
    objective = lambda: Preferences(prefs[:30], prefs[30:], template, model.block_size, batch_size=4)
    config = TrainConfig.preset("reward", max_iters=2, eval_interval=1000, eval_iters=1, progress=False)
    train(RewardModel(model), objective(), config, tmp_path / "rm")
    more = TrainConfig.preset("reward", max_iters=3, eval_interval=1000, eval_iters=1, progress=False)
    with pytest.raises(ValueError, match="does not hold the weights of the checkpoint"):
        train(RewardModel(GPT.load(tmp_path / "rm")), objective(), more, tmp_path / "rm", resume=True)
    train(RewardModel.load(tmp_path / "rm"), objective(), more, tmp_path / "rm", resume=True)


def test_presets_are_the_commands_defaults_and_answers_end_at_any_turn_marker(base):
    from ferrolm.cli.posttrain import DEFAULTS

    # The commands' settings, literal (not read back from PRESETS); DPO's is TRL's rate.
    expected = {"sft": (300, 3e-4, 20), "reward": (300, 3e-4, 20), "dpo": (200, 1e-6, 10), "ppo": (200, 5e-5, 0)}
    for kind, (iters, lr, warmup) in expected.items():
        config = TrainConfig.preset(kind)
        assert (config.max_iters, config.learning_rate, config.warmup_iters, config.weight_decay) == (iters, lr, warmup, 0.0)
        assert all(getattr(config, k) == v for k, v in DEFAULTS[kind].items()
                   if hasattr(config, k) and v is not None)  # ppo's decay_lr (None): below
    ppo = TrainConfig.preset("ppo")
    ppo.learning_rate = 1e-4  # changed after creation: constant still, at the new rate
    assert ppo.resolved().lr_at(0) == ppo.resolved().lr_at(199) == 1e-4
    assert TrainConfig.preset("ppo", min_lr=1e-5).lr_at(199) < 2e-5  # a min_lr given: it decays
    assert TrainConfig.preset("ppo", decay_lr=True).lr_at(199) < 1e-5  # and so it does when asked to (it was ignored)
    from ferrolm.cli import build_parser
    from ferrolm.cli.common import train_config
    from ferrolm.cli.posttrain import _values

    def ppo_config(*flags):
        args = build_parser().parse_args(["ppo", str(base), "--reward-model", "rm", "--prompts", "p", "--out", "o", *flags])
        return train_config(_values(args, "ppo"), args, kind="ppo")

    assert [ppo_config(*f).decay_lr for f in ((), ("--min-lr", "1e-6"), ("--decay-lr", "true"))] == [False, True, True]
    assert TrainConfig.preset("dpo", learning_rate=1e-5).learning_rate == 1e-5
    with pytest.raises(ValueError, match="no preset"):
        TrainConfig.preset("causal")
    model = GPT.load(base)
    reference = model.copy()  # its own tokenizer: preparing the policy for chat left it 3 ids short
    template = ChatTemplate.prepare(model)
    assert reference.tokenizer.vocab_size == reference.vocab_size < model.vocab_size and not reference.is_chat
    text = lambda s: template.tokenizer.encode(s, add_special_tokens=False)
    assert template.decode_response([*text("Who?"), template.user, *text("Stand"), template.end]) == "Who?"


def test_objectives_refuse_bad_sizes_other_tokenizers_and_the_wrong_model(base, tmp_path):
    from ferrolm.train.ppo import PPO, PolicyWithValue

    model = GPT.load(base)
    template = ChatTemplate.prepare(model)
    pairs, prefs = chat_data(8)
    made = {"SFT": lambda b: SFT(pairs, pairs, template, model.block_size, b),
            "Preferences": lambda b: Preferences(prefs, prefs, template, model.block_size, b),
            "DPO": lambda b: DPO(model.copy(), prefs, prefs, template, model.block_size, b)}
    for name, make in made.items():
        for bad in (0, -1, 2.5):  # they failed at the first batch, inside numpy
            with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad}"):
                make(bad)
    with pytest.raises(ValueError, match="beta must be > 0 and finite in float32"):  # 1e300 is infinite there
        DPO(model.copy(), prefs, prefs, template, model.block_size, 2, beta=1e300)
    # A split left empty says what was left out and why: pairs whose sides an uncased tokenizer encodes alike, all
    # short, were said not to fit the context.
    from ferrolm.batching import encode_splits

    counts = {"skipped_too_long": 1, "skipped_identical": 3}
    with pytest.raises(ValueError, match="no train pairs \\(skipped: 1 as too long for the context, 3 as the same tokens"):
        encode_splits(prefs, prefs, lambda records: ([], counts), "pairs")
    # A plain GPT where a wrapper is trained: said before step 0, naming the wrapper (was an AttributeError mid-run).
    config = TrainConfig(max_iters=1, warmup_iters=0, progress=False)
    with pytest.raises(TypeError, match=r"Preferences trains a RewardModel, not a GPT: wrap it, RewardModel\(gpt\)"):
        train(model, Preferences(prefs, prefs, template, model.block_size, 2), config, tmp_path / "rm")
    with pytest.raises(TypeError, match=r"DPO trains a GPT, not a RewardModel"):
        train(RewardModel(model), DPO(model.copy(), prefs, prefs, template, model.block_size, 2), config, tmp_path / "d")
    assert not (tmp_path / "rm").exists() and not (tmp_path / "d").exists()
    with pytest.raises(TypeError, match=r"PPO trains a PolicyWithValue, not a GPT: wrap it, PolicyWithValue\(gpt\)"):
        PPO(model, model.copy(), RewardModel(model.copy()), ["Who goes there?"], ["Stand, ho!"], template)
    with pytest.raises(TypeError, match="PPO scores with a RewardModel, not a GPT"):
        PPO(PolicyWithValue(model), model.copy(), model.copy(), ["Who goes there?"], ["Stand, ho!"], template)
    # A reference that reads ids by another vocabulary (same size, shifted ids) is refused, as the reward model is.
    other = model.copy()
    other.tokenizer = fl.Tokenizer.from_str(model.tokenizer.to_str().replace('"Z"', '"@"'))
    assert other.tokenizer.get_vocab() != model.tokenizer.get_vocab()
    with pytest.raises(ValueError, match="the reference reads ids with a different tokenizer"):
        DPO(other, prefs, prefs, template, model.block_size, 2)
    with pytest.raises(ValueError, match="the reference reads ids with a different tokenizer"):
        PPO(PolicyWithValue(model), other, RewardModel(model.copy()), ["Who goes there?"], ["Stand, ho!"], template)
    dpo = DPO(model.copy(), prefs, prefs, template, model.block_size, 2)
    with pytest.raises(ValueError, match="the policy reads ids with a different tokenizer"):
        dpo.loss(other, dpo.batch("train", np.random.default_rng(0)), dropout_seed=None)
