"""`ferrolm label`: a local web page to compare two completions and record the better one;
`ferrolm label export`: the judgements as preference JSONL."""

from __future__ import annotations

import argparse
import getpass
import importlib
import ipaddress
import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote

from ferrolm.cli.common import count, given_path, non_negative, positive, probability

TOKEN_ENV = "FERROLM_LABEL_TOKEN"
USAGE = """ferrolm label MODEL_DIR --prompts FILE [--model-b DIR] [--db prefs.sqlite] [--host 127.0.0.1] [--port N]
                     [--labeller NAME] [--token TOKEN] [sampling options]
       ferrolm label export --db prefs.sqlite --out prefs.jsonl"""


def register_label(sub) -> None:
    """`ferrolm label` (serve the page) and `ferrolm label export` (write preference JSONL)."""
    p = sub.add_parser("label", usage=USAGE, help="compare pairs of completions in a local web page (human feedback)",
                       description="Serve a local web page where people compare two completions of each prompt and "
                                   "pick the better one (keys 1, 2, 3 = tie, s = skip, u = undo). Judgements are stored "
                                   "in a SQLite database; `ferrolm label export` writes them as preference JSONL.")
    # argparse cannot mix a positional MODEL_DIR with a sub-command, so `export` is the
    # MODEL_DIR slot's reserved word (a model directory named "export" can be given as ./export).
    p.add_argument("model", metavar="MODEL_DIR", help="GPT model directory (config.json, model.safetensors, "
                                                      "tokenizer.json), or `export`")
    p.add_argument("--prompts", help="prompts, one per line (UTF-8), or .jsonl of {\"prompt\": ...}: a text, or for a "
                                     "chat model a conversation ending with the user turn to answer")
    p.add_argument("--model-b", default=None, help="a second model: compare one completion from each model "
                                                   "(default: two samples of MODEL_DIR)")
    p.add_argument("--db", default="prefs.sqlite", help="labelling database (created if missing; default prefs.sqlite)")
    p.add_argument("--out", type=given_path, default=None, help="export: the preference JSONL to write")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=count(), default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--labeller", default=None, help="name stored with each judgement unless the page gives its own "
                                                          "(default: your user name)")
    p.add_argument("--token", default=None, help=f"secret every request must carry; required when --host is not "
                                                 f"a loopback address (or set {TOKEN_ENV})")
    p.add_argument("--max-new-tokens", type=count(1), default=128, help="completion length limit (default 128)")
    p.add_argument("--temperature", type=non_negative, default=0.8, help="default 0.8 (0: greedy)")
    p.add_argument("--temperature-b", type=non_negative, default=None, help="temperature of the second completion "
                                                                     "(default: --temperature)")
    p.add_argument("--top-k", type=count(), default=200, help="default 200 (0: no limit)")
    p.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass (default: off)")
    p.add_argument("--seed", type=count(), default=0, help="base sampling seed (each completion's seed is recorded)")
    p.add_argument("--lookahead", type=count(1), default=2, help="pairs generated ahead of the person reading (default 2)")
    p.add_argument("--lease-minutes", type=positive, default=15.0, help="a pair shown in a tab that has stopped asking "
                   "the server for pairs (closed, asleep) goes to another tab after this long (default 15)")
    p.add_argument("--raw", action="store_true", help="continue prompts as plain text even with chat models (by default "
                                                      "a model from `ferrolm sft` answers each prompt as a user turn)")
    # export reads only --db and --out: the server's flags given to it are refused, not ignored. They
    # are left unset unless given (at their defaults too), and the server fills in their defaults.
    server_defaults = {}
    for action in p._actions:
        if action.option_strings and action.dest not in ("help", "db", "out"):
            server_defaults[action.dest], action.default = action.default, argparse.SUPPRESS
    p.set_defaults(func=run_label, server_defaults=server_defaults)


