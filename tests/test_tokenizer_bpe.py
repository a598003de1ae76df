"""Byte-level BPE: equality with Hugging Face tokenizers both ways, lossless round trips,
special tokens, offsets, batches, padding, file formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ferrolm
from ferrolm.tokenizer import PATTERNS
from tokenizer_corpus import adversarial_corpus, run_python, shakespeare_path, write_corpus

hf = pytest.importorskip("tokenizers")
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

ADV = adversarial_corpus()


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return shakespeare_path().read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def eval_texts(shakespeare) -> list[str]:
    return ADV + shakespeare.split("\n\n")[:1500] + [shakespeare[:200_000]]


def hf_bpe(train, vocab_size: int, specials=("<|endoftext|>",)):
    tok = hf.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if isinstance(train, list):
        tok.train_from_iterator(train, trainer)
    else:
        tok.train([str(train)], trainer)
    return tok


@pytest.mark.parametrize("vocab_size", [600, 3000])
def test_training_matches_hf_on_shakespeare(vocab_size):
    path = shakespeare_path()
    ours = ferrolm.Tokenizer.train([str(path)], vocab_size=vocab_size)
    ref = hf_bpe(path, vocab_size)
    a, b = json.loads(ours.to_str())["model"], json.loads(ref.to_str())["model"]
    assert a["vocab"] == b["vocab"]
    assert a["merges"] == [m if isinstance(m, str) else " ".join(m) for m in b["merges"]]


def test_training_matches_hf_on_adversarial_corpus():
    ours = ferrolm.Tokenizer.train_from_iterator(ADV, vocab_size=900, special_tokens=[])
    ref = hf_bpe(ADV, 900, specials=())
    assert json.loads(ours.to_str())["model"]["vocab"] == json.loads(ref.to_str())["model"]["vocab"]
    # Batches of texts, as Hugging Face's iterators may yield them (a TypeError before).
    batches = [ADV[i : i + 7] for i in range(0, len(ADV), 7)]
    batched = ferrolm.Tokenizer.train_from_iterator(iter(batches), vocab_size=900, special_tokens=[])
    assert batched.to_str() == ours.to_str()
    assert json.loads(hf_bpe(batches, 900, specials=()).to_str())["model"]["vocab"] == json.loads(ours.to_str())["model"]["vocab"]


def test_one_long_text_trains_as_hf_trains_it(shakespeare):
    """A text of a megabyte is counted in pieces (on every thread, interruptible) that
    pre-tokenize as the whole: the vocabulary and merges are still Hugging Face's."""
    text = shakespeare + "  \n\n " + " ".join(ADV)  # runs of spaces and newlines across the cuts
    ours = ferrolm.Tokenizer.train_from_iterator([text], vocab_size=1200)
    a, b = json.loads(ours.to_str())["model"], json.loads(hf_bpe([text], 1200).to_str())["model"]
    assert a["vocab"] == b["vocab"]
    assert a["merges"] == [m if isinstance(m, str) else " ".join(m) for m in b["merges"]]
    # Where a cut before a space could split a match, texts stay whole: a user's regex that
    # matches across spaces, and a special token with a space in it.
    vocab = ferrolm.Tokenizer.train_from_iterator(["q " * 40_000 + "zz yy" + " q" * 100], pattern=r"zz yy|\S+|\s+",
                                                  vocab_size=300).get_vocab()
    assert "zzĠyy" in vocab
    vocab = ferrolm.Tokenizer.train_from_iterator(["a " * 40_000 + "b<|end of text|>" + " c" * 100], vocab_size=300,
                                                  special_tokens=["<|end of text|>"]).get_vocab()
    assert not any(piece in vocab for piece in ("end", "Ġof", "of"))


def test_hf_trained_vocab_gives_identical_ids(eval_texts, shakespeare):
    ref = hf_bpe(ADV + [shakespeare], 2000)
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    for text in eval_texts:
        assert ours.encode(text) == ref.encode(text).ids, repr(text[:60])
    assert ours.vocab_size == ref.get_vocab_size()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_our_vocab_loads_in_hf_with_identical_ids(eval_texts, shakespeare, pattern):
    ours = ferrolm.Tokenizer.train_from_iterator(ADV + [shakespeare], vocab_size=2000, pattern=pattern)
    ref = hf.Tokenizer.from_str(ours.to_str())
    for text in eval_texts:
        ids = ours.encode(text)
        assert ref.encode(text).ids == ids, repr(text[:60])
        assert ref.decode(ids, skip_special_tokens=False) == ours.decode(ids)
    # The file HF writes back names the pattern by its regex, which gets the hand-written matcher.
    assert ours.pattern == ferrolm.Tokenizer.from_str(ref.to_str()).pattern == pattern


def test_custom_pattern_round_trips_through_hf():
    ours = ferrolm.Tokenizer.train_from_iterator(ADV, vocab_size=500, pattern=r"\w+|\s+|[^\w\s]+")
    ref = hf.Tokenizer.from_str(ours.to_str())
    for text in ADV[:100]:
        assert ref.encode(text).ids == ours.encode(text)
        assert ours.decode(ours.encode(text)) == text
    # Each thread searches with its own copy of the regex (a shared one serialises them): the
    # same ids on the caller's thread and on 1 or 2 of the pool's, as HF's.
    want = [ref.encode(t).ids for t in ADV]
    assert ours.encode_batch(ADV, num_threads=2) == ours.encode_batch(ADV, num_threads=1) == want
    assert [ours.encode(t) for t in ADV] == want


