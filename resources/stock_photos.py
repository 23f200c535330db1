"""Stock-photo search clients: Pexels, Unsplash and Pixabay through their public JSON APIs.

Each client keeps the photographer, license and page URL of every photo, paces its API requests with the source's
request budget (``resources.budgets``: shared through the warehouse by every run and machine when the client is
given one, else by every client of that source in the process), waits out a 429's ``Retry-After`` when it is
short, and turns every failure into a ``StockPhotoError`` whose message never holds the API key.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from resources.budgets import BudgetExceeded, SharedBudget
from resources.warehouse import Warehouse

USER_AGENT = "visual-mining/0.1 (+https://github.com/visual-mining)"
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a photo larger than this is refused before it fills memory


class StockPhotoError(RuntimeError):
    """A search or download that failed; the message is the reason recorded (never the key)."""


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


class StockPhotoSource(dg.ConfigurableResource):
    """What the three stock-photo clients share: the key from an environment variable (read when a search runs,
    through ``dg.EnvVar``), pacing, retries and downloads. Subclasses build requests and read replies.

    With ``warehouse`` set, the source's budget (``requests_per_period`` in any ``period_s``) is one row of the
    warehouse shared by every run and machine, so a backfill together stays within the API's limit; without it,
    the budget is this process's.
    """

    base_url: str
    api_key: str | None = Field(default=None, description="set with dg.EnvVar; by default the source's variable")
    requests_per_period: int
    period_s: float
    timeout_s: float = 30.0
    retries: int = 3  # for 429 and 5xx replies
    backoff_s: float = 1.0  # first wait after a 5xx without Retry-After; doubles each attempt
    max_retry_wait_s: float = 120.0  # a longer Retry-After or budget wait fails the search instead of stalling the run
    budget_margin_s: float = 1.0  # room for a request that leaves late after its slot (see resources.budgets)
    warehouse: Warehouse | None = None  # where the request budget is shared; None: this process only

    name: ClassVar[str] = "stock"
    key_variable: ClassVar[str] = ""
    license: ClassVar[str] = ""
    max_per_page: ClassVar[int] = 30

    # -- what each API differs in
    def _request(self, query: str, page: int, per_page: int, key: str) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def _parse(self, payload: Any) -> tuple[list[PhotoHit], int | None]:
        """The hits of one page of results and, where the API says, the number of pages."""
        raise NotImplementedError

    # -- shared
    def _key(self) -> str:
        key = self.api_key or dg.EnvVar(self.key_variable).get_value()
        if not key or not key.strip():
            raise StockPhotoError(f"no API key: set {self.key_variable}")
        return key.strip()

    def budget(self) -> SharedBudget:
        """The source's request budget: in the warehouse when the client has one, else this process's."""
        return SharedBudget(self.name, self.requests_per_period, self.period_s, warehouse=self.warehouse,
                            margin_s=self.budget_margin_s)  # fmt: skip

    def _get(self, url: str, headers: dict[str, str], what: str, paced: bool) -> bytes:
        """GET with pacing and retries; ``what`` names the request in errors (the URL may hold the key)."""
        for attempt in range(self.retries + 1):
            if paced:
                try:
                    self.budget().acquire(max_wait=self.max_retry_wait_s)
                except BudgetExceeded as error:
                    raise StockPhotoError(f"{what}: {error}") from None
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    data = reply.read(MAX_IMAGE_BYTES + 1)
                if len(data) > MAX_IMAGE_BYTES:
                    raise StockPhotoError(f"{what}: reply larger than {MAX_IMAGE_BYTES // 2**20} MiB")
                return data
            except urllib.error.HTTPError as error:
                status = error.code
                if status in (401, 403) and paced:
                    raise StockPhotoError(
                        f"{what}: HTTP {status}: the API key was rejected; check {self.key_variable}"
                    ) from None
                if status == 429 or status >= 500:
                    wait = retry_after_seconds(error.headers.get("Retry-After"), default=self.backoff_s * 2.0**attempt)
                    if status == 429 and paced:
                        self.budget().push_back(wait)
                    if attempt < self.retries and wait <= self.max_retry_wait_s:
                        time.sleep(wait if not (status == 429 and paced) else 0)
                        continue
                    label = "rate limited" if status == 429 else "server error"
                    raise StockPhotoError(
                        f"{what}: HTTP {status} ({label}) after {attempt + 1} attempts; retry after {wait:.0f} s"
                    ) from None
                raise StockPhotoError(f"{what}: HTTP {status} ({error.reason})") from None
            except urllib.error.URLError as error:
                raise StockPhotoError(f"{what}: {error.reason}") from None
            except (TimeoutError, ConnectionError) as error:
                raise StockPhotoError(f"{what}: {type(error).__name__}: {error}") from None
        raise AssertionError("unreachable")

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
            body = self._get(url, headers, f"{self.name} search page {page}", paced=True)
            try:
                found, pages = self._parse(json.loads(body))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise StockPhotoError(f"{self.name} search page {page}: malformed JSON reply ({error.msg})") from None
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise StockPhotoError(
                    f"{self.name} search page {page}: unexpected reply shape ({type(error).__name__}: {error})"
                ) from None
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
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise StockPhotoError(f"not an http(s) image URL: {url[:200]!r}")
        return self._get(url, {}, f"download {url[:200]}", paced=False)


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
        if urllib.parse.urlparse(hit.download_location).scheme not in ("http", "https"):
            raise StockPhotoError(f"not an http(s) download_location: {hit.download_location[:200]!r}")
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
