"""Stock-photo search clients: Pexels, Unsplash and Pixabay through their public JSON APIs.

Each client keeps the photographer, license and page URL of every photo, paces its API requests with the source's
request budget (``resources.budgets``: shared through the warehouse by every run and machine when the client is
given one, else by every client of that source in the process), waits out a 429's ``Retry-After`` when it is
short, and turns every failure (an HTTP status, a refused connection, a transfer cut off or reset, a TLS error, a
malformed URL) into a ``StockPhotoError`` whose message never holds the API key.

The key itself is never configuration: ``api_key`` names the environment variable that holds it
(``dg.EnvVar(NAME)`` in code, ``{env: NAME}`` in run config, where a plain string fails validation), and it is
read only when a request is made.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, ClassVar

import dagster as dg
from pydantic import ConfigDict, Field, field_validator

from resources.budgets import BudgetExceeded, SharedBudget
from resources.secrets import EnvVarName, env_var_name, only_env_var, scrub_secret, without_credentials
from resources.warehouse import Warehouse

USER_AGENT = "visual-mining/0.1 (+https://github.com/visual-mining)"
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a photo larger than this is refused before it fills memory
# a transfer that breaks off mid-reply is worth another attempt, like a 5xx (RemoteDisconnected is a reset too)
_INTERRUPTED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError)


class StockPhotoError(RuntimeError):
    """A search or download that failed; the message is the reason recorded (never the key)."""


def shown_url(url: str) -> str:
    """A URL as a message shows it: user and password masked, at most 200 characters."""
    return without_credentials(url)[:200]


def _is_http_url(url: str) -> bool:
    """Whether urllib can send this URL to an http(s) host: no user or password in it (urllib would send them as
    the Host, and http.client quotes a bad port, password included, in its error), a port that is a number."""
    try:
        parts = urllib.parse.urlsplit(url)
        return (
            parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
            and (parts.port is None or parts.port > 0)  # .port raises ValueError when it isn't a number
        )  # fmt: skip
    except ValueError:  # also "Invalid IPv6 URL" from urlsplit
        return False


@dataclass(frozen=True)
class PhotoHit:
    """One photo a search found, with what its license requires us to keep."""

    source: str
    source_id: str
    page_url: str
    image_url: str
    photographer: str | None
    photographer_url: str | None
    license: str
    description: str | None = None
    width: int | None = None
    height: int | None = None
    download_location: str | None = None  # Unsplash: the endpoint to call when the photo is used


def retry_after_seconds(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); ``default`` when absent or unreadable."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class _Failure:
    """Why one request failed, in urllib's words (they may quote the URL: the caller scrubs them of the key)."""

    reason: str
    status: int | None = None  # the HTTP status, when the server answered
    retry_after: str | None = None
    interrupted: bool = False  # cut off or reset mid-transfer: worth another attempt


def _failure_of(error: BaseException) -> _Failure:
    """What an exception of urllib's, http.client's, ssl's or the socket's says of a failed request."""
    if isinstance(error, http.client.RemoteDisconnected):
        return _Failure("the server closed the connection without a reply (RemoteDisconnected)", interrupted=True)
    return _Failure(f"{type(error).__name__}: {error}", interrupted=isinstance(error, _INTERRUPTED))