def test_matches_tiktoken_built_from_same_merges(shakespeare):
    tiktoken = pytest.importorskip("tiktoken")
    ours = ferrolm.Tokenizer.train_from_iterator([shakespeare], vocab_size=1500)
    ranks = {ours.decode_bytes([i]): i for i in range(1, ours.vocab_size)}
    gpt2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    enc = tiktoken.Encoding("t", pat_str=gpt2, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 0})
    for text in ADV + [shakespeare[:100_000]]:
        assert enc.encode_ordinary(text) == ours.encode(text)


def test_special_token_keywords_mean_what_they_mean_in_tiktoken(shakespeare):
    """tiktoken's spellings (allowed_special/disallowed_special: "all", sets, ()) raise or encode
    exactly as tiktoken does (disallowed_special=() was a TypeError)."""
    tiktoken = pytest.importorskip("tiktoken")
    gpt2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    base = ferrolm.Tokenizer.train_from_iterator([shakespeare[:100_000]], vocab_size=400, special_tokens=[])
    ranks = {base.decode_bytes([i]): i for i in range(base.vocab_size)}
    enc = tiktoken.Encoding("t", pat_str=gpt2, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 400, "<|fim|>": 401})
    ours = ferrolm.Tokenizer.from_tiktoken(enc)
    spellings = [{}, {"disallowed_special": ()}, {"disallowed_special": "all"}, {"disallowed_special": set()},
                 {"disallowed_special": {"<|fim|>"}}, {"allowed_special": "all"}, {"allowed_special": {"<|fim|>"}},
                 {"allowed_special": {"<|fim|>"}, "disallowed_special": ()},
                 {"allowed_special": "all", "disallowed_special": {"<|endoftext|>"}},
                 {"allowed_special": {"<|endoftext|>"}, "disallowed_special": {"<|fim|>"}}]
    texts = ["plain text", "a<|endoftext|>b", "x<|fim|>y", "<|fim|><|endoftext|>", "<|endoftext|>"]
    for kwargs in spellings:
        ours_kwargs = kwargs or {"allowed_special": "none"}  # tiktoken's defaults (ferrolm's allow all, as HF's)
        for text in texts:
            try:
                expected = enc.encode(text, **kwargs)
            except ValueError:
                with pytest.raises(ValueError, match="not allow"):
                    ours.encode(text, **ours_kwargs)
            else:
                assert ours.encode(text, **ours_kwargs) == expected, (kwargs, text)


@pytest.fixture(scope="module")
def tok(shakespeare):
    return ferrolm.Tokenizer.train_from_iterator(
        ADV + [shakespeare], vocab_size=1200, special_tokens=["<|endoftext|>", "[MASK]", "<|im_start|>", "<|im_end|>"]
    )


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_string(tok, text):
    assert tok.decode(tok.encode(text, disallowed_special="text", allowed_special="none")) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\u3000\u00a0a'sé😀\u200d\u0301")), max_size=60))
