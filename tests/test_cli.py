"""`ferrolm pretrain` / `generate` command-line behaviour: argument checks, resume rules,
output without a progress bar."""

import errno
import io
import json
import math
import os
import shutil
import warnings

import numpy as np
import pytest

import ferrolm as fl
from ferrolm.cli import main
from ferrolm.data import BUNDLED_CORPUS

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "1", "--sample-tokens", "0", "--no-progress"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(BUNDLED_CORPUS.read_text()[:20_000])
    return path


@pytest.mark.parametrize("argv", [
    ["generate", "m", "--top-k", "-1"],
    ["generate", "m", "--seed", "-1"],
    ["generate", "m", "--top-p", "2"],
    ["generate", "m", "--temperature", "-1"],
    ["pretrain", "--batch-size", "0"],
    ["pretrain", "--bias", "ture"],
    ["pretrain", "--val-fraction", "1.5"],
    ["pretrain", "--learning-rate", "nan"],
    ["tokenizer", "train", "--vocab-size", "-1"],
    ["label", "m", "--prompts", "p.txt", "--top-p", "2"],
    ["ppo", "m", "--reward-model", "r", "--prompts", "p", "--out", "o", "--ppo-epochs", "0"],
    ["sft", "m", "--data", "d", "--out", "o", "--val-fraction", "-1"],
])
def test_out_of_range_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_resume_continues_the_saved_run_and_refuses_flags_it_would_ignore(corpus, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "6", "--eval-interval", "3", "--log-interval", "2",
                 *TINY]) == 0
    printed = capsys.readouterr().out
    assert "step 3: train loss" in printed  # evaluations print without a progress bar, and so do log lines
    assert "step 4: loss" in printed and "tokens/s" in printed
    # A BPE vocabulary the corpus cannot fill is said to fall short (it was silently smaller).
    assert main(["pretrain", str(corpus), "--tokenizer", "bpe", "--vocab-size", "50000", "--out", str(tmp_path / "bpe"),
                 "--max-iters", "0", *TINY]) == 0
    assert "fewer than --vocab-size 50000: the corpus has no more pieces to add" in capsys.readouterr().out
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["config"]["lr_decay_iters"] == 6  # a new run decays over its own length
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text())
    for extra, message in (([str(other)], f"file {other} is not the run's ({corpus.resolve()})"),
                           (["--tokenizer", "bpe"], "--tokenizer bpe is not the run's (char)"),
                           (["--vocab-size", "300"], "--vocab-size: the run's tokenizer (char) was not sized by it"),
                           (["--val-fraction", "0.2"], "--val-fraction 0.2 is not the run's (0.1)"),
                           (["--objective", "mlm"], "was trained with causal")):
        assert main(["pretrain", "--resume", "--out", out, "--max-iters", "8", *extra, *TINY]) == 2
        assert message in capsys.readouterr().err
    # Log lines past the checkpoint (an interrupted run wrote them) are dropped on resume.
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "loss": 123.0}) + "\n")
    capsys.readouterr()
    # The command repeated with --resume: its corpus and tokenizer flags are the run's own.
    assert main(["pretrain", str(corpus), "--tokenizer", "char", "--val-fraction", "0.1", "--resume", "--out", out,
                 "--max-iters", "8", *TINY]) == 0
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["config"]["lr_decay_iters"] == 6  # the run's schedule continues
    assert f"resuming the run in {out} at step 6 of 8\n" in capsys.readouterr().err  # where it picks up, said
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "8", *TINY]) == 0
    assert "at step 8 of 8; it is complete (give a larger max_iters, --max-iters" in capsys.readouterr().err
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "5", *TINY]) == 2
    assert "at step 8, past max_iters=5" in capsys.readouterr().err
    steps = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and 123.0 not in [json.loads(l).get("loss") for l in
                                                   (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Data prepared again since the checkpoint (a new run in the same directory, interrupted
    # before its first checkpoint) is refused, not trained on with the old model.
    from ferrolm.data import prepare_tokens

    prepare_tokens(corpus.read_text()[::-1], fl.Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json")),
                   tmp_path / "run" / "data")
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "9", *TINY]) == 2
    assert "the training data differs" in capsys.readouterr().err
    # Without --resume the run starts over, and says what it replaces.
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "2", *TINY]) == 0
    assert "replaces the causal checkpoint there (step 8)" in capsys.readouterr().err


def test_one_line_files_are_joined_by_a_newline_in_a_character_vocabulary(tmp_path):
    """A character vocabulary trained on files without a line end has no newline: the files
    were run together ("...vented theirDOC2START..."). It gets one, to separate them."""
    from ferrolm.data import load_tokens

    files = [tmp_path / f"{i}.txt" for i in range(3)]
    for i, f in enumerate(files):
        f.write_text(f"document {i} " + "words and more words " * 20)  # no line end
    out = tmp_path / "run"
    assert main(["pretrain", *map(str, files), "--out", str(out), "--max-iters", "1", *TINY]) == 0
    tok = fl.Tokenizer.from_file(str(out / "tokenizer.json"))
    train = tok.decode(load_tokens(out / "data", "train"))
    assert [part.split(" ")[:2] for part in train.split("\n")] == [["document", str(i)] for i in range(3)]


def test_resume_takes_a_tokenizer_file_by_any_path_and_says_what_it_cannot_check(corpus, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "1", *TINY]) == 0
    tok = tmp_path / "tok.json"
    shutil.copy(tmp_path / "run" / "tokenizer.json", tok)
    assert main(["pretrain", str(corpus), "--tokenizer", str(tok), "--out", out, "--max-iters", "1", *TINY]) == 0
    monkeypatch.chdir(tmp_path)  # the same file by a relative path
    assert main(["pretrain", str(corpus), "--tokenizer", "tok.json", "--resume", "--out", out, "--max-iters", "2",
                 *TINY]) == 0
    assert main(["pretrain", "--tokenizer", "char", "--resume", "--out", out, "--max-iters", "2", *TINY]) == 2
    assert f"--tokenizer char is not the run's ({tok})" in capsys.readouterr().err
    # A run from a model took the model's tokenizer.
    assert main(["pretrain", str(corpus), "--init-from", out, "--out", "ft", "--max-iters", "1", *TINY]) == 0
    assert main(["pretrain", "--tokenizer", "char", "--resume", "--out", "ft", "--max-iters", "2", *TINY]) == 2
    assert "--tokenizer: the run took its --init-from model's tokenizer" in capsys.readouterr().err
    # A run saved before the flags were recorded cannot tell: leave them out.
    state = json.loads((tmp_path / "ft" / "trainer_state.json").read_text())
    del state["settings"]
    (tmp_path / "ft" / "trainer_state.json").write_text(json.dumps(state))
    assert main(["pretrain", str(corpus), "--resume", "--out", "ft", "--max-iters", "2", *TINY]) == 2
    assert "by a run saved before ferrolm recorded its corpus flags: leave out files" in capsys.readouterr().err
    assert main(["pretrain", "--resume", "--out", "ft", "--max-iters", "2", *TINY]) == 0
    # Resumed, it still has none (its state says {}): the same answer, not a crash.
    assert main(["pretrain", str(corpus), "--tokenizer", "char", "--resume", "--out", "ft", "--max-iters", "3",
                 *TINY]) == 2
    assert "by a run saved before ferrolm recorded its corpus flags: leave out files, --tokenizer" in \
        capsys.readouterr().err


