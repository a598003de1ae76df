"""Model directories: config.json + model.safetensors + the tokenizer, whatever the
architecture (config.json's model_type)."""

from __future__ import annotations

import contextlib
import json
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any, Optional, Union

from ferrolm._core import FormatError, ShapeError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"


#: The head file's metadata key for the digest of the weights it was saved with.
_WEIGHTS_KEY = "ferrolm.model_digest"


def require_model(model: Any, kind: type, who: str) -> None:
    """TypeError unless `model` is a `kind` (GPT, BERT), which `who` is built on."""
    if not isinstance(model, kind):
        raise TypeError(f"{who} is built on a {kind.__name__}, not a {type(model).__name__}")


def save_head(head, path: Union[str, Path], file: str, prefix: str) -> None:
    """Writes a Linear head (reward, value) beside the model weights already saved in `path`,
    its tensors named `prefix.weight` / `prefix.bias`, and the digest of those weights: the
    head belongs to them (`load_head`)."""
    from ferrolm import _core
    from ferrolm.data import files_digest

    _core.save_safetensors(str(Path(path) / file), {f"{prefix}.{n}": t for n, t in head.named_parameters()},
                           {_WEIGHTS_KEY: files_digest(Path(path) / MODEL_FILE)})


def require_head(path: Union[str, Path], file: str, objective: str) -> Path:
    """The head `file` of model directory `path`, which `objective`'s training wrote;
    FileNotFoundError, saying the directory is not such a model, when it has none."""
    head_file = Path(path) / file
    if not head_file.exists():
        raise FileNotFoundError(f"{path} is not a {objective} model: it has no {file} (train one with `ferrolm {objective}`)")
    return head_file


def load_head(head, path: Union[str, Path], file: str, prefix: str, objective: str) -> None:
    """Fills `head` from `file` in model directory `path`, which `objective`'s training (or the
    model's save) wrote. A head left over from other weights is refused: one whose model was
    saved over since (GPT.save into the directory), by the digest the head records; for a head
    saved before it recorded one, by the run's checkpoint (another objective's run, or weights
    other than the ones it saved)."""
    from ferrolm import _core
    from ferrolm.nn import fill_parameters

    path = Path(path)
    head_file = require_head(path, file, objective)
    tensors, metadata = _core.load_safetensors(str(head_file))
    _check_head_belongs(path, file, metadata, objective)
    fill_parameters({f"{prefix}.{n}": t for n, t in head.named_parameters()}, tensors, head_file)


def _check_head_belongs(path: Path, file: str, metadata: dict, objective: str) -> None:
    """ValueError when head `file` (its safetensors `metadata`) of model directory `path` is
    left over from other weights than the directory's (see `load_head`)."""
    from ferrolm.data import files_digest
    from ferrolm.jsonl import read_json_object
    from ferrolm.train.loop import STATE_FILE

    if _WEIGHTS_KEY in metadata:
        if files_digest(path / MODEL_FILE) != metadata[_WEIGHTS_KEY]:
            raise ValueError(f"{path}'s {MODEL_FILE} is not the one its {file} was saved with (was a model saved over "
                             "it?): the head does not belong to these weights")
    elif (path / STATE_FILE).exists():
        state = read_json_object(path / STATE_FILE)
        if state.get("objective") != objective:
            raise ValueError(f"{path} holds a `{state.get('objective')}` run: its {file} is left over from an earlier "
                             "run, not these weights'")
        digests = state.get("digests") if isinstance(state.get("digests"), dict) else {}
        if MODEL_FILE in digests and digests[MODEL_FILE] != files_digest(path / MODEL_FILE):
            raise ValueError(f"{path}'s {MODEL_FILE} is not the one its `{objective}` run saved with its {file} (was a "
                             "model saved over it?): the head does not belong to these weights")