def test_round_trip_whitespace_heavy(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode_bytes(tok.encode(text)) == text.encode()


@pytest.mark.parametrize(
    "text",
    ["", " ", "\r\n", "👩‍👩‍👧‍👦 👍🏽", "日本語", "e\u0301\u0302", " " * 5000, "\t\n" * 300, "\x00\x01\x7f", "x" * 20000],
)
def test_round_trip_edge_cases(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_matched_before_bpe(tok):
    eot = tok.token_to_id("<|endoftext|>")
    ids = tok.encode("hello<|endoftext|>world")
    assert eot in ids and ids.count(eot) == 1
    assert tok.decode(ids) == "hello<|endoftext|>world"
    assert tok.decode(ids, skip_special_tokens=True) == "helloworld"
    as_text = tok.encode("hello<|endoftext|>world", allowed_special="none", disallowed_special="text")
    assert eot not in as_text and tok.decode(as_text) == "hello<|endoftext|>world"
    only = tok.encode("<|im_start|>x<|im_end|>", allowed_special={"<|im_start|>", "<|im_end|>"})
    assert only[0] == tok.token_to_id("<|im_start|>") and only[-1] == tok.token_to_id("<|im_end|>")


def test_user_defined_special_tokens(tok):
    t = ferrolm.Tokenizer.from_str(tok.to_str())
    n = t.vocab_size
    assert t.add_special_tokens(["<|user|>", "<|endoftext|>"]) == 1
    assert t.token_to_id("<|user|>") == n and t.vocab_size == n + 1
    assert t.encode("a<|user|>b")[1] == n
    assert ferrolm.Tokenizer.from_str(t.to_str()).encode("a<|user|>b") == t.encode("a<|user|>b")
    assert hf.Tokenizer.from_str(t.to_str()).encode("a<|user|>b").ids == t.encode("a<|user|>b")


def test_a_special_token_spelled_like_a_byte_is_refused(tok):
    """Byte-level BPE names the byte 0xB6 "¶", but the special token "¶" is the text "¶" (0xC2
    0xB6): added, it took the byte's id and its text decoded as a broken character; trained,
    the vocabulary named two tokens "¶", and Hugging Face decodes a special token's "¶" as the
    byte anyway. Such spellings are refused; other characters are fine."""
    t = ferrolm.Tokenizer.from_str(tok.to_str())
    for special in ("¶", "Ġthe", "<|é|>"):
        with pytest.raises(ValueError, match="which byte-level BPE uses to spell the byte"):
            t.add_special_tokens([special])
        with pytest.raises(ValueError, match="which byte-level BPE uses to spell the byte"):
            ferrolm.Tokenizer.train_from_iterator(["schön text " * 50], vocab_size=300, special_tokens=[special])
    assert t.add_special_tokens(["<|日本|>", "<|tool call|>"]) == 2
    text = "schön <|日本|> x<|tool call|>"
    ids = t.encode(text)
    assert t.decode(ids, skip_special_tokens=False) == text
    assert hf.Tokenizer.from_str(t.to_str()).decode(ids, skip_special_tokens=False) == text


def test_offsets_cover_text(tok):
    text = "Hello, world! It's   2024\n\nnaïve café 😀."
    ids, offsets = tok.encode_with_offsets(text)
    assert ids == tok.encode(text)
    assert len(offsets) == len(ids)
    pieces = []
    for (s, e), i in zip(offsets, ids):
        assert 0 <= s < e <= len(text)
        piece = tok.decode([i])
        if "\ufffd" not in piece:
            assert text[s:e] == piece
        pieces.append((s, e))
    assert pieces[0][0] == 0 and pieces[-1][1] == len(text)
    ids, offsets = tok.encode_with_offsets("ab<|endoftext|>c")
    assert offsets[ids.index(tok.token_to_id("<|endoftext|>"))] == (2, 15)


def test_numpy_and_batches(tok, eval_texts):
    texts = eval_texts[:300]
    arr = tok.encode_array(texts[3])
    assert arr.dtype == np.uint32 and arr.tolist() == tok.encode(texts[3])
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, num_threads=1) == batch
    assert tok.decode_batch(batch) == texts
    assert tok.decode(arr) == texts[3]


def test_decode_matches_hf_for_long_tokens_and_every_kind_of_id_sequence():
    """Tokens of 1 to 60 bytes (decoding copies those up to 16 bytes another way), special tokens
    amid them, and the ids given as a list of plain ints (read by a path of its own), of numpy
    or enum ints, a tuple, a generator and numpy arrays of three dtypes: one text, HF's."""
    import enum

    texts = [("=" * n + " ") * 30 for n in range(1, 61)] + ADV
    ours = ferrolm.Tokenizer.train_from_iterator(texts, vocab_size=1500)
    ref = hf.Tokenizer.from_str(ours.to_str())
    lengths = {len(ours.decode_bytes([i])) for i in range(ours.vocab_size)}
    assert {1, 16, 17, 32, 60} <= lengths
    eot = ours.token_to_id("<|endoftext|>")
    ids = [i for t in texts for i in ours.encode(t) + [eot]]
    want = ref.decode(ids, skip_special_tokens=False)
    assert want == "<|endoftext|>".join(texts) + "<|endoftext|>"
    Id = enum.IntEnum("Id", {f"t{i}": i for i in set(ids)})
    for seq in (ids, tuple(ids), iter(ids), [np.int64(i) for i in ids], [Id(i) for i in ids],
                np.array(ids, dtype=np.uint32), np.array(ids, dtype=np.int64), np.array(ids, dtype=np.int32)):
        assert ours.decode(seq) == want
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True) == "".join(texts)
    assert ours.decode_bytes(ids) == want.encode()
    assert ours.decode_batch([ids, ids[:7], []]) == [want, ref.decode(ids[:7]), ""]
    # A list subclass is iterated as it says (not read from its storage); a list that turns out
    # not to be plain ints late is read again by the general path, which explains it.
    class Reversed(list):
        def __iter__(self):
            return iter(self.copy()[::-1])

    assert ours.decode(Reversed(ids[::-1])) == want
    with pytest.raises(TypeError, match="got a bool"):
        ours.decode(ids[:50] + [True])
    with pytest.raises(IndexError, match="out of range"):
        ours.decode(ids[:50] + [2**40])
    with pytest.raises(IndexError, match="out of range"):
        ours.decode(ids[:50] + [-3])


def test_padding_and_truncation(tok):
    texts = ["short", "a much longer text with many more tokens in it", ""]
    ids, mask = tok.encode_batch_padded(texts)
    lengths = [len(tok.encode(t)) for t in texts]
    assert ids.shape == mask.shape == (3, max(lengths))
    assert ids.dtype == np.uint32 and mask.dtype == np.uint8
    assert mask.sum(axis=1).tolist() == lengths
    assert ids[0, : lengths[0]].tolist() == tok.encode("short")
    assert (ids[0, lengths[0] :] == tok.pad_id).all()
    ids, mask = tok.encode_batch_padded(texts, max_length=4, padding="max_length")
    assert ids.shape == (3, 4) and mask[1].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="truncation"):
        tok.encode_batch_padded(texts, max_length=4, truncation=False)
    ids, _ = tok.encode_batch_padded(texts, pad_id=7)
    assert ids[2].tolist() == [7] * ids.shape[1]


