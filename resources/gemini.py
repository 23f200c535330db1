"""Gemini through Google's own client (``google-genai``): structured-output requests with images, paced by the
shared ``gemini`` request budget, retried on rate limits and server errors, and held to a spend cap per run.

One ``GeminiSession`` per asset run holds the client, the budget, the spend so far and the counters; it is
thread-safe, for a pool of ``session.workers`` threads:

    with gemini.session() as session:  # one per run
        reply = session.generate(gemini.description_model, prompt, schema, images=[photo])
        ...  # reply.data when reply.ok, else record reply.reason
        context.add_output_metadata({"gemini": session.usage()})

The SDK's own retries are off (``HttpRetryOptions(attempts=1)``: one HTTP request per attempt), so that a retry
takes a slot of the budget, counts in the usage and honours the reply's ``RetryInfo`` and ``Retry-After``.

The key itself is never configuration: ``api_key`` names the environment variable that holds it (by default
``GEMINI_API_KEY``), read only when a session is opened; no error message, log line or usage holds it.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import ConfigDict, Field, field_validator

from resources.budgets import BudgetExceeded, SharedBudget
from resources.gemini_replies import (
    STATUSES,
    Reply,
    error_message,
    read_reply,
    request_cost,
    resized_jpeg,
    retry_delay_seconds,
)
from resources.secrets import EnvVarName, env_var_name, only_env_var, scrub_secret
from resources.stock_photos import retry_after_seconds
from resources.warehouse import Warehouse

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GeminiError", "GeminiResource", "GeminiSession", "ModelPrice", "Reply", "SpendCapReached", "resized_jpeg"]

KEY_VARIABLE = "GEMINI_API_KEY"


def dollars(amount: float) -> str:
    """An amount in plain decimals to the millionth of a cent: ``0.00004``, not ``4e-05`` or ``0.0000``."""
    return f"{amount:.8f}".rstrip("0").rstrip(".") or "0"


class GeminiError(RuntimeError):
    """The service could not answer (a rejected request, retries used up, a budget wait too long); the message is
    the reason to record, never the key. ``status``: the HTTP status of a request the API rejected."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def refuses_every_request(self) -> bool:
        """The key was refused (401, 403) or the model does not exist (404): no other request can do better."""
        return self.status in (401, 403, 404)


class SpendCapReached(GeminiError):
    """The run's spend cap would be passed by another request; nothing was sent."""


class ModelPrice(dg.Config):
    """A model's list price in US dollars per million tokens (output includes thinking tokens)."""

    input_per_million: float
    output_per_million: float


def default_prices() -> dict[str, ModelPrice]:
    """Google's paid-tier prices for text and image input up to 200k tokens (https://ai.google.dev/pricing)."""
    table = {"gemini-2.5-flash-lite": (0.10, 0.40), "gemini-2.5-flash": (0.30, 2.50),
             "gemini-2.5-pro": (1.25, 10.00), "gemini-2.0-flash": (0.10, 0.40)}  # fmt: skip
    return {model: ModelPrice(input_per_million=i, output_per_million=o) for model, (i, o) in table.items()}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a request that never got a reply (refused, reset, timed out): the SDK sends through
    httpx2 when it is installed, else httpx."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except ImportError:
            continue
    return tuple(found)


