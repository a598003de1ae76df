"""The labelling web app: Starlette routes over a LabelStore and a PairQueue.

Pages are our own static files (no CDN: it works offline). The JSON API:

    POST /api/pairs                 {"client", "n": 1-5} -> pairs for this tab: the one to show,
                                    then the next (prefetched); a POST because it reserves them
    POST /api/judgements            {"pair_id", "choice": left|right|tie|skip, "comment", "labeller"}
                                    -> {"id"} (labeller: the page's name, else the server's)
    POST /api/undo                  {"id", "pair_id", "client"} -> the pair again (the pair's id,
                                    which only the tab that judged it knows, guards the others')
    GET  /api/judgements            the judgements so far, newest first
    GET  /api/status                progress

A judgement is answered only after its transaction committed: a 200 means it is stored.
Requests are small JSON bodies; anything larger than MAX_BODY, not JSON, or not shaped as
expected is refused with 413/415/400 before it touches the database. With a token, every
request needs it (cookie set from `?token=`, or an `Authorization: Bearer` header).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import re
import socket
import sqlite3
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request, cookie_parser
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ferrolm.label.pairs import PairQueue
from ferrolm.label.store import MAX_LABELLER, SIDES, Conflict, LabelStore, is_busy, is_labeller_name

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024  # a judgement is a few hundred bytes; refuse anything much larger
MAX_COMMENT = 1000
COOKIE = "ferrolm_label_token"
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PAIR_ID = re.compile(r"[0-9a-f]{32}")
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}

# Model output is untrusted: besides the page rendering it with textContent only, the CSP
# forbids inline scripts, so even a rendering mistake could not run it.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or {}


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message, **exc.details}, status_code=exc.status)


async def _database_error(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
    """Another program holding the database (a SQLite editor mid-transaction) past the store's
    wait: the request may be sent again (503), nothing was written. Other errors go on to the
    server's log and a 500."""
    if not is_busy(exc):
        raise exc
    return JSONResponse({"error": "the database is busy (another program is writing to it): try again"},
                        status_code=503)