def test_save_load_round_trip_exact(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left
    again = ferrolm.Tokenizer.from_file(str(path))
    assert again.to_str() == tok.to_str() == path.read_text(encoding="utf-8")
    assert again.get_vocab() == tok.get_vocab() and again.special_tokens == tok.special_tokens
    import pickle

    assert pickle.loads(pickle.dumps(tok)).to_str() == tok.to_str()


def test_gpt2_vocab_json_and_merges_txt(tok, tmp_path):
    data = json.loads(tok.to_str())["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(data["vocab"]), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(data["merges"]) + "\n", encoding="utf-8")
    loaded = ferrolm.Tokenizer.from_vocab_merges(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    via_dir = ferrolm.Tokenizer.from_file(str(tmp_path))
    # Either file of the pair names it (merges.txt read as a BERT vocab.txt, vocab.json as a tokenizer.json).
    via_files = [ferrolm.Tokenizer.from_file(str(tmp_path / name)) for name in ("vocab.json", "merges.txt")]
    assert all(t.to_str() == loaded.to_str() for t in via_files)
    # A model directory holding these files (as GPT-2's do) loads its tokenizer the same way.
    ferrolm.GPT.create(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8).save(tmp_path)
    in_model = ferrolm.GPT.load(tmp_path).tokenizer
    for text in ADV[:50]:
        assert loaded.encode(text) == via_dir.encode(text) == in_model.encode(text) == tok.encode(text)


def test_train_from_files_streams_lines(tmp_path):
    path = write_corpus(ADV, tmp_path / "adv.txt")
    from_file = ferrolm.Tokenizer.train([str(path)], vocab_size=700)
    ref = hf_bpe(path, 700)
    assert json.loads(from_file.to_str())["model"]["vocab"] == json.loads(ref.to_str())["model"]["vocab"]


def test_results_do_not_depend_on_thread_count(tmp_path):
    path = write_corpus(ADV * 3, tmp_path / "adv.txt")
    code = (
        "import ferrolm, hashlib, sys\n"
        f"t = ferrolm.Tokenizer.train([{str(path)!r}], vocab_size=900, pattern='cl100k')\n"
        f"lines = open({str(path)!r}, encoding='utf-8', newline='').read().split('\\n')\n"
        "ids = t.encode_batch(lines)\n"
        "print(hashlib.sha256((t.to_str() + repr(ids)).encode()).hexdigest())\n"
    )
    one = run_python(code, {"RAYON_NUM_THREADS": "1"})
    two = run_python(code, {"RAYON_NUM_THREADS": "2"})
    assert one == two


def test_ordinary_added_tokens_behave_as_in_hf():
    """Hugging Face's `add_tokens` (special: false) tokens are always matched, are not special
    tokens (allowed_special and skip_special_tokens leave them alone), and save as such."""
    ref = hf_bpe(ADV, 600)
    ref.add_tokens(["<tool>", "    "])
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    text = "call <tool> now    ok<|endoftext|>"
    assert ours.encode(text) == ref.encode(text).ids
    assert ours.encode(text, allowed_special="none", disallowed_special="text") == \
        ref.encode(text.replace("<|endoftext|>", ""), add_special_tokens=False).ids + ours.encode(
            "<|endoftext|>", allowed_special="none", disallowed_special="text")
    ids = ref.encode(text).ids
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    assert "<tool>" not in ours.special_tokens and "<|endoftext|>" in ours.special_tokens
    saved = {t["content"]: t["special"] for t in json.loads(ours.to_str())["added_tokens"]}
    assert saved == {"<|endoftext|>": True, "<tool>": False, "    ": False}
    assert hf.Tokenizer.from_str(ours.to_str()).encode(text).ids == ref.encode(text).ids
    # Registering one as special (as ChatTemplate.prepare does) makes it special.
    ours.add_special_tokens(["<tool>"])
    assert "<tool>" in ours.special_tokens
    with pytest.raises(ValueError, match="special token"):
        ours.encode("call <tool>", allowed_special="none")


def test_added_tokens_that_take_white_space_or_match_whole_words_match_hf():
    """RoBERTa's `<mask>` (lstrip) and the other AddedToken flags: ids and offsets equal Hugging
    Face's both ways (such files were refused)."""
    ref = hf_bpe(ADV, 600)
    ref.add_special_tokens([hf.AddedToken("<mask>", lstrip=True, special=True, normalized=False),
                            hf.AddedToken("<r>", rstrip=True, special=True, normalized=False),
                            hf.AddedToken("<w>", single_word=True, special=True, normalized=False),
                            hf.AddedToken("<both>", lstrip=True, rstrip=True, special=True, normalized=False)])
    ref.add_tokens([hf.AddedToken("<ord>", lstrip=True, single_word=True, normalized=False)])
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    marks = ["<mask>", "<r>", "<w>", "<both>", "<ord>"]
    texts = ["Hello <mask> world", "Hello  \t<mask>world", "<mask>", "  <mask>", "a<r>  b", "a <r>\n\nb", "x<w>y",
             "x <w> y", "<w>y", "_<w>", "é<w>", "e\u0301<w>", "\u203f<w>", "²<w>", "<w>\u00b2", "-<w>-", "\u200d<w>",
             "a <both>  b", "a\u00a0<mask>", "a\u3000<mask>", "<r> <mask>", "<both> <both>", " <ord> x", "y<ord>",
             "<r>\r\n<w> <mask>"]
    rng = np.random.default_rng(0)
    pieces = marks + [" ", "  ", "\n", "a", "é", "_", "-", "\u00a0", "中", "x y"]
    texts += ["".join(rng.choice(pieces, size=rng.integers(1, 12))) for _ in range(2000)]
    again = hf.Tokenizer.from_str(ours.to_str())
    for text in texts:
        enc = ref.encode(text)
        assert ours.encode_with_offsets(text) == (enc.ids, [tuple(o) for o in enc.offsets]), repr(text)
        assert again.encode(text).ids == enc.ids, repr(text)
    saved = {t["content"]: (t["lstrip"], t["rstrip"], t["single_word"]) for t in json.loads(ours.to_str())["added_tokens"]}
    assert saved["<mask>"] == (True, False, False) and saved["<both>"] == (True, True, False)
    assert saved["<w>"] == (False, False, True) and saved["<ord>"] == (True, False, True)


def test_nfc_normalized_bpe_matches_hf():
    """GPT-NeoX's and Qwen2's byte-level BPEs put text in NFC first: ids and offsets (each
    pointing at the original characters) equal Hugging Face's, both ways (such files were refused)."""
    import unicodedata

    ref = hf_bpe(ADV + [unicodedata.normalize("NFD", t) for t in ADV], 700)
    ref.normalizer = normalizers.NFC()
    rng = np.random.default_rng(1)
    pieces = ["e", "\u0301", "\u0323", "\u0302", "\u0307", "a", " ", "\u1100", "\u1161", "\u11a8", "\u212b", "\u0344",
              "\u0b47", "\u0b3e", "q", "é", "\n", "Ω", "\u2126", "x"]
    texts = ADV + [unicodedata.normalize(form, t) for t in ADV for form in ("NFD", "NFKD")]
    texts += ["".join(rng.choice(pieces, size=rng.integers(1, 15))) for _ in range(2000)]
    for prefix_space in (False, True):  # GPT-NeoX's pipeline: ByteLevel pre-tokenizer and trimmed offsets
        ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        ref.post_processor = processors.ByteLevel(trim_offsets=True)
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
        again = hf.Tokenizer.from_str(ours.to_str())
        for text in texts:
            enc = ref.encode(text)
            assert ours.encode_with_offsets(text) == (enc.ids, [tuple(o) for o in enc.offsets]), repr(text)
            assert again.encode(text).ids == enc.ids, repr(text)
    assert json.loads(ours.to_str())["normalizer"] == {"type": "NFC"}
    assert ours.pre_tokenize("cafe\u0301") == [" caf\u00e9"]  # with the prefix space the last file adds
    # The same steps each wrapped in a Sequence of one (as some files write them; they were refused), and empty
    # Sequences for none.
    ref.normalizer = normalizers.Sequence([normalizers.NFC()])
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False)])
    ref.decoder = decoders.Sequence([decoders.ByteLevel()])
    wrapped = ferrolm.Tokenizer.from_str(ref.to_str())
    for text in texts[:300]:
        assert wrapped.encode(text) == ref.encode(text).ids, repr(text)
        assert wrapped.decode(wrapped.encode(text)) == ref.decode(ref.encode(text).ids), repr(text)
    ref.normalizer = normalizers.Sequence([])
    assert ferrolm.Tokenizer.from_str(ref.to_str()).encode("cafe\u0301") == ref.encode("cafe\u0301").ids
    # An empty decoder Sequence joins the tokens as they are (no decoder joins them with spaces): refused.
    ref.decoder = decoders.Sequence([])
    with pytest.raises(ValueError, match="decoder"):
        ferrolm.Tokenizer.from_str(ref.to_str())