def test_a_new_run_stopped_before_its_first_checkpoint_leaves_the_earlier_run_whole(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "8", "--eval-interval", "4", *TINY]) == 0
    earlier_log = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    # A new run (--resume forgotten) that diverges before it saves: the earlier run's log and
    # checkpoint stay, and the message says so (it said "none yet", and resuming mixed both logs).
    diverging = ["--max-iters", "20", "--learning-rate", "1000", "--grad-clip", "0", "--eval-interval", "100"]
    assert main(["pretrain", str(corpus), "--out", str(out), *diverging, *TINY]) == 2
    assert "last checkpoint in " + str(out) + ": still the earlier run's, from step 8" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == earlier_log
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "10", *TINY]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[:len(earlier_log.splitlines())] == [json.loads(l)["step"] for l in earlier_log.splitlines()]
    assert steps == sorted(steps) and not (out / "metrics.pending.jsonl").exists()
    # A new run that saves replaces the log with its own.
    assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "3", "--eval-interval", "100", *TINY]) == 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 3, 3]
    # A new run on another corpus keeps its data aside until its first checkpoint: stopped before
    # then, the earlier run resumes (the data was replaced at once, and the resume was refused).
    shutil.copytree(out / "data", tmp_path / "earlier-data")
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1])
    assert main(["pretrain", str(other), "--out", str(out), *diverging, *TINY]) == 2
    assert "still the earlier run's, from step 3" in capsys.readouterr().err and (out / "data.pending").is_dir()
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "4", *TINY]) == 0
    assert not (out / "data.pending").exists()  # the stopped run's, dropped
    # Once the new run saves, its data is the run's: moved in with the checkpoint.
    assert main(["pretrain", str(other), "--out", str(out), "--max-iters", "2", "--eval-interval", "100", *TINY]) == 0
    assert not (out / "data.pending").exists()
    # A process that died between its first checkpoint and moving its data in: the resume moves it in.
    os.replace(out / "data", out / "data.pending")
    shutil.copytree(tmp_path / "earlier-data", out / "data")
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "3", *TINY]) == 0
    assert not (out / "data.pending").exists()
    # Token files edited in place (the same size) are refused: they passed for the prepared data.
    tokens = np.fromfile(out / "data" / "train.bin", np.uint16)
    tokens[::-1].tofile(out / "data" / "train.bin")
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "4", *TINY]) == 2
    assert "the token files in " + str(out / "data") + " changed since they were prepared" in capsys.readouterr().err
    (out / "data" / "train.bin").unlink()
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "4", *TINY]) == 2
    assert "train.bin is missing: the run's tokens are incomplete" in capsys.readouterr().err
    tokens.tofile(out / "data" / "train.bin")
    # An evaluation reads and moves nothing: pending data a new run is preparing stays, and an
    # evaluation from a model tokenises elsewhere (it wrote data.pending into --out).
    shutil.copytree(tmp_path / "earlier-data", out / "data.pending")
    assert main(["pretrain", "--resume", "--eval-only", "--out", str(out), *TINY]) == 0
    assert (out / "data.pending").is_dir()
    shutil.rmtree(out / "data.pending")
    assert main(["pretrain", str(corpus), "--init-from", str(out), "--eval-only", "--out", str(out), *TINY]) == 0
    assert not (out / "data.pending").exists()
    # A new run started while a checkpoint's data is still pending (its process died after saving)
    # moves that data in first: stopped early itself, it leaves that run resumable.
    os.replace(out / "data", out / "data.pending")
    shutil.copytree(tmp_path / "earlier-data", out / "data")
    assert main(["pretrain", str(corpus), "--out", str(out), *diverging, *TINY]) == 2
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "4", *TINY]) == 0
    capsys.readouterr()
    # Pending data that cannot be moved in (here `data` is a file) stays, and a new run is refused
    # rather than replacing it: the checkpoint's data is there only.
    os.replace(out / "data", out / "data.pending")
    (out / "data").write_text("not a folder")
    with pytest.warns(UserWarning, match="the run's data stays in .*data.pending"):
        assert main(["pretrain", str(corpus), "--out", str(out), *diverging, *TINY]) == 2
    assert "holds the data of the checkpoint in" in capsys.readouterr().err and (out / "data.pending" / "meta.json").exists()
    (out / "data").unlink()
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "5", *TINY]) == 0
    capsys.readouterr()
    # A resume needs the tokenizer the run's data was encoded with (it trained on and saved a
    # model without one), also from a state written before its digest was recorded.
    state = json.loads((out / "trainer_state.json").read_text())
    (out / "tokenizer.json").unlink()
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "4", *TINY]) == 2
    assert f"cannot resume: tokenizer.json is missing from {out}" in capsys.readouterr().err
    del state["digests"]["tokenizer.json"]
    (out / "trainer_state.json").write_text(json.dumps(state))
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", "4", *TINY]) == 2
    assert f"cannot resume: tokenizer.json is missing from {out}" in capsys.readouterr().err


def test_resume_accepts_the_runs_own_dropout_and_drops_attention_at_that_rate(corpus, tmp_path):
    out = str(tmp_path / "run")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "2", "--dropout", "0.1", *TINY]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resid_pdrop"] == config["attn_pdrop"] == 0.1  # written as the decimal given, not float32's
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "3", "--dropout", "0.1", *TINY]) == 0
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "4", "--dropout", "0.2", *TINY]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resid_pdrop"] == config["attn_pdrop"] == 0.2  # a training setting: it may change on resume


