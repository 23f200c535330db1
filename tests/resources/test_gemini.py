"""GeminiResource through the real google-genai client against the local stand-in server (tests/gemini_support.py):
the request it sends, how each kind of reply is read, retries (one HTTP request per attempt: the SDK's own are
off), the spend cap, the usage, and a key that never shows."""

import io
import json
import subprocess
import sys
import threading

import dagster as dg
import pytest
from gemini_support import (
    Response,
    api_error,
    bad_request,
    malformed,
    ok,
    rate_limited,
    refused,
    refused_candidate,
    sample_of,
    server_error,
    truncated,
)
from harness import free_port
from PIL import Image

from resources.gemini import GeminiError, GeminiResource, SpendCapReached, resized_jpeg
from resources.gemini_replies import duration_seconds, read_reply, retry_delay_seconds, schema_problem

SECRET = "AIza-test-s3cret-key"
MODEL = "gemini-2.5-flash-lite"
SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "description": {"type": "STRING"},
        "category": {"type": "STRING", "enum": ["door", "window", "other"]},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        "confidence": {"type": "NUMBER"},
    },
    "required": ["description", "category"],
}
GOOD = {"description": "a red door", "category": "door", "tags": ["red"], "confidence": 0.9}


class FakeClock:
    """Unix time that moves only when the session sleeps; every sleep recorded."""

    def __init__(self):
        import time

        self.now = time.time()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


_limits = iter(range(5000, 100_000))


def gemini(server, **settings) -> GeminiResource:
    """A resource on the test server with its own process-local budget (a budget is shared per limit)."""
    settings.setdefault("requests_per_minute", next(_limits))
    settings.setdefault("retry_backoff_seconds", 0.01)
    return GeminiResource(base_url=server.url if server else None, **settings)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)


@pytest.fixture
def clock():
    return FakeClock()


def session_of(server, clock, **settings):
    return gemini(server, **settings).session(sleep=clock.sleep, clock=clock)


def test_a_valid_reply_is_parsed_and_costed(gemini_server, clock):
    gemini_server.queue(ok(GOOD, prompt_tokens=1000, output_tokens=200, response_id="r-1"))
    session = session_of(gemini_server, clock)
    reply = session.generate(MODEL, "Describe the photo.", SCHEMA)
    assert (reply.status, reply.data, reply.reason, reply.ok) == ("ok", GOOD, None, True)
    assert json.loads(reply.text) == GOOD
    assert (reply.model, reply.prompt_tokens, reply.output_tokens, reply.response_id, reply.attempts) == (
        MODEL, 1000, 200, "r-1", 1)  # fmt: skip
    assert reply.cost_usd == pytest.approx(0.00018)  # 1000 x $0.10 + 200 x $0.40 per million
    usage = session.usage()
    assert usage["cost_usd"] == 0.00018 and usage["total_tokens"] == 1200 and usage["requests"] == 1
    assert clock.sleeps == []


def test_thinking_tokens_count_as_output(gemini_server, clock):
    gemini_server.queue(ok(GOOD, prompt_tokens=1000, output_tokens=200, thoughts_tokens=300))
    reply = session_of(gemini_server, clock).generate("gemini-2.5-flash", "Describe.", SCHEMA)
    assert reply.output_tokens == 500
    assert reply.cost_usd == pytest.approx((1000 * 0.30 + 500 * 2.50) / 1e6)