def _fetch(url: str, headers: dict[str, str], timeout_s: float) -> bytes | _Failure:
    """One GET: the reply's body, or why there is none. Failures are returned rather than raised so that the
    caller raises its own error outside this ``except``, and no chained exception carries urllib's words (they
    may quote the URL, and with it Pixabay's key)."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            declared = "" if reply.chunked else reply.headers.get("Content-Length") or ""  # chunked: it has none
            data = reply.read(MAX_IMAGE_BYTES + 1)
    except urllib.error.HTTPError as error:
        return _Failure(f"HTTP {error.code} ({error.reason})", error.code, error.headers.get("Retry-After"))
    except urllib.error.URLError as error:  # the reason: a refused connection, DNS, TLS (certificates included)
        reason = error.reason
        return _failure_of(reason) if isinstance(reason, BaseException) else _Failure(str(reason))
    except http.client.IncompleteRead as error:  # a chunked reply cut off
        of = f" of {len(error.partial) + error.expected}" if error.expected else ""
        return _Failure(f"cut off after {len(error.partial)}{of} bytes (IncompleteRead)", interrupted=True)
    except (http.client.HTTPException, OSError, ValueError) as error:  # InvalidURL, a bad status line, a reset
        return _failure_of(error)
    if len(data) > MAX_IMAGE_BYTES:
        return _Failure(f"reply larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    if declared.isdigit() and len(data) < int(declared):
        # http.client hands back a Content-Length body cut short as it is, without IncompleteRead
        return _Failure(f"cut off after {len(data)} of {declared} bytes (IncompleteRead)", interrupted=True)
    return data


class StockPhotoSource(dg.ConfigurableResource):
    """What the three stock-photo clients share: the key from an environment variable (read when a request is
    made), pacing, retries and downloads. Subclasses build requests and read replies.

    With ``warehouse`` set, the source's budget (``requests_per_period`` in any ``period_s``) is one row of the
    warehouse shared by every run and machine, so a backfill together stays within the API's limit; without it,
    the budget is this process's.

    Retries: a 429 (within ``max_retry_wait_s``), a 5xx, and a transfer cut off or reset mid-reply are tried again
    up to ``retries`` times, each attempt taking a slot of the budget; anything else fails at once.
    """

    # pydantic would quote a refused value (a plain-text key) in its error
    model_config = ConfigDict(hide_input_in_errors=True)

    base_url: str
    api_key: EnvVarName | None = Field(
        default=None,
        description="The environment variable that holds the key: dg.EnvVar(NAME) in code, {env: NAME} in run "
        "config (plain text is refused); by default the source's own variable, e.g. PEXELS_API_KEY.",
    )
    requests_per_period: int
    period_s: float
    timeout_s: float = 30.0
    retries: int = 3  # for 429 and 5xx replies, and transfers cut off or reset
    backoff_s: float = 1.0  # first wait after a 5xx without Retry-After; doubles each attempt
    max_retry_wait_s: float = 120.0  # a longer Retry-After or budget wait fails the search instead of stalling the run
    budget_margin_s: float = 1.0  # room for a request that leaves late after its slot (see resources.budgets)
    warehouse: Warehouse | None = None  # where the request budget is shared; None: this process only

    name: ClassVar[str] = "stock"
    key_variable: ClassVar[str] = ""
    license: ClassVar[str] = ""
    max_per_page: ClassVar[int] = 30

    _only_env_var = field_validator("api_key", mode="before")(only_env_var)

    # -- what each API differs in
    def _request(self, query: str, page: int, per_page: int, key: str) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def _parse(self, payload: Any) -> tuple[list[PhotoHit], int | None]:
        """The hits of one page of results and, where the API says, the number of pages."""
        raise NotImplementedError

    # -- shared
    def _key_variable(self) -> tuple[str, str]:
        """The variable that holds the key, and how messages name it: another variable than the source's own is
        not named, as run config ``{env: {env: X}}`` would make that name the key itself."""
        name = env_var_name(self.api_key, self.key_variable)
        return name, name if name == self.key_variable else "the variable that api_key names"

    def _error(self, message: str) -> StockPhotoError:
        """The error to raise: ``message`` scrubbed of the key, wherever urllib or the server may have quoted it."""
        return StockPhotoError(scrub_secret(message, dg.EnvVar(self._key_variable()[0]).get_value()))

    def _key(self) -> str:
        name, shown = self._key_variable()
        key = (dg.EnvVar(name).get_value() or "").strip()
        if not key:
            raise self._error(f"no API key: set {shown}")
        if not key.isprintable():  # http.client would refuse the header quoting it, key and all
            raise self._error(f"the API key in {shown} holds a line break or another control character")
        return key

    def budget(self) -> SharedBudget:
        """The source's request budget: in the warehouse when the client has one, else this process's."""
        return SharedBudget(self.name, self.requests_per_period, self.period_s, warehouse=self.warehouse,
                            margin_s=self.budget_margin_s)  # fmt: skip

    def _take_slot(self) -> str | None:
        """Wait for the budget's next slot; the reason when it is too far away."""
        try:
            self.budget().acquire(max_wait=self.max_retry_wait_s)
        except BudgetExceeded as error:
            return str(error)
        return None

    def _get(self, url: str, headers: dict[str, str], what: str, paced: bool) -> bytes:
        """GET with pacing and retries; ``what`` names the request in errors (the URL may hold the key).

        Every error is raised outside an ``except`` block, so that it chains no exception of urllib's.
        """
        if not _is_http_url(url):
            raise self._error(f"{what}: not a usable http(s) URL")
        for attempt in range(self.retries + 1):
            busy = self._take_slot() if paced else None
            if busy:
                raise self._error(f"{what}: {busy}")
            outcome = _fetch(url, headers, self.timeout_s)
            if isinstance(outcome, bytes):
                return outcome
            status = outcome.status or 0
            if status in (401, 403) and paced:
                raise self._error(f"{what}: HTTP {status}: the API key was rejected; check {self._key_variable()[1]}")
            if not (status == 429 or status >= 500 or outcome.interrupted):
                raise self._error(f"{what}: {outcome.reason}")
            wait = retry_after_seconds(outcome.retry_after, default=self.backoff_s * 2.0**attempt)
            if status == 429 and paced:
                self.budget().push_back(wait)
            if attempt < self.retries and wait <= self.max_retry_wait_s:
                time.sleep(wait if not (status == 429 and paced) else 0)
                continue
            if outcome.interrupted:
                raise self._error(f"{what}: {outcome.reason}; gave up after {attempt + 1} attempts")
            label = "rate limited" if status == 429 else "server error"
            raise self._error(f"{what}: HTTP {status} ({label}) after {attempt + 1} attempts; retry after {wait:.0f} s")
        raise AssertionError("unreachable")

    def _read_page(self, body: bytes) -> tuple[list[PhotoHit], int | None] | str:
        """A page of results, or why it can't be read (returned, so that no exception of the parser's is chained
        to the error: its text quotes the reply)."""
        try:
            return self._parse(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return f"malformed JSON reply ({getattr(error, 'msg', None) or error.reason})"
        except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError) as error:
            return f"unexpected reply shape ({type(error).__name__}: {error})"

    def search(self, query: str, count: int) -> list[PhotoHit]:
        """Up to ``count`` photos for a query, over as many pages as needed.

        Raises:
            StockPhotoError: no key, a rejected key, a reply that isn't the API's JSON, or a failed request.
        """
        key = self._key()
        hits: list[PhotoHit] = []
        page = 1
        while len(hits) < count:
            per_page = min(self.max_per_page, count - len(hits))
            url, headers = self._request(query, page, max(per_page, 3), key)
            what = f"{self.name} search page {page}"
            read = self._read_page(self._get(url, headers, what, paced=True))
            if isinstance(read, str):
                raise self._error(f"{what}: {read}")
            found, pages = read
            hits += found
            if not found or len(found) < per_page or (pages is not None and page >= pages):
                break
            page += 1
        return hits[:count]

    def report_download(self, hit: PhotoHit) -> None:
        """Tell the source that a photo was used, where its guidelines ask for it (Unsplash); others: nothing."""

    def download(self, url: str) -> bytes:
        """The bytes of one image (image hosts are not paced: their limits are not the API's).

        Raises:
            StockPhotoError: the download failed.
        """
        if not _is_http_url(url):
            raise self._error(f"not an http(s) image URL: {shown_url(url)!r}")
        return self._get(url, {}, f"download {shown_url(url)}", paced=False)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