def run_label(args) -> int:
    if args.model == "export":
        return run_export(args)
    for name, default in args.server_defaults.items():
        setattr(args, name, getattr(args, name, default))
    if args.out is not None:
        raise ValueError("--out belongs to `ferrolm label export --db DB --out FILE`")
    if args.prompts is None:
        raise ValueError("--prompts FILE is required (one prompt per line)")
    if args.port > 65535:
        raise ValueError(f"--port {args.port} is not a port number (0-65535)")
    if args.lease_minutes < 2:  # hidden tabs' timers may run late
        print(f"ferrolm label: --lease-minutes {args.lease_minutes:g} leaves less than a minute of slack after a page's "
              "once-a-minute renewal of its holds (hidden tabs' timers run late): a tab in use may lose its pairs to "
              "another", file=sys.stderr, flush=True)
    from ferrolm.holding import hold, let_go
    from ferrolm.label.prompts import read_prompts
    from ferrolm.label.store import MAX_LABELLER, is_labeller_name

    if args.labeller is not None and not is_labeller_name(args.labeller):
        raise ValueError(f"--labeller must be a name of at most {MAX_LABELLER} characters, with a visible one and "
                         "without control characters")
    prompts = read_prompts(args.prompts)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        raise ValueError("the token must be printable ASCII without spaces: it travels in a cookie and an HTTP header")
    if not _is_loopback(args.host) and token is None:
        raise ValueError(f"--host {args.host} makes the page reachable from other machines: give a --token "
                         f"(or set {TOKEN_ENV}) that every visitor must present")
    try:
        importlib.import_module("ferrolm.label.server")  # checked here, before the models load
    except ImportError as e:
        raise ValueError(f"ferrolm label needs the web server of the 'label' extra ({e.name} is missing): "
                         "pip install starlette uvicorn") from None
    temperature_b = args.temperature if args.temperature_b is None else args.temperature_b
    try:
        db = Path(args.db).resolve()  # one lock whatever path (a symlink) names the database
    except RuntimeError as e:  # a symlink loop
        raise ValueError(f"--db {args.db}: {e}") from None
    if db.is_dir() or not db.parent.is_dir():
        raise ValueError(f"--db {args.db}: " + ("a folder, not a database file" if db.is_dir() else
                                                f"the folder {db.parent} does not exist"))
    # One server per database: two would each hand out and generate pairs for the same prompts.
    held = hold(db.with_name(db.name + ".lock"), lambda owner: OSError(
        f"{args.db} is in use by another ferrolm label server (process {owner}): stop it, or give another --db"))
    try:
        return _serve(args, db, prompts, token, temperature_b)
    finally:
        let_go(held)