def test_the_request_carries_the_schema_the_key_and_resized_jpegs(gemini_server, clock):
    session = session_of(gemini_server, clock, max_output_tokens=256, temperature=0.2)
    big, small = Image.new("RGB", (2000, 1000), "red"), Image.new("RGB", (300, 200), "blue")
    reply = session.generate(MODEL, "Describe the photos.", SCHEMA, images=[big, small])
    assert reply.ok  # the default responder answers schema-shaped JSON
    assert reply.data == {"description": "a test value", "category": "door", "tags": ["a test value"],
                          "confidence": 0.5}  # fmt: skip
    (request,) = gemini_server.requests
    assert request["model"] == MODEL and request["path"].endswith(f"/models/{MODEL}:generateContent")
    assert request["headers"]["x-goog-api-key"] == SECRET
    config = request["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["type"] == "OBJECT"
    assert config["responseSchema"]["required"] == ["description", "category"]
    assert config["responseSchema"]["properties"]["category"]["enum"] == ["door", "window", "other"]
    assert (config["maxOutputTokens"], config["temperature"]) == (256, 0.2)
    parts = request["body"]["contents"][0]["parts"]
    assert [part.get("text") for part in parts] == [None, None, "Describe the photos."]
    images = gemini_server.images(request)
    assert [(image.format, image.size) for image in images] == [("JPEG", (768, 384)), ("JPEG", (300, 200))]


def test_images_given_as_bytes_are_sent_as_jpeg(gemini_server, clock):
    buffer = io.BytesIO()
    Image.new("RGBA", (1000, 1500), (0, 255, 0, 128)).save(buffer, format="PNG")
    session_of(gemini_server, clock, max_image_side=300).generate(MODEL, "Describe.", SCHEMA, [buffer.getvalue()])
    (image,) = gemini_server.images(gemini_server.requests[0])
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (200, 300))


@pytest.mark.parametrize(
    ("response", "status", "reason"),
    [
        (malformed("Sure! Here is a door."), "malformed", "reply is not JSON: Expecting value at char 0"),
        (ok('{"description": "a door" "category": "door"}'), "malformed", "reply is not JSON: Expecting ','"),
        (ok({"description": "a door"}), "malformed", "$: missing required key 'category'"),
        (ok({"description": 3, "category": "door"}), "malformed", "$.description: expected string, got a number"),
        (ok({"description": "d", "category": "roof"}), "malformed", "$.category: 'roof' is not one of"),
        (ok({"description": "d", "category": "door", "tags": [1]}), "malformed", "$.tags[0]: expected string"),
        (ok(["not", "an", "object"]), "malformed", "expected object, got an array"),
        (ok(""), "malformed", "empty reply"),
        (truncated('{"description": "a red door in a'), "truncated", "(MAX_TOKENS)"),
        (ok('{"description": "a red door", "cat'), "truncated", "reply cut off mid-JSON"),
        (refused(), "refused", "refused by the model: the prompt was blocked (SAFETY)"),
        (refused_candidate("SAFETY"), "refused", "refused by the model: SAFETY"),
        (refused_candidate("RECITATION"), "refused", "refused by the model: RECITATION"),
        (Response(body={"usageMetadata": {"promptTokenCount": 5}}), "refused", "the reply has no candidates"),
    ],
)
def test_each_kind_of_reply_gets_its_status_and_reason(gemini_server, clock, response, status, reason):
    gemini_server.queue(response)
    session = session_of(gemini_server, clock)
    reply = session.generate(MODEL, "Describe.", SCHEMA)
    assert (reply.status, reply.data) == (status, None)
    assert reason in reply.reason
    usage = session.usage()
    assert usage["replies"][status] == 1 and usage["requests"] == 1 and usage["retries"] == 0
    assert usage["prompt_tokens"] == reply.prompt_tokens  # a reply that isn't ok still counts


def test_a_429_waits_its_retry_info_then_succeeds(gemini_server, clock):
    gemini_server.queue(rate_limited(retry_delay_s=0.2), ok(GOOD))
    session = session_of(gemini_server, clock, budget_margin_s=0.0)
    reply = session.generate(MODEL, "Describe.", SCHEMA)
    assert reply.ok and reply.attempts == 2
    assert len(gemini_server.requests) == 2
    assert sum(clock.sleeps) == pytest.approx(0.2, abs=1e-6)  # the RetryInfo, not the 0.01 s backoff
    assert session.budget.wait_time() == 0.0  # the push-back is over
    usage = session.usage()
    assert (usage["requests"], usage["retries"], usage["replies"]["ok"]) == (2, 1, 1)