class GeminiResource(dg.ConfigurableResource):
    """Gemini's API (Google AI Studio keys) for describing and categorising images.

    Retries: a 429, a 5xx, a refused or reset connection and a timeout are tried again up to ``max_retries``
    times, after ``retry_backoff_seconds`` doubling per attempt (at most ``max_retry_wait_s``), or after the 429's
    ``RetryInfo`` delay or ``Retry-After`` when longer; each attempt takes a slot of the shared ``gemini`` budget
    (``requests_per_minute``, in the warehouse when given one), and a 429 holds the budget back for every run.
    Other 4xx fail at once.
    """

    # pydantic would quote a refused value (a plain-text key) in its error
    model_config = ConfigDict(hide_input_in_errors=True)

    api_key: EnvVarName | None = Field(
        default=None,
        description="The environment variable that holds the key: dg.EnvVar(NAME) in code, {env: NAME} in run "
        "config (plain text is refused); by default GEMINI_API_KEY.",
    )
    base_url: str | None = Field(default=None, description="The API's address; None: Google's.")
    description_model: str = "gemini-2.5-flash-lite"
    category_model: str = "gemini-2.5-flash-lite"
    max_image_side: int = 768  # pixels of an image's long side as sent (never enlarged)
    jpeg_quality: int = 90
    max_retries: int = 4
    retry_backoff_seconds: float = 2.0
    max_retry_wait_s: float = 120.0  # a longer wait (429 or budget) fails the request instead of stalling the run
    request_interval_s: float = 0.0  # least time between two requests of one session
    max_workers: int = 4  # requests in flight at once (the caller's thread pool)
    requests_per_minute: int = 1000
    budget_margin_s: float = 1.0  # room for a request that leaves late after its slot (see resources.budgets)
    max_spend_usd: float | None = Field(default=5.0, description="Spend cap per run (per session); None or 0: none.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=default_prices, description="Prices by model; set in run config, it replaces the whole table."
    )
    timeout_s: float = 60.0
    max_output_tokens: int = 1024
    temperature: float = 0.0
    warehouse: Warehouse | None = None  # where the request budget is shared; None: this process only

    _only_env_var = field_validator("api_key", mode="before")(only_env_var)

    def _key_variable(self) -> tuple[str, str]:
        """The variable that holds the key, and how messages name it: another variable than the default is not
        named, as run config ``{env: {env: X}}`` would make that name the key itself."""
        name = env_var_name(self.api_key, KEY_VARIABLE)
        return name, name if name == KEY_VARIABLE else "the variable that api_key names"

    def _key(self) -> str:
        return (dg.EnvVar(self._key_variable()[0]).get_value() or "").strip()

    def unavailable_reason(self) -> str | None:
        """Why no request can be made (no key, an unusable key), or None when the resource is configured."""
        key, shown = self._key(), self._key_variable()[1]
        if not key:
            return f"no Gemini API key: set {shown}"
        if not key.isprintable():  # an HTTP header can't carry it
            return f"the Gemini API key in {shown} holds a line break or another control character"
        return None

    def configured(self) -> bool:
        """Whether a usable key is set."""
        return self.unavailable_reason() is None

    def session(self, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time
                ) -> GeminiSession:  # fmt: skip
        """A session for one run: its client, budget, spend and counters.

        Args:
            sleep: How the session waits (retries, pacing, the budget); injectable for tests.
            clock: Unix seconds, for pacing and the budget; injectable for tests.

        Raises:
            GeminiError: no usable key.
        """
        reason = self.unavailable_reason()
        if reason:
            raise GeminiError(reason)
        return GeminiSession(self, self._key(), sleep, clock)


class _Failure:
    """Why one attempt got no reply, read inside the ``except`` and raised outside it, so that no chained
    exception (the SDK's words, the reply's body) travels with the error."""

    def __init__(self, reason: str, status: int | None = None, retryable: bool = False, wait_s: float = 0.0):
        self.reason, self.status, self.retryable, self.wait_s = reason, status, retryable, wait_s