#: What each kind of model is for, named when the other kind is given.
_COMMANDS = {"GPT": "it is for ferrolm generate, sft, reward, dpo and ppo",
             "BERT": "it is for ferrolm fill-mask and classify"}


def model_dir(path: Union[str, Path]) -> Path:
    """`path` as a Path, checked to be an existing directory, whose files are whole: a save
    that died while moving them in is finished first (see `model_files`)."""
    from ferrolm.atomic import finish_atomic_files

    path = Path(path)
    if path.is_file():
        raise FileNotFoundError(f"{path} is a file: give the model directory holding config.json and model.safetensors")
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    try:
        finish_atomic_files(path, last=CONFIG_FILE)
    except OSError as e:  # a directory this process cannot write (another user's, read-only)
        warnings.warn(f"{path} holds a save that was not finished, which cannot be finished here ({e}): "
                      "reading the files as they are", stacklevel=3)
    if not (path / CONFIG_FILE).exists():
        from ferrolm.train.loop import METRICS_FILE, STATE_FILE

        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}: " + (
            "the checkpoint there lacks it (deleted?)" if (path / STATE_FILE).exists() else
            "no model was saved there yet (a run saves at its first checkpoint)" if (path / METRICS_FILE).exists() else
            "no model was saved there (a model directory holds config.json, model.safetensors and tokenizer.json)"))
    return path


@contextlib.contextmanager
def model_files(path: Union[str, Path]):
    """A directory to write a model's files into (`with model_files(path) as files: ...`); they
    replace the ones in `path` together when the block ends, so a save that fails part-way
    (a full disk) leaves the old model whole, not its weights beside another's tokenizer. An
    earlier ferrolm chat model's end ids and template there go with them, when they bring a
    tokenizer of their own (`replace_stale_hf_files`)."""
    from ferrolm.atomic import atomic_files

    with atomic_files(path, last=CONFIG_FILE) as files:
        yield files
        replace_stale_hf_files(Path(path), files)


#: Hugging Face's names for the special tokens ferrolm's tokenizers may have. A GPT's
#: <|endoftext|> is named as GPT-2's is; generation stops there only where config.json says so.
_SPECIAL_ATTRIBUTES = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                       "mask_token": "[MASK]", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
#: A chat template for a model that has none, replacing an earlier ferrolm chat model's
#: chat_template.jinja (which Hugging Face prefers to tokenizer_config.json's; a save cannot
#: delete a file, so a tool that looks for a template finds this one, and is told).
_NO_CHAT = "{{ raise_exception('this model is not a chat model: it has no chat template') }}"


def hf_tokenizer_files(tokenizer, config: dict) -> dict[str, Union[dict, str]]:
    """What Hugging Face reads beside tokenizer.json to tokenize as ferrolm does, for a model of
    `config` (JSON objects, and a chat model's template as text): a tokenizer_config.json naming
    PreTrainedTokenizerFast, the class that takes tokenizer.json as it is (without one,
    AutoTokenizer picks GPT-2's class for a GPT, which imposes GPT-2's pre-tokenizer, or BERT's,
    which rebuilds a WordPiece with BERT's defaults, lowercasing included), the special tokens,
    the context and the model's inputs (a GPT has no token types); a WordPiece's casing, which
    readers of vocab.txt take from there; for a chat model, the template and end ids
    (`chat.hf_chat_files`)."""
    from ferrolm.chat import hf_chat_files

    if tokenizer is None:
        return {}
    specials = tokenizer.special_tokens
    bert = config.get("model_type") == "bert"
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_of(config),
                "model_input_names": ["input_ids", *(["token_type_ids"] if bert else []), "attention_mask"],
                **{name: token for name, token in _SPECIAL_ATTRIBUTES.items() if tokenizer.token_to_id(token) is not None}}
    if "[CLS]" in specials:  # a WordPiece: its normalizer read only then
        norm = json.loads(tokenizer.to_str()).get("normalizer") or {}
        if norm.get("type") == "BertNormalizer":
            settings.update(do_lower_case=norm.get("lowercase", True), strip_accents=norm.get("strip_accents"),
                            tokenize_chinese_chars=norm.get("handle_chinese_chars", True))
    chat = hf_chat_files(tokenizer)
    files = {**chat, "tokenizer_config.json": {**settings, **chat.get("tokenizer_config.json", {})}}
    if chat:
        files["chat_template.jinja"] = files["tokenizer_config.json"]["chat_template"]
    return files