def test_a_429_pushes_back_the_shared_budget(gemini_server, clock):
    gemini_server.queue(rate_limited(retry_delay_s=30.0))
    session = session_of(gemini_server, clock, max_retries=0)
    with pytest.raises(GeminiError, match="HTTP 429 RESOURCE_EXHAUSTED"):
        session.generate(MODEL, "Describe.", SCHEMA)
    assert session.budget.wait_time() >= 30.0  # every session of this budget now waits


def test_a_429_honours_retry_after(gemini_server, clock):
    gemini_server.queue(rate_limited(retry_delay_s=None, retry_after="3"), ok(GOOD))
    reply = session_of(gemini_server, clock, budget_margin_s=0.0).generate(MODEL, "Describe.", SCHEMA)
    assert reply.ok and reply.attempts == 2
    assert sum(clock.sleeps) == pytest.approx(3.0, abs=1e-6)


def test_a_429_asking_for_too_long_a_wait_fails_at_once(gemini_server, clock):
    gemini_server.queue(rate_limited(retry_delay_s=600))
    with pytest.raises(GeminiError, match="more than max_retry_wait_s"):
        session_of(gemini_server, clock).generate(MODEL, "Describe.", SCHEMA)
    assert len(gemini_server.requests) == 1


def test_server_errors_are_retried_with_a_doubling_backoff(gemini_server, clock):
    gemini_server.queue(server_error(500), server_error(503), ok(GOOD))
    session = session_of(gemini_server, clock, retry_backoff_seconds=0.5)
    reply = session.generate(MODEL, "Describe.", SCHEMA)
    assert reply.ok and reply.attempts == 3 and len(gemini_server.requests) == 3
    assert clock.sleeps == [0.5, 1.0]
    assert session.usage()["retries"] == 2


@pytest.mark.parametrize("max_retries", [0, 2, 4])
def test_one_request_per_attempt_reaches_the_server(gemini_server, clock, max_retries):
    """The SDK's own retries are off: a 5xx forever gives exactly max_retries + 1 requests."""
    gemini_server.respond(lambda request: server_error(500))
    session = session_of(gemini_server, clock, max_retries=max_retries, retry_backoff_seconds=100, max_retry_wait_s=5)
    with pytest.raises(GeminiError, match=f"HTTP 500 INTERNAL.*gave up after {max_retries + 1} attempts"):
        session.generate(MODEL, "Describe.", SCHEMA)
    assert len(gemini_server.requests) == max_retries + 1
    assert clock.sleeps == [5.0] * max_retries  # the backoff, capped by max_retry_wait_s
    usage = session.usage()
    assert (usage["requests"], usage["retries"], usage["errors"]) == (max_retries + 1, max_retries, 1)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "HTTP 400 INVALID_ARGUMENT: Invalid JSON payload"), (401, "check GEMINI_API_KEY"),
     (403, "check GEMINI_API_KEY"), (404, "HTTP 404")],
)  # fmt: skip
def test_other_client_errors_fail_without_a_retry(gemini_server, clock, status, expected):
    reply = bad_request() if status == 400 else api_error(status, "nope", "PERMISSION_DENIED")
    gemini_server.queue(reply)
    with pytest.raises(GeminiError, match=expected):
        session_of(gemini_server, clock).generate(MODEL, "Describe.", SCHEMA)
    assert len(gemini_server.requests) == 1 and clock.sleeps == []


def test_a_refused_connection_is_retried_then_fails(clock):
    resource = GeminiResource(base_url=f"http://127.0.0.1:{free_port()}", max_retries=2, retry_backoff_seconds=0.01,
                              requests_per_minute=next(_limits))  # fmt: skip
    session = resource.session(sleep=clock.sleep, clock=clock)
    with pytest.raises(GeminiError, match=r"no reply \(ConnectError.*gave up after 3 attempts"):
        session.generate(MODEL, "Describe.", SCHEMA)
    assert clock.sleeps == [0.01, 0.02] and session.usage()["requests"] == 3