def test_pairs_of_texts_are_framed_as_hf_frames_them():
    """encode_pair gives Hugging Face's ids and token type ids for each post-processor, and a
    file written by ferrolm frames pairs alike in HF."""
    texts = [("Hello world", "how are you?"), ("", "b"), ("a <|endoftext|> b", " two  spaces"), ("é", "")]
    ref = hf_bpe(ADV, 600)
    cls, sep = ref.token_to_id("<|endoftext|>"), ref.token_to_id("<|endoftext|>")
    template = processors.TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A:0 $B:2 <|endoftext|>:3",
                                             special_tokens=[("<|endoftext|>", cls)])
    odd_orders = [processors.TemplateProcessing(single="<|endoftext|> $A", pair=pair, special_tokens=[("<|endoftext|>", cls)])
                  for pair in ("$B:1 <|endoftext|> $A", "<|endoftext|> $A $B:1 $B:1")]  # HF takes any order (they were refused)
    for post in (None, processors.RobertaProcessing(("<|endoftext|>", sep), ("<|endoftext|>", cls)),
                 processors.BertProcessing(("<|endoftext|>", sep), ("<|endoftext|>", cls)), template, *odd_orders):
        ref.post_processor = post
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
        again = hf.Tokenizer.from_str(ours.to_str())
        for a, b in texts:
            for specials in (True, False):
                enc = ref.encode(a, b, add_special_tokens=specials)
                assert ours.encode_pair(a, b, add_special_tokens=specials) == (enc.ids, enc.type_ids), (post, a, b)
                back = again.encode(a, b, add_special_tokens=specials)
                assert (back.ids, back.type_ids) == (enc.ids, enc.type_ids), (post, a, b)
    # An id that only the pair's framing uses is checked against the vocabulary too.
    ref.post_processor = processors.TemplateProcessing(single="$A", pair="$A X:1 $B:1", special_tokens=[("X", cls)])
    doc = json.loads(ref.to_str())
    doc["post_processor"]["special_tokens"]["X"]["ids"] = [ref.get_vocab_size() + 100]
    with pytest.raises(ferrolm.FormatError, match="post-processor template uses id 700"):
        ferrolm.Tokenizer.from_str(json.dumps(doc))


def test_truncation_to_max_length_matches_hf():
    """max_length cuts a text (keeping the template's tokens) and a pair (its longer text
    first) as Hugging Face's truncation does, ids, type ids and offsets, for each framing. Where
    HF ignores a max_length shorter than the framing and returns everything, it is an error."""
    ref = hf_bpe(ADV, 600)
    eot = ref.token_to_id("<|endoftext|>")
    pairs = [("Hello world, this is a test of things", "how are you doing today my friend?"), ("short", ADV[0]),
             ("", "only the second text"), ("same length", "same length"), ("odd  one", "out of three")]
    for post in (None, processors.RobertaProcessing(("<|endoftext|>", eot), ("<|endoftext|>", eot)),
                 processors.BertProcessing(("<|endoftext|>", eot), ("<|endoftext|>", eot))):
        ref.post_processor = post
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
        frame = {False: len(ref.encode("").ids), True: len(ref.encode("", "").ids)}
        for a, b in pairs:
            whole = len(ref.encode(a, b).ids)
            for n in range(1, whole + 2):
                ref.enable_truncation(max_length=n)
                if n < frame[True]:
                    with pytest.raises(ValueError, match=f"max_length {n} leaves no room"):
                        ours.encode_pair(a, b, max_length=n)
                else:
                    enc = ref.encode(a, b)
                    assert ours.encode_pair(a, b, max_length=n) == (enc.ids, enc.type_ids), (post, a, b, n)
                if n < frame[False]:
                    with pytest.raises(ValueError, match=f"max_length {n} leaves no room"):
                        ours.encode(b, max_length=n)
                else:
                    enc = ref.encode(b)
                    assert ours.encode_with_offsets(b, max_length=n) == (enc.ids, [tuple(o) for o in enc.offsets])
                    assert ours.encode(b, max_length=n) == ours.encode_batch([b], max_length=n)[0] == enc.ids
                    assert ours.encode_array(b, max_length=n).tolist() == enc.ids
                ref.no_truncation()
    for call in (lambda: ours.encode("x", max_length=0), lambda: ours.encode_batch_padded([], max_length=0)):
        with pytest.raises(ValueError, match="max_length must be at least 1"):
            call()
    with pytest.raises(ValueError, match="max_length 1 leaves no room for the 2 template tokens"):
        ours.encode_batch_padded([], max_length=1)  # an empty batch is checked too


