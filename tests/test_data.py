"""Token data preparation: pieces encode as the whole, files are split and separated alike,
line ends are kept as the tokenizer trainer reads them, and Ctrl-C stops it."""

import json

import numpy as np
import pytest
from conftest import seconds_to_interrupt

import ferrolm as fl
from ferrolm import data
from ferrolm.data import BUNDLED_CORPUS, check_files, load_tokens, prepare_files, prepare_tokens

TEXT = BUNDLED_CORPUS.read_text(encoding="utf-8")[:200_000]


@pytest.mark.parametrize("kind,options", [("bpe", {"pattern": "gpt2"}), ("bpe", {"pattern": "cl100k"}),
                                          ("bpe", {"pattern": "qwen2"}), ("bpe", {"pattern": "o200k"}),
                                          ("wordpiece", {}), ("char", {})])
def test_text_encoded_in_pieces_gives_the_ids_of_the_whole(kind, options, tmp_path, monkeypatch):
    # Whitespace runs across newlines, CRLF, and a tokenizer that knows "\n\n", " \n" and ".\n" as
    # tokens (GPT-2's pattern makes them at the end of a text: a cut there changed the ids);
    # slashes after line breaks (o200k's punctuation pieces take both).
    text = TEXT.replace("\n\n", "\n  \n", 50).replace("\n", "\r\n", 300).replace(".\n", ".\n/", 200) + " \n\n\t\nx"
    ends = ["x\n\n", "y \n", "z.\n", "w\r\n"] * 300
    tok = fl.Tokenizer.train_from_iterator([text, *ends], kind=kind, vocab_size=600, **options)
    assert tok.pattern == options.get("pattern") and not tok.add_prefix_space
    assert tok.safe_cuts == "spaces and line breaks"
    monkeypatch.setattr(data, "PIECE", 997)  # hundreds of cuts
    meta = prepare_tokens(text, tok, tmp_path, val_fraction=0.25)
    split = int(len(text) * 0.75)
    for name, part in (("train", text[:split]), ("val", text[split:])):
        np.testing.assert_array_equal(load_tokens(tmp_path, name), tok.encode_array(part, add_special_tokens=False))
    assert meta["train_tokens"] + meta["val_tokens"] > 1000