def write_hf_tokenizer_files(files: Path, tokenizer, config: dict) -> None:
    """Writes `hf_tokenizer_files` into `files` (a save's directory, `model_files`)."""
    from ferrolm.atomic import atomic_file, write_json

    for name, content in hf_tokenizer_files(tokenizer, config).items():
        if isinstance(content, str):
            with atomic_file(files / name) as f:
                f.write(content)
        else:
            write_json(files / name, content)


#: Keys transformers adds to a `generation_config.json` it saves, whatever the settings.
_HF_BOOKKEEPING = {"transformers_version", "_from_model_config"}


def replace_stale_hf_files(directory: Path, files: Path) -> None:
    """For a save whose `files` (with a tokenizer) are about to replace `directory`'s: an
    earlier ferrolm chat model's end ids and template there, which the new files do not
    replace, get neutral ones among them, so the two go together (Hugging Face would stop and
    chat as the old model did). A save without a tokenizer leaves the directory's, and the
    files that describe it, as they are; Hugging Face's own files stay."""
    from ferrolm.atomic import atomic_file, write_json
    from ferrolm.chat import hf_chat_template
    from ferrolm.jsonl import read_json_object

    if not (files / TOKENIZER_FILE).exists():
        return

    def stale(name: str) -> bool:
        return not (files / name).exists() and (directory / name).is_file()

    if stale("generation_config.json"):
        with contextlib.suppress(OSError, ValueError):
            # ferrolm's holds only the end ids; transformers' save adds its version and origin.
            if set(read_json_object(directory / "generation_config.json")) - _HF_BOOKKEEPING == {"eos_token_id"}:
                write_json(files / "generation_config.json", {})
    if stale("chat_template.jinja"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if (directory / "chat_template.jinja").read_text(encoding="utf-8") in (hf_chat_template(False),
                                                                                    hf_chat_template(True)):
                with atomic_file(files / "chat_template.jinja") as f:
                    f.write(_NO_CHAT)


#: What `Tokenizer.from_file` reads in a directory, in its order of preference.
TOKENIZER_FILES = (TOKENIZER_FILE, "vocab.json", "vocab.txt")


def load_tokenizer(path: Path):
    """The tokenizer saved in a model directory (tokenizer.json, GPT-2's vocab.json +
    merges.txt, or BERT's vocab.txt, read as `Tokenizer.from_file` reads a directory); None if
    there is none."""
    from ferrolm import Tokenizer

    if any((path / name).exists() for name in TOKENIZER_FILES):  # not a file: an error, not "no tokenizer"
        return Tokenizer.from_file(str(path))
    return None


def save_model(core, tokenizer, path: Union[str, Path]) -> None:
    """Writes the core model's files and the tokenizer (together: `model_files`), with the files
    Hugging Face reads beside it (`hf_tokenizer_files`)."""
    with model_files(path) as files:
        core.save(str(files))
        if tokenizer is not None:
            tokenizer.save(str(files / TOKENIZER_FILE))
        write_hf_tokenizer_files(files, tokenizer, core.config)


def context_of(config: dict) -> int:
    """A GPT's or a BERT's context length, from its config."""
    return config.get("n_positions") or config["max_position_embeddings"]


class CoreModel:
    """What GPT and BERT share: a core model, its tokenizer, and the parameter and file
    plumbing the training loop uses."""

    core_class: type  # the `_core` class that loads this architecture

    def __init__(self, core, tokenizer=None) -> None:
        self.core = core
        self.tokenizer = tokenizer
        if tokenizer is not None and tokenizer.vocab_size > self.vocab_size:  # its last ids would have no embedding
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids, more than the model's {self.vocab_size} "
                             "embeddings")

    @classmethod
    def load(cls, path: Union[str, Path]):
        """Loads a model directory: config.json, model.safetensors and, if present, the
        tokenizer (tokenizer.json, GPT-2's vocab.json + merges.txt, or BERT's vocab.txt)."""
        path = model_dir(path)
        return cls._load_dir(path, _model_type(path))

    @classmethod
    def _load_dir(cls, path: Path, kind: Optional[str]):
        """`load` of a checked directory whose config.json says `kind` (`_model_type`)."""
        expected = {"GPT": "gpt2", "BERT": "bert"}.get(cls.__name__)
        if kind is not None and expected is not None and kind != expected:
            other = {"gpt2": "GPT", "bert": "BERT"}.get(kind)
            raise ValueError(f"{path} holds a {kind} model, not a {expected} one: "
                              + (f"{_COMMANDS[other]} (in Python, {other}.load or ferrolm.load_model)" if other
                                 else "ferrolm loads gpt2 and bert models"))
        try:
            core = cls.core_class.load(str(path))
        except (FormatError, ShapeError) as e:  # the core names a file by its name alone: name the directory
            raise (e if str(e).startswith(str(path)) else type(e)(f"{path}: {e}")) from None
        tokenizer = load_tokenizer(path)
        try:
            model = cls(core, tokenizer)
        except ValueError as e:  # the tokenizer and the model disagree: name the directory
            raise FormatError(f"{path}: {e}: it is not the tokenizer the model was trained with") from None
        _check_vocabularies(path, model)
        return model

    def copy(self):
        """An independent copy (own weights, gradients and frozen parameters kept, own
        tokenizer), e.g. a reference model: `copy.deepcopy(model)`."""
        return deepcopy(self)

    def __deepcopy__(self, memo: dict):
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        copied.core = self.core.deep_clone()
        copied.tokenizer = None if self.tokenizer is None else self.tokenizer.copy()
        memo[id(self.tokenizer)] = copied.tokenizer  # an attribute holding it holds the copy's
        # The copies of the weights, for tensors tied to them elsewhere in the same deepcopy.
        for (_, weight), (_, its_copy) in zip(self.named_parameters(), copied.named_parameters()):
            memo.setdefault(("ferrolm.Tensor", weight.uid), its_copy)
        rest = {k: v for k, v in vars(self).items() if k not in ("core", "tokenizer")}
        copied.__dict__.update(deepcopy(rest, memo))
        return copied

    def __repr__(self) -> str:
        shown = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd", "max_position_embeddings",
                 "num_hidden_layers", "num_attention_heads", "hidden_size")
        config = ", ".join(f"{k}={self.config[k]}" for k in shown if k in self.config)
        tokenizer = self.tokenizer.kind if self.tokenizer is not None else None
        return f"{type(self).__name__}({config}; {self.num_parameters():,} parameters, tokenizer={tokenizer})"

    def save(self, path: Union[str, Path]) -> None:
        """Writes config.json, model.safetensors and tokenizer.json (together: `model_files`)."""
        save_model(self.core, self.tokenizer, path)

    def with_dropout(self, dropout: float, attn_dropout: Optional[float] = None):
        """The same model (weights shared) with other dropout rates: `dropout` everywhere, or
        `attn_dropout` for the attention probabilities."""
        return type(self)(self.core.with_dropout(dropout, attn_dropout), self.tokenizer)

    @property
    def config(self) -> dict:
        return self.core.config

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    def named_parameters(self):
        return self.core.named_parameters()

    def parameters(self):
        return [t for _, t in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.parameters())


