"""Text classification by fine-tuning BERT (`ferrolm classify`, `TextClassifier`): it learns a
held-out task, round-trips through files, resumes exactly, and refuses bad input clearly."""

import json

import numpy as np
import pytest

import ferrolm as fl
from ferrolm.bert import BERT
from ferrolm.cli import main as ferrolm
from ferrolm.data import BUNDLED_CORPUS
from ferrolm.train.classify import TextClassifier, labels_of
from conftest import shard_weights
from test_bert import C, V, hf_bert_checkpoint, numpy_bert

safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """Lines of the play labelled by whether they ask something, told by their words alone (the
    final "?" or "." is cut off), and a small untrained BERT with a WordPiece vocabulary."""
    tmp = tmp_path_factory.mktemp("classify")
    lines = [l.strip() for l in BUNDLED_CORPUS.read_text().splitlines() if 10 < len(l.strip()) < 80]
    rng = np.random.default_rng(0)
    questions = [l for l in lines if l.endswith("?")][:500]
    statements = [l for l in lines if l.endswith(".")][:500]
    records = ([{"text": q[:-1], "label": "question"} for q in questions]
               + [{"text": s[:-1], "label": "statement"} for s in statements])
    rng.shuffle(records)
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tok = fl.Tokenizer.train_from_iterator(lines, kind="wordpiece", vocab_size=800)
    BERT.create(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=48, pad_token_id=tok.pad_id, seed=0, tokenizer=tok).save(tmp / "bert")
    return tmp