def test_an_added_token_spelled_like_a_vocabulary_entry_decodes_as_that_entry():
    """"¶" is also the byte-level spelling of byte 0xB6 (the second byte of "ö"): registered as
    a special token it takes that entry's id, which must still decode as the byte."""
    ref = hf_bpe(ADV, 600)
    ref.add_special_tokens(["¶"])
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    text = "schön ö ¶"
    ids = ours.encode(text)
    assert ids == ref.encode(text).ids
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
    assert ours.decode(ours.encode("schön ö")) == "schön ö"


def _letters_bpe(unk: str | None):
    """A byte-level BPE that knows only a-z and Ġ (and maybe <unk>): other bytes are missing."""
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyzĠ")}
    if unk:
        vocab[unk] = len(vocab)
    ref = hf.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    return ref


def test_offsets_around_bytes_missing_from_the_vocabulary():
    """A missing byte becomes one unknown token, as in Hugging Face, or is dropped: either way
    later offsets point at their own text. (Where bytes are dropped, HF's own offsets shift
    onto the dropped text: "aXb" gives b (1, 2).)"""
    texts = ["aXb ab", "XYa b", "a\u00e9b c", "ab 中 c"]
    ref = _letters_bpe("<unk>")
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    for text in texts:
        enc = ref.encode(text)
        assert ours.encode_with_offsets(text) == (enc.ids, [tuple(o) for o in enc.offsets]), text
    ref = _letters_bpe(None)
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    for text in texts:
        ids, offsets = ours.encode_with_offsets(text)
        assert ids == ref.encode(text).ids
        assert [text[s:e].replace(" ", "Ġ") for s, e in offsets] == [ours.id_to_token(i) for i in ids], text


def test_trim_offsets_as_roberta_sets_it():
    """RoBERTa's post-processor trims the spaces tokens carry from their offsets; ferrolm reads,
    applies and saves the setting, and Hugging Face reads the saved file alike."""
    from tokenizers import processors

    texts = ["Hello  world ", " two  spaces   here", "a", "  x", "<|endoftext|> after a special", "x    y\t\tz",
             "é", "a<|endoftext|>é", "中 文"]
    for add_prefix_space in (False, True):
        ref = hf_bpe(ADV, 600)
        ref.add_tokens(["    ", "\t\t"])  # added tokens carrying spaces are trimmed too
        ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        eot = ref.token_to_id("<|endoftext|>")
        ref.post_processor = processors.RobertaProcessing(("<|endoftext|>", eot), ("<|endoftext|>", eot),
                                                          trim_offsets=True, add_prefix_space=add_prefix_space)
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
        again = hf.Tokenizer.from_str(ours.to_str())
        for text in texts:
            enc = ref.encode(text)
            expected = (enc.ids, [tuple(o) for o in enc.offsets])
            assert ours.encode_with_offsets(text) == expected, (text, add_prefix_space)
            assert (again.encode(text).ids, [tuple(o) for o in again.encode(text).offsets]) == expected
        # The pieces shown are those encoded, the prefix space too (it was left out).
        assert ours.pre_tokenize("hello world") == [" hello" if add_prefix_space else "hello", " world"]
        assert len(ours.pre_tokenize("hello world")) == len(ref.pre_tokenizer.pre_tokenize_str("hello world"))
        # Saved, the post-processor is RoBERTa's still: a pair is <s> A </s></s> B </s>, all type 0
        # (it was rebuilt as BERT's <s> A </s> B </s> with type 1, which RoBERTa has no row for).
        pair = ref.encode("Hello world", "two")
        assert (again.encode("Hello world", "two").ids, again.encode("Hello world", "two").type_ids) == \
            (pair.ids, pair.type_ids)
        ref.post_processor = processors.ByteLevel(trim_offsets=True)
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
        for text in texts:
            enc = ref.encode(text)
            assert ours.encode_with_offsets(text) == (enc.ids, [tuple(o) for o in enc.offsets]), text


def test_tokenizer_json_settings_that_change_results_are_refused():
    ref = hf_bpe(ADV, 600)
    base = json.loads(ref.to_str())

    def refused(change, message):
        doc = json.loads(json.dumps(base))
        change(doc)
        with pytest.raises(ferrolm.FormatError, match=message):
            ferrolm.Tokenizer.from_str(json.dumps(doc))

    refused(lambda d: d["model"].update(dropout=0.1), "dropout")
    refused(lambda d: d["model"].update(unk_token="<|endoftext|>", fuse_unk=True), "fuse_unk")
    refused(lambda d: d.update(decoder={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}),
            "decoder")
    split = {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Isolated", "invert": False}
    refused(lambda d: d.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        split, {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]}), "add_prefix_space")
    # Added tokens HF matches in normalized text, where normalizing changes what they match.
    for normalizer in (normalizers.NFC(), normalizers.BertNormalizer(lowercase=True)):
        changed = hf_bpe(ADV, 600)
        changed.add_tokens([hf.AddedToken("e", normalized=True)])
        changed.normalizer = normalizer
        with pytest.raises(ferrolm.FormatError, match="matched in normalized text"):
            ferrolm.Tokenizer.from_str(changed.to_str())