def test_a_timeout_is_retried(gemini_server, clock):
    gemini_server.queue(Response(body=ok(GOOD).body, delay_s=1.0), ok(GOOD))
    reply = session_of(gemini_server, clock, timeout_s=0.2).generate(MODEL, "Describe.", SCHEMA)
    assert reply.ok and reply.attempts == 2


def test_the_spend_cap_stops_requests_before_they_are_sent(gemini_server, clock):
    gemini_server.respond(lambda request: ok(GOOD, prompt_tokens=1000, output_tokens=200))  # $0.00018 each
    session = session_of(gemini_server, clock, max_spend_usd=0.0005)
    assert [session.generate(MODEL, "Describe.", SCHEMA).ok for _ in range(2)] == [True, True]
    with pytest.raises(SpendCapReached, match=r"spend cap of \$0\.0005 per run reached \(\$0\.00036 spent\)"):
        session.generate(MODEL, "Describe.", SCHEMA)  # 0.00036 spent + 0.00018 on average > 0.0005
    with pytest.raises(SpendCapReached):
        session.generate(MODEL, "Describe.", SCHEMA)
    assert len(gemini_server.requests) == 2
    usage = session.usage()
    assert (usage["cap_reached"], usage["spend_cap_usd"], usage["refused_by_cap"]) == (True, 0.0005, 2)
    assert usage["cost_usd"] == 0.00036 and usage["errors"] == 0


@pytest.mark.parametrize("cap", [None, 0])
def test_no_spend_cap(gemini_server, clock, cap):
    gemini_server.respond(lambda request: ok(GOOD, prompt_tokens=10**6, output_tokens=10**6))  # $0.50 each
    session = session_of(gemini_server, clock, max_spend_usd=cap)
    assert all(session.generate(MODEL, "Describe.", SCHEMA).ok for _ in range(3))
    assert session.usage()["spend_cap_usd"] is None and not session.usage()["cap_reached"]


def test_usage_totals_by_model_and_status(gemini_server, clock):
    gemini_server.queue(
        ok(GOOD, prompt_tokens=1000, output_tokens=200),
        rate_limited(0.1),
        malformed("nope", prompt_tokens=500, output_tokens=10),
        ok(GOOD, prompt_tokens=2000, output_tokens=100),
        ok(GOOD, prompt_tokens=100, output_tokens=10),
    )
    session = session_of(gemini_server, clock)
    statuses = [session.generate(model, "Describe.", SCHEMA).status
                for model in (MODEL, MODEL, "gemini-2.5-pro", "gemini-9-unpriced")]  # fmt: skip
    assert statuses == ["ok", "malformed", "ok", "ok"]
    usage = session.usage()
    json.dumps(usage)  # JSON-able
    assert usage["requests"] == 5 and usage["retries"] == 1
    assert usage["replies"] == {"ok": 3, "malformed": 1, "truncated": 0, "refused": 0}
    assert (usage["prompt_tokens"], usage["output_tokens"], usage["total_tokens"]) == (3600, 320, 3920)
    flash_lite = (1500 * 0.10 + 210 * 0.40) / 1e6
    pro = (2000 * 1.25 + 100 * 10.0) / 1e6
    assert usage["cost_usd"] == round(flash_lite + pro, 6)
    assert usage["by_model"][MODEL] == {"requests": 3, "prompt_tokens": 1500, "output_tokens": 210,
                                        "cost_usd": round(flash_lite, 6)}  # fmt: skip
    assert usage["by_model"]["gemini-9-unpriced"]["cost_usd"] == 0.0
    assert usage["unpriced_models"] == ["gemini-9-unpriced"] and usage["cap_enforced"] is False
    assert "gemini-9-unpriced" in usage["note"] and "spend cap" in usage["note"]


def test_an_unpriced_model_has_no_cost(gemini_server, clock):
    reply = session_of(gemini_server, clock).generate("gemini-9-unpriced", "Describe.", SCHEMA)
    assert reply.ok and reply.cost_usd is None


