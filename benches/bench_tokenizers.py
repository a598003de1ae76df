#!/usr/bin/env python
"""Tokenizer benchmark: ferrolm vs Hugging Face `tokenizers`, `tiktoken` and `rustbpe`, side by side.

    python benches/bench_tokenizers.py --quick     # 10 MB prefix of the corpus
    python benches/bench_tokenizers.py             # the whole corpus (80 MB)

Measures byte-level BPE training time (GPT-2 pre-tokenization, the same settings for every
trainer: HF's, and rustbpe, the training code tiktoken lacks), encode throughput
single-threaded and as a batch on N threads, and decode throughput. All three encoders use the same vocabulary (ours, trained here; HF loads our
tokenizer.json, tiktoken is built from the same ranks), and the ids are checked to be equal.
A peer that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: cl100k_base's pattern as tiktoken spells it now (ferrolm matches it by hand, as "cl100k_base").
CL100K_BASE_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
                       r"""|\s*[\r\n]|\s+(?!\S)|\s""")
#: Qwen2's pattern (cl100k's with single digits; ferrolm matches it by hand).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
                 r"""|\s+(?!\S)|\s+""")
#: GPT-4o's o200k_base pattern, as tiktoken writes it (ferrolm matches it by hand).
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
])


def default_corpus() -> Path:
    shared = REPO.parent / "shared" / "data" / "gutenberg-80mb.txt"
    return shared if shared.is_file() else REPO / "python" / "ferrolm" / "corpora" / "tinyshakespeare.txt"


def best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def byte_ranks(tok) -> dict[bytes, int]:
    """The vocabulary's byte strings and their ids, special tokens aside (tiktoken's ranks)."""
    return {tok.decode_bytes([i]): i for i in range(tok.vocab_size) if tok.id_to_token(i) != "<|endoftext|>"}


def split_docs(text: str, size: int) -> list[str]:
    """Line-aligned documents of about `size` characters."""
    docs, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        docs.append(text[start:end])
        start = end
    return docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=default_corpus())
    ap.add_argument("--quick", action="store_true", help="use a 10 MB prefix of the corpus")
    ap.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 32768])
    ap.add_argument("--threads", type=int, default=2, help="threads for batch encoding")
    ap.add_argument("--doc-size", type=int, default=100_000, help="characters per document in the encode runs")
    ap.add_argument("--repeat", type=int, default=None, help="best of N runs (default 2 quick, 1 full)")
    args = ap.parse_args()
    repeat = args.repeat or (2 if args.quick else 1)

    # HF's rayon pool reads these when first used, ferrolm's RAYON_NUM_THREADS at import: the same
    # threads for both (training too, which takes no thread argument).
    os.environ.setdefault("RAYON_RS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import ferrolm

    try:
        import tokenizers as hf
        from tokenizers import decoders, models, pre_tokenizers, trainers
    except ImportError:
        hf = None
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
    try:
        import rustbpe
    except ImportError:
        rustbpe = None

    raw = args.corpus.read_bytes()
    if args.quick:
        cut = raw.find(b"\n", 10_000_000)
        raw = raw[: cut + 1] if cut > 0 else raw
    text = raw.decode("utf-8")
    mb = len(raw) / 1e6
    tmp = tempfile.TemporaryDirectory()
    corpus_file = Path(tmp.name) / "corpus.txt"
    corpus_file.write_bytes(raw)
    print(f"corpus: {args.corpus.name}{' (10 MB prefix)' if args.quick else ''}, {mb:.1f} MB; "
          f"peers: tokenizers {'v' + hf.__version__ if hf else 'missing'}, tiktoken {'v' + tiktoken.__version__ if tiktoken else 'missing'}, "
          f"rustbpe {'installed' if rustbpe else 'missing'}; "
          f"{os.cpu_count()} cores", flush=True)

    rows = []  # (label, unit, ours, hf, tiktoken (rustbpe for training), higher_is_better)
    docs = split_docs(text, args.doc_size)

    # ------------------------------------------------------------- training
    ours_tok = None
    for vs in args.vocab_sizes:
        t_ours, tok = best_time(lambda: ferrolm.Tokenizer.train([str(corpus_file)], vocab_size=vs), repeat)
        ours_tok = tok
        t_hf = None
        note = ""
        if hf:
            def hf_train():
                h = hf.Tokenizer(models.BPE())
                h.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                h.decoder = decoders.ByteLevel()
                tr = trainers.BpeTrainer(vocab_size=vs, special_tokens=["<|endoftext|>"], show_progress=False,
                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
                h.train([str(corpus_file)], tr)
                return h
            t_hf, h = best_time(hf_train, repeat)
            same = json.loads(h.to_str())["model"]["vocab"] == json.loads(tok.to_str())["model"]["vocab"]
            note = "identical vocab" if same else "vocab differs"
        t_rb, rb_note = None, ""
        if rustbpe:
            def rustbpe_train():
                r = rustbpe.Tokenizer()  # its vocabulary is bytes and merges: ours also holds <|endoftext|>
                r.train_from_iterator(docs, vocab_size=vs - 1, pattern=GPT2_PATTERN)
                return r
            t_rb, r = best_time(rustbpe_train, repeat)
            theirs = {piece for piece, _ in r.get_mergeable_ranks()}
            ours = byte_ranks(tok).keys()
            rb_note = "rustbpe: same tokens" if theirs == ours else f"rustbpe: {len(theirs & ours) / len(ours):.1%} of tokens shared"
        reached = f"reached {tok.vocab_size}: the corpus has no more merges" if tok.vocab_size < vs else ""
        label = "; ".join(filter(None, (reached, note, rb_note)))
        rows.append((f"BPE train to {vs}" + (f" ({label})" if label else ""), "s", t_ours, t_hf, t_rb, False))
        print(f"  trained {vs}: ferrolm {t_ours:.2f}s" + (f", HF {t_hf:.2f}s, {note}" if hf else "")
              + (f", rustbpe {t_rb:.2f}s, {rb_note}" if rustbpe else ""), flush=True)

    # ------------------------------------------------------------- encoders on one vocabulary
    tok = ours_tok
    hf_tok = hf.Tokenizer.from_str(tok.to_str()) if hf else None
    tk = None
    if tiktoken:
        tk = tiktoken.Encoding("ferrolm-bench", pat_str=GPT2_PATTERN, mergeable_ranks=byte_ranks(tok),
                               special_tokens={"<|endoftext|>": tok.token_to_id("<|endoftext|>")})

    ours_single = lambda: [tok.encode(d) for d in docs]  # noqa: E731
    t_ours, ids_ours = best_time(ours_single, repeat)
    t_ours_np, _ = best_time(lambda: [tok.encode_array(d) for d in docs], repeat)
    t_hf = t_tk = None
    checks = []
    if hf_tok:
        t_hf, enc = best_time(lambda: [hf_tok.encode(d).ids for d in docs], repeat)
        checks.append(("HF", enc == ids_ours))
    if tk:
        t_tk, enc = best_time(lambda: [tk.encode_ordinary(d) for d in docs], repeat)
        checks.append(("tiktoken", enc == ids_ours))
    rows.append(("encode, 1 thread (list of ids)", "MB/s", mb / t_ours, t_hf and mb / t_hf, t_tk and mb / t_tk, True))
    rows.append(("encode, 1 thread (numpy array)", "MB/s", mb / t_ours_np, None, None, True))
    print("  encode 1 thread done", flush=True)

    n = args.threads
    t_ours_b, batch = best_time(lambda: tok.encode_batch(docs, num_threads=n), repeat)
    assert batch == ids_ours
    t_hf_b = t_tk_b = None
    if hf_tok:
        t_hf_b, enc = best_time(lambda: [e.ids for e in hf_tok.encode_batch(docs)], repeat)
        checks.append(("HF batch", enc == ids_ours))
    if tk:
        t_tk_b, enc = best_time(lambda: tk.encode_ordinary_batch(docs, num_threads=n), repeat)
        checks.append(("tiktoken batch", enc == ids_ours))
    rows.append((f"encode_batch, {n} threads", "MB/s", mb / t_ours_b, t_hf_b and mb / t_hf_b, t_tk_b and mb / t_tk_b, True))
    print("  encode batch done", flush=True)

    # cl100k's (as tiktoken spells it), Qwen2's and o200k's patterns (hand-matched in ferrolm) and
    # o200k's language as a user's regex (wrapped in a group: the regex engine runs it), each trained
    # on the first 10 MB at the largest size.
    for label, pattern in (("cl100k_base's pattern (tiktoken's spelling)", CL100K_BASE_PATTERN),
                           ("Qwen2's pattern", QWEN2_PATTERN), ("o200k's pattern", O200K_PATTERN),
                           ("a user's regex (o200k's, grouped)", f"(?:{O200K_PATTERN})")):
        other = ferrolm.Tokenizer.train_from_iterator([text[:10_000_000]], vocab_size=max(args.vocab_sizes), pattern=pattern)
        t_ours_re, ids_re = best_time(lambda: [other.encode(d) for d in docs], repeat)
        t_tk_re = None
        if tiktoken:
            tk_re = tiktoken.Encoding("ferrolm-bench-other", pat_str=pattern, mergeable_ranks=byte_ranks(other),
                                      special_tokens={"<|endoftext|>": other.token_to_id("<|endoftext|>")})
            t_tk_re, enc = best_time(lambda: [tk_re.encode_ordinary(d) for d in docs], repeat)
            checks.append((f"tiktoken, {label}", enc == ids_re))
        rows.append((f"encode, 1 thread, {label}", "MB/s", mb / t_ours_re, None, t_tk_re and mb / t_tk_re, True))
    print("  encode with other patterns done", flush=True)

    t_ours_d, dec = best_time(lambda: [tok.decode(i) for i in ids_ours], repeat)
    assert "".join(dec) == text
    t_hf_d = t_tk_d = None
    if hf_tok:
        t_hf_d, _ = best_time(lambda: [hf_tok.decode(i, skip_special_tokens=False) for i in ids_ours], repeat)
    if tk:
        t_tk_d, _ = best_time(lambda: [tk.decode(i) for i in ids_ours], repeat)
    rows.append(("decode, 1 thread", "MB/s", mb / t_ours_d, t_hf_d and mb / t_hf_d, t_tk_d and mb / t_tk_d, True))
    t_ours_db, _ = best_time(lambda: tok.decode_batch(ids_ours, num_threads=n), repeat)
    t_hf_db = None
    if hf_tok:
        t_hf_db, _ = best_time(lambda: hf_tok.decode_batch(ids_ours, skip_special_tokens=False), repeat)
    rows.append((f"decode_batch, {n} threads", "MB/s", mb / t_ours_db, t_hf_db and mb / t_hf_db, None, True))

    # ------------------------------------------------------------- table
    def fmt(v):
        return "—" if v is None else f"{v:,.2f}" if v < 100 else f"{v:,.0f}"

    def ratio(ours, peer, higher):
        if peer is None:
            return "—"
        return f"{(ours / peer if higher else peer / ours):.1f}×"

    tokens = sum(map(len, ids_ours))
    print(f"\n{mb:.1f} MB, {len(docs)} documents, {tokens:,} tokens at vocab {tok.vocab_size}; "
          "ids equal across libraries: " + (", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks) or "no peer installed"))
    header = ("| benchmark | unit | ferrolm | HF tokenizers | tiktoken (training: rustbpe) | ferrolm vs HF | "
              "ferrolm vs tiktoken / rustbpe |")
    print(header)
    print("|" + "---|" * 7)
    for label, unit, ours, h, t, higher in rows:
        print(f"| {label} | {unit} | {fmt(ours)} | {fmt(h)} | {fmt(t)} | {ratio(ours, h, higher)} | {ratio(ours, t, higher)} |")
    print("\nratios: speed-up of ferrolm (time ratio for training, throughput ratio otherwise).")
    return 0 if all(v for _, v in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
