"""Token data preparation: pieces encode as the whole, files are split and separated alike,
line ends are kept as the tokenizer trainer reads them, and Ctrl-C stops it."""

import numpy as np
import pytest
from conftest import seconds_to_interrupt

import ferrolm as fl
from ferrolm import data
from ferrolm.data import BUNDLED_CORPUS, load_tokens, prepare_files, prepare_tokens

TEXT = BUNDLED_CORPUS.read_text(encoding="utf-8")[:200_000]


@pytest.mark.parametrize("kind,options", [("bpe", {"pattern": "gpt2"}), ("bpe", {"pattern": "cl100k"}),
                                          ("wordpiece", {}), ("char", {})])
def test_text_encoded_in_pieces_gives_the_ids_of_the_whole(kind, options, tmp_path, monkeypatch):
    # Whitespace runs across newlines, CRLF, and a tokenizer that knows "\n\n", " \n" and ".\n" as
    # tokens (GPT-2's pattern makes them at the end of a text: a cut there changed the ids).
    text = TEXT.replace("\n\n", "\n  \n", 50).replace("\n", "\r\n", 300) + " \n\n\t\nx"
    ends = ["x\n\n", "y \n", "z.\n", "w\r\n"] * 300
    tok = fl.Tokenizer.train_from_iterator([text, *ends], kind=kind, vocab_size=600, **options)
    monkeypatch.setattr(data, "PIECE", 997)  # hundreds of cuts
    meta = prepare_tokens(text, tok, tmp_path, val_fraction=0.25)
    split = int(len(text) * 0.75)
    for name, part in (("train", text[:split]), ("val", text[split:])):
        np.testing.assert_array_equal(load_tokens(tmp_path, name), tok.encode_array(part, add_special_tokens=False))
    assert meta["train_tokens"] + meta["val_tokens"] > 1000


def test_files_are_split_alike_and_separated_by_the_end_of_text_token(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT[:50_000])
    b.write_text(TEXT[100_000:110_000])
    (tmp_path / "empty.txt").write_text("")
    tok = fl.Tokenizer.train([str(a), str(b)], kind="bpe", vocab_size=400)
    end = tok.token_to_id("<|endoftext|>")
    prepare_files([a, tmp_path / "empty.txt", b], tok, tmp_path / "data")
    for name in ("train", "val"):
        ids = np.asarray(load_tokens(tmp_path / "data", name))
        parts = [tok.decode(p) for p in np.split(ids, np.flatnonzero(ids == end)) if p.size]
        cut = lambda t: int(len(t) * 0.9)
        expected = [t[: cut(t)] if name == "train" else t[cut(t):] for t in (TEXT[:50_000], TEXT[100_000:110_000])]
        assert [p.removeprefix("<|endoftext|>") for p in parts] == expected  # every file in both splits
    with pytest.raises(ValueError, match="empty"):
        prepare_files([tmp_path / "empty.txt"], tok, tmp_path / "none")


def test_crlf_text_is_trained_and_encoded_as_it_is(tmp_path):
    """The tokenizer trainer reads the files' bytes; text read with newline translation put
    "\\r" in the vocabulary and never in the training tokens."""
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(TEXT[:20_000].replace("\n", "\r\n").encode())
    tok = fl.Tokenizer.train([str(crlf)], kind="char", vocab_size=1 << 20)
    prepare_files([crlf], tok, tmp_path / "data")
    ids = np.concatenate([load_tokens(tmp_path / "data", s) for s in ("train", "val")])
    assert tok.decode(ids) == crlf.read_bytes().decode()


def test_preparing_a_large_corpus_stops_at_ctrl_c():
    setup = """
import ferrolm
from ferrolm.data import BUNDLED_CORPUS, prepare_tokens
import tempfile
text = BUNDLED_CORPUS.read_text() * 250
tok = ferrolm.Tokenizer.train([str(BUNDLED_CORPUS)], kind="bpe", vocab_size=1000)
out = tempfile.mkdtemp()
"""
    # One encode of the whole split ran to its end, then rust-numpy panicked on the pending signal.
    assert seconds_to_interrupt(setup, "prepare_tokens(text, tok, out)") < 0.5
