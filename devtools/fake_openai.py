"""A local OpenAI-compatible provider double: deterministic replies, real rate limits, injected faults.

Tests and benchmarks point clients at it instead of a paid provider, so that structured output,
retries, backoff and throughput can be exercised offline and reproducibly. Markers such as
``#429x2`` in a request's text make the server fail the first attempts of that exact request;
``error_rate`` answers a share of all attempts with 500 after the usual latency, as a flaky
provider does.

Limits are enforced in fixed 1-second windows (rpm/60 and tpm/60 each): a request is admitted
while its window has requests and tokens left, and counts in full. Tokens are the request's
prompt plus the completion it is answered with (what ``usage.total_tokens`` reports), so a
client can only pace them well by learning from the replies' usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INDUSTRIES = ("software", "retail", "finance", "health", "manufacturing")
KNOBS = frozenset({"rpm", "tpm", "latency_ms", "error_rate", "retry_after_s", "timeout_sleep_s"})
_MARKER = re.compile(r"#(429|500|503|timeout|truncated|badschema)(?:x(\d+))?")
_ALWAYS_400 = re.compile(r"#400(?!\d)")
_WRONG = "not-a-valid-value"

Json = dict[str, Any]


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _pick(seed: bytes, path: str) -> int:
    """A stable pseudo-random integer for one spot of a generated value."""
    return int.from_bytes(_digest(seed.hex(), path)[:8], "big")


def _tokens(texts: list[str]) -> int:
    return math.ceil(sum(map(len, texts)) / 4)


# -- JSON schema -> a value that satisfies it --------------------------------------------------------

def _resolve(schema: Json, root: Json) -> Json:
    """Follow local ``$ref``s and take the first non-null ``anyOf``/``oneOf`` branch, as pydantic emits them."""
    while True:
        if "$ref" in schema:
            target: Any = root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            schema = target
        elif branches := schema.get("anyOf") or schema.get("oneOf"):
            schema = next((b for b in branches if b.get("type") != "null"), branches[0])
        else:
            return schema


def _type(schema: Json) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):  # nullable, e.g. ["string", "null"]: answer the non-null one
        return next((k for k in kind if k != "null"), "null")
    return kind or ("object" if "properties" in schema else "array" if "items" in schema else "string")


def fake_value(schema: Json, seed: bytes, root: Json | None = None, path: str = "$") -> Any:
    """A value satisfying ``schema``: the same one for the same seed, so replies are reproducible."""
    root = root or schema
    schema = _resolve(schema, root)
    h = _pick(seed, path)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][h % len(schema["enum"])]
    kind = _type(schema)
    if kind == "object":
        return {k: fake_value(s, seed, root, f"{path}.{k}") for k, s in schema.get("properties", {}).items()}
    if kind == "array":
        lo = min(schema.get("minItems", 1), schema.get("maxItems", math.inf))
        hi = schema.get("maxItems", max(lo, 3))
        return [fake_value(schema.get("items", {}), seed, root, f"{path}[{i}]") for i in range(lo + h % (hi - lo + 1))]
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.001  # pydantic's gt/lt become exclusive bounds
        lo = schema["exclusiveMinimum"] + step if "exclusiveMinimum" in schema else schema.get("minimum")
        hi = schema["exclusiveMaximum"] - step if "exclusiveMaximum" in schema else schema.get("maximum")
        lo = (0 if hi is None or hi >= 0 else hi - 1000) if lo is None else lo
        hi = lo + 1000 if hi is None else hi
        if kind == "integer":
            return math.ceil(lo) + h % (math.floor(hi) - math.ceil(lo) + 1)
        return min(hi, lo + (hi - lo) * (h % 1001) / 1000)
    if kind == "boolean":
        return bool(h & 1)
    if kind == "null":
        return None
    tag = f"{h % 16**6:06x}"
    fmt = schema.get("format")
    if fmt in ("date", "date-time"):
        day = (dt.date(2000, 1, 1) + dt.timedelta(days=h % 9000)).isoformat()
        return day if fmt == "date" else f"{day}T12:00:00Z"
    if fmt in ("email", "uri"):
        return f"user-{tag}@example.com" if fmt == "email" else f"https://example.com/{tag}"
    text = f"value-{tag}"[: schema.get("maxLength")]
    return text.ljust(schema.get("minLength", 0), "x")


def violate(schema: Json, value: Any) -> Any:
    """Break ``value`` against ``schema`` the way a sloppy model does: a wrong type in the first required field."""
    def wrong(sub: Json) -> Any:
        sub = _resolve(sub, schema)
        return 12345 if _type(sub) == "string" and "enum" not in sub and "const" not in sub else _WRONG

    top = _resolve(schema, schema)
    properties = top.get("properties")
    if not isinstance(value, dict) or not properties:
        return wrong(schema)
    name = (top.get("required") or list(properties))[0]
    return value | {name: wrong(properties[name])}


# -- request parsing: each returns the texts that carry markers and count as prompt tokens -------------

def _content(content: Any) -> str:
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _chat_texts(body: Json) -> list[str]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    fmt = body.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise ValueError("'response_format' must be an object")
    if fmt and fmt.get("type") == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("schema"), dict):
        raise ValueError("'response_format.json_schema.schema' must be a JSON schema object")
    return [_content(m.get("content")) for m in messages]


def _embedding_texts(body: Json) -> list[str]:
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("'input' must be a string or a non-empty list of strings")
    dims = body.get("dimensions")
    if dims is not None and (type(dims) is not int or dims < 1):
        raise ValueError("'dimensions' must be a positive integer")
    return texts


def _enrich_texts(body: Json) -> list[str]:
    domain = body.get("domain")
    if not isinstance(domain, str) or not domain:
        raise ValueError("domain is required")
    return [domain]


# -- responses ---------------------------------------------------------------------------------------

def _error(status: int, message: str, kind: str | None = "invalid_request_error", code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    error: Json = {"message": message}
    if kind:
        error |= {"type": kind, "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _budget(per_minute: float, window: int) -> int:
    """Admissions in one 1-second window; fractional rates spread over windows so the minute adds up."""
    return math.floor((window + 1) * per_minute / 60) - math.floor(window * per_minute / 60)


def _next_open_window(per_minute: float, window: int) -> int:
    window += 1
    while _budget(per_minute, window) < 1:
        window += 1
    return window


@dataclass
class _Tally:
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    max_in_flight: int = 0
    in_flight: int = 0
    admitted_per_second: Counter[str] = field(default_factory=Counter)
    tokens_per_second: Counter[str] = field(default_factory=Counter)  # admitted tokens (prompt + completion)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    # Requests received per Idempotency-Key header: the attempts of one call share a key, calls do not.
    idempotency_keys: Counter[str] = field(default_factory=Counter)


Reply = tuple[int, Json, int]  # status, body, completion tokens
Parse = Callable[[Json], list[str]]  # request body -> the texts that carry markers and count as prompt tokens
Answer = Callable[[Json, list[str], "str | None"], Reply]  # body, texts, active fault -> reply


class FakeOpenAI:
    """An OpenAI-compatible server (chat, embeddings) plus a JSON enrichment API, on a local port in a daemon thread."""

    rpm: float | None
    tpm: float | None
    latency_ms: tuple[float, float]
    error_rate: float
    retry_after_s: float
    timeout_sleep_s: float
    _attempts: Counter[bytes]  # admitted tries per request hash, to fail only the first n of them
    _used: Counter[str]  # requests and tokens admitted in the current window

    def __init__(self, *, rpm: float | None = None, tpm: float | None = None, latency_ms: tuple[float, float] = (0, 0),
                 error_rate: float = 0.0, api_key: str | None = None, retry_after_s: float = 1.0,
                 timeout_sleep_s: float = 30.0,
                 embedding_dim: int = 8, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key, self.embedding_dim, self.host, self.port = api_key, embedding_dim, host, port
        self._lock = threading.Lock()  # the server thread and the caller's thread share the state below
        self.configure(rpm=rpm, tpm=tpm, latency_ms=latency_ms, error_rate=error_rate, retry_after_s=retry_after_s,
                       timeout_sleep_s=timeout_sleep_s)
        self._tally = _Tally()
        self.reset()
        self._endpoints: dict[str, tuple[Parse, Answer]] = {
            "/v1/chat/completions": (_chat_texts, self._chat),
            "/v1/embeddings": (_embedding_texts, self._embeddings),
            "/v1/enrich": (_enrich_texts, self._enrich),
        }
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._api, methods=["POST"]),
            Route("/v1/embeddings", self._api, methods=["POST"]),
            Route("/v1/enrich", self._api, methods=["GET", "POST"]),
            Route("/_stats", self._stats_route, methods=["GET"]),
            Route("/_reset", self._reset_route, methods=["POST"]),
            Route("/_control", self._control_route, methods=["POST"]),
        ])
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a daemon thread; return the base URL once the socket listens."""
        if self._server is not None:
            return self.base_url
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(self._server),), name="fake-openai",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server = self._thread = None
                raise RuntimeError(f"fake OpenAI server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.base_url

    def stop(self) -> None:
        if self._server is None or self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    async def _serve(self, server: uvicorn.Server) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        await server.serve()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake when the server stops, so that shutdown never waits out a stall."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs and counters ----------------------------------------------------------------------------

    def configure(self, **knobs: Any) -> None:
        """Change limits or latency while serving, e.g. to show a client adapting to a tighter quota."""
        if unknown := set(knobs) - KNOBS:
            raise ValueError(f"unknown knobs: {sorted(unknown)}; known: {sorted(KNOBS)}")
        for name in ("rpm", "tpm"):
            if knobs.get(name) is not None and not knobs[name] > 0:
                raise ValueError(f"{name} must be positive, or None for no limit")
        if "error_rate" in knobs and not 0 <= float(knobs["error_rate"]) < 1:
            raise ValueError("error_rate must be a share of attempts, 0 <= error_rate < 1")
        if "latency_ms" in knobs:
            lo, hi = map(float, knobs["latency_ms"])
            if not 0 <= lo <= hi:
                raise ValueError("latency_ms must be (low, high) with 0 <= low <= high")
            knobs["latency_ms"] = (lo, hi)
        with self._lock:
            for name, value in knobs.items():
                setattr(self, name, value)

    def stats(self) -> Json:
        with self._lock:
            return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self._tally).items()}

    def reset(self) -> None:
        """Zero the counters, fault attempts and rate windows, so one test or benchmark phase starts clean."""
        with self._lock:
            self._tally = _Tally(in_flight=self._tally.in_flight)  # requests still running will finish
            self._attempts = Counter()
            self._window, self._used = 0, Counter()

    def counted_tokens(self, path: str, body: Json) -> int:
        """The tokens a request to `path` (e.g. "/v1/chat/completions") counts against tpm when nothing fails."""
        parse, reply = self._endpoints[path]
        texts = parse(body)
        return _tokens(texts) + reply(body, texts, None)[2]

    # -- rate limiting ---------------------------------------------------------------------------------

    def _admit(self, prompt_tokens: int, tokens: int) -> tuple[bool, dict[str, str]]:
        """Fixed 1-second windows on wall-clock boundaries, as providers enforce per-minute quotas in short slices."""
        now = time.time()
        window = int(now)
        with self._lock:
            if window != self._window:
                self._window, self._used = window, Counter()
            limits = {name: rate for name, rate in (("requests", self.rpm), ("tokens", self.tpm)) if rate is not None}
            over = [name for name, rate in limits.items() if self._used[name] >= _budget(rate, window)]
            if over:
                self._tally.rate_limited += 1
            else:
                self._used.update(requests=1, tokens=tokens)
                self._tally.admitted_per_second[str(window)] += 1
                self._tally.tokens_per_second[str(window)] += tokens
                self._tally.prompt_tokens += prompt_tokens
            resets = {name: _next_open_window(rate, window) - now for name, rate in limits.items()}
            headers: dict[str, str] = {}
            for name, rate in limits.items():
                limit = _budget(rate, window)
                headers |= {f"x-ratelimit-limit-{name}": str(limit),
                            f"x-ratelimit-remaining-{name}": str(max(0, limit - self._used[name])),
                            f"x-ratelimit-reset-{name}": f"{resets[name]:.3f}s"}
        if over:
            wait = max(resets[name] for name in over)
            headers |= {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}
        return not over, headers

    # -- the API ---------------------------------------------------------------------------------------

    async def _api(self, request: Request) -> JSONResponse:
        now = time.time()
        with self._lock:
            tally = self._tally
            tally.requests += 1
            tally.in_flight += 1
            tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
            tally.first_at = tally.first_at or now
            tally.last_at = now
            if key := request.headers.get("idempotency-key"):
                tally.idempotency_keys[key] += 1
        status = 500
        try:
            response = await self._answer(request)
            status = response.status_code
            return response
        finally:
            with self._lock:
                self._tally.in_flight -= 1
                self._tally.by_status[str(status)] += 1

    async def _answer(self, request: Request) -> JSONResponse:
        path = request.url.path
        parse, reply = self._endpoints[path]
        openai = path != "/v1/enrich"
        if openai and self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body = dict(request.query_params) if request.method == "GET" else await _json_body(request)
            texts = parse(body)
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error" if openai else None)
        key = _digest(path, _canonical(body))
        answer = reply(body, texts, None)  # what it is answered when nothing fails: its tokens count now
        admitted, headers = self._admit(_tokens(texts), _tokens(texts) + answer[2])
        if not admitted:
            return _error(429, "Rate limit reached; retry after the window resets.", "rate_limit_exceeded",
                          "rate_limit_exceeded", headers)
        with self._lock:
            self._attempts[key] += 1
            attempt = self._attempts[key]
            error_rate = self.error_rate
        lo, hi = self.latency_ms
        await self._sleep((lo + (hi - lo) * int.from_bytes(key[:8], "big") / 2**64) / 1000)
        text = "\n".join(texts)
        if _ALWAYS_400.search(text):
            return _error(400, "bad request: marker #400")
        fault = next((m[1] for m in _MARKER.finditer(text) if attempt <= int(m[2] or 1)), None)
        flaky = fault is None and error_rate and _pick(key, f"attempt {attempt}") % 1_000_000 < error_rate * 1_000_000
        if flaky:  # this attempt fails; a retry of the same request may not
            return _error(500, "The server had an error (injected at random: error_rate).", "server_error")
        if fault == "429":
            retry = {"retry-after": str(math.ceil(self.retry_after_s)),
                     "retry-after-ms": str(math.ceil(self.retry_after_s * 1000))}
            return _error(429, "Rate limit reached (injected by marker #429).", "rate_limit_exceeded",
                          "rate_limit_exceeded", headers | retry)
        if fault in ("500", "503"):
            return _error(int(fault), f"The server had an error (injected by marker #{fault}).", "server_error")
        if fault == "timeout":
            await self._sleep(self.timeout_sleep_s)
        status, payload, completion_tokens = reply(body, texts, fault) if fault else answer
        with self._lock:
            self._tally.completion_tokens += completion_tokens
        return JSONResponse(payload, status_code=status, headers=headers)

    def _chat(self, body: Json, texts: list[str], fault: str | None) -> Reply:
        messages, model = body["messages"], str(body.get("model", ""))
        seed = _digest(model, _canonical(messages))
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt["json_schema"]["schema"]
            value = fake_value(schema, seed)
            content = json.dumps(violate(schema, value) if fault == "badschema" else value)
        else:
            last = ([t for m, t in zip(messages, texts) if m.get("role") == "user"] or texts)[-1][:200]
            content = json.dumps({"echo": last}) if fmt.get("type") == "json_object" else "echo: " + last
        if fault == "truncated":
            content = content[: len(content) // 2]
        usage = {"prompt_tokens": _tokens(texts), "completion_tokens": _tokens([content])}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return (
            200,
            {
                "id": f"chatcmpl-{seed.hex()[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": usage,
            },
            usage["completion_tokens"],
        )

    def _embeddings(self, body: Json, texts: list[str], fault: str | None) -> Reply:
        dims = body.get("dimensions") or self.embedding_dim
        data = [{"object": "embedding", "index": i, "embedding": embedding_of(t, dims)} for i, t in enumerate(texts)]
        tokens = _tokens(texts)
        return 200, {"object": "list", "data": data, "model": str(body.get("model", "")),
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, 0

    def _enrich(self, body: Json, texts: list[str], fault: str | None) -> Reply:
        domain = texts[0]
        if "#404" in domain:
            return 404, {"error": {"message": f"no company for {domain}"}}, 0
        h = int.from_bytes(_digest("enrich", domain), "big")
        return 200, {"domain": domain,
                     "company": {"employees": 1 + h % 50_000, "industry": INDUSTRIES[(h >> 64) % len(INDUSTRIES)],
                                 "founded": 1950 + (h >> 96) % 71},
                     "tags": [f"tag-{(h >> 128) % 16**4:04x}", f"tag-{(h >> 192) % 16**4:04x}"]}, 0

    # -- control routes --------------------------------------------------------------------------------

    async def _stats_route(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    async def _reset_route(self, request: Request) -> JSONResponse:
        self.reset()
        return JSONResponse(self.stats())

    async def _control_route(self, request: Request) -> JSONResponse:
        try:
            self.configure(**await _json_body(request))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return JSONResponse({name: getattr(self, name) for name in sorted(KNOBS)})


async def _json_body(request: Request) -> Json:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def embedding_of(text: str, dims: int) -> list[float]:
    """A unit vector seeded by the text's sha256: Gaussian components give directions spread evenly."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    vector = [rng.gauss(0, 1) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fake_openai", description="Serve a local OpenAI-compatible provider double."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--rpm", type=float, help="requests per minute, enforced in 1-second windows")
    parser.add_argument("--tpm", type=float, help="tokens (prompt + completion) per minute, in 1-second windows")
    parser.add_argument("--latency-ms", type=float, nargs=2, default=(0, 0), metavar=("LOW", "HIGH"))
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of attempts answered 500")
    parser.add_argument("--api-key-env", metavar="NAME", help="require 'Authorization: Bearer $NAME'")
    parser.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After of #429 markers")
    parser.add_argument("--timeout-sleep-s", type=float, default=30.0, help="how long #timeout markers stall")
    parser.add_argument("--embedding-dim", type=int, default=8)
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env) or parser.error(
            f"environment variable {args.api_key_env} is not set"
        )
    fake = FakeOpenAI(rpm=args.rpm, tpm=args.tpm, latency_ms=tuple(args.latency_ms), error_rate=args.error_rate,
                      api_key=api_key,
                      retry_after_s=args.retry_after_s, timeout_sleep_s=args.timeout_sleep_s,
                      embedding_dim=args.embedding_dim, host=args.host, port=args.port)
    print(fake.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