def _check_vocabularies(path: Path, model) -> None:
    """A tokenizer with fewer ids than the model's embedding rows (more are refused when the
    model is made) is the model's, for a GPT (nanoGPT pads GPT-2's 50257 to 50304), and likely
    not, for a BERT (Hugging Face's and ferrolm's have exactly the vocabulary's size), whose ids
    would all shift by one for a missing line of vocab.txt."""
    if model.tokenizer is None:
        return
    ids, rows = model.tokenizer.vocab_size, model.config["vocab_size"]
    if ids < rows and model.config.get("model_type") == "bert":
        warnings.warn(f"{path}: the tokenizer has {ids} ids, fewer than the model's {rows} embeddings: unless the "
                      "model was made larger on purpose, its vocabulary file is not the one it was trained with",
                      stacklevel=4)


def load_model(path: Union[str, Path]):
    """A GPT or BERT from a model directory, chosen by config.json's `model_type`. A reward
    model's or text classifier's directory gives its backbone, with a warning naming the class
    that loads the head too."""
    path = model_dir(path)
    kind = _model_type(path)
    warn_of_head(path)
    if kind == "bert":
        from ferrolm.bert import BERT

        return BERT._load_dir(path, kind)
    if kind in ("gpt2", None):
        from ferrolm.gpt import GPT

        return GPT._load_dir(path, kind)
    raise ValueError(f"{path / 'config.json'}: model_type {kind!r} is not supported (gpt2 or bert)")


