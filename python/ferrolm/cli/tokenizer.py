"""`ferrolm tokenizer train|encode`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ferrolm.cli.common import count, given_path
from ferrolm.tokenizer import KINDS, PATTERNS


def _tokenizer_train(args: argparse.Namespace) -> int:
    from ferrolm.data import check_paths
    from ferrolm.tokenizer import Tokenizer, default_corpus

    files = args.files or [default_corpus()]
    out = Path(args.out)
    # Missing folders are made, as pretrain's --out's are; a dangling link is in the way.
    there = next(p for p in out.parents if p.exists() or p.is_symlink())
    if out.is_dir() or not there.is_dir():  # said now, not after the training
        raise ValueError(f"--out {out}: " + ("is a directory (give the tokenizer.json path)" if out.is_dir() else
                                             f"{there} is not a directory"))
    kwargs = dict(kind=args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency, pattern=args.pattern or "gpt2")
    if args.special_tokens is not None:
        files_taken = [t for t in args.special_tokens if Path(t).is_file()]
        if files_taken:  # the bundled corpus would be trained on instead, silently
            raise ValueError(f"--special-tokens took {files_taken[0]!r}, a file: it takes every word after it, so give the "
                             "corpus files before it")
        kwargs["special_tokens"] = args.special_tokens
    if args.kind == "wordpiece":
        kwargs.update(lowercase=not args.cased, limit_alphabet=args.limit_alphabet)
    elif args.cased or args.limit_alphabet is not None:
        raise ValueError("--cased and --limit-alphabet apply to --kind wordpiece only")
    if args.kind != "bpe" and args.pattern is not None:
        raise ValueError("--pattern applies to --kind bpe only")
    check_paths(files)  # not empty, but for pipes (a tokenizer of the byte alphabet alone is no use); streamed
    start = time.perf_counter()
    tok = Tokenizer.train(files, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    seconds = time.perf_counter() - start
    print(f"trained {tok.kind} tokenizer: {tok.vocab_size} ids in {seconds:.2f}s from {len(files)} "
          f"file{'s' * (len(files) > 1)} -> {args.out}")
    note_short_vocabulary(tok, args.vocab_size, "a larger corpus, or a lower --min-frequency, gives more")
    return 0


def note_short_vocabulary(tok, asked: int, remedy: str = "a larger corpus gives more") -> None:
    """Says so when a trained BPE or WordPiece tokenizer has fewer ids than `asked` for."""
    if tok.kind != "char" and tok.vocab_size < asked:
        print(f"note: {tok.vocab_size} ids, fewer than --vocab-size {asked}: the corpus has no more pieces to add "
              f"({remedy})", flush=True)


def _tokenizer_encode(args: argparse.Namespace) -> int:
    from ferrolm.data import read_text
    from ferrolm.tokenizer import Tokenizer

    if args.text is not None and args.files:
        raise ValueError("give --text or files to encode, not both")
    tok = Tokenizer.from_file(args.tokenizer)
    if args.text is not None:
        texts = [args.text]
    elif args.files:
        texts = [read_text(f) for f in args.files]
    else:
        try:
            texts = [sys.stdin.buffer.read().decode("utf-8")]
        except UnicodeDecodeError as e:
            raise ValueError(f"standard input is not valid UTF-8 text: {e}") from None
    allowed = "none" if args.no_special else "all"
    for text in texts:
        if args.ids:  # written in chunks: a corpus's ids as one Python list would take gigabytes
            ids = tok.encode_array(text, allowed_special=allowed, disallowed_special="text")
            sys.stdout.write("[")
            for s in range(0, len(ids), 1 << 16):
                sys.stdout.write((", " if s else "") + ", ".join(map(str, ids[s : s + (1 << 16)].tolist())))
            sys.stdout.write("]\n")
            continue
        ids, offsets = tok.encode_with_offsets(text, allowed_special=allowed, disallowed_special="text")
        print(f"{len(text)} characters, {len(text.encode())} bytes -> {len(ids)} tokens")
        for i, (s, e) in zip(ids, offsets):
            print(f"{i:>8}  {tok.id_to_token(i)!r:<24} {text[s:e]!r}")
    return 0


def register_tokenizer(subparsers) -> None:
    """`ferrolm tokenizer train|encode`."""
    p = subparsers.add_parser("tokenizer", help="train tokenizers and inspect encodings")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="{train,encode}", required=True)

    t = sub.add_parser("train", help="train a tokenizer and save it as tokenizer.json")
    t.add_argument("files", nargs="*", help="UTF-8 text files, read line by line (default: bundled tiny Shakespeare)")
    t.add_argument("--kind", choices=KINDS, default="bpe", help="default bpe")
    t.add_argument("--vocab-size", type=count(), default=8192, help="target vocabulary size, special tokens included (default 8192; char: upper bound, 0 = all)")
    t.add_argument("--out", type=given_path, default="tokenizer.json", help="output tokenizer.json path")
    t.add_argument("--min-frequency", type=count(), default=0, help="never merge pairs seen fewer times (default 0)")
    t.add_argument("--special-tokens", nargs="*", default=None, help="special tokens, every word after the flag (default depends on --kind)")
    t.add_argument("--pattern", default=None,
                   help="BPE pre-tokenizer: " + ", ".join(f'"{p}"' for p in PATTERNS) + " or a regex (default gpt2)")
    t.add_argument("--cased", action="store_true", help="WordPiece: keep case and accents")
    t.add_argument("--limit-alphabet", type=count(1), default=None, help="WordPiece: keep the N most frequent characters")
    t.set_defaults(func=_tokenizer_train)

    e = sub.add_parser("encode", help="show how a text is tokenized")
    e.add_argument("files", nargs="*", help="files to encode (default: --text or standard input)")
    e.add_argument("--tokenizer", "-t", default="tokenizer.json", help="tokenizer.json, vocab.txt, a .tiktoken file or a directory")
    e.add_argument("--text", help="text to encode")
    e.add_argument("--ids", action="store_true", help="print only the ids, as JSON")
    e.add_argument("--no-special", action="store_true", help="treat special-token text as plain text")
    e.set_defaults(func=_tokenizer_encode)