def test_added_tokens_are_matched_in_hfs_two_passes():
    """Hugging Face matches the added tokens that are not normalized first, then the normalized
    ones in the text left between them (files where that differed from one pass were refused),
    and a single_word token inside a word hides the tokens overlapping it."""
    cases = [  # (added tokens, texts)
        ([hf.AddedToken("abcd", normalized=True), hf.AddedToken("bc", normalized=False)], ["abcd", "xabcdy bc"]),
        ([hf.AddedToken("ab", normalized=True), hf.AddedToken("bc", normalized=False)], ["abc", "ab bc abc"]),
        ([hf.AddedToken("bc", normalized=True), hf.AddedToken("ab", normalized=False)], ["abc", "xabcd bc ab"]),
        ([hf.AddedToken("end", normalized=True)], ["x <|endoftext|> y end"]),
        ([hf.AddedToken("Z", special=True, normalized=False), hf.AddedToken("<o>", single_word=True, normalized=True)],
         ["Z<o>", "<o>Z", "xZ<o>Zy", "a <o> b"]),
        ([hf.AddedToken("<mask>", lstrip=True, special=True, normalized=False), hf.AddedToken("  ", normalized=True)],
         ["a  <mask>", "a    <mask>", "a  b", "  <mask>  "]),
        ([hf.AddedToken("<ab>", single_word=True, special=True, normalized=False),
          hf.AddedToken("ab>", special=True, normalized=False)], ["z<ab>", "<ab>z", "x<ab>y", " <ab> ", "ab>"]),
        ([hf.AddedToken("<r>", rstrip=True, special=True, normalized=False),
          hf.AddedToken(" <x>", special=True, normalized=False), hf.AddedToken("\n", special=True, normalized=False)],
         ["<r> <x>", "<r>\n", "<r>  \n <x>"]),
    ]
    for tokens, texts in cases:
        ref = hf_bpe(ADV, 600)
        ref.add_special_tokens([t for t in tokens if t.special])
        ref.add_tokens([t for t in tokens if not t.special])
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
        again = hf.Tokenizer.from_str(ours.to_str())  # the flags are written back
        for text in texts:
            enc = ref.encode(text)
            assert ours.encode(text) == enc.ids, (tokens, text)
            assert again.encode(text).ids == enc.ids, (tokens, text)
            assert ours.encode_with_offsets(text)[1] == [tuple(o) for o in enc.offsets], (tokens, text)  # overlaps too
    # NFC leaves white space as it is: a normalized run of spaces (GPT-NeoX's) loads.
    neox = hf_bpe(ADV, 600)
    neox.add_tokens([hf.AddedToken("   ", normalized=True)])
    neox.normalizer = normalizers.NFC()
    ours = ferrolm.Tokenizer.from_str(neox.to_str())
    for text in ("a   b", "cafe\u0301    x", "   "):
        assert ours.encode(text) == neox.encode(text).ids, text


def test_min_frequency_beyond_any_count_learns_no_merge():
    for min_frequency in (2**63 - 1, 2**63, 2**64 - 1):
        tok = ferrolm.Tokenizer.train_from_iterator(["ab ab ab"], kind="bpe", vocab_size=400, min_frequency=min_frequency)
        assert tok.vocab_size == 256 + 1, min_frequency  # the bytes and <|endoftext|>


def test_tiktokens_own_spellings_of_the_patterns_get_the_hand_written_matchers(shakespeare):
    """cl100k's and GPT-2's patterns as tiktoken now writes them (cl100k's with `\\s++$`, which
    cl100k's tokenizer.json spelling lacks) run on the hand-written matchers: tiktoken's ids, and a
    tokenizer.json that HF reads alike (HF's regex engine reads tiktoken's `{1,3}+` otherwise)."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    cl100k_base = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
                   r"""|\s*[\r\n]|\s+(?!\S)|\s""")
    trained = ferrolm.Tokenizer.train_from_iterator([shakespeare], vocab_size=3000, pattern="cl100k")
    ranks = {trained.decode_bytes([i]): i - 1 for i in range(1, trained.vocab_size)}  # id 0: <|endoftext|>
    for run in (b" \n", b"  ", b" \n  ", b"\n  "):  # tokens that show where the spellings part
        ranks.setdefault(run, len(ranks))
    rng = np.random.default_rng(5)
    texts = ADV + [shakespeare[:100_000], "x \n  ", "end.\n\n", "12345 \r\n \t", "a  "]
    texts += ["".join(rng.choice(list("ab1 \n\t\r.'"), size=rng.integers(1, 12))) for _ in range(3000)]
    for pattern, name in ((cl100k_base, "cl100k_base"), (r50k_pat_str, "gpt2")):
        enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
        ours = ferrolm.Tokenizer.from_tiktoken(enc)
        assert ours.pattern == name
        ref = hf.Tokenizer.from_str(ours.to_str())
        for text in texts:
            assert ours.encode(text) == enc.encode_ordinary(text) == ref.encode(text).ids, (name, text[:60])


@pytest.mark.parametrize("ranks, pattern, specials", [
    (50_256, "gpt2", {"<|endoftext|>": 50_256}),  # r50k_base
    (50_280, "gpt2", {"<|endoftext|>": 50_256}),  # p50k_base
    (100_256, "cl100k_base", {"<|endoftext|>": 100_257, "<|fim_prefix|>": 100_258, "<|fim_middle|>": 100_259,
                              "<|fim_suffix|>": 100_260, "<|endofprompt|>": 100_276}),
    (199_998, "o200k", {"<|endoftext|>": 199_999, "<|endofprompt|>": 200_018}),
])
def test_an_openai_encoding_file_is_known_by_its_size(tmp_path, ranks, pattern, specials):
    """A .tiktoken file records neither its pattern nor its special tokens: one with as many ranks
    as an OpenAI encoding gets that encoding's (a cl100k pattern for o200k's file gave wrong ids),
    from `from_tiktoken` and from `from_file`; other files default to cl100k's, and given ones win."""
    import base64
    import itertools

    singles = [bytes([b]) for b in range(256)]
    pairs = (a + b for a, b in itertools.product(singles, repeat=2))
    triples = (a + b + c for a, b, c in itertools.product(singles[32:127], repeat=3))
    tokens = list(itertools.islice(itertools.chain(singles, pairs, triples), ranks))
    # p50k's ranks skip 50,256, <|endoftext|>'s id.
    ids = [i + (i >= 50_256 and ranks == 50_280) for i in range(ranks)]
    path = tmp_path / "encoding.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for t, i in zip(tokens, ids)))
    for tok in (ferrolm.Tokenizer.from_tiktoken(str(path)), ferrolm.Tokenizer.from_file(str(path))):
        assert (tok.pattern, tok.special_tokens) == (pattern, specials)
    given = ferrolm.Tokenizer.from_tiktoken(str(path), pattern="qwen2", special_tokens={"<|x|>": 300_000})
    assert (given.pattern, given.special_tokens) == ("qwen2", {"<|x|>": 300_000})
    # Other files default to cl100k's pattern and no special tokens: one rank fewer, or as many
    # but with a gap.
    for shifted in (ids[:-1], ids[:-1] + [ids[-1] + 2]):
        path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for t, i in zip(tokens, shifted)))
        assert (ferrolm.Tokenizer.from_tiktoken(str(path)).pattern, ferrolm.Tokenizer.from_file(str(path)).special_tokens) \
            == ("cl100k", {})