def test_fine_tuning_learns_a_held_out_task_and_round_trips(task, capsys):
    out = task / "clf"
    assert ferrolm(["classify", str(task / "bert"), "--data", str(task / "data.jsonl"), "--out", str(out),
                    "--max-iters", "200", "--eval-interval", "100", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "classify: 900 train / 100 val texts, labels ['question', 'statement']" in printed
    accuracy = float(printed.split("accuracy ")[-1].split()[0])
    # Chance is 0.5 (±0.05 on 100 texts); this model reaches about 0.75 from the words alone.
    assert accuracy >= 0.65
    model = TextClassifier.load(out)
    assert model.labels == ["question", "statement"]
    with pytest.warns(UserWarning, match="holds a TextClassifier: only its backbone is loaded, without the head"):
        assert isinstance(fl.load_model(out), BERT)
    texts = [json.loads(l)["text"] for l in (task / "data.jsonl").read_text().splitlines()[:40]]
    results = model.classify(texts, batch_size=16)
    ids = [model.bert.tokenizer.encode(t) for t in texts]
    with fl.no_grad():  # each text alone: batches of padded texts give the same answers
        alone = [model(np.array([i]), np.ones((1, len(i)), bool)).numpy()[0] for i in ids]
    assert [r["label"] for r in results] == [model.labels[int(a.argmax())] for a in alone]
    # Saved and loaded again: the same logits.
    model.save(task / "again")
    ids, mask = np.array([[2, 50, 60, 3, 0]]), np.array([[1, 1, 1, 1, 0]], dtype=bool)
    with fl.no_grad():
        np.testing.assert_array_equal(TextClassifier.load(task / "again")(ids, mask).numpy(), model(ids, mask).numpy())


def test_classification_resumes_exactly(task):
    args = ["classify", str(task / "bert"), "--data", str(task / "data.jsonl"), "--eval-interval", "10",
            "--eval-iters", "2", "--no-progress"]
    assert ferrolm([*args, "--out", str(task / "whole"), "--max-iters", "20"]) == 0
    assert ferrolm([*args, "--out", str(task / "split"), "--max-iters", "10"]) == 0
    assert ferrolm([*args, "--out", str(task / "split"), "--max-iters", "20", "--resume"]) == 0
    records = [[{k: v for k, v in json.loads(line).items() if k not in ("time", "tokens_per_sec", "elapsed")}
                for line in (task / run / "metrics.jsonl").read_text().splitlines()] for run in ("whole", "split")]
    after = [r for r in records[0] if r.get("step", 0) > 10]
    assert after and after == [r for r in records[1] if r.get("step", 0) > 10]  # losses and evaluations
    a, b = (fl.load_safetensors(str(task / run / "model.safetensors"))[0] for run in ("whole", "split"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_classifier_trains_on_from_its_head_and_saves_in_hugging_faces_layout(task, capsys):
    out = task / "first"
    assert ferrolm(["classify", str(task / "bert"), "--data", str(task / "data.jsonl"), "--out", str(out),
                    "--max-iters", "30", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert config["id2label"] == {"0": "question", "1": "statement"} and config["label2id"]["statement"] == 1
    head = fl.load_safetensors(str(out / "model.safetensors"), ["classifier.weight", "classifier.bias"])[0]
    assert head["classifier.weight"].shape == (2, 64) and "bert.pooler.dense.weight" in fl.load_safetensors(
        str(out / "model.safetensors"))[0]  # the pooler BertForSequenceClassification has, made for this BERT
    capsys.readouterr()
    # Started from a classifier with the same labels, its head trains on (it was replaced by a new one).
    def head_of(run):
        return fl.load_safetensors(str(task / run / "model.safetensors"), ["classifier.weight"])[0]["classifier.weight"]

    assert ferrolm(["classify", str(out), "--data", str(task / "data.jsonl"), "--out", str(task / "second"),
                    "--max-iters", "0", "--no-progress"]) == 0
    np.testing.assert_array_equal(head_of("second"), head_of("first"))
    assert "left aside" not in capsys.readouterr().err
    relabelled = task / "relabelled.jsonl"
    relabelled.write_text((task / "data.jsonl").read_text().replace('"question"', '"ask"'))
    assert ferrolm(["classify", str(out), "--data", str(relabelled), "--out", str(task / "third"),
                    "--max-iters", "0", "--no-progress"]) == 0
    assert "classifies ['question', 'statement'], not ['ask', 'statement']: its head is left aside" in capsys.readouterr().err
    assert not np.array_equal(head_of("third"), head_of("first"))
    # The same labels in another order keep the head, its rows reordered (it was left aside: a checkpoint whose
    # id2label is not sorted could not train on); so do the integer labels GLUE gives against LABEL_0, LABEL_1.
    import shutil

    for run, id2label, data_labels in (("swapped", {"0": "statement", "1": "question"}, ("question", "statement")),
                                       ("glue", None, (0, 1))):
        shutil.copytree(out, task / run)
        config = json.loads((task / run / "config.json").read_text())
        del config["label2id"]
        (task / run / "config.json").write_text(json.dumps({**config, "id2label": id2label}))
        data = task / f"{run}.jsonl"
        data.write_text("".join(json.dumps({"text": f"to be {i}", "label": data_labels[i % 2]}) + "\n" for i in range(20)))
        assert ferrolm(["classify", str(task / run), "--data", str(data), "--out", str(task / f"{run}-out"),
                        "--max-iters", "0", "--no-progress"]) == 0
        assert "read as" in capsys.readouterr().err
        reordered = head_of(f"{run}-out")
        np.testing.assert_array_equal(reordered, head_of("first")[::-1] if id2label else head_of("first"))
    # An id2label that does not name the head's outputs is refused (a third name misnamed the second output).
    config = json.loads((task / "swapped" / "config.json").read_text())
    for id2label in ({"0": "neg", "1": "neutral", "2": "pos"}, {"0": "neg"}, {"0": "neg", "5": "pos"}):
        (task / "swapped" / "config.json").write_text(json.dumps({**config, "id2label": id2label}))
        with pytest.raises(fl.FormatError, match="id2label names outputs .* but the classifier head has 2"):
            TextClassifier.load(task / "swapped")
    # ... unless num_labels says the head's size: Hugging Face then names the outputs LABEL_i (checked with 5.24).
    (task / "swapped" / "config.json").write_text(json.dumps({**config, "id2label": {"0": "neg", "5": "pos"},
                                                             "num_labels": 2}))
    with pytest.raises(fl.FormatError, match="id2label names outputs"):  # two names, not of the two outputs
        TextClassifier.load(task / "swapped")
    (task / "swapped" / "config.json").write_text(json.dumps({**config, "id2label": {"0": "neg"}, "num_labels": 2}))
    with pytest.warns(UserWarning, match="named LABEL_0 to LABEL_1, as in Hugging Face"):
        assert TextClassifier.load(task / "swapped").labels == ["LABEL_0", "LABEL_1"]
    # Another task's checkpoint (a token classifier) starts a classifier from its encoder, said.

    shutil.copytree(out, task / "tokens")
    config = json.loads((task / "tokens" / "config.json").read_text())
    (task / "tokens" / "config.json").write_text(json.dumps({**config, "architectures": ["BertForTokenClassification"]}))
    assert ferrolm(["classify", str(task / "tokens"), "--data", str(task / "data.jsonl"), "--out", str(task / "fourth"),
                    "--max-iters", "0", "--no-progress"]) == 0
    assert "is a BertForTokenClassification, not a BertForSequenceClassification" in capsys.readouterr().err
    assert not np.array_equal(head_of("fourth"), head_of("first"))


def test_bad_input_is_refused_clearly(task, tmp_path, capsys):
    bert = str(task / "bert")
    for line, message in (('{"text": "a b c"}', 'line 1: "label" must be a non-empty string or an integer'),
                          ('{"text": "a b c", "label": true}', "must be a non-empty string or an integer"),
                          ('{"label": "x"}', "line 1: no 'text' field"),
                          ('{"text": "' + "word " * 60 + '", "label": "x"}', "line 1 has 62 tokens, more than the 48 allowed "
                                                                              "(the model's context, or --max-length); --truncate")):
        (tmp_path / "bad.jsonl").write_text(line + "\n" + '{"text": "ok", "label": "y"}\n' * 3)
        assert ferrolm(["classify", bert, "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"),
                        "--max-iters", "1", "--no-progress"]) == 2
        assert message in capsys.readouterr().err, line
    with pytest.raises(ValueError, match="two or more distinct labels"):
        TextClassifier(BERT.load(bert), ["only"])
    with pytest.raises(FileNotFoundError, match="is not a classifier"):
        TextClassifier.load(bert)
    assert labels_of([{"label": 10}, {"label": 9}, {"label": "-1"}, {"label": 9}]) == ["-1", "9", "10"]
    assert labels_of([{"label": 10}, {"label": "nan"}, {"label": "b"}, {"label": 2}]) == ["10", "2", "b", "nan"]
    assert labels_of([{"label": "01"}, {"label": 1}, {"label": "001"}]) == ["001", "01", "1"]  # not by hash order
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TextClassifier(BERT.load(bert), ["a", "b"]).classify(["x"], batch_size=0)
    # --skip-long leaves out (and counts) only the texts that do not fit; integer labels work.
    lines = ['{"text": "' + "word " * 60 + '", "label": 1}'] + [f'{{"text": "to be {i}", "label": {i % 2}}}' for i in range(20)]
    (tmp_path / "ints.jsonl").write_text("\n".join(lines) + "\n")
    assert ferrolm(["classify", bert, "--data", str(tmp_path / "ints.jsonl"), "--out", str(tmp_path / "ints"),
                    "--max-iters", "2", "--skip-long", "--val-fraction", "0.5", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "labels ['0', '1']" in printed and "skipped as too long for the context: 1 " in printed
    # A label the split leaves only in the held-out part is never trained on: said.
    from ferrolm.cli.posttrain import _split

    records = [{"text": f"to be {i}", "label": i % 2} for i in range(20)] + [{"text": "or not", "label": "rare"}]
    seed = next(s for s in range(100) if records[-1] in _split(records, 0.2, s)[1])
    (tmp_path / "rare.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.warns(UserWarning, match="label 'rare' has no training text \\(only held out"):
        assert ferrolm(["classify", bert, "--data", str(tmp_path / "rare.jsonl"), "--out", str(tmp_path / "rare"),
                        "--max-iters", "1", "--seed", str(seed), "--val-fraction", "0.2", "--no-progress"]) == 0
    # --skip-long may leave out every text of a label: said as well (it trained on one label, "accuracy 1.000").
    lines = [{"text": "word " * 60, "label": "long"}] * 3 + [{"text": f"to be {i}", "label": "short"} for i in range(20)]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.warns(UserWarning, match="label 'long' has no training text"):
        assert ferrolm(["classify", bert, "--data", str(tmp_path / "long.jsonl"), "--out", str(tmp_path / "long"),
                        "--max-iters", "1", "--skip-long", "--no-progress"]) == 0
    untokenized = TextClassifier(BERT.create(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2),
                                 ["a", "b"])
    with pytest.raises(ValueError, match="this classifier has no tokenizer"):  # an AttributeError on None
        untokenized.classify(["x"])
    tok = fl.Tokenizer.train_from_iterator(["to be or not to be"], kind="wordpiece", vocab_size=60)
    with pytest.raises(ValueError, match=f"the tokenizer has {tok.vocab_size} ids, more than the model's 10 embeddings"):
        BERT.create(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, tokenizer=tok)


def test_a_hugging_face_sequence_classifier_loads_and_agrees_with_numpy(tmp_path):
    """BertForSequenceClassification's layout (classifier.* beside bert.*, id2label): logits are
    tanh(pooler(h[CLS])) · Wᵀ + b, from an independent numpy forward pass."""
    tensors = hf_bert_checkpoint(tmp_path, mlm=False)
    stored = safetensors_numpy.load_file(str(tmp_path / "model.safetensors"))
    rng = np.random.default_rng(3)
    w, b = rng.normal(0, 0.3, (3, C)).astype(np.float32), rng.normal(0, 0.3, 3).astype(np.float32)
    safetensors_numpy.save_file({**stored, "classifier.weight": w, "classifier.bias": b}, str(tmp_path / "model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "neg", "1": "neu", "2": "pos"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = TextClassifier.load(tmp_path)
    assert model.labels == ["neg", "neu", "pos"]
    ids, mask = rng.integers(0, V, size=(2, 7)), np.ones((2, 7), bool)
    mask[1, 5:] = False
    hidden, _ = numpy_bert(tensors, ids, np.zeros_like(ids), mask)
    pooled = np.tanh(hidden[:, 0] @ tensors["pooler.dense.weight"].T.astype(np.float64) + tensors["pooler.dense.bias"])
    with fl.no_grad():
        np.testing.assert_allclose(model(ids, mask).numpy(), pooled @ w.T + b, rtol=1e-4, atol=1e-4)
    assert BERT.load(tmp_path).core.has_pooler  # the encoder alone loads too, without the head
    shards = sorted(set(shard_weights(tmp_path).values()))  # as save_pretrained writes a model above its shard size
    with fl.no_grad():
        np.testing.assert_allclose(TextClassifier.load(tmp_path)(ids, mask).numpy(), pooled @ w.T + b, rtol=1e-4, atol=1e-4)
    (tmp_path / shards[0]).rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=shards[0]):  # a missing shard, not "not a classifier"
        TextClassifier.load(tmp_path)
    (tmp_path / "elsewhere").rename(tmp_path / shards[0])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(config))
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(fl.FormatError, match="holds its weights as pytorch_model.bin"):  # not "not a classifier"
        TextClassifier.load(pickled)
    del config["id2label"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert TextClassifier.load(tmp_path).labels == ["LABEL_0", "LABEL_1", "LABEL_2"]  # Hugging Face's default names
    (tmp_path / "config.json").write_text(json.dumps({**config, "classifier_dropout": 0.3}))
    loaded = TextClassifier.load(tmp_path)
    assert loaded.classifier_dropout == 0.3  # it was ignored, and dropped on save
    loaded.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["classifier_dropout"] == 0.3
    (tmp_path / "config.json").write_text(json.dumps({**config, "problem_type": "regression"}))
    with pytest.raises(ValueError, match="problem_type 'regression' is not supported"):
        TextClassifier.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "id2label": ["neg", "neu", "pos"]}))
    assert TextClassifier.load(tmp_path).labels == ["neg", "neu", "pos"]  # a list of names (an AttributeError)
    (tmp_path / "config.json").write_text(json.dumps({**config, "id2label": "neg"}))
    with pytest.raises(ValueError, match="id2label must map output indices to label names"):
        TextClassifier.load(tmp_path)
    # Another task's head under the same name is not a text classifier (it loaded, and classified).
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["BertForTokenClassification"]}))
    with pytest.raises(ValueError, match="is a BertForTokenClassification, not a BertForSequenceClassification"):
        TextClassifier.load(tmp_path)
    assert BERT.load(tmp_path).core.has_pooler  # its encoder loads
    (tmp_path / "config.json").write_text(json.dumps(config))
    # A head without the pooler it reads got a random pooler, silently.
    bare = tmp_path / "no-pooler"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(config))
    safetensors_numpy.save_file({**{k: v for k, v in stored.items() if "pooler" not in k}, "classifier.weight": w,
                                 "classifier.bias": b}, str(bare / "model.safetensors"))
    with pytest.raises(ValueError, match="has a classifier head but no pooler"):
        TextClassifier.load(bare)
    # A regression head (num_labels 1) is said as such, not as "two or more distinct labels".
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text(json.dumps({**config, "id2label": {"0": "LABEL_0"}}))
    safetensors_numpy.save_file({**stored, "classifier.weight": w[:1], "classifier.bias": b[:1]},
                                str(single / "model.safetensors"))
    with pytest.raises(ValueError, match="regression, num_labels 1"):
        TextClassifier.load(single)


def test_pairs_of_texts_are_classified_with_their_token_types(task, capsys):
    """{"text", "text_pair"} records: the label is the second text's (question or statement), so
    only a model that reads the pair past its [SEP] learns it."""
    records = [json.loads(l) for l in (task / "data.jsonl").read_text().splitlines()]
    firsts = [r["text"] for r in records[::-1]]
    paired = [{"text": first, "text_pair": r["text"], "label": r["label"]} for first, r in zip(firsts, records)]
    (task / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in paired))
    out = task / "pairs"
    assert ferrolm(["classify", str(task / "bert"), "--data", str(task / "pairs.jsonl"), "--out", str(out),
                    "--max-iters", "200", "--no-progress"]) == 0
    assert float(capsys.readouterr().out.split("accuracy ")[-1].split()[0]) >= 0.65  # chance: 0.5
    model = TextClassifier.load(out)
    tok = model.bert.tokenizer
    ids, types = tok.encode_pair(paired[0]["text"], paired[0]["text_pair"])
    assert types[0] == 0 and types[-1] == 1 and ids[0] == tok.token_to_id("[CLS]")
    with fl.no_grad():
        logits = model(np.array([ids]), np.ones((1, len(ids)), bool), np.array([types])).numpy()[0]
        untyped = model(np.array([ids]), np.ones((1, len(ids)), bool)).numpy()[0]
    [result] = model.classify([paired[0]["text"]], pairs=[paired[0]["text_pair"]])
    assert result["label"] == model.labels[int(logits.argmax())] and not np.allclose(logits, untyped)
    with pytest.raises(ValueError, match="1 pairs for 2 texts"):
        model.classify(["a", "b"], pairs=["c"])
    (task / "bad_pair.jsonl").write_text('{"text": "a", "text_pair": 3, "label": "x"}\n' * 3)
    assert ferrolm(["classify", str(task / "bert"), "--data", str(task / "bad_pair.jsonl"), "--out", str(task / "o"),
                    "--no-progress"]) == 2
    assert '"text_pair" must be a string, got 3' in capsys.readouterr().err


def test_long_texts_are_cut_with_truncate_as_hugging_face_cuts_pairs(task, capsys):
    """--truncate cuts a pair's longer text first (Hugging Face's longest_first): with a long
    first text and the telling one second, the label is still learned, where cutting the end
    of the framed pair would lose it. Without --truncate such records are refused, naming it."""
    records = [json.loads(l) for l in (task / "data.jsonl").read_text().splitlines()]
    filler = " ".join(r["text"] for r in records[:30])  # ~100 tokens, the same for every record
    long = [{"text": filler, "text_pair": r["text"], "label": r["label"]} for r in records]
    (task / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long))
    run = ["classify", str(task / "bert"), "--data", str(task / "long.jsonl"), "--no-progress"]
    assert ferrolm([*run, "--out", str(task / "o"), "--max-iters", "1"]) == 2
    assert "more than the 48 allowed (the model's context, or --max-length); --truncate (truncate=True) cuts" in \
        capsys.readouterr().err
    for flags, message in ((["--max-length", "49", "--truncate"], "--max-length 49 is longer than the model's context (48)"),
                           (["--truncate", "--skip-long"], "skip_long and truncate exclude each other")):
        assert ferrolm([*run, "--out", str(task / "o"), "--max-iters", "1", *flags]) == 2
        assert message in capsys.readouterr().err
    out = task / "long-clf"
    assert ferrolm([*run, "--out", str(out), "--max-iters", "200", "--truncate", "--max-length", "32"]) == 0
    assert float(capsys.readouterr().out.split("accuracy ")[-1].split()[0]) >= 0.65  # chance: 0.5
    model = TextClassifier.load(out)
    tok = model.bert.tokenizer
    ids, types = tok.encode_pair(filler, long[0]["text_pair"], max_length=48)
    assert len(ids) == 48 and ids[-1] == tok.token_to_id("[SEP]") and ids[-2:] == tok.encode(long[0]["text_pair"])[-2:]
    with fl.no_grad():
        logits = model(np.array([ids]), np.ones((1, 48), bool), np.array([types])).numpy()[0]
    [result] = model.classify([filler], pairs=[long[0]["text_pair"]], truncate=True)
    np.testing.assert_allclose(list(result["scores"].values()), np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="text 0 has .* tokens, more than the 48 allowed"):
        model.classify([filler], pairs=["x"])