async def read_json(request: Request) -> dict:
    """The request's JSON object body, refusing oversized, non-JSON or malformed bodies."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        # Also a CSRF guard: a cross-site form cannot send application/json without a preflight.
        raise ApiError(415, "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY):
        raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def _is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates (JSON's "\\ud800"), which no file can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(body: dict, name: str, kind: type, pattern: Optional[re.Pattern] = None):
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) or (pattern is not None and not pattern.fullmatch(value)):
        raise ApiError(400, f"missing or malformed field {name!r}")
    return value


def create_app(store: LabelStore, queue: PairQueue, *, labeller: str, token: Optional[str] = None,
               allowed_hosts: Optional[set] = None) -> Starlette:
    """The ASGI app. `allowed_hosts` (names for the Host header) guards a loopback server
    against DNS rebinding; `token`, when given, is required on every request."""

    def progress() -> dict:
        return {"labelled": queue.labelled, "total": queue.total, "failed": len(queue.failed)}

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def judgements_page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "judgements.html")

    async def status(request: Request) -> JSONResponse:
        return JSONResponse({**progress(), "labeller": labeller, "done": queue.done, "failures": queue.failed})

    async def pairs(request: Request) -> JSONResponse:
        body = await read_json(request)
        client = _field(body, "client", str, CLIENT_ID)
        n = body.get("n", 2)
        if type(n) is not int or not 1 <= n <= 5:  # not 2.0, which equals 2 but cannot slice
            raise ApiError(400, "n must be between 1 and 5")
        taken = queue.take(client, n)
        return JSONResponse({"pairs": [p.public() for p in taken], **progress(), "done": not taken and queue.done,
                             "elsewhere": not taken and queue.held_elsewhere(client)})

    async def judge(request: Request) -> JSONResponse:
        body = await read_json(request)
        pair_id = _field(body, "pair_id", str, PAIR_ID)
        client = _field(body, "client", str, CLIENT_ID)
        choice = _field(body, "choice", str)
        if choice not in SIDES:
            raise ApiError(400, f"choice must be one of {', '.join(SIDES)}")
        comment = body.get("comment", "")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT or not _is_unicode(comment):
            raise ApiError(400, f"comment must be text of at most {MAX_COMMENT} characters")
        name = body.get("labeller")  # several people on one server each give their name; none: the server's
        if name in (None, ""):
            name = labeller
        elif not is_labeller_name(name):
            raise ApiError(400, f"labeller must be a name of at most {MAX_LABELLER} characters, with a visible one "
                                "and without control characters")
        pair = await run_in_threadpool(store.pair, pair_id)
        if pair is None:
            raise ApiError(404, "unknown pair")
        try:
            queue.claim(pair_id, client)
            judgement_id, duplicate = await run_in_threadpool(store.judge, pair_id, choice, comment.strip(), name.strip())
        except Conflict as e:
            # This tab may judge the pair, and it is judged: by this tab, in an answer that never
            # reached the page (sent again with another choice). The page keeps it to undo.
            judged = {"judged": {"id": e.judged[0], "choice": e.judged[1]}} if e.judged else None
            raise ApiError(409, str(e), judged) from None
        queue.judged(pair, client)
        return JSONResponse({"id": judgement_id, "duplicate": duplicate, **progress()})

    async def undo(request: Request) -> JSONResponse:
        body = await read_json(request)
        judgement_id = _field(body, "id", int)
        if not 0 < judgement_id < 2**63:  # SQLite's integers
            raise ApiError(404, "no such judgement (already undone?)")
        pair_id = _field(body, "pair_id", str, PAIR_ID)
        client = _field(body, "client", str, CLIENT_ID)
        try:
            queue.claim(pair_id, client)
            pair = await run_in_threadpool(store.undo, judgement_id, pair_id)
        except KeyError:
            raise ApiError(404, "no such judgement (already undone?)") from None
        except Conflict as e:
            raise ApiError(409, str(e)) from None
        queue.undone(pair, client)
        return JSONResponse({"pair": pair.public(), **progress()})

    async def judgements(request: Request) -> JSONResponse:
        rows = await run_in_threadpool(store.judgements, 1000)
        out = []
        for j in rows:
            left, right = ("a", "b") if j["shown_left"] == "a" else ("b", "a")
            verdict = {left: "left", right: "right"}.get(j["choice"], j["choice"])
            out.append({"id": j["id"], "time": j["created_at"], "labeller": j["labeller"], "prompt": j["prompt"],
                        "left": j["completion_" + left], "right": j["completion_" + right], "verdict": verdict,
                        "comment": j["comment"]})
        return JSONResponse({"judgements": out, **progress()})

    routes = [
        Route("/", index),
        Route("/judgements", judgements_page),
        Route("/api/status", status),
        Route("/api/pairs", pairs, methods=["POST"]),
        Route("/api/judgements", judgements, methods=["GET"]),
        Route("/api/judgements", judge, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error, sqlite3.OperationalError: _database_error})
    return Guard(app, token=token, allowed_hosts=allowed_hosts)


class Guard:
    """ASGI middleware: Host check, token check, security headers on every response."""

    def __init__(self, app, *, token: Optional[str], allowed_hosts: Optional[set]) -> None:
        self.app, self.token, self.allowed_hosts = app, token, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.allowed_hosts is not None and _hostname(headers.get("host", "")).lower() not in self.allowed_hosts:
            response = JSONResponse({"error": "unexpected Host header"}, status_code=400)
            return await response(scope, receive, send_with_headers)
        if self.token is not None:
            # Leniently parsed: another local app's odd cookie (sent to every port) must not hide ours.
            # Browsers keep cookies per host, not per port: each server's cookie is named by its port.
            cookie = f"{COOKIE}_{scope['server'][1]}" if scope.get("server") else COOKIE
            cookies = cookie_parser(headers.get("cookie", ""))
            given = (cookies.get(cookie, ""), cookies.get(COOKIE, ""),  # the name before ports: pages open at an upgrade
                     headers.get("authorization", "").removeprefix("Bearer "))
            if not any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
                query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
                if scope["method"] == "GET" and query and hmac.compare_digest(query.encode(), self.token.encode()):
                    # Remember the token in a cookie and drop it from the address bar.
                    response = RedirectResponse("/" + scope["path"].lstrip("/"), status_code=303)  # never //other.host
                    response.set_cookie(cookie, self.token, httponly=True, samesite="strict")
                    return await response(scope, receive, send_with_headers)
                message = "this server needs its token: open the address printed by `ferrolm label` (ending in ?token=...)"
                return await JSONResponse({"error": message}, status_code=401)(scope, receive, send_with_headers)
        return await self.app(scope, receive, send_with_headers)


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts so a busy port is a clear error."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: {e.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: a busy port stays busy
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        hint = " (another server is using it: choose another --port)" if e.errno == errno.EADDRINUSE else ""
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    return sock


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def run(app, sock: socket.socket) -> None:
    """Serves `app` on `sock` until SIGINT/SIGTERM (uvicorn finishes open requests first)."""
    import uvicorn

    # No limit_concurrency: uvicorn counts open connections against it and never times out one
    # that sends nothing, so 64 idle connections (from anyone, before a token is checked) made
    # every labeller's request a 503.
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
