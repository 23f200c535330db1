"""A local stand-in for Gemini's REST API, for tests that run the real ``google-genai`` client offline.

``GeminiServer`` answers ``POST /{version}/models/{model}:generateContent`` (the SDK sends ``/v1/...`` by default,
``/v1beta/...`` when told to), records every request, and replies with what the test scripted: first the queued
responses (``server.queue(ok({...}), rate_limited(0.2))``), then a responder function (``server.respond(fn)``),
else a schema-shaped JSON reply built from the request's ``generationConfig.responseSchema``.

    server = GeminiServer()
    server.start()
    resource = GeminiResource(base_url=server.url, api_key=dg.EnvVar("GEMINI_API_KEY"))
    ...
    server.stop()
"""

from __future__ import annotations

import base64
import collections
import http.server
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")


@dataclass(frozen=True)
class Response:
    """One scripted HTTP reply: a status, a JSON body (or raw text), extra headers, and a delay before it."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def _usage(prompt_tokens: int, output_tokens: int, thoughts_tokens: int = 0) -> dict:
    usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
             "totalTokenCount": prompt_tokens + output_tokens + thoughts_tokens}  # fmt: skip
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return usage


def _reply(text: str | None, finish_reason: str, prompt_tokens: int, output_tokens: int, thoughts_tokens: int = 0,
           response_id: str = "test-response") -> dict:  # fmt: skip
    candidate: dict[str, Any] = {"finishReason": finish_reason, "index": 0}
    if text is not None:
        candidate["content"] = {"role": "model", "parts": [{"text": text}]}
    return {"candidates": [candidate], "usageMetadata": _usage(prompt_tokens, output_tokens, thoughts_tokens),
            "modelVersion": "test", "responseId": response_id}  # fmt: skip


def ok(obj_or_text: Any, prompt_tokens: int = 100, output_tokens: int = 20, thoughts_tokens: int = 0,
       response_id: str = "test-response") -> Response:  # fmt: skip
    """A valid reply: ``obj_or_text`` as JSON text (a string is sent as it is), finishReason STOP."""
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    return Response(body=_reply(text, "STOP", prompt_tokens, output_tokens, thoughts_tokens, response_id))


def malformed(text: str = "Sure! Here is the description you asked for.", prompt_tokens: int = 100,
              output_tokens: int = 20) -> Response:  # fmt: skip
    """A reply whose text isn't JSON, finishReason STOP."""
    return Response(body=_reply(text, "STOP", prompt_tokens, output_tokens))


def truncated(text: str = '{"description": "a red door in a white wall, with', prompt_tokens: int = 100,
              output_tokens: int = 1024) -> Response:  # fmt: skip
    """A reply cut off at the output token limit: finishReason MAX_TOKENS, the JSON unfinished."""
    return Response(body=_reply(text, "MAX_TOKENS", prompt_tokens, output_tokens))


def refused(block_reason: str = "SAFETY", prompt_tokens: int = 100) -> Response:
    """The prompt blocked: ``promptFeedback.blockReason`` and no candidates."""
    body = {"promptFeedback": {"blockReason": block_reason}, "usageMetadata": _usage(prompt_tokens, 0),
            "modelVersion": "test", "responseId": "test-refused"}  # fmt: skip
    return Response(body=body)


def refused_candidate(finish_reason: str = "SAFETY", prompt_tokens: int = 100) -> Response:
    """A candidate stopped by its safety filters: finishReason SAFETY, no content."""
    body = _reply(None, finish_reason, prompt_tokens, 0, response_id="test-refused")
    body["candidates"][0]["safetyRatings"] = [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
    ]
    return Response(body=body)


def api_error(status: int, message: str, reason: str, details: list | None = None,
              headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    """An error reply in Google's JSON error shape."""
    error: dict[str, Any] = {"code": status, "message": message, "status": reason}
    if details is not None:
        error["details"] = details
    return Response(status=status, body={"error": error}, headers=headers or {})


def rate_limited(retry_delay_s: float | None = 0.2, retry_after: str | None = None) -> Response:
    """HTTP 429 RESOURCE_EXHAUSTED, with a ``google.rpc.RetryInfo`` of ``retry_delay_s`` (none when None) and a
    ``Retry-After`` header when given."""
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"}]
    if retry_delay_s is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay_s:g}s"})
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return api_error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED", details, headers)


