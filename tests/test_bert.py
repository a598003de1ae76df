"""BERT from Python: Hugging Face checkpoints against an independent numpy forward, the MLM
collator's statistics, learning, fill-mask, and bad input."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import ferrolm as fl
from ferrolm.bert import BERT
from ferrolm.data import BUNDLED_CORPUS, MlmCollator, prepare_tokens
from ferrolm.train import MaskedLM, TrainConfig, train

from conftest import TRANSFORMERS_FIXTURES, assert_same_checkpoint

safetensors_numpy = pytest.importorskip("safetensors.numpy")

V, C, L, H, I, P = 30, 8, 2, 2, 16, 12


def hf_bert_checkpoint(path: Path, prefix="bert.", mlm=True, pooler=True, old_names=False, seed=0) -> dict:
    """A random BERT checkpoint in Hugging Face's layout (Linear weights [out, in])."""
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.normal(0, 0.3, size=s).astype(np.float32)
    g, b = ("gamma", "beta") if old_names else ("weight", "bias")
    t = {"embeddings.word_embeddings.weight": w(V, C), "embeddings.position_embeddings.weight": w(P, C),
         "embeddings.token_type_embeddings.weight": w(2, C), f"embeddings.LayerNorm.{g}": 1 + w(C), f"embeddings.LayerNorm.{b}": w(C)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + name + ".weight"], t[p + name + ".bias"] = w(C, C), w(C)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = w(I, C), w(I)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = w(C, I), w(C)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"{p}{ln}.{g}"], t[f"{p}{ln}.{b}"] = 1 + w(C), w(C)
    if pooler:
        t["pooler.dense.weight"], t["pooler.dense.bias"] = w(C, C), w(C)
    t = {prefix + k: v for k, v in t.items()}
    t[prefix + "embeddings.position_ids"] = np.arange(P, dtype=np.int64)[None]  # an HF buffer
    t[prefix + "embeddings.token_type_ids"] = np.zeros((1, P), dtype=np.int64)  # another, some exporters' (refused)
    if mlm:
        t.update({"cls.predictions.transform.dense.weight": w(C, C), "cls.predictions.transform.dense.bias": w(C),
                  f"cls.predictions.transform.LayerNorm.{g}": 1 + w(C), f"cls.predictions.transform.LayerNorm.{b}": w(C),
                  "cls.predictions.bias": w(V)})
        t["cls.predictions.decoder.weight"] = t[prefix + "embeddings.word_embeddings.weight"]  # tied copy
    path.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(t, str(path / "model.safetensors"))
    config = {"model_type": "bert", "vocab_size": V, "hidden_size": C, "num_hidden_layers": L, "num_attention_heads": H,
              "intermediate_size": I, "max_position_embeddings": P, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
              "hidden_act": "gelu", "hidden_dropout_prob": 0.1}
    (path / "config.json").write_text(json.dumps(config))
    return {k.removeprefix(prefix).replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in t.items()}