def with_added_token(tok, content: str, **flags):
    """`tok` with one more added token (Hugging Face's flags: lstrip, rstrip, special...)."""
    spec = json.loads(tok.to_str())
    spec["added_tokens"].append({"id": tok.vocab_size, "content": content, "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True, **flags})
    return fl.Tokenizer.from_str(json.dumps(spec))


@pytest.mark.parametrize("setting", ["a user's regex", "add_prefix_space", "an lstrip token", "an rstrip token",
                                     "a token with a space", "an ordinary token with a line break",
                                     "tokens of white space"])
def test_a_text_is_cut_only_where_its_tokenizer_allows(setting, tmp_path, monkeypatch):
    # Each setting but the last spans a cut that SAFE_CUTS' first rule allows, which changed the
    # ids: a regex of whole lines spans every cut before a space; a prefix space is put before a
    # piece that starts after a newline; an added token that strips the white space before it
    # takes a line break from the piece before, one that strips the space after it a space from the
    # piece after; a token may hold a space or a line break. Tokens of white space alone (GPT-NeoX's
    # runs of spaces) cross no cut: a cut has a non-space on one side.
    text = TEXT[:60_000]
    tok = fl.Tokenizer.train_from_iterator([text], kind="bpe", vocab_size=600)
    if setting == "a user's regex":
        tok = fl.Tokenizer.train_from_iterator([text], kind="bpe", vocab_size=600, pattern=r"[^\n]+|\n+")
        assert tok.pattern == r"[^\n]+|\n+" and tok.safe_cuts is None
    elif setting == "add_prefix_space":
        spec = json.loads(tok.to_str())
        spec["pre_tokenizer"]["add_prefix_space"] = True
        tok = fl.Tokenizer.from_str(json.dumps(spec))
        assert tok.add_prefix_space and tok.pattern == "gpt2" and tok.safe_cuts == "spaces"
    elif setting == "an lstrip token":
        text = text.replace("\n", "\n<mask>")
        tok = with_added_token(tok, "<mask>", lstrip=True)
        assert tok.safe_cuts == "spaces"
    elif setting == "an rstrip token":
        text = text.replace(" ", "<mask> ")
        tok = with_added_token(tok, "<mask>", rstrip=True)
        assert tok.safe_cuts is None
    elif setting == "a token with a space":
        text = text.replace(" the ", " <my tok> ")
        tok = with_added_token(tok, "<my tok>")
    elif setting == "an ordinary token with a line break":
        text = text.replace(".\n", ".\nh")
        tok = with_added_token(tok, ".\nh", special=False)
        assert tok.safe_cuts is None
    else:
        text = text.replace("\n", "  \n\n   ")
        for run in ("  ", "   ", "\n\n", " \n"):
            tok = with_added_token(tok, run, special=False)
        assert tok.safe_cuts == "spaces and line breaks"
    monkeypatch.setattr(data, "PIECE", 997)
    prepare_tokens(text, tok, tmp_path, val_fraction=0.25)
    split = int(len(text) * 0.75)
    for name, part in (("train", text[:split]), ("val", text[split:])):
        np.testing.assert_array_equal(load_tokens(tmp_path, name), tok.encode_array(part, add_special_tokens=False))


def test_files_are_split_at_line_ends_and_separated_by_the_end_of_text_token(tmp_path):
    texts = [TEXT[:50_000], TEXT[100_000:110_000], "one line only\n"]
    files = [tmp_path / f"{i}.txt" for i in range(len(texts))]
    for f, t in zip(files, texts):
        f.write_text(t)
    (tmp_path / "empty.txt").write_text("")
    tok = fl.Tokenizer.train([str(f) for f in files], kind="bpe", vocab_size=400)
    end = tok.token_to_id("<|endoftext|>")
    prepare_files([files[0], tmp_path / "empty.txt", *files[1:]], tok, tmp_path / "data")
    splits = {}
    for name in ("train", "val"):
        ids = np.asarray(load_tokens(tmp_path / "data", name))
        splits[name] = [tok.decode(p).removeprefix("<|endoftext|>") for p in np.split(ids, np.flatnonzero(ids == end)) if p.size]
    # Each file of several is cut at a line end near 90% (a line's: before a space): in both splits.
    assert len(splits["train"]) == len(splits["val"]) == len(texts)
    for text, train, val in zip(texts, splits["train"], splits["val"]):
        assert train + val == text and abs(len(train) - 0.9 * len(text)) < 200
        assert train.endswith("\n") if "\n" in text.strip() else val.startswith(" ")
    # One file is split as nanoGPT splits it, at 90% of its characters.
    meta = prepare_files([files[0]], tok, tmp_path / "one")
    assert tok.decode(load_tokens(tmp_path / "one", "train")) == texts[0][:45_000] and meta["val_tokens"] > 0
    with pytest.raises(ValueError, match="empty"):
        check_files([tmp_path / "empty.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not valid UTF-8"):
        check_files([files[0], tmp_path / "latin1.txt"])
    (tmp_path / "utf16.txt").write_text("café\n", encoding="utf-16")  # with its byte-order mark, as Windows writes it
    with pytest.raises(ValueError, match="utf16.txt is not valid UTF-8 text \\(it is UTF-16: convert it, e.g. iconv"):
        check_files([tmp_path / "utf16.txt"])
    with pytest.raises(ValueError, match="'train' or 'val'"):
        load_tokens(tmp_path / "one", "test")


def test_an_encoding_error_names_its_file(tmp_path):
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    files[0].write_text("abc\n")
    files[1].write_text("abz\n")
    tok = fl.Tokenizer.train_from_iterator(["abc\n"], kind="char", vocab_size=0)
    for given in (files, files[1:]):
        with pytest.raises(ValueError, match=r"b\.txt: character 'z' \(U\+007A\) is not in this character"):
            prepare_files(given, tok, tmp_path / "data")


def test_files_are_separated_by_the_tokenizers_document_end(tmp_path):
    """<|endoftext|>, else [SEP] or RoBERTa's </s> (special only), else a newline: with
    add_prefix_space, a newline alone would have been " \n"."""
    files = [tmp_path / f"{i}.txt" for i in range(2)]
    for i, f in enumerate(files):
        f.write_text(TEXT[i * 5_000 : i * 5_000 + 5_000])
    tok = fl.Tokenizer.train([str(f) for f in files], kind="bpe", vocab_size=400, special_tokens=[])
    spec = json.loads(tok.to_str())
    spec["pre_tokenizer"]["add_prefix_space"] = True
    roberta = with_added_token(fl.Tokenizer.from_str(json.dumps(spec)), "</s>")
    text_only = with_added_token(tok, "</s>", special=False)
    assert data._separator(roberta) == [roberta.special_tokens["</s>"]]
    assert data._separator(text_only) == text_only.encode("\n", add_special_tokens=False)  # "</s>" is text there
    prepare_files(files, roberta, tmp_path / "data")
    for split in ("train", "val"):
        assert list(load_tokens(tmp_path / "data", split)).count(roberta.special_tokens["</s>"]) == 1


def test_one_line_files_are_split_before_a_space_and_one_word_files_go_whole(tmp_path):
    """A file split at 90% of its characters put a word's last letters in validation, and a
    file with no line end inside went whole to training."""
    lines = [f"See the cat number {i}.\n" for i in range(6)] + ["\n" + "one long line without a break\n\n"]
    words = [f"w{i}\n" for i in range(20)]
    tok = fl.Tokenizer.train_from_iterator(lines + words, kind="bpe", vocab_size=300)
    for name, texts in (("lines", lines), ("words", words)):
        files = [tmp_path / f"{name}{i:02}.txt" for i in range(len(texts))]
        for f, t in zip(files, texts):
            f.write_text(t)
        prepare_files(files, tok, tmp_path / name)
        train, val = (tok.decode(load_tokens(tmp_path / name, s)).split("<|endoftext|>") for s in ("train", "val"))
        if name == "lines":  # each file in both splits, cut before a space, with words on both sides
            assert len(train) == len(val) == len(texts)
            assert all(a + b == t and b.startswith(" ") and a.strip() and b.strip() for a, b, t in zip(train, val, texts))
        else:  # one word: whole, every tenth file to validation
            assert val == ["w9\n", "w19\n"] and len(train) == 18
    # A heading, then one long paragraph line: the only line end was the cut, and nearly all the
    # corpus went to validation (32 train tokens of 150,037). It is cut before a space near 90%.
    paragraph = " ".join(TEXT.split())[:20_000]
    files = [tmp_path / f"chapter{i}.txt" for i in range(3)]
    for i, f in enumerate(files):
        f.write_text(f"Chapter {i}\n{paragraph}\n")
    prepare_files(files, tok, tmp_path / "chapters")
    train, val = (tok.decode(load_tokens(tmp_path / "chapters", s)).split("<|endoftext|>") for s in ("train", "val"))
    for i, (a, b) in enumerate(zip(train, val)):
        assert a + b == files[i].read_text() and b.startswith(" ")
        assert abs(len(b) / (len(a) + len(b)) - 0.1) < 0.01


def test_wordpiece_documents_are_separated_by_sep(tmp_path):
    files = [tmp_path / f"{i}.txt" for i in range(5)]
    for i, f in enumerate(files):
        f.write_text(f"See the cat number {i} and the dog.\n")
    tok = fl.Tokenizer.train([str(f) for f in files], kind="wordpiece", vocab_size=120)
    prepare_files(files, tok, tmp_path / "data")
    sep = tok.token_to_id("[SEP]")
    for split in ("train", "val"):
        assert (np.asarray(load_tokens(tmp_path / "data", split)) == sep).sum() == 4


def test_crlf_text_is_trained_and_encoded_as_it_is(tmp_path):
    """The tokenizer trainer reads the files' bytes; text read with newline translation put
    "\\r" in the vocabulary and never in the training tokens."""
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(TEXT[:20_000].replace("\n", "\r\n").encode())
    tok = fl.Tokenizer.train([str(crlf)], kind="char", vocab_size=1 << 20)
    prepare_files([crlf], tok, tmp_path / "data")
    ids = np.concatenate([load_tokens(tmp_path / "data", s) for s in ("train", "val")])
    assert tok.decode(ids) == crlf.read_bytes().decode()


@pytest.mark.parametrize("pattern", ["gpt2", r"[^\n]+|\n+"])
def test_preparing_a_large_corpus_stops_at_ctrl_c(pattern):
    setup = f"""
import ferrolm
from ferrolm.data import BUNDLED_CORPUS, prepare_tokens
import tempfile
text = BUNDLED_CORPUS.read_text() * 250
tok = ferrolm.Tokenizer.train([str(BUNDLED_CORPUS)], kind="bpe", vocab_size=1000, pattern={pattern!r})
out = tempfile.mkdtemp()
"""
    # One encode of the whole split ran to its end, then rust-numpy panicked on the pending signal. A user's regex
    # of whole lines lets the text be cut nowhere: its one encode call (10-20 s) now ends at the signal too.
    assert seconds_to_interrupt(setup, "prepare_tokens(text, tok, out)") < 0.5


def test_mlm_pairs_are_cut_where_one_file_ends_and_the_next_begins(tmp_path):
    """Each segment of a pair is one document's: a [SEP] between documents is the A/B cut, and
    with documents shorter than a window the others are left out."""
    from ferrolm.train import MaskedLM

    words = TEXT.lower().split()
    rng = np.random.default_rng(0)
    files = [tmp_path / f"{i}.txt" for i in range(60)]
    for i, f in enumerate(files):  # documents of 3 to 40 words, each starting with "start"
        n = int(rng.integers(3, 40))
        f.write_text("start " + " ".join(words[i * 40 : i * 40 + n]) + "\n")
    tok = fl.Tokenizer.train([str(f) for f in files], kind="wordpiece", vocab_size=400)
    prepare_files(files, tok, tmp_path / "data")
    batch = MaskedLM(tmp_path / "data", tok, 32, 256, short_prob=0.0).batch("train", np.random.default_rng(0))
    sep, starts = tok.token_to_id("[SEP]"), 0
    for ids, real in zip(batch["ids"], batch["attention_mask"]):
        at = np.flatnonzero(ids[real] == sep)
        assert len(at) == 2 and at[1] == real.sum() - 1  # [CLS] A [SEP] B [SEP] only
        a, b = tok.decode(ids[1 : at[0]]), tok.decode(ids[at[0] + 1 : at[1]])
        assert "start" not in a[1:] and "start" not in b[1:]  # no document boundary inside a segment
        starts += b.startswith("start")
    assert starts > 50  # many windows hold a boundary


def test_a_full_disk_while_writing_tokens_names_the_file(tmp_path):
    """numpy's message named no file and no cause ("180000 requested and 51200 written"); a
    file size limit (Python ignores SIGXFSZ, so writes fail with EFBIG) stands in for a full
    disk. Nothing half-written is left."""
    from conftest import run_python

    code = f"""
import resource, ferrolm as fl
from ferrolm.data import BUNDLED_CORPUS, prepare_tokens
text = BUNDLED_CORPUS.read_text()[:200_000]
tok = fl.Tokenizer.train_from_iterator([text], kind="char", vocab_size=1 << 20)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    prepare_tokens(text, tok, {str(tmp_path / "data")!r})
except OSError as e:
    print(e)
"""
    message = run_python(code, {})
    assert f"writing {tmp_path / 'data' / 'train'}.bin" in message and "is the disk full, or a file size limit reached" in message, message
    assert not list((tmp_path / "data").glob("*.bin")) and not list((tmp_path / "data").glob(".*"))
