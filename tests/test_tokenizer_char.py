"""Character tokenizer (nanoGPT shakespeare_char style)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ferrolm
from tokenizer_corpus import shakespeare_path


@pytest.fixture(scope="module")
def text() -> str:
    return shakespeare_path().read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok(text):
    return ferrolm.Tokenizer.train([str(shakespeare_path())], kind="char", vocab_size=0)


def test_vocab_is_sorted_characters(tok, text):
    chars = sorted(set(text))
    assert tok.vocab_size == len(chars) == 65
    assert [tok.id_to_token(i) for i in range(len(chars))] == chars
    assert tok.encode("hi!") == [chars.index(c) for c in "hi!"]


def test_round_trip_and_hf_compatibility(tok, text):
    hf = pytest.importorskip("tokenizers")
    sample = text[:20_000]
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample
    ref = hf.Tokenizer.from_str(tok.to_str())
    assert ref.encode(sample).ids == ids
    assert ref.decode(ids) == sample
    assert ferrolm.Tokenizer.from_str(tok.to_str()).to_str() == tok.to_str()


def test_unknown_character_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="not in this character tokenizer's vocabulary"):
        tok.encode("é")


def test_vocab_limit_adds_unknown_token():
    t = ferrolm.Tokenizer.train_from_iterator(["aaaabbbc", "d"], kind="char", vocab_size=3)
    assert t.vocab_size == 3
    assert t.encode("abcd") == [0, 1, 2, 2]
    assert t.id_to_token(2) == "[UNK]"


def test_a_special_unk_token_is_the_unknown_token():
    """With "[UNK]" among the special tokens, a vocabulary limit maps rare characters to it
    (one [UNK], one id) instead of adding a second token of the same name."""
    hf = pytest.importorskip("tokenizers")
    t = ferrolm.Tokenizer.train_from_iterator(["aaaabbbc", "d"], kind="char", vocab_size=3, special_tokens=["[UNK]"])
    assert t.vocab_size == 3 and t.token_to_id("[UNK]") == 0
    assert t.encode("abcd") == [1, 2, 0, 0]
    assert hf.Tokenizer.from_str(t.to_str()).encode("abcd").ids == [1, 2, 0, 0]
    # Without a limit it still stands for characters never seen in training.
    t = ferrolm.Tokenizer.train_from_iterator(["aaaabbbc"], kind="char", vocab_size=0, special_tokens=["[UNK]"])
    assert t.encode("abz") == [t.token_to_id("a"), t.token_to_id("b"), 0]
    # SentencePiece's spelling too (a second token, [UNK], was added and <unk> never used).
    t = ferrolm.Tokenizer.train_from_iterator(["aaaabbbc", "d"], kind="char", vocab_size=4,
                                              special_tokens=["<unk>", "<|endoftext|>"])
    assert t.vocab_size == 4 and t.token_to_id("[UNK]") is None
    assert t.encode("abcd") == [2, 3, 0, 0] and t.decode(t.encode("dab")) == "<unk>ab"
    assert hf.Tokenizer.from_str(t.to_str()).encode("abcd").ids == [2, 3, 0, 0]


def test_a_files_unknown_token_is_in_its_vocabulary_and_may_be_one_character():
    """A character vocabulary read from tokenizer.json: an unknown token of one character ("?")
    stands for unknown characters, as in Hugging Face (they were refused); one missing from the
    vocabulary is refused at load (Hugging Face fails at the first unknown character)."""
    import json

    hf = pytest.importorskip("tokenizers")
    base = json.loads(ferrolm.Tokenizer.train_from_iterator(["ab?c"], kind="char").to_str())
    base["model"]["unk_token"] = "?"
    text = json.dumps(base)
    t = ferrolm.Tokenizer.from_str(text)
    for s in ("ab?", "abzé?c"):
        assert t.encode(s) == hf.Tokenizer.from_str(text).encode(s).ids
    assert t.decode(t.encode("azb")) == "a?b"
    base["model"]["unk_token"] = "[UNK]"
    with pytest.raises(ValueError, match=r'model.unk_token "\[UNK\]" is not in model.vocab'):
        ferrolm.Tokenizer.from_str(json.dumps(base))


def test_special_tokens_in_char_model():
    t = ferrolm.Tokenizer.train_from_iterator(["hello"], kind="char", special_tokens=["<|endoftext|>"])
    ids = t.encode("he<|endoftext|>")
    assert ids[-1] == 0 and t.decode(ids) == "he<|endoftext|>"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(sorted(set("abc xyz\n'!😀é"))), max_size=50))
def test_round_trip_property(text):
    t = ferrolm.Tokenizer.train_from_iterator(["abc xyz\n'!😀é"], kind="char")
    assert t.decode(t.encode(text)) == text