def _serve(args, db: Path, prompts, token, temperature_b) -> int:
    """`ferrolm label`'s server, from its checked arguments, until Ctrl+C."""
    from ferrolm.label import server
    from ferrolm.label.pairs import PairQueue, Sampler, weights_hash
    from ferrolm.label.prompts import check_prompts
    from ferrolm.label.store import LabelStore

    model_a = _load_gpt(args.model)
    model_b = _load_gpt(args.model_b) if args.model_b else model_a
    # A chat model (from `ferrolm sft`) answers prompts as user turns, ending at <|end|>.
    if model_a.is_chat != model_b.is_chat and not args.raw:
        raise ValueError("one model is a chat model and the other is not, so their completions would not be "
                         "comparable; pass --raw to continue the prompts as plain text with both")
    chat = model_a.is_chat and not args.raw
    if not chat and any(not isinstance(p, str) for p in prompts):
        raise ValueError(f"{args.prompts} holds conversations, which only a chat model (from `ferrolm sft`) answers"
                         + (" as a chat: drop --raw" if model_a.is_chat else ""))
    for model, path in ((model_a, args.model), (model_b, args.model_b or args.model)):
        check_prompts(prompts, model, f"{args.prompts} (for {path})", chat)
    hash_a = weights_hash(Path(args.model))
    hash_b = weights_hash(Path(args.model_b)) if args.model_b else hash_a
    greedy = "--top-k 1" if args.top_k == 1 else "--temperature 0" if args.temperature == temperature_b == 0 else None
    if greedy and hash_a == hash_b:  # one model's weights, or --model-b's the same: every pair two copies of one text
        raise ValueError(f"{greedy} samples greedily, so " + (
            f"--model-b {args.model_b} has the same weights as {args.model}: every pair would be two copies of one text"
            if args.model_b else "one model's two completions would be the same text: give --model-b"
            + ("" if args.top_k == 1 else ", or --temperature-b above 0")))
    sock = server.bind(args.host, args.port)  # before the database: a busy port leaves no new file behind
    try:
        store = LabelStore(db)
    except BaseException:
        sock.close()
        raise
    sampling = dict(top_k=args.top_k, top_p=args.top_p, max_new_tokens=args.max_new_tokens, chat=chat)
    a = Sampler(model_a, str(args.model), hash_a, temperature=args.temperature, **sampling)
    b = Sampler(model_b, str(args.model_b or args.model), hash_b, temperature=temperature_b, **sampling)
    queue = PairQueue(store, prompts, a, b, seed=args.seed, lookahead=args.lookahead, lease_seconds=60 * args.lease_minutes)
    loopback = server.is_loopback(sock)
    app = server.create_app(store, queue, labeller=args.labeller or _user(), token=token,
                            allowed_hosts=server.LOOPBACK_NAMES | {args.host.lower()} if loopback else None)
    port = sock.getsockname()[1]
    unspecified = ipaddress.ip_address(sock.getsockname()[0]).is_unspecified  # every address (0.0.0.0, ::)
    host = socket.gethostname() if unspecified else args.host  # one that others can open
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}/" + (f"?token={quote(token)}" if token else "")
    print(f"ferrolm label: {queue.labelled}/{queue.total} prompts labelled; judgements go to {args.db}", flush=True)
    if not chat:
        print("ferrolm label: the completions continue the prompts as plain text (not a chat model's answers); "
              "`ferrolm reward` and `ferrolm dpo` read every pair as a chat answer", flush=True)
    print(f"ferrolm label: open {url}  (Ctrl+C stops; every answered judgement is already saved)", flush=True)
    queue.start()
    try:
        server.run(app, sock)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after finishing open requests: a normal stop
        pass
    finally:
        queue.stop()
        sock.close()
    print(f"ferrolm label: stopped; {store.count()} judgements in {args.db}", flush=True)
    return 0


def run_export(args) -> int:
    from ferrolm.label.store import LabelStore

    if args.out is None:
        raise ValueError("export needs --out FILE (the preference JSONL to write)")
    if Path(args.out).is_dir():  # said by the temporary file's rename, naming that file
        raise ValueError(f"--out {args.out} is a folder: give the JSONL file to write")
    given = [f"--{dest.replace('_', '-')}" for dest in args.server_defaults if hasattr(args, dest)]
    if given:
        raise ValueError(f"export takes only --db and --out, not {', '.join(given)} (the server's flags)")
    prefs = LabelStore.open_existing(args.db).preferences()
    left_out = ", ".join(f"{n} {reason}{'s' if n != 1 and reason in ('tie', 'skip') else ''}"
                         for reason, n in sorted(prefs.skipped.items())) or "none"
    if not prefs.records:
        raise ValueError(f"{args.db} holds no preference to export yet (left out: {left_out}); nothing written")
    from ferrolm.preferences import write_preferences

    write_preferences(prefs.records, args.out)
    n = len(prefs.records)
    print(f"wrote {n} preference pair{'s' * (n != 1)} to {args.out} (left out: {left_out})")
    return 0


def _load_gpt(path: str):
    from ferrolm.models import TOKENIZER_FILES, load_model
    from ferrolm.gpt import GPT

    if not Path(path).is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    model = load_model(path)
    if not isinstance(model, GPT):
        raise ValueError(f"{path} is a {type(model).__name__} model; labelling needs a GPT that generates text")
    if model.tokenizer is None:
        raise ValueError(f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}), needed to turn prompts into tokens")
    return model


def _is_loopback(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: {e.strerror}") from None
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a container without one)
        return "anonymous"
