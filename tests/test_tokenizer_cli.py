"""`ferrolm tokenizer train|encode`."""

from __future__ import annotations

import json

import pytest

import ferrolm
from ferrolm.cli import main
from tokenizer_corpus import shakespeare_path


@pytest.mark.parametrize("kind, size", [("bpe", 400), ("wordpiece", 400), ("char", 0)])
def test_train_then_encode(tmp_path, capsys, kind, size):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--kind", kind, "--vocab-size", str(size), "--out", str(out), str(shakespeare_path())]) == 0
    assert f"trained {kind} tokenizer" in capsys.readouterr().out
    tok = ferrolm.Tokenizer.from_file(str(out))
    assert tok.kind == kind
    assert main(["tokenizer", "encode", "-t", str(out), "--text", "To be, or not", "--ids"]) == 0
    assert json.loads(capsys.readouterr().out) == tok.encode("To be, or not")
    assert main(["tokenizer", "encode", "-t", str(out), "--text", "To be"]) == 0
    assert "tokens" in capsys.readouterr().out
    # Files beside --text were ignored without a word.
    assert main(["tokenizer", "encode", "-t", str(out), "--text", "To be", str(shakespeare_path())]) == 2
    assert "--text or files" in capsys.readouterr().err


def test_ids_of_a_long_text_and_a_closed_pipe(tmp_path, capsys):
    """--ids writes a long text's ids in chunks (the same JSON list), and a reader that stops
    early (`| head`) ends the command quietly."""
    import subprocess
    import sys

    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--kind", "char", "--vocab-size", "0", "--out", str(out)]) == 0
    text = shakespeare_path().read_text(encoding="utf-8")[:150_000]
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["tokenizer", "encode", "-t", str(out), "--ids", str(tmp_path / "long.txt")]) == 0
    assert json.loads(capsys.readouterr().out) == ferrolm.Tokenizer.from_file(str(out)).encode(text)
    command = "import sys; from ferrolm.cli import main; sys.exit(main(sys.argv[1:]))"
    reader = subprocess.run(f"'{sys.executable}' -c '{command}' tokenizer encode -t '{out}' '{tmp_path / 'long.txt'}' | head -c 100",
                            shell=True, capture_output=True, text=True, timeout=120)
    assert len(reader.stdout) == 100 and reader.stderr == ""


def test_a_corpus_from_a_pipe(tmp_path):
    """`tokenizer train` reads its corpus once, so a pipe will do (its size, 0, said "empty");
    a corpus read more than once (pretrain's) must be a file, and saying so beats reading nothing."""
    import os
    import subprocess
    import sys

    from ferrolm.data import check_files

    command = "import sys; from ferrolm.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "tok.json"
    run = subprocess.run([sys.executable, "-c", command, "tokenizer", "train", "--vocab-size", "300", "--out", str(out),
                          "/dev/stdin"], input=shakespeare_path().read_text(encoding="utf-8")[:20_000],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ferrolm.Tokenizer.from_file(str(out)).vocab_size == 300
    # An empty pipe is found empty by the trainer (it wrote a tokenizer of the byte alphabet).
    run = subprocess.run([sys.executable, "-c", command, "tokenizer", "train", "--out", str(tmp_path / "e.json"),
                          "/dev/stdin"], input="", capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "the corpus is empty" in run.stderr and not (tmp_path / "e.json").exists()
    for kind, texts in (("bpe", ["", ""]), ("wordpiece", ["", " \n "])):  # BPE learns spaces, WordPiece does not
        with pytest.raises(ValueError, match="no words to train on"):
            ferrolm.Tokenizer.train_from_iterator(texts, kind=kind, vocab_size=300)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="not a regular file"):
        check_files([tmp_path / "fifo"])


def test_default_corpus_and_errors(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["tokenizer", "train", "--vocab-size", "300", "--out", str(out)]) == 0
    assert main(["tokenizer", "train", "--vocab-size", "10", "--out", str(out)]) == 2
    assert "smaller than the byte alphabet" in capsys.readouterr().err
    assert main(["tokenizer", "encode", "-t", str(tmp_path / "missing.json"), "--text", "x"]) == 2
    with pytest.raises(SystemExit):
        main(["tokenizer", "train", "--kind", "unigram"])
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    assert main(["tokenizer", "encode", "-t", str(out), str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt is not valid UTF-8" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--kind", "bpe", "--limit-alphabet", "5", "--out", str(out)]) == 2
    assert "wordpiece only" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # was "int too big to convert", naming no option
        main(["tokenizer", "train", "--vocab-size", "99999999999999999999", "--out", str(out)])
    assert "--vocab-size: must be below 2**63" in capsys.readouterr().err


def test_a_bad_out_path_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """It was found out only when saving, after the whole training."""
    trained = []
    monkeypatch.setattr(ferrolm.Tokenizer, "train", lambda *a, **k: trained.append(1))
    (tmp_path / "file").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for out, message in ((tmp_path, "is a directory"),
                         (tmp_path / "file" / "sub" / "t.json", f"{tmp_path / 'file'} is not a directory"),
                         (tmp_path / "dangling" / "t.json", f"{tmp_path / 'dangling'} is not a directory")):
        assert main(["tokenizer", "train", "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert not trained


def test_out_folders_are_made(tmp_path):
    """As pretrain's --out: a missing folder was refused as "not a directory"."""
    out = tmp_path / "new" / "sub" / "tok.json"
    assert main(["tokenizer", "train", "--kind", "char", "--out", str(out)]) == 0
    assert ferrolm.Tokenizer.from_file(str(out)).vocab_size == 65


def test_python_m_ferrolm_and_a_terminal_that_cannot_show_the_text(tmp_path):
    """`python -m ferrolm` runs the command line; on a Latin-1 terminal, text it cannot show
    is escaped (the command used to end with status 2 part-way through its output)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "tok.json"
    (tmp_path / "text.txt").write_text("Rome 日本 ok\n", encoding="utf-8")
    assert main(["tokenizer", "train", "--kind", "char", "--vocab-size", "0", "--out", str(out), str(tmp_path / "text.txt")]) == 0
    run = subprocess.run([sys.executable, "-m", "ferrolm", "tokenizer", "encode", "-t", str(out), "--text", "日本 ok"],
                         capture_output=True, env={**os.environ, "PYTHONIOENCODING": "latin-1"}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert b"\\u65e5" in run.stdout and b"ok" in run.stdout