def numpy_bert(t: dict, ids, types, mask):
    """HF BERT's forward pass from its equations, in float64: (hidden states, MLM logits)."""
    from math import erf

    t = {k: v.astype(np.float64) for k, v in t.items() if v.dtype != np.int64}
    gelu = np.vectorize(lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))))

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * t[name + ".weight"] + t[name + ".bias"]

    dense = lambda x, name: x @ t[name + ".weight"].T + t[name + ".bias"]
    B, T = ids.shape
    x = ln(t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][np.arange(T)]
           + t["embeddings.token_type_embeddings.weight"][types], "embeddings.LayerNorm")
    bias = np.where(mask, 0.0, -1e9)[:, None, None, :]  # HF's additive attention mask
    for i in range(L):
        p = f"encoder.layer.{i}."
        heads = lambda z: z.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)
        q, k, v = (heads(dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // H) + bias
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = ln(x + dense(y, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        x = ln(x + dense(gelu(dense(x, p + "intermediate.dense")), p + "output.dense"), p + "output.LayerNorm")
    logits = None
    if "cls.predictions.bias" in t:
        h = ln(gelu(dense(x, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
        logits = h @ t["embeddings.word_embeddings.weight"].T + t["cls.predictions.bias"]
    return x, logits


@pytest.mark.parametrize("prefix,mlm,old_names", [("bert.", True, False), ("", False, False), ("bert.", True, True)])
def test_hugging_face_bert_matches_numpy_reference(tmp_path, prefix, mlm, old_names):
    tensors = hf_bert_checkpoint(tmp_path, prefix=prefix, mlm=mlm, old_names=old_names)
    model = BERT.load(tmp_path)
    rng = np.random.default_rng(1)
    ids, types = rng.integers(0, V, size=(2, 10)), rng.integers(0, 2, size=(2, 10))
    mask = np.ones((2, 10), bool)
    mask[0, 7:] = False
    hidden, logits = numpy_bert(tensors, ids, types, mask)
    ours = model.hidden(ids, token_type_ids=types, attention_mask=mask).numpy()
    real = mask[..., None]  # HF computes padded positions too; only real tokens are meaningful
    np.testing.assert_allclose(np.where(real, ours, 0), np.where(real, hidden, 0), rtol=1e-4, atol=1e-4)
    assert model.core.has_mlm_head == mlm
    if mlm:
        np.testing.assert_allclose(np.where(real, model.mlm_logits(fl.tensor(ours)).numpy(), 0),
                                   np.where(real, logits, 0), rtol=1e-4, atol=1e-4)
        model.save(tmp_path / "again")
        again = BERT.load(tmp_path / "again")
        np.testing.assert_array_equal(again(ids).numpy(), model(ids).numpy())


def cased_bert(tmp_path) -> Path:
    """A BERT directory with a cased WordPiece."""
    tok = fl.Tokenizer.train_from_iterator([BUNDLED_CORPUS.read_text()[:100_000]], kind="wordpiece", vocab_size=500,
                                           lowercase=False)
    BERT.create(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                tokenizer=tok).save(tmp_path / "cased")
    return tmp_path / "cased"


def test_a_wordpiece_model_tells_hugging_face_its_casing(tmp_path):
    """Without tokenizer_config.json, AutoTokenizer gives a BERT do_lower_case=True, which
    overrides tokenizer.json's normalizer: a cased model's text was lowercased there."""
    cased = cased_bert(tmp_path)
    specials = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    assert json.loads((cased / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"], "do_lower_case": False,
        "strip_accents": None, "tokenize_chinese_chars": True, **specials}
    uncased = BERT.create(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          tokenizer=fl.Tokenizer.train_from_iterator(["Ab cd"] * 9, kind="wordpiece", vocab_size=30))
    uncased.save(tmp_path / "uncased")
    assert json.loads((tmp_path / "uncased" / "tokenizer_config.json").read_text())["do_lower_case"] is True
    # A model of another tokenizer saved over it writes its own (a GPT has no token types).
    # Saved without a tokenizer, the directory's tokenizer stays, and so does the file about it.
    char = fl.Tokenizer.train_from_iterator(["a b"], kind="char", vocab_size=10)
    gpt = fl.GPT.create(vocab_size=char.vocab_size, block_size=4, n_layer=1, n_head=1, n_embd=4, tokenizer=char)
    gpt.save(cased)
    written = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4,
               "model_input_names": ["input_ids", "attention_mask"]}
    assert json.loads((cased / "tokenizer_config.json").read_text()) == written
    fl.GPT(gpt.core).save(cased)
    assert json.loads((cased / "tokenizer_config.json").read_text()) == written


def test_transformers_tokenizes_ferrolm_models_as_ferrolm(tmp_path):
    """AutoTokenizer on each kind of directory ferrolm writes gives ferrolm's ids, special tokens,
    size, context and inputs: it lowercased a cased BERT's (and its classifier's) text, and gave
    a GPT GPT-2's pre-tokenizer, which dropped a character vocabulary's spaces and split a cl100k
    BPE's digits otherwise; a chat model's template renders to ferrolm's ids."""
    from transformers import AutoTokenizer

    from ferrolm.chat import ChatTemplate
    from ferrolm.train.classify import TextClassifier

    corpus = BUNDLED_CORPUS.read_text()[:200_000]
    bert = BERT.load(cased_bert(tmp_path))
    TextClassifier(bert, ["no", "yes"]).save(tmp_path / "classifier")
    uncased = fl.Tokenizer.train_from_iterator([corpus], kind="wordpiece", vocab_size=500, strip_accents=True)
    # A WordPiece unlike BERT's defaults (transformers' BertTokenizer rebuilds it with them).
    unusual = json.loads(uncased.to_str())
    unusual["model"].update(continuing_subword_prefix="@@", max_input_chars_per_word=6)
    unusual["model"]["vocab"] = {k.replace("##", "@@", 1) if k.startswith("##") else k: v
                                 for k, v in unusual["model"]["vocab"].items()}
    unusual["decoder"]["prefix"] = "@@"
    for name, tok in (("uncased", uncased), ("unusual", fl.Tokenizer.from_str(json.dumps(unusual)))):
        BERT.create(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                    tokenizer=tok).save(tmp_path / name)
    for name, kind, pattern in (("char", "char", "gpt2"), ("cl100k", "bpe", "cl100k"), ("gpt2", "bpe", "gpt2")):
        tok = fl.Tokenizer.train_from_iterator([corpus], kind=kind, vocab_size=500, pattern=pattern,
                                               special_tokens=["<|endoftext|>"] if kind == "bpe" else None)
        gpt = fl.GPT.create(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=4, tokenizer=tok)
        gpt.save(tmp_path / name)
    template = ChatTemplate.prepare(gpt, system=True)
    gpt.save(tmp_path / "chat")
    texts = ["ROMEO: But soft, what light\n\n through yonder  window breaks?", "12345 67890 HE'LL SHE'S", "Où va-t-il?"]
    for name in ("cased", "classifier", "uncased", "unusual", "char", "cl100k", "gpt2", "chat"):
        theirs, ours = AutoTokenizer.from_pretrained(tmp_path / name), fl.Tokenizer.from_file(str(tmp_path / name))
        assert len(theirs) == ours.vocab_size and theirs.model_max_length == (8 if name in ("char", "cl100k", "gpt2",
                                                                                               "chat") else 128), name
        for text in texts:
            try:
                expected = ours.encode(text)
            except ValueError:  # a character the character vocabulary lacks (Hugging Face drops it)
                continue
            encoded = theirs(text)
            assert encoded["input_ids"] == expected, (name, text)
            assert ("token_type_ids" in encoded) == (name in ("cased", "classifier", "uncased", "unusual")), name
        for attribute, token in (("mask_token", "[MASK]"), ("pad_token", "[PAD]"), ("eos_token", "<|endoftext|>")):
            if token in ours.special_tokens and not (name == "chat" and attribute == "eos_token"):
                assert getattr(theirs, f"{attribute}_id") == ours.special_tokens[token], (name, attribute)
    chat = AutoTokenizer.from_pretrained(tmp_path / "chat")
    messages = [{"role": "system", "content": "be short"}, {"role": "user", "content": "who goes there?"}]
    rendered = chat.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat(rendered, add_special_tokens=False)["input_ids"] == template.prompt_ids(messages)


def test_the_encoder_of_a_question_answering_checkpoint_loads(tmp_path):
    """BertForQuestionAnswering's qa_outputs head is left, as Hugging Face's AutoModel leaves it
    (its name was refused as a config mismatch); hidden_act "gelu_python" is the exact GELU."""
    from safetensors.numpy import load_file, save_file

    hf_bert_checkpoint(tmp_path, mlm=False)
    plain = BERT.load(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    head = np.ones((2, tensors["bert.pooler.dense.weight"].shape[0]), np.float32)
    save_file({**tensors, "qa_outputs.weight": head, "qa_outputs.bias": np.zeros(2, np.float32)},
              str(tmp_path / "model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_python"}))
    ids = np.arange(6).reshape(1, 6) % V
    np.testing.assert_array_equal(BERT.load(tmp_path).hidden(ids).numpy(), plain.hidden(ids).numpy())


def test_loading_with_the_other_class_names_the_right_one(tmp_path):
    hf_bert_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"holds a bert model, not a gpt2 one: it is for ferrolm fill-mask and classify \(in Python, BERT.load"):
        fl.GPT.load(tmp_path)
    model = fl.load_model(tmp_path)
    assert isinstance(model, BERT) and model.vocab_size == V
    assert repr(model).startswith(f"BERT(vocab_size={V}") and " parameters, tokenizer=None)" in repr(model)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    assert isinstance(fl.load_model(tmp_path), BERT)  # BERT's field names tell (it was read as GPT-2)
    with pytest.raises(ValueError, match="holds a bert model, not a gpt2 one"):
        fl.GPT.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ValueError, match="holds a roberta model, not a bert one: ferrolm loads gpt2 and bert"):
        BERT.load(tmp_path)  # it sent every other type to GPT.load


def test_bert_variants_it_does_not_compute_are_refused(tmp_path):
    """An untied MLM decoder (weight or bias), a causal BERT or cross-attention would be run
    wrongly: refused."""
    hf_bert_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for edit in ({"is_decoder": True}, {"tie_word_embeddings": False}, {"add_cross_attention": True}):
        (tmp_path / "config.json").write_text(json.dumps({**config, **edit}))
        with pytest.raises(fl.FormatError, match=f"{next(iter(edit))} = .* is not supported"):
            BERT.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    stored = safetensors_numpy.load_file(str(tmp_path / "model.safetensors"))
    tied = stored["cls.predictions.decoder.weight"]
    stored["cls.predictions.decoder.weight"] = tied + 1.0
    safetensors_numpy.save_file(stored, str(tmp_path / "model.safetensors"))
    with pytest.raises(fl.FormatError, match="cls.predictions.decoder.weight differs from the token embedding"):
        BERT.load(tmp_path)
    # The decoder's bias beside a different head bias (an edited file): transformers computes
    # with the decoder's, and this ran with the other, silently.
    stored["cls.predictions.decoder.weight"] = tied
    stored["cls.predictions.decoder.bias"] = stored["cls.predictions.bias"] + 1.0
    safetensors_numpy.save_file(stored, str(tmp_path / "model.safetensors"))
    with pytest.raises(fl.FormatError, match="cls.predictions.decoder.bias differs from cls.predictions.bias"):
        BERT.load(tmp_path)
    stored["cls.predictions.decoder.bias"] = stored["cls.predictions.bias"]
    safetensors_numpy.save_file(stored, str(tmp_path / "model.safetensors"))
    BERT.load(tmp_path)  # a tied copy is fine


def test_a_checkpoint_saved_by_transformers_gives_its_logits(tmp_path):
    directory = TRANSFORMERS_FIXTURES / "bert"  # BertForMaskedLM's save_pretrained files
    expected = safetensors_numpy.load_file(str(directory / "expected.safetensors"))
    model = BERT.load(directory)
    logits = model(expected["input_ids"], token_type_ids=expected["token_type_ids"],
                   attention_mask=expected["attention_mask"]).numpy()
    np.testing.assert_allclose(logits, expected["logits"], rtol=1e-4, atol=1e-4)  # padded positions too
    # Saved again, the checkpoint is transformers' own: its weights, and a config it reads alike.
    model.save(tmp_path)
    assert_same_checkpoint(directory, tmp_path)


# ---------------------------------------------------------------- masking


@pytest.fixture(scope="module")
def wordpiece():
    return fl.Tokenizer.train_from_iterator([BUNDLED_CORPUS.read_text()], kind="wordpiece", vocab_size=2000)


def test_collator_masks_like_bert(wordpiece):
    collate = MlmCollator(wordpiece)
    rng = np.random.default_rng(0)
    text = BUNDLED_CORPUS.read_text()[:60_000]
    ids = wordpiece.encode(text, add_special_tokens=False)
    examples = [collate.pack([ids[i : i + 40], ids[i + 40 : i + 60]]) for i in range(0, 20_000, 60)]
    examples[0] = collate.pack([ids[:5]])  # a short one, so there is padding
    batch = collate(examples, rng)
    ids_arr, labels, attn = batch["ids"], batch["labels"], batch["attention_mask"]
    special = np.isin(np.where(labels >= 0, labels, 0), collate.special_ids) & (labels >= 0)
    assert not special.any() and not (labels[~attn] >= 0).any()  # never specials or padding
    chosen = labels >= 0
    candidates = attn & ~np.isin(np.where(attn, ids_arr, 0), collate.special_ids)
    rate = chosen.sum() / (candidates | chosen).sum()
    assert 0.13 < rate < 0.17, rate
    as_mask = (ids_arr == collate.mask)[chosen].mean()
    unchanged = (ids_arr == labels)[chosen].mean()
    assert 0.77 < as_mask < 0.83 and 0.07 < unchanged < 0.14, (as_mask, unchanged)
    assert (batch["token_type_ids"][1][: 42] == 0).all() and (batch["token_type_ids"][1][42:63] == 1).all()
    again = collate(examples, np.random.default_rng(0))
    np.testing.assert_array_equal(again["ids"], ids_arr)  # seeded


def test_whole_word_masking_takes_every_piece(wordpiece):
    collate = MlmCollator(wordpiece, whole_word=True)
    ids = wordpiece.encode("Unmannerly presumptuousness notwithstanding, the honourable gentlewoman " * 30, add_special_tokens=False)
    batch = collate([collate.pack([ids])], np.random.default_rng(1))
    cont = collate.continuation[np.array(collate.pack([ids])[0])]
    chosen = batch["labels"][0] >= 0
    assert chosen.any() and any(cont[i] for i in np.flatnonzero(chosen))
    for i in range(1, len(cont)):
        if cont[i]:  # a continuation is chosen exactly when the piece before it is
            assert chosen[i] == chosen[i - 1], i


def test_whole_word_masking_starts_a_word_after_a_special_token(wordpiece):
    """A continuation piece opening a segment (after [CLS] or [SEP]) is its own word: it is
    masked with its own draw, not with the previous segment's last word."""
    collate = MlmCollator(wordpiece, whole_word=True)
    word, piece = wordpiece.encode("honour", add_special_tokens=False)[:1], wordpiece.token_to_id("##s")
    ids, _ = collate.pack([[piece] + word, [piece] + word])  # [CLS] ##s w [SEP] ##s w [SEP]
    chosen = np.array([collate([collate.pack([ids[1:3], ids[4:6]])], np.random.default_rng(seed))["labels"][0] >= 0
                       for seed in range(300)])
    assert chosen[:, 1].any() and chosen[:, 4].any()  # after [CLS], after [SEP]
    assert (chosen[:, 4] != chosen[:, 2]).any()  # not tied to the word before [SEP]


def test_a_batch_always_has_a_token_to_predict(wordpiece):
    """A tiny batch that draws no token gets one, so its loss is not a zero averaged in."""
    collate = MlmCollator(wordpiece)
    ids = wordpiece.encode("Stand, ho!", add_special_tokens=False)[:2]
    counts = [int((collate([collate.pack([ids])], np.random.default_rng(seed))["labels"] >= 0).sum()) for seed in range(100)]
    assert min(counts) == 1 and max(counts) == 2
    # With whole-word masking the one chosen is a whole word: every piece of it.
    collate = MlmCollator(wordpiece, whole_word=True)
    word = wordpiece.encode("presumptuousness", add_special_tokens=False)
    assert len(word) > 1
    counts = {int((collate([collate.pack([word])], np.random.default_rng(seed))["labels"] >= 0).sum()) for seed in range(30)}
    assert counts == {len(word)}


def test_a_rate_over_batches_is_pooled_not_averaged():
    """MLM accuracy counts where the input shows [MASK], and a batch may show none (its chosen
    tokens all drew the 10% random or 10% kept): such a batch averaged in as accuracy 0.0. A
    (count, out of) extra is pooled over the batches instead; a number is weighed as its batch's
    loss is (PPO's policy and value losses are means over its responses' tokens)."""
    from ferrolm.train import evaluate_model

    class Rates:
        kind = "rates"
        drawn = 0

        def batch(self, split, rng):  # batches of three kinds, in turn
            self.drawn += 1
            return self.drawn % 3

        def loss(self, model, batch, dropout_seed):  # rates 0/0 (none shown), 1/1 and 1/3
            return fl.tensor(1.0), {"hit": [(0, 0), (1, 1), (1, 3)][batch], "mean": float(batch)}

        def tokens(self, batch):
            return 1

        def state(self):
            return {}

    record = evaluate_model(None, Rates(), eval_iters=30)
    # Pooled: 20 of 40. Averaging per batch would give 0.444 (empty ones as 0) or 0.667 (skipped).
    assert record["val_hit"] == 0.5 and record["val_mean"] == 1.0

    class Weighed(Rates):
        def loss_weight(self, batch):  # the losses are means over 1, 1 and 2 tokens: so are the extras
            return [1, 1, 2][batch]

    record = evaluate_model(None, Weighed(), eval_iters=30)
    assert record["val_hit"] == 0.5 and record["val_mean"] == pytest.approx((0 + 1 + 2 * 2) / 4)

    class Perfect(Rates):  # weights whose shares sum past 1 in floating point
        def loss(self, model, batch, dropout_seed):
            return fl.tensor(1.0), {"accuracy": 1.0}

        def loss_weight(self, batch):
            return [224, 213, 432, 436, 24, 99][(self.drawn - 1) % 6]

    assert evaluate_model(None, Perfect(), eval_iters=6)["val_accuracy"] == 1.0  # it read 1.0000000000000002


def test_a_corpus_the_tokenizer_cannot_encode_is_refused_not_scored_zero(wordpiece, tmp_path, capsys):
    """Text in a script the vocabulary lacks is all [UNK], which is never masked: training
    learned nothing and reported val loss 0.0000 (perplexity 1.00)."""
    chinese = "".join(chr(0x4E00 + (i * 7919) % 500) + ("\n" if i % 30 == 29 else "") for i in range(12_000))
    with pytest.raises(ValueError, match="the tokenizer encodes this corpus to \\[UNK\\] alone"):
        prepare_tokens(chinese, wordpiece, tmp_path / "zh")  # for a GPT too: it would learn to predict [UNK]
    assert list((tmp_path / "zh").iterdir()) == []  # no token file written
    # Data of special tokens only (as text holding them encodes): nothing to mask.
    prepare_tokens("[SEP] " * 200, wordpiece, tmp_path / "specials")
    with pytest.raises(ValueError, match="the train split has no token to predict"):
        MaskedLM(tmp_path / "specials", wordpiece, 16, 4)
    # Mostly [UNK]: trained on, and said.
    english = BUNDLED_CORPUS.read_text()[:20_000].splitlines()
    mixed = "\n".join(zh + "\n" + en for zh, en in zip(chinese.splitlines(), english))  # 30 [UNK]s to a line of text
    with pytest.warns(UserWarning, match="% of the corpus's tokens are \\[UNK\\]"):  # a warning a user can filter
        prepare_tokens(mixed, wordpiece, tmp_path / "mostly")
    MaskedLM(tmp_path / "mostly", wordpiece, 16, 4)


# ---------------------------------------------------------------- learning and fill-mask


@pytest.fixture(scope="module")
def trained_bert(tmp_path_factory, wordpiece):
    """A small BERT trained by MLM on tiny Shakespeare, with sequences of 16 tokens: MLM starts
    on a unigram plateau that lasts longer the longer the sequences (benches/quality_bert_mlm.py)."""
    tmp = tmp_path_factory.mktemp("bert")
    text = BUNDLED_CORPUS.read_text()
    prepare_tokens(text, wordpiece, tmp / "data")
    model = BERT.create(vocab_size=wordpiece.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=16, hidden_dropout_prob=0.0, seed=0, tokenizer=wordpiece)
    objective = MaskedLM(tmp / "data", wordpiece, 16, 128)
    config = TrainConfig(max_iters=MLM_STEPS, eval_interval=MLM_STEPS, eval_iters=20, learning_rate=1e-3, min_lr=1e-4,
                         warmup_iters=MLM_STEPS // 20, lr_decay_iters=MLM_STEPS, weight_decay=0.01, progress=False)
    first = float(np.mean([objective.loss(model, objective.batch("val", np.random.default_rng(i)), None)[0].item() for i in range(3)]))
    evals = train(model, objective, config, tmp / "run")
    val = np.fromfile(tmp / "data" / "val.bin", dtype=np.uint16)
    return tmp / "run", first, evals[-1], val, text[int(len(text) * 0.9):]


MLM_STEPS = 3000


def unigram(val: np.ndarray, k: int) -> np.ndarray:
    """The k most frequent token ids of the held-out split."""
    ids, counts = np.unique(val, return_counts=True)
    return ids[np.argsort(-counts, kind="stable")[:k]]


def test_mlm_training_predicts_from_context(trained_bert, wordpiece):
    """Loss falls from ln(V) to below the unigram entropy, and held-out [MASK] accuracy is far
    above always answering the most frequent token."""
    _, first, final, val, _ = trained_bert
    _, counts = np.unique(val, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    assert first > np.log(wordpiece.vocab_size) - 0.3, first
    assert final["val_loss"] < entropy - 0.5, (final, entropy)
    unigram_accuracy = float(np.mean(val == unigram(val, 1)[0]))
    assert final["val_accuracy"] > 2 * unigram_accuracy, (final, unigram_accuracy)


def test_fill_mask_ranks_the_true_word_above_unigram(trained_bert):
    """On held-out lines, the true piece is in fill_mask's top 5 far more often than it is one
    of the 5 most frequent pieces (measured: 0.43 against 0.31)."""
    run, _, _, val, heldout = trained_bert
    targets, hits = BERT.load(run).fill_mask_hits(heldout.splitlines()[:600])
    assert len(targets) > 300
    baseline = float(np.isin(targets, unigram(val, 5)).mean())
    assert hits.mean() > 1.25 * baseline, (hits.mean(), baseline)
    # "[MASK]" written in a line is text: the hidden piece is never the mask token itself.
    model = BERT.load(run)
    targets, _ = model.fill_mask_hits(["[MASK] [MASK]"] * 20)  # 12 ids: fits the context of 16
    assert len(targets) == 20 and model.tokenizer.token_to_id("[MASK]") not in targets


def test_fill_mask_agrees_with_the_mlm_head(trained_bert):
    """fill_mask's candidates and scores are the softmax of the MLM logits at each [MASK]."""
    model = BERT.load(trained_bert[0])
    text = "To be, or not to [MASK], that is the [MASK]"
    result = model.fill_mask(text, top_k=4)
    ids = np.array([model.tokenizer.encode(text, allowed_special="all")])
    with fl.no_grad():
        logits = model(ids).numpy()[0]
    positions = np.flatnonzero(ids[0] == model.tokenizer.token_to_id("[MASK]"))
    assert len(result) == 2 == len(positions)
    for candidates, at in zip(result, positions):
        z = logits[at] - logits[at].max()
        probs = np.exp(z) / np.exp(z).sum()
        best = np.argsort(-probs, kind="stable")[:4]
        assert [c["token_id"] for c in candidates] == best.tolist()
        np.testing.assert_allclose([c["score"] for c in candidates], probs[best], rtol=1e-4)


def test_fill_mask_of_a_diverged_model_is_refused(trained_bert):
    """It ranked every token by NaN scores, and the command printed them and exited 0."""
    model = BERT.load(trained_bert[0])
    weight = next(t for n, t in model.named_parameters() if n.endswith("encoder.layer.0.output.LayerNorm.weight"))
    weight.copy_(np.full(weight.shape, 3e38, np.float32))  # finite weights, loaded; infinite products
    with pytest.raises(ValueError, match="scores hold NaN or infinite values"):
        model.fill_mask("To be, or not to [MASK]")


def test_fill_mask_in_text_longer_than_the_context(trained_bert):
    """Past the context (16 tokens), each [MASK] is filled from the 16-token window centred on
    it (clamped to the text), [CLS] and [SEP] included: the MLM head's softmax at that position
    when the window is run on its own. The first two masks share a window."""
    model = BERT.load(trained_bert[0])
    tok = model.tokenizer
    text = ("[MASK] be, or [MASK] to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
            "arrows of outrageous fortune, or to take arms against a sea of [MASK], and by opposing end them")
    ids = tok.encode(text, allowed_special="all")
    assert len(ids) > 2 * model.max_len
    result = model.fill_mask(text, top_k=3)
    body, mask = ids[1:-1], tok.token_to_id("[MASK]")
    positions = [i for i, t in enumerate(body) if t == mask]
    assert len(result) == len(positions) == 3
    for candidates, p in zip(result, positions):
        start = min(max(p - 7, 0), len(body) - 14)
        window = np.array([[tok.token_to_id("[CLS]"), *body[start : start + 14], tok.token_to_id("[SEP]")]])
        logits = model(window).numpy()[0, 1 + p - start]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs, kind="stable")[:3]
        assert [c["token_id"] for c in candidates] == best.tolist()
        np.testing.assert_allclose([c["score"] for c in candidates], probs[best], rtol=1e-4)


def test_fill_mask_names_only_tokens_the_tokenizer_has(wordpiece):
    """A vocabulary padded past the tokenizer's: its extra ids were ranked too, named None."""
    model = BERT.create(vocab_size=wordpiece.vocab_size + 40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        max_position_embeddings=16, seed=0, tokenizer=wordpiece)
    [candidates] = model.fill_mask("the king [MASK] dead", top_k=wordpiece.vocab_size + 40)
    assert len(candidates) == wordpiece.vocab_size and all(c["token"] is not None for c in candidates)
    assert sum(c["score"] for c in candidates) == pytest.approx(1.0, rel=1e-4)


def test_sentence_embeddings(trained_bert):
    model = BERT.load(trained_bert[0])
    e = model.embed(["To be, or not to be", "To be, or not to be", "the king is dead"], pooling="mean")
    assert e.shape == (3, 128) and e.dtype == np.float32  # as cls pooling's (it was float64)
    np.testing.assert_allclose(e[0], e[1], rtol=1e-6)
    assert model.embed(["a short one", "a much longer sentence than the first one"], pooling="cls").shape == (2, 128)


def test_embeddings_are_computed_in_batches_and_can_truncate(trained_bert):
    model = BERT.load(trained_bert[0])
    texts = ["the king", "is dead, long live the king", "to be", "or not to be, that is the question", "a", "b c"]
    for pooling in ("mean", "cls"):
        whole = model.embed(texts, pooling, batch_size=len(texts))
        np.testing.assert_allclose(model.embed(texts, pooling, batch_size=2), whole, rtol=1e-5, atol=1e-5)
        alone = np.concatenate([model.embed([t], pooling) for t in texts])  # in the given order
        np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-5)
    long = "to be or not to be " * 20
    with pytest.raises(ValueError, match="text 1 has .* tokens, more than max_position_embeddings .*truncate=True"):
        model.embed(["short", long])
    ids = model.tokenizer.encode(long)
    kept = np.array(ids[: model.max_len - 1] + ids[-1:])[None]  # the first tokens and the closing [SEP]
    with fl.no_grad():
        expected = model.hidden(kept).numpy().mean(1)
    np.testing.assert_allclose(model.embed(["short", long], truncate=True)[1], expected[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        model.embed(texts, batch_size=0)


# ---------------------------------------------------------------- bad input


def test_objectives_and_heads_refuse_the_other_kind_of_model(trained_bert, wordpiece, tmp_path):
    """A BERT trained to predict the next token sees the tokens it predicts: a perplexity that
    measured nothing, silently. The other pairings failed deep inside (AttributeError, KeyError)."""
    from ferrolm.train import CausalLM, evaluate_model
    from ferrolm.train.classify import TextClassifier
    from ferrolm.train.ppo import PolicyWithValue
    from ferrolm.train.reward import RewardModel

    data = trained_bert[0].parent / "data"
    bert = BERT.load(trained_bert[0])
    gpt = fl.GPT.create(vocab_size=wordpiece.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16,
                        tokenizer=wordpiece)
    config = TrainConfig(max_iters=1, warmup_iters=0, progress=False)
    with pytest.raises(TypeError, match="CausalLM cannot train a BERT: it sees the tokens it would predict"):
        train(bert, CausalLM(data, 16, 4), config, tmp_path / "causal")
    with pytest.raises(TypeError, match="CausalLM cannot train a BERT"):  # nor evaluate one
        evaluate_model(bert, CausalLM(data, 16, 4), eval_iters=1)
    with pytest.raises(TypeError, match="MaskedLM cannot train a GPT: it has no masked-LM head"):
        train(gpt, MaskedLM(data, wordpiece, 16, 4), config, tmp_path / "mlm")
    assert not list(tmp_path.iterdir())
    for wrap, model, said in ((TextClassifier, gpt, "a TextClassifier is built on a BERT, not a GPT"),
                              (RewardModel, bert, "a RewardModel is built on a GPT, not a BERT"),
                              (PolicyWithValue, bert, "a PolicyWithValue is built on a GPT, not a BERT")):
        with pytest.raises(TypeError, match=said):
            wrap(model, ["yes", "no"]) if wrap is TextClassifier else wrap(model)


def test_bad_input(trained_bert, tmp_path):
    model = BERT.load(trained_bert[0])
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        model.fill_mask("nothing to fill here")
    with pytest.raises(ValueError, match="top_k"):
        model.fill_mask("to be or not to [MASK]", top_k=-1)
    with pytest.raises(IndexError, match="max_position_embeddings"):
        model.hidden(np.zeros((1, 65), dtype=np.int64))
    ids = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="token_type_ids must have the ids' shape"):  # was read in the wrong order
        model.hidden(ids, token_type_ids=np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(IndexError, match="token type 2 is outside the model's type_vocab_size of 2"):
        model.hidden(ids, token_type_ids=np.full((2, 3), 2))
    tensors_dir = tmp_path / "ckpt"
    hf_bert_checkpoint(tensors_dir)
    st = safetensors_numpy.load_file(str(tensors_dir / "model.safetensors"))
    missing = {k: v for k, v in st.items() if "layer.1.output.dense.bias" not in k}
    safetensors_numpy.save_file(missing, str(tensors_dir / "model.safetensors"))
    with pytest.raises(fl.FormatError, match="missing tensor"):
        BERT.load(tensors_dir)
    safetensors_numpy.save_file({**st, "bert.encoder.layer.0.extra.weight": np.zeros(3, np.float32)}, str(tensors_dir / "model.safetensors"))
    with pytest.raises(fl.FormatError, match="unexpected tensor"):
        BERT.load(tensors_dir)
    bad = dict(st)
    bad["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((I + 1, C), np.float32)
    safetensors_numpy.save_file(bad, str(tensors_dir / "model.safetensors"))
    with pytest.raises(fl.ShapeError, match="intermediate"):
        BERT.load(tensors_dir)
    # A tokenizer that is not the model's: more ids than embeddings is refused; fewer, where
    # a vocab.txt lost a line and every id after it shifts, is warned about.
    import shutil

    other = tmp_path / "other-vocab"
    shutil.copytree(trained_bert[0], other)
    rows = model.config["vocab_size"]
    for size, check in ((rows // 4, pytest.warns(UserWarning, match=f"fewer than the model's {rows} embeddings")),
                        (rows + 200, pytest.raises(fl.FormatError, match=f"more than the model's {rows} embeddings"))):
        tok = fl.Tokenizer.train_from_iterator([BUNDLED_CORPUS.read_text()], kind="wordpiece", vocab_size=size)
        assert (tok.vocab_size < rows) == (size < rows)
        tok.save(str(other / "tokenizer.json"))
        with check:
            BERT.load(other)


def test_cli_pretrains_mlm_with_its_defaults_and_fills_masks(tmp_path, capsys, monkeypatch):
    from ferrolm.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(BUNDLED_CORPUS.read_text()[:100_000])
    out = tmp_path / "bert"
    assert main(["pretrain", str(corpus), "--objective", "mlm", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                 "--vocab-size", "500", "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2",
                 "--no-progress", "--out", str(out)]) == 0
    assert "masked-token accuracy" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["max_position_embeddings"] == 32  # MLM's default context
    assert json.loads((out / "trainer_state.json").read_text())["objective_state"]["batch_size"] == 64
    assert main(["fill-mask", str(out), "to be or not to [MASK], that is the [MASK]", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split(":")[0] for l in lines] == ["[MASK] 1", "[MASK] 2"]
    assert all(l.count("(") == 3 for l in lines)

    # Continued pretraining of an encoder-only checkpoint, on sequences shorter than its context.
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (encoder / f).write_bytes((out / f).read_bytes())
    stored = safetensors_numpy.load_file(str(out / "model.safetensors"))
    safetensors_numpy.save_file({k: v for k, v in stored.items() if not k.startswith("cls.")}, str(encoder / "model.safetensors"))
    assert not BERT.load(encoder).core.has_mlm_head
    BERT.load(encoder).save(tmp_path / "saved")  # named for what it holds (it was a BertForMaskedLM, without the head)
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["architectures"] == ["BertModel"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    tiny = ["--max-iters", "2", "--eval-iters", "1", "--no-progress"]
    assert main(["pretrain", str(corpus), "--init-from", str(encoder), "--eval-only", *tiny]) == 2
    assert "encoder-only checkpoint has no masked-LM head to evaluate" in capsys.readouterr().err
    assert main(["pretrain", str(corpus), "--init-from", str(encoder), "--block-size", "33", *tiny]) == 2
    assert "--block-size 33 is longer than the context of the model in" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    tuned = tmp_path / "out-mlm"  # the default --out names the model's objective (it was out-causal)
    assert main(["pretrain", str(corpus), "--init-from", str(encoder), "--block-size", "16", "--mlm-probability", "0.3",
                 *tiny]) == 0
    captured = capsys.readouterr()
    assert "no masked-LM head (an encoder-only checkpoint): training a new one" in captured.err  # it failed after tokenising
    assert "context 32, trained on sequences of 16" in captured.out
    model = BERT.load(tuned)
    assert model.core.has_mlm_head and model.max_len == 32  # the model keeps its positions
    state = json.loads((tuned / "trainer_state.json").read_text())["objective_state"]
    assert state["block_size"] == 16 and state["mask_prob"] == 0.3
    # A resume trains on the run's sequences, not the model's context.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["pretrain", "--resume", "--out", str(tuned), "--max-iters", "4", "--no-progress"]) == 0
    assert "context 32, trained on sequences of 16" in capsys.readouterr().out
    assert not [w for w in caught if "differ from the run's" in str(w.message)]
    assert json.loads((tuned / "trainer_state.json").read_text())["objective_state"]["mask_prob"] == 0.3  # kept
    assert main(["pretrain", str(corpus), "--mlm-probability", "0.3", *tiny]) == 2
    assert "--mlm-probability is for --objective mlm" in capsys.readouterr().err


def test_pooler_is_tanh_of_dense_on_cls():
    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, hidden_dropout_prob=0.0)
    assert not BERT.create(**small).core.has_pooler
    model = BERT.create(**small, pooler=True)
    assert model.core.has_pooler
    h = model.hidden(np.array([[1, 5, 7, 2], [1, 9, 3, 2]]))
    p = dict(model.named_parameters())
    w, b = p["bert.pooler.dense.weight"].numpy(), p["bert.pooler.dense.bias"].numpy()
    np.testing.assert_allclose(model.core.pooled(h).numpy(), np.tanh(h.numpy()[:, 0] @ w.T + b), rtol=1e-5, atol=1e-6)


def test_dropout_reaches_the_attention_probabilities(tmp_path):
    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, hidden_dropout_prob=0.0)
    ids = np.array([[1, 5, 7, 2], [1, 9, 3, 2]])
    attention_only = BERT.create(**small, attention_probs_dropout_prob=0.5)
    assert not np.allclose(attention_only(ids, dropout_seed=3).numpy(), attention_only(ids).numpy())
    assert BERT.create(**{**small, "hidden_dropout_prob": 0.1}).config["attention_probs_dropout_prob"] == 0.1
    without = BERT.create(**small)  # the attention rate follows hidden_dropout_prob
    assert without.config["attention_probs_dropout_prob"] == 0.0
    np.testing.assert_array_equal(without(ids, dropout_seed=3).numpy(), without(ids).numpy())
    attention_only.save(tmp_path / "m")
    assert BERT.load(tmp_path / "m").config["attention_probs_dropout_prob"] == 0.5