def test_resume_takes_the_objective_and_masking_from_the_checkpoint(corpus, tmp_path):
    out = str(tmp_path / "bert")
    assert main(["pretrain", str(corpus), "--objective", "mlm", "--whole-word-masking", "--vocab-size", "200",
                 "--out", out, "--max-iters", "2", *TINY]) == 0
    state = json.loads((tmp_path / "bert" / "trainer_state.json").read_text())
    assert state["objective"] == "mlm" and state["objective_state"]["whole_word"] is True
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "4", *TINY]) == 0  # no --objective mlm
    state = json.loads((tmp_path / "bert" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["objective_state"]["whole_word"] is True


def test_one_prompt_reader_for_ppo_and_labelling(tmp_path):
    from ferrolm.label.prompts import check_prompts, read_prompts

    text = tmp_path / "p.txt"
    text.write_bytes(b"\xef\xbb\xbfWho goes there?\nStand, ho!\nWho goes there?\n")  # a byte-order mark is not text
    assert read_prompts(text) == ["Who goes there?", "Stand, ho!", "Who goes there?"]  # PPO may repeat a prompt
    tok = fl.Tokenizer.train_from_iterator([text.read_text()], kind="char", vocab_size=100)
    model = fl.GPT.create(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=1, n_embd=8, tokenizer=tok)
    with pytest.raises(ValueError, match="line 3: repeats the prompt of line 1"):
        check_prompts(read_prompts(text), model, where="p.txt")  # labelling may not
    text.write_text("Who goes there?\n\nStand, ho!\n\n")
    with pytest.raises(ValueError, match="line 2: empty prompt"):
        read_prompts(text)
    assert read_prompts(text, skip_blank=True) == ["Who goes there?", "Stand, ho!"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a\\nb"}\n"bare string"\n')
    assert read_prompts(jsonl) == ["a\nb", "bare string"]
    # Records are records whatever the file is called: never trained on as literal JSON text.
    named_json = tmp_path / "prompts.txt"
    named_json.write_text('{"prompt": "Who?"}\n{"prompt": "Why?"}\n')
    assert read_prompts(named_json) == ["Who?", "Why?"]
    jsonl.write_text("[" * 100_000 + "\n")  # nested too deeply for Python's parser
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        read_prompts(jsonl)


def test_resume_settings_zero_is_a_value_and_paths_may_move(tmp_path, capsys):
    import argparse

    from ferrolm.cli.posttrain import _settle

    saved = {"model": str(tmp_path / "m"), "data": str(tmp_path / "d"), "val_fraction": 0.1, "skip_long": False, "beta": 0.5}
    args = argparse.Namespace(model=str(tmp_path / "m"), data=str(tmp_path / "d"), val_fraction=None, skip_long=None, beta=None,
                              out=str(tmp_path / "o"))
    _settle(args, "dpo", saved)
    assert args.beta == 0.5 and args.val_fraction == 0.1  # not given: the checkpoint's
    args = argparse.Namespace(model=str(tmp_path / "moved"), data=str(tmp_path / "d"), val_fraction=None, skip_long=None, beta=0.0,
                              out=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--beta 0.0 is not the run's"):  # 0 is a value, not "not given"
        _settle(args, "dpo", saved)
    assert "MODEL" in capsys.readouterr().err  # a moved MODEL is a warning, not an error


def test_warnings_read_as_the_commands_notes(corpus, tmp_path):
    """A warning is `ferrolm: warning: ...` on the command line (it showed Python's source line),
    while an in-process caller's recorders still receive it (pytest.warns, elsewhere)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "ferrolm", "pretrain", str(corpus), *TINY, "--max-iters", "2",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "ferrolm: warning: the warmup (100 steps) outlasts the run (2 steps)" in run.stderr
    assert "UserWarning" not in run.stderr and "warnings.warn" not in run.stderr, run.stderr
    before = warnings.formatwarning
    with pytest.raises(SystemExit):
        main(["pretrain", "--batch-size", "x"])  # restored however the command ends
    assert warnings.formatwarning is before


def test_the_decay_ends_at_a_tenth_of_the_learning_rate_unless_told(capsys, tmp_path, monkeypatch):
    from ferrolm.train import TrainConfig

    monkeypatch.chdir(tmp_path)  # nothing may land in the repository if the check ever moved later
    assert TrainConfig(learning_rate=2e-5).final_lr == pytest.approx(2e-6)  # not a fixed 1e-4 above it
    assert TrainConfig(learning_rate=2e-5).lr_at(1999) < 2e-5
    with pytest.raises(ValueError, match="min_lr in \\[0, learning_rate\\]"):
        TrainConfig(learning_rate=1e-5, min_lr=1e-4)
    with pytest.raises(ValueError, match="learning_rate must be > 0 and finite"):  # failed after step 0's evaluation
        TrainConfig(learning_rate=math.inf)
    assert main(["pretrain", "--learning-rate", "1e-5", "--min-lr", "1e-4"]) == 2
    assert "min_lr in [0, learning_rate]" in capsys.readouterr().err
    assert not (tmp_path / "out-causal").exists()  # refused before any work


def test_tokenizer_and_model_flags_are_checked_before_the_corpus_is_prepared(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    for extra, message in ((["--tokenizer", "char", "--vocab-size", "100"], "--vocab-size sizes a bpe or wordpiece"),
                           (["--tokenizer", "BPE"], "not char, bpe or wordpiece, and no such file"),
                           (["--objective", "mlm", "--tokenizer", "bpe"], "--tokenizer bpe: masked language modelling needs"),
                           (["--objective", "mlm", "--tokenizer", "char"], "--tokenizer char: masked language modelling"),
                           (["--objective", "mlm", "--bias", "false"], "BERT's layers always have biases"),
                           (["--n-head", "3"], "--n-embd 16 must be a multiple of --n-head 3")):
        assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "2", *TINY, *extra]) == 2
        printed = capsys.readouterr()
        assert message in printed.err and "tokenizer: training" not in printed.out
        assert not (out / "data").exists()  # nothing prepared for a run that cannot start
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["pretrain", str(empty), "--out", str(out), *TINY]) == 2
    assert "empty" in capsys.readouterr().err
    from ferrolm.data import prepare_tokens

    with pytest.raises(ValueError, match="the corpus is empty"):  # with a tokenizer that exists already
        prepare_tokens("", fl.Tokenizer.train_from_iterator(["ab"], kind="char", vocab_size=10), out / "data")

    # Too short for a split, or for one window of it: the split and the way out are named
    # (an empty split was "cannot mmap an empty file").
    for text, message in (("a", "the train split in"), ("ab" * 40, "the val split has only 8 tokens")):
        short = tmp_path / "short.txt"
        short.write_text(text)
        assert main(["pretrain", str(short), "--out", str(out), "--tokenizer", "char", *TINY]) == 2
        err = capsys.readouterr().err
        assert message in err and "--val-fraction" in err, err
        assert not out.exists()  # the refused run's directory is not left behind, empty


def test_a_wordpiece_gpt_samples_from_cls(corpus, tmp_path, capsys):
    """WordPiece drops whitespace, so nanoGPT's default prompt (a newline) is no tokens: the
    end-of-training sample and `generate` without --prompt start from [CLS] (both failed)."""
    out = str(tmp_path / "wp")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "1", *TINY, "--tokenizer", "wordpiece",
                 "--vocab-size", "300", "--sample-tokens", "5"]) == 0
    printed = capsys.readouterr().out
    assert "-" * 60 in printed and printed.split("-" * 60)[-1].strip()  # the training's own sample
    assert main(["generate", out, "--max-new-tokens", "5"]) == 0
    sample = capsys.readouterr().out
    assert sample.strip() and "[CLS]" not in sample  # text was generated, and the start is not shown


def test_fill_mask_on_a_gpt_names_the_model_kind(corpus, tmp_path, capsys):
    out = str(tmp_path / "gpt")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "1", *TINY]) == 0
    assert json.loads((tmp_path / "gpt" / "config.json").read_text())["bias"] is False  # nanoGPT's default
    assert main(["fill-mask", out, "To be or [MASK]"]) == 2
    assert "is a GPT model; fill-mask needs a BERT" in capsys.readouterr().err
    # A BERT without a tokenizer is said as generate says it (it was the Python API's advice: "attach one").
    from conftest import TRANSFORMERS_FIXTURES

    assert main(["fill-mask", str(TRANSFORMERS_FIXTURES / "bert"), "To be or [MASK]"]) == 2
    assert "bert has no tokenizer (tokenizer.json, vocab.json, vocab.txt)" in capsys.readouterr().err


def test_perplexity_scores_each_file_and_the_total(corpus, tmp_path, capsys):
    import math
    import re

    import numpy as np

    from ferrolm.gpt import GPT

    out = str(tmp_path / "gpt")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "2", *TINY]) == 0
    texts = {"a.txt": "To be, or not to be: that is the question.\n" * 3, "b.txt": "ROMEO:\nBut, soft!", "c.txt": "x"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    capsys.readouterr()
    assert main(["perplexity", out, *(str(tmp_path / n) for n in texts), "--stride", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    model, nll = GPT.load(out), {}
    for name, text in list(texts.items())[:2]:
        logprobs = model.score(text, stride=5)  # a.txt is longer than the 16-token context
        nll[name] = -logprobs.astype(np.float64).sum()
        line = next(l for l in lines if l.startswith(str(tmp_path / name)))
        tokens, loss, ppl, bpb = re.search(r": ([\d,]+) tokens, loss ([\d.]+), perplexity ([\d.]+), ([\d.]+) bits", line).groups()
        assert int(tokens.replace(",", "")) == len(text) - 1 == logprobs.size
        assert float(loss) == pytest.approx(nll[name] / logprobs.size, abs=1e-4)
        assert float(ppl) == pytest.approx(math.exp(nll[name] / logprobs.size), rel=1e-3)
        assert float(bpb) == pytest.approx(nll[name] / math.log(2) / len(text.encode()), abs=1e-4)
    assert any(l.startswith(str(tmp_path / "c.txt")) and "no token to predict" in l for l in lines)
    total, bpb = map(float, re.search(r"total: [\d,]+ tokens, loss ([\d.]+), .* ([\d.]+) bits", lines[-1]).groups())
    assert total == pytest.approx(sum(nll.values()) / (len(texts["a.txt"]) + len(texts["b.txt"]) - 2), abs=1e-4)
    scored_bytes = len(texts["a.txt"].encode()) + len(texts["b.txt"].encode())  # not c.txt's: nothing of it was scored
    assert bpb == pytest.approx(sum(nll.values()) / math.log(2) / scored_bytes, abs=1e-4)
    # A BERT has no next-token likelihood; a missing file is named before anything is scored.
    assert main(["pretrain", str(corpus), "--out", str(tmp_path / "bert"), "--objective", "mlm", "--max-iters", "1",
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["perplexity", str(tmp_path / "bert"), str(tmp_path / "a.txt")]) == 2
    assert "perplexity needs a GPT" in capsys.readouterr().err
    assert main(["perplexity", out, str(tmp_path / "a.txt"), str(tmp_path / "missing.txt")]) == 2
    assert capsys.readouterr().out == ""
    assert main(["perplexity", out, str(tmp_path / "c.txt"), str(tmp_path / "a.txt"), "--stride", "16"]) == 2
    assert capsys.readouterr().out == ""  # the stride is refused before the short file's line
    (tmp_path / "d.txt").write_text("naïve €")  # characters this character model never saw
    assert main(["perplexity", out, str(tmp_path / "a.txt"), str(tmp_path / "d.txt")]) == 2
    assert f"{tmp_path / 'd.txt'}: " in capsys.readouterr().err  # which file, among several
    # A prompt file written with Windows line ends reads as text does (the model has no "\r").
    # A prompt file written with Windows line ends (and a byte-order mark, as Notepad writes it)
    # reads as text does: the model has no "\r" or U+FEFF.
    (tmp_path / "prompt.txt").write_bytes("\ufeffROMEO:\r\nBut".encode())
    assert main(["generate", out, "--prompt-file", str(tmp_path / "prompt.txt"), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:\nBut")
    (tmp_path / "bom.txt").write_bytes("\ufeffROMEO:\nBut".encode())
    (tmp_path / "plain.txt").write_text("ROMEO:\nBut")
    capsys.readouterr()
    scores = []
    for name in ("bom.txt", "plain.txt"):
        assert main(["perplexity", out, str(tmp_path / name)]) == 0
        scores.append(capsys.readouterr().out.replace(name, "").split(" tokens/s")[0].rsplit("(", 1)[0])
    assert scores[0] == scores[1]  # the mark is not scored as text
    # Command-line words in the messages (they said "prompt 0 is empty" and "[Errno 17] File exists").
    assert main(["generate", out, "--prompt", ""]) == 2
    assert "--prompt is empty (leave it out to start where nanoGPT does" in capsys.readouterr().err
    for path, message in (("", "--prompt-file (sample.py's --start=FILE:) names no file"),  # it was ignored, silently
                          (str(tmp_path / "missing.txt"), f"--prompt-file {tmp_path / 'missing.txt'} does not exist"),
                          (str(tmp_path), f"--prompt-file {tmp_path} is a directory")):
        assert main(["generate", out, "--prompt-file", path]) == 2
        assert message in capsys.readouterr().err
    assert main(["perplexity", out, str(tmp_path)]) == 2  # it was "[Errno 21] Is a directory"
    assert f"text file {tmp_path} is a directory, not a file" in capsys.readouterr().err
    undecodable = b"Who \xff".decode("utf-8", "surrogateescape")  # as Python decodes such a command-line argument
    for flags in (["--prompt", undecodable], ["--stop", "x", "--stop", undecodable]):
        assert main(["generate", out, *flags]) == 2
        assert f"{flags[-2]} is not UTF-8 text" in capsys.readouterr().err  # it said "unpaired surrogate"
    for value, message in (("0", "must be a finite number > 0, got 0"), ("inf", "must be a finite number > 0, got inf")):
        with pytest.raises(SystemExit):
            main(["generate", out, "--repetition-penalty", value])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", out, "--max-new-tokens", "1.5"])
    assert "argument --max-new-tokens: expected an integer, got '1.5'" in capsys.readouterr().err
    # Flags only as spelt: argparse's prefixes made `--lr 1e-4` an error about --lr-decay-iters,
    # and `--lr 100` set it; a value that is not a number is said so.
    with pytest.raises(SystemExit):
        main(["pretrain", "--lr", "100", "--out", str(tmp_path / "lr")])
    assert "unrecognized arguments: --lr" in capsys.readouterr().err and not (tmp_path / "lr").exists()
    with pytest.raises(SystemExit):
        main(["pretrain", "--learning-rate", "abc"])
    assert "argument --learning-rate: expected a number, got 'abc'" in capsys.readouterr().err
    assert main(["pretrain", str(tmp_path / "a.txt"), "--out", str(tmp_path / "a.txt"), *TINY]) == 2
    assert f"{tmp_path / 'a.txt'} is a file: a run writes a directory of files there" in capsys.readouterr().err


def test_mistakes_that_would_train_on_the_wrong_text_are_refused(corpus, tmp_path, capsys):
    """A nanoGPT config with a typo was trained on as a corpus; corpus files after
    --special-tokens were taken as special tokens, and the bundled corpus trained on instead."""
    config = tmp_path / "my_config.py"
    config.write_text("n_layer = 6)\nmax_iters = 10\n")
    assert main(["pretrain", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "my_config.py: line 1: unmatched ')'" in capsys.readouterr().err and not (tmp_path / "o").exists()
    config.write_bytes("\ufeffmax_iters: int = 2\ndataset = 'shakespeare_char'\n".encode())  # a BOM, an annotation
    assert main(["pretrain", str(config), *TINY, "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "trainer_state.json").read_text())["step"] == 2
    assert main(["pretrain", "--eval_only=maybe"]) == 2  # was silently false: a training run
    assert "--eval_only: expected true or false" in capsys.readouterr().err
    argv = ["tokenizer", "train", "--special-tokens", "<|endoftext|>", str(corpus), "--out", str(tmp_path / "t.json")]
    assert main(argv) == 2
    assert "--special-tokens took" in capsys.readouterr().err and not (tmp_path / "t.json").exists()


NANOGPT_CONFIG = '''"""nanoGPT's config/train_shakespeare_char.py, abridged."""
import time
out_dir = 'out-shakespeare-char'
eval_interval = 250 # keep frequent because we'll overfit
always_save_checkpoint = False
wandb_log = False
wandb_run_name = 'mini-gpt-' + str(time.time())
dataset = 'shakespeare_char'
gradient_accumulation_steps = 2 * 1
batch_size = 64
n_layer = 6
dropout = 0.2
learning_rate = 1e-3
min_lr = learning_rate / 20  # a setting set before may be used
beta2 = 0.99
'''


def test_nanogpt_config_files_and_spellings_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train_shakespeare_char.py").write_text(NANOGPT_CONFIG)
    # nanoGPT's README command for CPUs, with a smaller model and run; later flags win over the file.
    argv = ["pretrain", "train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=1",
            "--log_interval=1", "--block_size=16", "--batch_size=4", "--n_layer=1", "--n_head=2", "--n_embd=16",
            "--max_iters=2", "--lr_decay_iters=2", "--dropout=0.0", "--no-progress", "--sample-tokens", "0"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "ignoring wandb_log in train_shakespeare_char.py" in err and "--device=cpu" in err
    # Said, as a .py file of a code corpus made of settings alone would be read so too.
    assert ("reading train_shakespeare_char.py as a nanoGPT config: its settings apply, train.py's where it sets "
            "none (to train on it as text, put it after --)") in err
    run = tmp_path / "out-shakespeare-char"  # the file's out_dir
    config = json.loads((run / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["resid_pdrop"]) == (1, 16, 0.0)
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["config"]["grad_accum"] == 2 and state["config"]["beta2"] == 0.99  # from the file
    assert state["config"]["min_lr"] == 5e-5
    assert state["config"]["always_save_checkpoint"] is False
    # What the file leaves out is train.py's (GPT-2's), as configurator.py runs the file over it: not ferrolm's.
    assert (state["config"]["beta1"], state["config"]["warmup_iters"], state["config"]["weight_decay"]) == (0.9, 2000, 0.1)
    # nanoGPT's resume: the config file again, its architecture taken from the checkpoint; a
    # changed batch size is said, as other settings that make the run another one.
    with pytest.warns(UserWarning, match="batch_size 4 -> 8"):
        assert main(["pretrain", "train_shakespeare_char.py", "--init_from=resume", "--max_iters=3", "--batch_size=8",
                     "--always_save_checkpoint=True", "--eval_iters=1", "--no-progress", "--sample-tokens", "0"]) == 0
    capsys.readouterr()  # the run's own lines
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 3
    # sample.py's spellings: the model in --out_dir, the prompt from a file, several samples.
    (tmp_path / "prompt.txt").write_text("ROMEO:")
    assert main(["generate", "--out_dir=out-shakespeare-char", "--device=cpu", "--start=FILE:prompt.txt",
                 "--num_samples=2", "--max_new_tokens=5"]) == 0
    samples = capsys.readouterr().out.split("-" * 15 + "\n")
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    # sample.py's --dtype: bfloat16 decoding, for the command only (seen from inside the model).
    seen = []
    monkeypatch.setattr(fl.GPT, "generate", lambda self, *a, **k: seen.append(fl.matmul_precision()) or iter(["x"]))
    assert main(["generate", "--out_dir=out-shakespeare-char", "--start=ROMEO:", "--max_new_tokens=5", "--dtype=bfloat16",
                 "--temperature=0"]) == 0
    assert seen == ["bfloat16"] and capsys.readouterr().out == "ROMEO:x\n" and fl.matmul_precision() == "float32"
    # Values are read, not run; a dataset that is not the bundled one needs its files.
    (tmp_path / "bad.py").write_text("batch_size = int('12')\n")
    assert main(["pretrain", "bad.py"]) == 2
    assert "bad.py line 1: batch_size must be a number, text, True/False, or arithmetic" in capsys.readouterr().err
    # `/` gives Python a float, which nanoGPT takes for an integer setting when it is whole.
    (tmp_path / "half.py").write_text("max_iters = 10\nlr_decay_iters = max_iters / 2\nlearning_rate = 1e-3 / 2\n")
    from ferrolm.cli.nanogpt import translate

    assert translate(["pretrain", "half.py"])[-3:] == ["--max-iters=10", "--lr-decay-iters=5", "--learning-rate=0.0005"]
    # A setting the file has not set yet is train.py's, as when nanoGPT runs the file over it.
    (tmp_path / "later.py").write_text("min_lr = learning_rate / 10\nlearning_rate = 2e-3\n")
    assert translate(["pretrain", "later.py"])[-2:] == [f"--min-lr={6e-4 / 10}", "--learning-rate=0.002"]
    (tmp_path / "unset.py").write_text("min_lr = base_lr / 10\n")
    assert main(["pretrain", "unset.py"]) == 2
    assert "unset.py line 1: min_lr uses base_lr, which the file does not set before it" in capsys.readouterr().err
    (tmp_path / "owt.py").write_text("dataset = 'openwebtext'\n")
    assert main(["pretrain", "owt.py", "--out", "o", "--n_layer", "1"]) == 2  # option values are not corpus files
    assert "give its text files" in capsys.readouterr().err
    (tmp_path / "gpt2.py").write_text("n_layer = 12\n")  # no dataset: nanoGPT's default, openwebtext
    assert main(["pretrain", "gpt2.py"]) == 2
    assert "dataset 'openwebtext'" in capsys.readouterr().err
    (tmp_path / "odd.py").write_text("use_svd = True\n")
    assert main(["pretrain", "odd.py"]) == 2
    err = capsys.readouterr().err
    assert "odd.py line 1: use_svd is not a setting ferrolm has" in err and "put it after --" in err


def test_python_source_is_training_text_not_a_config(tmp_path):
    from ferrolm.cli.nanogpt import translate

    for i, text in enumerate(["def f(x):\n    return x + 1\n\nbatch_size = 3\n", "import os\n", "MAX_LEN = 512\n"]):
        source = tmp_path / f"code{i}.py"
        source.write_text(text)
        assert translate(["pretrain", str(source), "--batch_size=2"]) == ["pretrain", str(source), "--batch-size=2"]


def test_nanogpt_spellings_leave_values_alone(capsys):
    from ferrolm.cli.nanogpt import translate

    assert translate(["generate", "--out_dir", "m", "--device", "cpu", "--init_from=resume", "--start", "FILE:p.txt",
                      "--stop", "<|end_of_text|>", "--prompt_file=a_b.txt"]) == \
        ["generate", "m", "--prompt-file", "p.txt", "--stop", "<|end_of_text|>", "--prompt-file=a_b.txt"]
    assert "ignoring --device=cpu" in capsys.readouterr().err
    assert translate(["pretrain", "--init-from", "resume", "--", "--my_file.txt"]) == \
        ["pretrain", "--init-from=resume", "--", "--my_file.txt"]  # a directory named resume; after --, files
    assert translate(["pretrain", "--init_from", "resume"]) == ["pretrain", "--resume"]  # nanoGPT's value
    # init_from=resume resumes every training command (it was dropped: sft restarted over its run).
    for command in ("sft", "reward", "dpo", "ppo"):
        assert "--resume" in translate([command, "m", "--init_from", "resume"])
        assert "--resume" in translate([command, "m", "--init_from=resume"])
    # sample.py's --dtype is generate's, and its top_k=None (no limit) our 0 (it was "expected an integer").
    assert translate(["generate", "--out_dir=m", "--dtype=bfloat16"]) == ["generate", "m", "--dtype=bfloat16"]
    assert translate(["generate", "--out_dir=m", "--top_k=None"]) == ["generate", "m", "--top-k=0"]


def test_nanogpt_resume_takes_the_architecture_from_the_checkpoint_in_every_spelling(tmp_path):
    from ferrolm.cli.nanogpt import translate

    (tmp_path / "cfg.py").write_text("n_layer = 6\nbatch_size = 4\n")
    (tmp_path / "resume.py").write_text("n_layer = 6\ninit_from = 'resume'\n")
    cfg, resume = str(tmp_path / "cfg.py"), str(tmp_path / "resume.py")
    # ferrolm's --init-from DIR takes the model's architecture too (train.py's 12 layers were refused);
    # BERT's masked language modelling keeps ferrolm's defaults (train.py's bias=False was refused).
    for flags in (translate(["pretrain", cfg, "--init-from", "m"]), translate(["pretrain", cfg, "--init-from=m"])):
        assert not any(f.startswith(("--n-layer", "--n-embd", "--block-size")) for f in flags)
    mlm = translate(["pretrain", cfg, "--objective", "mlm"])
    assert not any(f.startswith(("--bias", "--weight-decay", "--n-embd")) for f in mlm) and "--n-layer=6" in mlm
    assert translate(["pretrain", cfg, "--objective=mlm"])[:-1] == mlm[:-2]  # the same settings, either spelling
    for causal in (["--objective", "mlm", "--objective", "causal"], ["--", "--objective", "mlm"]):  # the last one wins
        assert "--n-embd=768" in translate(["pretrain", cfg, *causal])
    (tmp_path / "uses.py").write_text("lr_decay_iters = max_iters\n")  # a BERT's run does not take train.py's 600000
    with pytest.raises(ValueError, match="lr_decay_iters uses max_iters, which the file does not set before it"):
        translate(["pretrain", str(tmp_path / "uses.py"), "--objective", "mlm"])
    flags = translate(["pretrain", "--n_embd=64", cfg])
    assert "--n-layer=6" in flags and flags.index("--n-layer=6") > flags.index("--n-layer=12")  # the file's, over train.py's
    assert {"--n-head=12", "--beta2=0.95", "--learning-rate=0.0006", "--out=out", "--grad-accum=40"} <= set(flags)
    assert flags.index("--n-embd=64") > flags.index("--n-embd=768")  # the command line over train.py's, as in nanoGPT
    assert translate(["pretrain", "--n_embd=64"]) == ["pretrain", "--n-embd=64"]  # no config file: ferrolm's defaults
    for argv in ([cfg, "--init_from=resume"], [cfg, "--init_from", "resume"], [cfg, "--resume"], [resume]):
        flags = translate(["pretrain", *argv])
        assert "--resume" in flags and not any(f.startswith("--n-layer") for f in flags), argv
    assert "--n-layer=6" in translate(["pretrain", resume, "--init_from=scratch"])  # the last setting wins


def test_init_from_continues_a_models_weights_on_new_text(corpus, tmp_path, capsys):
    base, out = tmp_path / "base", tmp_path / "tuned"
    assert main(["pretrain", str(corpus), "--out", str(base), "--max-iters", "60", "--warmup-iters", "0",
                 "--learning-rate", "0.01", *TINY]) == 0
    before = (base / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["pretrain", str(corpus), "--init-from", str(base), "--out", str(out), "--max-iters", "1",
                 "--log-interval", "1", *TINY, "--dropout", "0.1", "--learning-rate", "3e-5"]) == 0  # dropout may change
    assert "pretraining learning rate" not in capsys.readouterr().err
    start, first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()[:2]]
    assert start["step"] == 0 and start["train_loss"] < 3.6  # where the model left off (about 3.1): evaluated first
    assert first["loss"] < 3.6  # and trained on; a new model starts at ln(58) ≈ 4.06
    assert (base / "model.safetensors").read_bytes() == before
    assert (out / "model.safetensors").read_bytes() != before
    assert (out / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["resid_pdrop"] == config["attn_pdrop"] == 0.1
    # Without --dropout a new run takes the default, as nanoGPT's init_from does (it kept the model's).
    capsys.readouterr()
    assert main(["pretrain", str(corpus), "--init-from", str(out), "--out", str(tmp_path / "again"), "--max-iters", "1",
                 *TINY]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["resid_pdrop"] == 0.0
    # Nor a learning rate: nanoGPT's pretraining one is used, which is said (the first run gave one).
    assert "at the pretraining learning rate, 0.001" in capsys.readouterr().err
    for extra, message in ((["--n-layer", "2"], "--n-layer 2 is not the model's"),
                           (["--out", str(base)], "training would overwrite the model it starts from"),
                           (["--tokenizer", "bpe"], "--tokenizer cannot change it"),
                           (["--objective", "mlm"], "a GPT trains with --objective causal"),
                           (["--resume"], "--init-from starts a new run")):
        assert main(["pretrain", str(corpus), "--init-from", str(base), "--out", str(out), *TINY, *extra]) == 2
        assert message in capsys.readouterr().err


def test_eval_only_evaluates_without_writing(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base"
    assert main(["pretrain", str(corpus), "--out", str(base), "--max-iters", "4", *TINY]) == 0
    files = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    capsys.readouterr()
    # nanoGPT's spelling, on the run's own data; then another corpus through --init-from.
    assert main(["pretrain", "--init_from=resume", "--out_dir", str(base), "--eval_only=True", "--eval-iters", "2"]) == 0
    printed = capsys.readouterr().out
    assert "evaluation on 2 batches of each split: train loss" in printed and "val ppl" in printed
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1])
    assert main(["pretrain", str(other), "--init-from", str(base), "--eval-only", *TINY]) == 0
    assert "val loss" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == files  # nothing written
    assert not (tmp_path / "out-causal").exists()
    assert main(["pretrain", "--eval-only", *TINY]) == 2
    assert "--eval-only evaluates a model" in capsys.readouterr().err


def test_decay_lr_false_keeps_the_learning_rate_constant(corpus, tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "3", "--decay-lr", "false",
                 "--log-interval", "1", "--learning-rate", "0.002", *TINY]) == 0
    rates = [json.loads(l)["lr"] for l in (out / "metrics.jsonl").read_text().splitlines() if "lr" in json.loads(l)]
    assert rates == [0.002] * 3


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"ferrolm {metadata.version('ferrolm')}\n"


def test_unknown_flags_are_reported_with_the_commands_usage(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["generate", "m", "--bogus"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "usage: ferrolm generate" in err and "unrecognized arguments: --bogus" in err
    for argv in (["generate", "m", "--dtype", "float16"], ["pretrain", "--dtype=float16"]):  # nanoGPT's GPU setting
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2 and "float16 is a GPU type" in capsys.readouterr().err


def test_a_refused_new_run_leaves_the_run_in_out_resumable(corpus, tmp_path, capsys):
    """Flags that fail are refused before the corpus is tokenised into --out/data (a refused
    run replaced the data, and the run there could no longer resume)."""
    out = str(tmp_path / "run")
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "2", *TINY]) == 0
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1])
    for extra, message in ((["--beta2", "1.0"], "beta1 and beta2 must be in [0, 1)"),
                           (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
                           (["--whole-word-masking"], "--whole-word-masking is for --objective mlm"),
                           (["--objective", "mlm", "--block-size", "4"], "sequences of at least 8")):
        assert main(["pretrain", str(other), "--out", out, *TINY, *extra]) == 2
        assert message in capsys.readouterr().err
    # Found while (or after) the corpus is tokenised: prepared aside, so nothing is replaced.
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "short.txt").write_text("To be or not to be.\n" * 3)
    for files, extra, message in (([other, tmp_path / "latin1.txt"], [], "latin1.txt is not valid UTF-8"),
                                  ([tmp_path / "short.txt"], ["--objective", "mlm"], "the val split has only")):
        assert main(["pretrain", *map(str, files), "--out", out, *TINY, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "data.preparing").exists()
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "3", *TINY]) == 0
    # A file error is not the tokenizer's ("the model's tokenizer cannot encode the corpus").
    assert main(["pretrain", str(tmp_path / "latin1.txt"), "--init-from", out, "--out", str(tmp_path / "ft"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "latin1.txt is not valid UTF-8" in err and "tokenizer" not in err


def test_a_character_model_without_newlines_samples_from_its_first_character(tmp_path, capsys):
    """nanoGPT's sample starts from "\\n"; a corpus without one made a finished run exit 2."""
    text = tmp_path / "oneline.txt"
    text.write_text(BUNDLED_CORPUS.read_text()[:20_000].replace("\n", " "))
    out = tmp_path / "nl"
    assert main(["pretrain", str(text), "--out", str(out), "--max-iters", "2", *TINY[:-3], "--sample-tokens", "20",
                 "--no-progress"]) == 0
    assert "-" * 60 in capsys.readouterr().out
    assert main(["generate", str(out), "--max-new-tokens", "5"]) == 0
    first = fl.Tokenizer.from_file(str(out / "tokenizer.json")).decode([0])
    assert capsys.readouterr().out.startswith(first)  # the start is shown as it is, not as the newline it is not


def test_evaluation_runs_in_the_given_precision(tmp_path):
    from ferrolm.train import evaluate_model

    seen = []

    class Probe:
        kind = "probe"

        def batch(self, split, rng):
            return None

        def loss(self, model, batch, dropout_seed):
            seen.append(fl.matmul_precision())
            return fl.tensor(1.0), {}

    with warnings.catch_warnings():  # a CPU without AVX512-BF16 warns that products stay float32
        warnings.simplefilter("ignore")
        evaluate_model(None, Probe(), eval_iters=1, dtype="bfloat16")
    assert seen == ["bfloat16", "bfloat16"] and fl.matmul_precision() == "float32"


def test_a_second_run_into_a_directory_in_use_is_refused(corpus, tmp_path, capsys):
    """Another process training into --out holds it: a second run there (another terminal's)
    is refused before it prepares data or writes anything; both used to write over each other."""
    import subprocess
    import sys

    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ferrolm.train.loop import hold_run_directory; "
                               f"hold_run_directory({str(out)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "1", *TINY]) == 2
        assert f"{out} is in use by another run (process {holder.pid})" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".run.lock"]  # nothing prepared or written
        # Refused before anything is read or trained: a tokenizer (it trained one first), a checkpoint.
        assert main(["pretrain", str(corpus), "--tokenizer", "bpe", "--out", str(out), "--max-iters", "1", *TINY]) == 2
        printed = capsys.readouterr()
        assert "is in use by another run" in printed.err and "training bpe" not in printed.out
        assert main(["pretrain", "--out", str(out), "--resume", *TINY]) == 2
        assert "is in use by another run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "1", *TINY]) == 0  # free again
    assert main(["pretrain", "--out", str(out), "--max-iters", "2", "--resume", *TINY]) == 0  # and again
    assert not (out / ".run.lock").exists()  # let go of, with nothing left behind
    # A refused corpus holds nothing; a directory the calling process holds stays held.
    from ferrolm.train.loop import held_run_directories, hold_run_directory, release_run_directories

    assert main(["pretrain", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "none"), *TINY]) == 2
    assert not (tmp_path / "none").exists()
    assert main(["pretrain", str(corpus), "--out", str(tmp_path / "new" / "deeper"), *TINY, "--n-embd", "15"]) == 2
    assert not (tmp_path / "new").exists()  # nor the folders made to hold it (the lock is taken first)
    (tmp_path / "empty").mkdir()  # `new/../empty` is `empty`, which was there: it stays, and `new` is not made
    assert main(["pretrain", str(corpus), "--out", str(tmp_path / "new" / ".." / "empty"), *TINY, "--n-embd", "15"]) == 2
    assert (tmp_path / "empty").is_dir() and not (tmp_path / "new").exists()
    hold_run_directory(tmp_path / "mine")
    try:
        assert main(["pretrain", str(corpus), "--out", str(out), "--max-iters", "1", *TINY]) == 0
        assert held_run_directories() == [(tmp_path / "mine").resolve()]
    finally:
        release_run_directories()


def test_sigterm_stops_a_run_as_ctrl_c_does(corpus, tmp_path):
    """`kill`, `timeout` or a cluster's preemption sends SIGTERM: the run says which checkpoint
    it can resume from, lets go of its directory, and exits 143; it used to die on the spot."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    run = subprocess.Popen([sys.executable, "-m", "ferrolm", "pretrain", str(corpus), "--out", str(out), "--max-iters",
                            "100000", "--checkpoint-interval", "5", *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.time() + 60
        while not (out / "trainer_state.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143, err
    assert "interrupted at step" in err and "resuming continues from it" in err and "ferrolm: terminated" in err
    assert not (out / ".run.lock").exists()
    step = json.loads((out / "trainer_state.json").read_text())["step"]
    assert main(["pretrain", "--resume", "--out", str(out), "--max-iters", str(step + 2), *TINY]) == 0


def test_a_nanogpt_config_starting_from_a_model_keeps_the_models_architecture(corpus, tmp_path, capsys):
    """nanoGPT ignores a config's architecture when init_from names a model (but for a shorter
    block_size); its commands work as written here too (they were refused as a mismatch)."""
    base = tmp_path / "base"
    assert main(["pretrain", str(corpus), "--out", str(base), "--max-iters", "1", *TINY]) == 0
    config = tmp_path / "finetune.py"
    config.write_text("n_layer = 6\nn_head = 6\nn_embd = 384\nmax_iters = 1\ndataset = 'shakespeare_char'\n")
    capsys.readouterr()
    assert main(["pretrain", str(config), f"--init_from={base}", str(corpus), "--out", str(tmp_path / "ft"),
                 "--eval-iters", "1", "--sample-tokens", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["n_layer"] == 1
    assert "n_layer in" in capsys.readouterr().err  # said to be ignored


def test_a_metrics_line_that_cannot_be_written_names_its_file(tmp_path, monkeypatch):
    from ferrolm.train import loop

    log = loop._RunLog(tmp_path, new_run=True, pending=False)

    class Full(io.StringIO):  # a file size limit (ulimit -f) or a full disk
        name = str(tmp_path / "metrics.jsonl")

        def write(self, text):
            raise OSError(errno.EFBIG, "File too large")

    log.file.close()
    log.file = Full()
    with pytest.raises(OSError, match=r"writing .*metrics.jsonl: File too large"):  # was "[Errno 27] File too large"
        log.write({"step": 1})
    log.close()


def test_a_closed_standard_stream_is_neither_a_failure_nor_a_place_for_notes(corpus, tmp_path):
    """Started with stdout, stderr or stdin closed (`>&-`: Python has None for it), a command ran
    its work and then failed on a missing stream (a trained run exited 1), or printed its notes
    into its output when only stderr was closed."""
    import subprocess
    import sys

    from ferrolm.chat import ChatTemplate

    model = tmp_path / "m"
    chars = fl.Tokenizer.train_from_iterator([corpus.read_text()], kind="char", vocab_size=1 << 20)
    chat = fl.GPT.create(vocab_size=chars.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, seed=0,
                         tokenizer=chars)
    ChatTemplate.prepare(chat)  # a chat model: `chat` takes it, `generate` notes how it answers
    chat.save(model)

    def run(*argv, closed):
        return subprocess.run([sys.executable, "-m", "ferrolm", *argv], capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: os.close(closed))

    trained = run("pretrain", str(corpus), *TINY, "--max-iters", "2", "--out", str(tmp_path / "run"), closed=1)
    assert trained.returncode == 0 and (tmp_path / "run" / "model.safetensors").exists(), trained.stderr
    assert run("generate", str(model), "--max-new-tokens", "5", closed=1).returncode == 0
    assert run("chat", str(model), "--max-new-tokens", "5", closed=0).returncode == 0
    wrong = run("generate", str(tmp_path / "missing"), closed=2)
    assert (wrong.returncode, wrong.stdout) == (2, "")  # the error went to stdout
    answer = run("generate", str(model), "--prompt", "to be", "--max-new-tokens", "5", closed=2)
    assert answer.returncode == 0 and "chat model" not in answer.stdout  # nor did the note