def test_without_a_key_the_resource_says_why(gemini_server, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    resource = gemini(gemini_server)
    assert not resource.configured()
    assert resource.unavailable_reason() == "no Gemini API key: set GEMINI_API_KEY"
    with pytest.raises(GeminiError, match="no Gemini API key"):
        resource.session()
    other = gemini(gemini_server, api_key=dg.EnvVar("MY_OWN_GEMINI_VARIABLE"))
    assert other.unavailable_reason() == "no Gemini API key: set the variable that api_key names"
    monkeypatch.setenv("MY_OWN_GEMINI_VARIABLE", "  ")
    assert not other.configured()
    monkeypatch.setenv("MY_OWN_GEMINI_VARIABLE", SECRET)
    assert other.configured() and other.unavailable_reason() is None


def test_a_key_in_plain_text_is_refused_without_quoting_it():
    with pytest.raises(Exception) as raised:
        GeminiResource(api_key=SECRET)
    assert "plain text" in str(raised.value) and SECRET not in str(raised.value)


def test_the_key_never_shows_in_errors_or_usage(gemini_server, clock):
    echo = f"API key not valid: {SECRET}. Please pass a valid API key."
    gemini_server.queue(bad_request(echo))
    gemini_server.respond(lambda request: api_error(503, f"overloaded for key={SECRET}", "UNAVAILABLE"))
    session = session_of(gemini_server, clock, max_retries=1)
    messages = []
    for _ in range(2):
        with pytest.raises(GeminiError) as raised:
            session.generate(MODEL, "Describe.", SCHEMA)
        messages.append(str(raised.value))
    assert "API key not valid: ***" in messages[0] and "key=***" in messages[1]
    assert all(SECRET not in message for message in messages)
    assert SECRET not in json.dumps(session.usage())


def test_requests_are_spaced_by_the_interval(gemini_server, clock):
    session = session_of(gemini_server, clock, request_interval_s=0.5)
    for _ in range(3):
        session.generate(MODEL, "Describe.", SCHEMA)
    assert clock.sleeps == [0.5, 0.5]


def test_a_budget_wait_too_long_fails(gemini_server, clock):
    session = session_of(gemini_server, clock, requests_per_minute=next(_limits), max_retry_wait_s=5)
    for _ in range(session.budget.per_period):
        session.budget.take()  # another run used up the minute
    with pytest.raises(GeminiError, match="request budget used up"):
        session.generate(MODEL, "Describe.", SCHEMA)
    assert gemini_server.requests == []


def test_parallel_calls_are_all_counted_once(gemini_server):
    gemini_server.respond(lambda request: ok(GOOD, prompt_tokens=1000, output_tokens=200))
    from concurrent.futures import ThreadPoolExecutor

    with gemini(gemini_server, max_workers=4).session() as session, ThreadPoolExecutor(session.workers) as pool:
        replies = list(pool.map(lambda i: session.generate(MODEL, f"Describe {i}.", SCHEMA), range(40)))
    assert session.workers == 4 and all(reply.ok for reply in replies)
    assert len(gemini_server.requests) == 40
    usage = session.usage()
    assert (usage["requests"], usage["replies"]["ok"], usage["prompt_tokens"]) == (40, 40, 40_000)
    assert usage["cost_usd"] == round(40 * 0.00018, 6)


def test_the_parallel_spend_cap_counts_requests_in_flight(gemini_server):
    """With requests in flight, each counts at the average cost, so a pool can't overshoot by a whole batch."""
    release = threading.Event()

    def slow(request):
        release.wait(10)
        return ok(GOOD, prompt_tokens=1000, output_tokens=200)

    gemini_server.queue(ok(GOOD, prompt_tokens=1000, output_tokens=200))
    session = gemini(gemini_server, max_spend_usd=0.0008).session()
    session.generate(MODEL, "Describe.", SCHEMA)  # $0.00018 spent: the average is known
    gemini_server.respond(slow)
    outcomes: list = []

    def call():
        try:
            outcomes.append(session.generate(MODEL, "Describe.", SCHEMA).status)
        except SpendCapReached:
            outcomes.append("capped")

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    while len(outcomes) < 3:  # 0.00018 + 3 x 0.00018 in flight <= 0.0008; a 4th would pass it
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["capped"] * 3 + ["ok"] * 3


def test_importing_the_resource_loads_neither_the_sdk_nor_pil():
    code = "import sys, resources.gemini; print(sorted({'google.genai', 'PIL', 'httpx2', 'httpx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- pure helpers


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [((2000, 1000), 768, (768, 384)), ((1000, 2000), 768, (384, 768)), ((300, 200), 768, (300, 200)),
     ((768, 500), 768, (768, 500)), ((4000, 10), 100, (100, 1))],
)  # fmt: skip
def test_resized_jpeg_shrinks_only(size, max_side, expected):
    out = Image.open(io.BytesIO(resized_jpeg(Image.new("RGB", size), max_side, 90)))
    assert (out.format, out.size) == ("JPEG", expected)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "I;16"])