def warn_of_head(path: Path) -> None:
    """Warns when model directory `path` holds a head beside its backbone, which its caller
    (`load_model`, a command) leaves out: a reward model's head file that belongs to these
    weights, or a classifier's config."""
    from ferrolm import _core
    from ferrolm.jsonl import read_json_object
    from ferrolm.train.reward import HEAD_FILE

    holder = None
    with contextlib.suppress(OSError, ValueError):
        if (path / HEAD_FILE).is_file():
            _check_head_belongs(path, HEAD_FILE, _core.load_safetensors(str(path / HEAD_FILE))[1], "reward")
            holder = "RewardModel"
    with contextlib.suppress(OSError, ValueError):
        architectures = read_json_object(path / CONFIG_FILE).get("architectures")
        if isinstance(architectures, list):
            holder = next((_HEADS[h] or h for h in architectures if h in _HEADS), holder)
    if holder is not None:
        loads_both = f" (in Python, {holder}.load loads both)" if holder in ("RewardModel", "TextClassifier") else ""
        warnings.warn(f"{path} holds a {holder}: only its backbone is loaded, without the head{loads_both}",
                      stacklevel=3)


#: Hugging Face architectures whose head a plain GPT or BERT leaves out, and the ferrolm class
#: that loads it with its head (None: none does).
_HEADS = {"BertForSequenceClassification": "TextClassifier", "BertForTokenClassification": None,
          "BertForQuestionAnswering": None, "GPT2ForSequenceClassification": None,
          "GPT2ForTokenClassification": None, "GPT2DoubleHeadsModel": None}


def _model_type(path: Path):
    """config.json's model_type; without one, the type its field names give (BERT's
    `num_hidden_layers`, GPT-2's `n_layer`). None when neither tells, or there is no readable
    config: the loader then says what is wrong."""
    config_file = path / CONFIG_FILE
    if not config_file.is_file():  # a FIFO would block the read
        return None
    from ferrolm.jsonl import read_json_object

    try:
        config = read_json_object(config_file)
    except (OSError, ValueError):
        return None
    except MemoryError:  # its message is empty
        raise MemoryError(f"reading {config_file}: out of memory (is it a config file?)") from None
    if "model_type" in config:
        if not isinstance(config["model_type"], str):
            raise ValueError(f"{config_file}: model_type {config['model_type']!r} is not supported (gpt2 or bert)")
        return config["model_type"]
    return "bert" if "num_hidden_layers" in config else "gpt2" if "n_layer" in config else None
