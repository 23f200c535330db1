"""What a Gemini request and reply need, without the SDK or Dagster: an image as the JPEG that is sent, a reply's
status (ok, malformed, truncated, refused) and reason, a check of its JSON against the OpenAPI-style schema that
was asked for, its cost, and how long a 429 asks the caller to wait.

The schema subset checked is the one Gemini's structured output takes: ``type`` (OBJECT, ARRAY, STRING, NUMBER,
INTEGER, BOOLEAN, in any case), ``properties``, ``required``, ``items``, ``enum``, ``nullable``, ``anyOf``,
``minItems`` and ``maxItems``; anything else in the schema is not checked.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from PIL import Image

Status = Literal["ok", "malformed", "truncated", "refused"]
STATUSES: tuple[Status, ...] = ("ok", "malformed", "truncated", "refused")

# finish reasons that mean the model stopped rather than answer (Gemini's FinishReason names)
REFUSAL_REASONS = frozenset(
    {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "RECITATION", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"}
)
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@dataclass(frozen=True)
class Reply:
    """One structured-output request's outcome. ``data`` is set only when ``status`` is ``"ok"``; ``reason`` says
    why otherwise. Tokens and cost count whatever the status (a malformed reply is billed too); ``output_tokens``
    includes thinking tokens; ``cost_usd`` is None for a model without a price."""

    status: Status
    data: dict | None
    text: str
    reason: str | None
    model: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    response_id: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def request_cost(prompt_tokens: int, output_tokens: int, input_per_million: float, output_per_million: float) -> float:
    """US dollars for one request at a model's prices per million tokens (output tokens include thinking)."""
    return (prompt_tokens * input_per_million + output_tokens * output_per_million) / 1_000_000


def read_reply(text: str, finish_reason: str | None, block_reason: str | None, has_candidates: bool,
               schema: Mapping[str, Any]) -> tuple[Status, dict | None, str | None]:  # fmt: skip
    """The status, data and reason of a reply from what it holds.

    Args:
        text: The reply's text (its first candidate's text parts, thoughts left out); may be empty.
        finish_reason: The first candidate's ``finishReason`` name (``STOP``, ``MAX_TOKENS``, ``SAFETY``...).
        block_reason: ``promptFeedback.blockReason``, when the prompt itself was blocked.
        has_candidates: Whether the reply had any candidate.
        schema: The response schema the request asked for.
    """
    if block_reason:
        return "refused", None, f"refused by the model: the prompt was blocked ({block_reason})"
    if not has_candidates:
        return "refused", None, "refused by the model: the reply has no candidates"
    if finish_reason in REFUSAL_REASONS:
        return "refused", None, f"refused by the model: {finish_reason}"
    if finish_reason == "MAX_TOKENS":
        return "truncated", None, "reply cut off at the output token limit (MAX_TOKENS)"
    stopped = "" if finish_reason in (None, "STOP", "FINISH_REASON_UNSPECIFIED") else f" (finishReason {finish_reason})"
    if not text.strip():
        return "malformed", None, f"empty reply{stopped}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        body = text.rstrip()
        # the JSON is fine as far as it goes: it ends inside a string, or where more was expected
        if body[:1] in ("{", "[") and (error.msg.startswith("Unterminated string") or error.pos >= len(body)):
            return "truncated", None, f"reply cut off mid-JSON: {error.msg} at char {error.pos}{stopped}"
        return "malformed", None, f"reply is not JSON: {error.msg} at char {error.pos}{stopped}"
    problem = schema_problem(data, schema)
    if problem is None and not isinstance(data, dict):
        problem = f"$: expected a JSON object, got {_kind(data)}"
    if problem:
        return "malformed", None, f"reply does not match the schema: {problem}{stopped}"
    return "ok", data, None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}.get(type(value), "a number")


def schema_problem(value: Any, schema: Mapping[str, Any], path: str = "$") -> str | None:
    """The first way ``value`` breaks ``schema`` (as ``"$.labels[0]: ..."``), or None when it matches."""
    if value is None:
        return None if schema.get("nullable") else f"{path}: null where a value is required"
    if schema.get("anyOf"):
        problems = [schema_problem(value, option, path) for option in schema["anyOf"]]
        return None if None in problems else problems[0]
    kind = str(schema.get("type") or "").upper()
    expected = {
        "OBJECT": isinstance(value, dict),
        "ARRAY": isinstance(value, list),
        "STRING": isinstance(value, str),
        "BOOLEAN": isinstance(value, bool),
        "NUMBER": isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        "INTEGER": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
    }.get(kind, True)  # no type (or one this subset doesn't know): anything goes
    if not expected:
        return f"{path}: expected {kind.lower()}, got {_kind(value)}"
    if "enum" in schema and schema["enum"] and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {list(schema['enum'])!r}"
    if isinstance(value, dict):
        for key in schema.get("required") or ():
            if key not in value:
                return f"{path}: missing required key {key!r}"
        for key, subschema in (schema.get("properties") or {}).items():
            if key in value:
                problem = schema_problem(value[key], subschema, f"{path}.{key}")
                if problem:
                    return problem
    if isinstance(value, list):
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None and len(value) < int(low):
            return f"{path}: {len(value)} items, at least {low} required"
        if high is not None and len(value) > int(high):
            return f"{path}: {len(value)} items, at most {high} allowed"
        for index, item in enumerate(value):
            problem = schema_problem(item, schema.get("items") or {}, f"{path}[{index}]")
            if problem:
                return problem
    return None


def duration_seconds(value: Any) -> float | None:
    """Seconds of a protobuf Duration as JSON writes it (``"7s"``, ``"0.5s"``) or as an object
    (``{"seconds": 7, "nanos": 0}``); None when unreadable."""
    try:
        if isinstance(value, str) and value.strip().endswith("s"):
            seconds = float(value.strip()[:-1])
        elif isinstance(value, Mapping):
            seconds = float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
        else:
            return None
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_delay_seconds(error_body: Any) -> float | None:
    """The ``retryDelay`` of the ``google.rpc.RetryInfo`` in an error reply's ``error.details``, in seconds."""
    error = error_body.get("error", error_body) if isinstance(error_body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and detail.get("@type") == _RETRY_INFO:
            return duration_seconds(detail.get("retryDelay"))
    return None


def error_message(error_body: Any) -> str:
    """The ``error.message`` of an error reply (else the body as text), at most 300 characters."""
    error = error_body.get("error", error_body) if isinstance(error_body, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    return str(message if message else error_body)[:300]


def resized_jpeg(image: Image.Image | bytes, max_side: int = 768, quality: int = 90) -> bytes:
    """An image as JPEG bytes, upright (its EXIF orientation applied), in RGB (transparency on white), with its
    long side at most ``max_side`` (never enlarged).

    Raises:
        PIL.UnidentifiedImageError: ``image`` is bytes that PIL can't read as an image.
    """
    from PIL import Image, ImageOps

    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(image))
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" or image.mode in ("LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