def test_tiktoken_encodings_load_and_encode_as_tiktoken(shakespeare, tmp_path):
    """A .tiktoken file (base64 token, rank) or a tiktoken.Encoding becomes a byte-level BPE that
    encodes exactly as tiktoken does; it saves as tokenizer.json that HF reads alike."""
    import base64

    tiktoken = pytest.importorskip("tiktoken")
    trained = ferrolm.Tokenizer.train_from_iterator([shakespeare], vocab_size=3000, pattern="cl100k")
    ranks = {trained.decode_bytes([i]): i - 1 for i in range(1, trained.vocab_size)}  # id 0: <|endoftext|>
    path = tmp_path / "t.tiktoken"
    path.write_text("".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in ranks.items()))
    cl100k = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
    specials = {"<|endoftext|>": len(ranks), "<|fim|>": len(ranks) + 1}
    enc = tiktoken.Encoding("t", pat_str=cl100k, mergeable_ranks=ranks, special_tokens=specials)
    from_file = ferrolm.Tokenizer.from_tiktoken(str(path), special_tokens=specials)
    from_encoding = ferrolm.Tokenizer.from_tiktoken(enc)
    texts = ADV + [shakespeare[:200_000], "a<|endoftext|>b<|fim|>c"]
    for tok in (from_file, from_encoding):
        for text in texts:
            assert tok.encode(text) == enc.encode(text, allowed_special="all")
            assert tok.decode(tok.encode(text)) == text
    again = hf.Tokenizer.from_str(from_file.to_str())
    assert again.encode(texts[-2]).ids == enc.encode(texts[-2])
    # Allowing some special tokens and reading the rest as text: a token that is not allowed
    # does not hide an allowed one overlapping it. (Tokens that overlap from different starts:
    # where one is a prefix of another, tiktoken's choice follows its hash order.)
    specials = {"<|a|>": len(ranks), "a|>b": len(ranks) + 1}
    enc = tiktoken.Encoding("t2", pat_str=cl100k, mergeable_ranks=ranks, special_tokens=specials)
    tok = ferrolm.Tokenizer.from_tiktoken(enc)
    for allowed in ({"<|a|>"}, {"a|>b"}):
        for text in ("x<|a|>b<|a|>", "<|a|>bb a|>b<|a|>b"):
            assert tok.encode(text, allowed_special=sorted(allowed), disallowed_special="text") == \
                enc.encode(text, allowed_special=allowed, disallowed_special=()), (allowed, text)
    path.write_text("aGk= 0\nnot base64 here\n")
    with pytest.raises(ferrolm.FormatError, match="line 2"):
        ferrolm.Tokenizer.from_tiktoken(str(path))
    path.write_text("YQ== 0\nYmM= 1\n")  # "bc" without "b" and "c" to make it from
    with pytest.raises(ferrolm.FormatError, match="cannot be made"):
        ferrolm.Tokenizer.from_tiktoken(str(path))
    path.write_text("")
    with pytest.raises(ferrolm.FormatError, match="no tokens"):
        ferrolm.Tokenizer.from_tiktoken(str(path))
    # A byte without a token: tiktoken fails on text holding it, BPE would drop it silently. Bytes
    # that UTF-8 text never holds may lack one.
    def lacking(*missing):
        return tiktoken.Encoding("n", pat_str=cl100k, mergeable_ranks={bytes([b]): b for b in range(256) if b not in missing},
                                 special_tokens={})

    with pytest.raises(ferrolm.FormatError, match="byte 0x7a has no token"):
        ferrolm.Tokenizer.from_tiktoken(lacking(0x7A))
    assert ferrolm.Tokenizer.from_tiktoken(lacking(0xC0, 0xFF)).encode("zé€😀") == lacking(0xC0, 0xFF).encode("zé€😀")
    with pytest.raises(FileNotFoundError, match="downloads nothing.*tiktoken.get_encoding"):
        ferrolm.Tokenizer.from_tiktoken("cl100k_base")  # an encoding's name, as tiktoken takes it
    with pytest.raises(TypeError, match="tiktoken"):
        ferrolm.Tokenizer.from_tiktoken(42)