def test_resized_jpeg_converts_to_rgb(mode):
    out = Image.open(io.BytesIO(resized_jpeg(Image.new(mode, (40, 30)), 768, 90)))
    assert (out.mode, out.size) == ("RGB", (40, 30))


def test_resized_jpeg_puts_transparency_on_white_and_applies_exif_orientation():
    clear = Image.open(io.BytesIO(resized_jpeg(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), 768, 90)))
    assert min(clear.getpixel((10, 10))) > 245
    image = Image.new("RGB", (200, 100))
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert Image.open(io.BytesIO(resized_jpeg(buffer.getvalue(), 768, 90))).size == (100, 200)


@pytest.mark.parametrize(
    ("value", "schema", "problem"),
    [
        ({"a": 1}, {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}, None),
        ({"a": 1.0}, {"type": "OBJECT", "properties": {"a": {"type": "integer"}}}, None),
        ({"a": 1.5}, {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}, "$.a: expected integer"),
        ({"a": True}, {"type": "OBJECT", "properties": {"a": {"type": "NUMBER"}}}, "$.a: expected number, got a bool"),
        ({"a": None}, {"type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": True}}}, None),
        ({"a": None}, {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}, "$.a: null where a value"),
        ({"a": [{"b": "x"}]},
         {"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {"type": "OBJECT", "required": ["c"]}}}},
         "$.a[0]: missing required key 'c'"),
        ([1, 2, 3], {"type": "ARRAY", "maxItems": 2}, "$: 3 items, at most 2"),
        ([], {"type": "ARRAY", "minItems": 1}, "$: 0 items, at least 1"),
        ("x", {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}, None),
        ({"extra": 1}, {"type": "OBJECT", "properties": {}}, None),
    ],
)  # fmt: skip
def test_schema_problem(value, schema, problem):
    found = schema_problem(value, schema)
    assert found == problem if problem is None else found.startswith(problem)


def test_a_reply_with_another_finish_reason_says_so():
    assert read_reply("", "OTHER", None, True, SCHEMA) == ("malformed", None, "empty reply (finishReason OTHER)")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7s", 7.0), ("0.5s", 0.5), (" 12s ", 12.0), ({"seconds": 3, "nanos": 500_000_000}, 3.5), ("soon", None),
     (5, None), ("-1s", None)],
)  # fmt: skip
def test_duration_seconds(value, seconds):
    assert duration_seconds(value) == seconds


def test_retry_delay_is_read_from_retry_info_only():
    body = rate_limited(retry_delay_s=0.2).body
    assert retry_delay_seconds(body) == 0.2
    assert retry_delay_seconds(rate_limited(retry_delay_s=None).body) is None
    assert retry_delay_seconds({"error": {"details": "not a list"}}) is None and retry_delay_seconds("x") is None


def test_the_default_responder_follows_the_schema():
    kinds = {"type": "ARRAY", "items": {"type": "STRING", "enum": ["b"]}}
    schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}, "flag": {"type": "BOOLEAN"}, "kinds": kinds}}
    assert sample_of(schema) == {"n": 1, "flag": True, "kinds": ["b"]}
