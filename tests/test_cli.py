"""`ferrolm pretrain` / `generate` command-line behaviour: argument checks, resume rules,
output without a progress bar."""

import json

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
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "6", "--eval-interval", "3", *TINY]) == 0
    assert "step 3: train_loss" in capsys.readouterr().out  # evaluations print without a progress bar too
    for extra, message in (([str(corpus)], "files cannot change"), (["--tokenizer", "bpe"], "--tokenizer cannot change"),
                           (["--vocab-size", "300"], "--vocab-size cannot change"),
                           (["--val-fraction", "0.2"], "--val-fraction cannot change"),
                           (["--objective", "mlm"], "was trained with causal")):
        assert main(["pretrain", "--resume", "--out", out, "--max-iters", "8", *extra, *TINY]) == 2
        assert message in capsys.readouterr().err
    # Log lines past the checkpoint (an interrupted run wrote them) are dropped on resume.
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "loss": 123.0}) + "\n")
    assert main(["pretrain", "--resume", "--out", out, "--max-iters", "8", *TINY]) == 0
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["step"] == 8
    steps = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and 123.0 not in [json.loads(l).get("loss") for l in
                                                   (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Without --resume the run starts over, and says what it replaces.
    assert main(["pretrain", str(corpus), "--out", out, "--max-iters", "2", *TINY]) == 0
    assert "replaces the causal checkpoint there (step 8)" in capsys.readouterr().err


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
    text.write_text("Who goes there?\nStand, ho!\nWho goes there?\n")
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


def test_resume_settings_zero_is_a_value_and_paths_may_move(tmp_path, capsys):
    import argparse

    from ferrolm.cli.posttrain import _settle

    saved = {"model": str(tmp_path / "m"), "data": str(tmp_path / "d"), "val_fraction": 0.1, "skip_long": False, "beta": 0.5}
    args = argparse.Namespace(model=str(tmp_path / "m"), data=str(tmp_path / "d"), val_fraction=None, skip_long=None, beta=None,
                              out=str(tmp_path / "o"))
    _settle(args, "dpo", saved, [])
    assert args.beta == 0.5 and args.val_fraction == 0.1  # not given: the checkpoint's
    args = argparse.Namespace(model=str(tmp_path / "moved"), data=str(tmp_path / "d"), val_fraction=None, skip_long=None, beta=0.0,
                              out=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--beta 0.0 is not the run's"):  # 0 is a value, not "not given"
        _settle(args, "dpo", saved, [])
    assert "MODEL" in capsys.readouterr().err  # a moved MODEL is a warning, not an error