class PexelsSource(StockPhotoSource):
    """Pexels search API (https://www.pexels.com/api/): 200 requests per hour; key in ``PEXELS_API_KEY``."""

    base_url: str = "https://api.pexels.com/v1"
    requests_per_period: int = 200
    period_s: float = 3600.0
    size: str = "large2x"  # which of the photo's renditions to download ('original' for full size)

    name: ClassVar[str] = "pexels"
    key_variable: ClassVar[str] = "PEXELS_API_KEY"
    license: ClassVar[str] = "Pexels License"
    max_per_page: ClassVar[int] = 80

    def _request(self, query, page, per_page, key):
        params = urllib.parse.urlencode({"query": query, "per_page": per_page, "page": page})
        return f"{self.base_url.rstrip('/')}/search?{params}", {"Authorization": key}

    def _parse(self, payload):
        hits = [
            PhotoHit(
                source=self.name,
                source_id=str(photo["id"]),
                page_url=photo["url"],
                image_url=photo["src"].get(self.size) or photo["src"]["original"],
                photographer=_text(photo.get("photographer")),
                photographer_url=_text(photo.get("photographer_url")),
                license=self.license,
                description=_text(photo.get("alt")),
                width=photo.get("width"),
                height=photo.get("height"),
            )
            for photo in payload["photos"]
        ]
        total, per_page = payload.get("total_results"), payload.get("per_page")
        pages = -(-int(total) // int(per_page)) if total is not None and per_page else None
        return hits, pages


class UnsplashSource(StockPhotoSource):
    """Unsplash search API (https://unsplash.com/developers): 50 requests per hour on a demo key; key in
    ``UNSPLASH_ACCESS_KEY``."""

    base_url: str = "https://api.unsplash.com"
    requests_per_period: int = 50
    period_s: float = 3600.0
    size: str = "regular"  # raw, full, regular (1080 px wide), small

    name: ClassVar[str] = "unsplash"
    key_variable: ClassVar[str] = "UNSPLASH_ACCESS_KEY"
    license: ClassVar[str] = "Unsplash License"
    max_per_page: ClassVar[int] = 30

    def _request(self, query, page, per_page, key):
        params = urllib.parse.urlencode({"query": query, "per_page": per_page, "page": page})
        headers = {"Authorization": f"Client-ID {key}", "Accept-Version": "v1"}
        return f"{self.base_url.rstrip('/')}/search/photos?{params}", headers

    def _parse(self, payload):
        hits = [
            PhotoHit(
                source=self.name,
                source_id=str(photo["id"]),
                page_url=photo["links"]["html"],
                image_url=photo["urls"].get(self.size) or photo["urls"]["full"],
                photographer=_text((photo.get("user") or {}).get("name")),
                photographer_url=_text(((photo.get("user") or {}).get("links") or {}).get("html")),
                license=self.license,
                description=_text(photo.get("description") or photo.get("alt_description")),
                width=photo.get("width"),
                height=photo.get("height"),
                download_location=_text(photo["links"].get("download_location")),
            )
            for photo in payload["results"]
        ]
        pages = payload.get("total_pages")
        return hits, int(pages) if pages is not None else None

    def report_download(self, hit: PhotoHit) -> None:
        """Unsplash's API guidelines ask that a photo's ``download_location`` be called (authorised, with its
        query parameters) when the photo is used; the photographer's download count depends on it.

        Raises:
            StockPhotoError: the call failed (the photo itself is stored all the same).
        """
        if not hit.download_location:
            return
        if not _is_http_url(hit.download_location):
            raise self._error(f"not an http(s) download_location: {shown_url(hit.download_location)!r}")
        headers = {"Authorization": f"Client-ID {self._key()}", "Accept-Version": "v1"}
        self._get(hit.download_location, headers, f"unsplash download report for {hit.source_id}", paced=False)


class PixabayPhotoSource(StockPhotoSource):
    """Pixabay API (https://pixabay.com/api/docs/): 100 requests per 60 s; key in ``PIXABAY_API_KEY``.

    Pixabay takes the key in the query string: the request URL is never logged or recorded.
    """

    base_url: str = "https://pixabay.com/api/"
    requests_per_period: int = 100
    period_s: float = 60.0
    size: str = "largeImageURL"  # or webformatURL (640 px)

    name: ClassVar[str] = "pixabay"
    key_variable: ClassVar[str] = "PIXABAY_API_KEY"
    license: ClassVar[str] = "Pixabay Content License"
    max_per_page: ClassVar[int] = 200

    def _request(self, query, page, per_page, key):
        params = urllib.parse.urlencode(
            {"key": key, "q": query[:100], "image_type": "photo", "per_page": per_page, "page": page}
        )
        return f"{self.base_url}?{params}", {}

    def _parse(self, payload):
        hits = [
            PhotoHit(
                source=self.name,
                source_id=str(photo["id"]),
                page_url=photo["pageURL"],
                image_url=photo.get(self.size) or photo["webformatURL"],
                photographer=_text(photo.get("user")),
                photographer_url=(
                    f"https://pixabay.com/users/{photo['user']}-{photo['user_id']}/"
                    if photo.get("user") and photo.get("user_id")
                    else None
                ),
                license=self.license,
                description=_text(photo.get("tags")),
                width=photo.get("imageWidth"),
                height=photo.get("imageHeight"),
            )
            for photo in payload["hits"]
        ]
        return hits, None