class GeminiSession:
    """One run's use of Gemini: requests, their spend against the cap, and the usage to report. Thread-safe."""

    def __init__(self, resource: GeminiResource, key: str, sleep: Callable[[float], None],
                 clock: Callable[[], float]):  # fmt: skip
        self.resource, self._key, self._sleep, self._clock = resource, key, sleep, clock
        # the SDK and its client wait for the first request: a run with nothing to send never imports them
        self._client: Any = None
        self._transport_errors: tuple[type[BaseException], ...] = ()
        self.budget = SharedBudget("gemini", per_period=resource.requests_per_minute, period_s=60.0,
                                   warehouse=resource.warehouse, margin_s=resource.budget_margin_s,
                                   clock=clock, sleep=sleep)  # fmt: skip
        cap = resource.max_spend_usd
        self.spend_cap_usd: float | None = cap if cap else None
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._in_flight = 0
        self._priced_replies = 0
        self._cap_reached = False
        self._requests = self._retries = self._errors = self._refused_by_cap = 0
        self._replies = dict.fromkeys(STATUSES, 0)
        self._by_model: dict[str, dict[str, Any]] = {}
        self._unpriced: set[str] = set()

    def close(self) -> None:
        """Close the client's connections, if a request opened them (the session is done with)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _sdk_client(self) -> Any:
        """The google-genai client, built on the first request: one per session, its own retries off."""
        with self._lock:
            if self._client is None:
                from google import genai
                from google.genai import types

                options = types.HttpOptions(
                    base_url=self.resource.base_url,
                    timeout=max(1, round(self.resource.timeout_s * 1000)),  # milliseconds
                    retry_options=types.HttpRetryOptions(attempts=1),  # one request per attempt: the retries are ours
                )
                self._transport_errors = _transport_errors()
                self._client = genai.Client(api_key=self._key, vertexai=False, http_options=options)
            return self._client

    def __enter__(self) -> GeminiSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def workers(self) -> int:
        """How many requests the caller may have in flight at once."""
        return max(1, self.resource.max_workers)

    def _error(self, message: str, kind: type[GeminiError] = GeminiError, status: int | None = None) -> GeminiError:
        return kind(scrub_secret(message, self._key), status)

    def _spent(self) -> float:
        return sum(model["cost_usd"] for model in self._by_model.values())

    def _enter(self) -> None:
        """Count a request in flight, unless the spend so far, with the average cost of a reply for this request
        and each one in flight, would pass the cap."""
        with self._lock:
            cap = self.spend_cap_usd
            if cap is not None:
                spent = self._spent()
                average = spent / self._priced_replies if self._priced_replies else 0.0
                if self._cap_reached or spent + average * (self._in_flight + 1) > cap:
                    self._cap_reached = True
                    self._refused_by_cap += 1
                    raise self._error(
                        f"spend cap of ${dollars(cap)} per run reached (${dollars(spent)} spent)", SpendCapReached
                    )
            self._in_flight += 1

    def _pace(self) -> None:
        """Wait for a slot of the shared budget, then for ``request_interval_s`` after this session's last."""
        try:
            self.budget.acquire(max_wait=self.resource.max_retry_wait_s)
        except BudgetExceeded as error:
            raise self._error(f"Gemini {error}") from None
        interval = self.resource.request_interval_s
        if interval > 0:
            with self._lock:
                now = self._clock()
                start = max(now, self._next_start)
                self._next_start = start + interval
            if start > now:
                self._sleep(start - now)

    def generate(
        self,
        model: str,
        prompt: str,
        schema: dict,
        images: Sequence[Image.Image | bytes] = (),
        reply_schema: dict | None = None,
    ) -> Reply:
        """One structured-output request: the prompt after the images (each resized and sent as inline JPEG), the
        reply asked for as JSON of ``schema`` (OpenAPI-style: ``{"type": "OBJECT", "properties": ..., "required":
        [...]}``) and read into a ``Reply`` whatever it holds, checked against ``reply_schema`` (default: ``schema``;
        a looser one lets the caller judge values itself, such as names outside an enum).

        Raises:
            SpendCapReached: the run's spend cap would be passed (nothing is sent).
            GeminiError: no reply: retries used up, a rejected request (4xx), a budget wait too long.
            PIL.UnidentifiedImageError: an image given as bytes isn't one.
        """
        from google.genai import types

        settings = self.resource
        self._enter()
        try:
            parts = [types.Part.from_bytes(data=resized_jpeg(image, settings.max_image_side, settings.jpeg_quality),
                                           mime_type="image/jpeg") for image in images]  # fmt: skip
            config = types.GenerateContentConfig(
                response_mime_type="application/json",
                response_schema=schema,
                max_output_tokens=settings.max_output_tokens,
                temperature=settings.temperature,
            )
            return self._send(model, [*parts, prompt], reply_schema or schema, config)
        except GeminiError:
            with self._lock:
                self._errors += 1
            raise
        finally:
            with self._lock:
                self._in_flight -= 1

    def _send(self, model: str, contents: list, schema: dict, config: Any) -> Reply:
        settings = self.resource
        for attempt in range(settings.max_retries + 1):
            self._pace()
            with self._lock:
                self._requests += 1
                self._model_usage(model)["requests"] += 1
            outcome = self._attempt(model, contents, config, attempt)
            if not isinstance(outcome, _Failure):
                return self._reply(model, outcome, schema, attempt + 1)
            what = f"Gemini {model}: {outcome.reason}"
            if outcome.status == 429:  # every session of the budget holds back, whether this one retries or not
                self.budget.push_back(outcome.wait_s)
            if not outcome.retryable:
                raise self._error(what, status=outcome.status)
            if attempt == settings.max_retries:
                raise self._error(f"{what}; gave up after {attempt + 1} attempts")
            if outcome.wait_s > settings.max_retry_wait_s:
                raise self._error(f"{what}; asked to retry after {outcome.wait_s:.0f} s, more than max_retry_wait_s")
            with self._lock:
                self._retries += 1
            if outcome.status != 429:  # after a 429 the budget's next slot waits it out
                self._sleep(outcome.wait_s)
        raise AssertionError("unreachable")

    def _attempt(self, model: str, contents: list, config: Any, attempt: int) -> Any:
        """One HTTP request: the SDK's reply, or why there is none."""
        from google.genai import errors

        settings = self.resource
        backoff = min(settings.retry_backoff_seconds * 2.0**attempt, settings.max_retry_wait_s)
        client = self._sdk_client()  # built before the try: the transport errors it catches are known from then
        try:
            return client.models.generate_content(model=model, contents=contents, config=config)
        except errors.APIError as error:
            status, body = int(error.code or 0), error.details
            message = f"HTTP {status} {error.status or ''}".rstrip() + f": {error_message(body)}"
            if status == 429:
                headers = getattr(error.response, "headers", None) or {}
                delay = max(backoff, retry_delay_seconds(body) or 0.0,
                            retry_after_seconds(headers.get("Retry-After"), default=0.0))  # fmt: skip
                return _Failure(message, status, retryable=True, wait_s=delay)
            if status in (401, 403):
                message += f" (the API key was refused; check {settings._key_variable()[1]})"
            return _Failure(message, status, retryable=status >= 500, wait_s=backoff)
        except errors.UnknownApiResponseError:
            return _Failure("a reply that is not the API's JSON", retryable=True, wait_s=backoff)
        except self._transport_errors as error:
            return _Failure(f"no reply ({type(error).__name__}: {error})", retryable=True, wait_s=backoff)

    def _model_usage(self, model: str) -> dict[str, Any]:
        return self._by_model.setdefault(model, {"requests": 0, "prompt_tokens": 0, "output_tokens": 0,
                                                 "cost_usd": 0.0})  # fmt: skip

    def _reply(self, model: str, response: Any, schema: dict, attempts: int) -> Reply:
        """The ``Reply`` of the SDK's response, counted in the usage."""
        candidates = response.candidates or []
        first = candidates[0] if candidates else None
        parts = (first.content.parts if first and first.content else None) or []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        finish = getattr(first.finish_reason, "name", first.finish_reason) if first and first.finish_reason else None
        feedback = response.prompt_feedback
        block = feedback.block_reason if feedback and feedback.block_reason else None
        status, data, reason = read_reply(text, finish, getattr(block, "name", block), bool(candidates), schema)
        usage = response.usage_metadata
        prompt_tokens = (usage.prompt_token_count or 0) if usage else 0
        output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
        price = self.resource.prices.get(model)
        cost = (request_cost(prompt_tokens, output_tokens, price.input_per_million, price.output_per_million)
                if price else None)  # fmt: skip
        with self._lock:
            self._replies[status] += 1
            counted = self._model_usage(model)
            counted["prompt_tokens"] += prompt_tokens
            counted["output_tokens"] += output_tokens
            if cost is None:
                self._unpriced.add(model)
            else:
                counted["cost_usd"] += cost
                self._priced_replies += 1
        return Reply(status=status, data=data, text=text, reason=reason, model=model, prompt_tokens=prompt_tokens,
                     output_tokens=output_tokens, cost_usd=cost, response_id=response.response_id,
                     attempts=attempts)  # fmt: skip

    def usage(self) -> dict[str, Any]:
        """What the session used, JSON-able, for the run's metadata. ``cap_enforced`` is False when some model had
        no price: its replies count no cost, so the cap can't hold them back."""
        with self._lock:
            by_model = {name: {**counted, "cost_usd": round(counted["cost_usd"], 9)}
                        for name, counted in sorted(self._by_model.items())}  # fmt: skip
            prompt = sum(counted["prompt_tokens"] for counted in by_model.values())
            output = sum(counted["output_tokens"] for counted in by_model.values())
            unpriced = sorted(self._unpriced)
            note = (
                f"no price for {', '.join(unpriced)}: costs $0 here, the spend cap can't hold it back"
                if unpriced
                else None
            )
            return {
                "requests": self._requests,
                "replies": dict(self._replies),
                "retries": self._retries,
                "errors": self._errors,
                "refused_by_cap": self._refused_by_cap,
                "prompt_tokens": prompt,
                "output_tokens": output,
                "total_tokens": prompt + output,
                "cost_usd": round(self._spent(), 9),
                "by_model": by_model,
                "spend_cap_usd": self.spend_cap_usd,
                "cap_reached": self._cap_reached,
                "cap_enforced": self.spend_cap_usd is not None and not unpriced,
                "unpriced_models": unpriced,
                "note": note,
            }