def server_error(status: int = 500) -> Response:
    """A 5xx in Google's error shape."""
    reason = {500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(status, "INTERNAL")
    return api_error(status, "An internal error has occurred.", reason)


def bad_request(message: str = "Invalid JSON payload received.") -> Response:
    """HTTP 400 INVALID_ARGUMENT."""
    return api_error(400, message, "INVALID_ARGUMENT")


def sample_of(schema: dict | None) -> Any:
    """A value of an OpenAPI-style schema: strings "a test value", one-element arrays, the first enum value."""
    schema = schema or {}
    if schema.get("anyOf"):
        return sample_of(schema["anyOf"][0])
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type") or "OBJECT").upper()
    if kind == "OBJECT":
        return {name: sample_of(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "ARRAY":
        return [sample_of(schema.get("items"))] * max(1, int(schema.get("minItems") or 1))
    return {"STRING": "a test value", "NUMBER": 0.5, "INTEGER": 1, "BOOLEAN": True}.get(kind)


def schema_shaped(request: dict) -> Response:
    """The default responder: a valid reply shaped by the request's ``responseSchema``."""
    config = (request.get("body") or {}).get("generationConfig") or {}
    return ok(sample_of(config.get("responseSchema") or config.get("response_schema")))


class GeminiServer:
    """Gemini's ``generateContent`` on 127.0.0.1, scripted by the test (see the module's docstring).

    ``requests`` holds every request received, in order: ``{"path", "version", "model", "headers" (names in lower
    case), "body" (the parsed JSON)}``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[dict] = []
        self._queued: collections.deque[Response] = collections.deque()
        self._responder: Callable[[dict], Response] = schema_shaped
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GeminiServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="gemini-server",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> GeminiServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def queue(self, *responses: Response) -> None:
        """Answer the next requests with these, in order, before the responder."""
        with self._lock:
            self._queued.extend(responses)

    def respond(self, fn: Callable[[dict], Response]) -> None:
        """Answer every request the queue doesn't with ``fn(request)``."""
        self._responder = fn

    def images(self, request: dict) -> list:
        """The inline images of a request's contents, as PIL images."""
        from PIL import Image

        found = []
        for content in request["body"].get("contents") or []:
            for part in content.get("parts") or []:
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    data = inline["data"].replace("-", "+").replace("_", "/")  # the SDK sends URL-safe base64
                    found.append(Image.open(io.BytesIO(base64.b64decode(data + "=" * (-len(data) % 4)))))
        return found

    def _answer(self, request: dict) -> Response:
        with self._lock:
            self.requests.append(request)
            queued = self._queued.popleft() if self._queued else None
        return queued if queued is not None else self._responder(request)


def _handler_for(server: GeminiServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's client expects

        def log_message(self, format, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = _PATH.match(self.path.split("?", 1)[0])
            if not match:
                return self._send(api_error(404, f"no such method: {self.path}", "NOT_FOUND"))
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError as error:
                return self._send(bad_request(f"Invalid JSON payload received. {error}"))
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = {"path": self.path, "version": match["version"], "model": match["model"], "headers": headers,
                       "body": body}  # fmt: skip
            try:
                response = server._answer(request)
            except Exception as error:  # a broken responder answers 500 rather than hang the client
                response = api_error(500, f"test responder failed: {type(error).__name__}: {error}", "INTERNAL")
            self._send(response)

        def do_GET(self):
            self._send(api_error(404, f"no such method: {self.path}", "NOT_FOUND"))

        def _send(self, response: Response) -> None:
            if response.delay_s:
                time.sleep(response.delay_s)
            body = response.body
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                self.close_connection = True

    return Handler
