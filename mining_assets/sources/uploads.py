"""Uploads: photos and videos of a keyword in an S3 bucket (one folder per keyword) or a local folder, named by
their location until fetched, then told apart by content (``inspect_media``)."""

import contextlib
import dataclasses
import functools
import os
import urllib.parse
import warnings
from collections.abc import Callable
from pathlib import Path

from mining_assets.keywords import register_keywords
from mining_assets.partitions import keyword_slug, normalize_keyword
from mining_assets.video.probe import MediaError, VideoProbe, probe_video
from mining_assets.vision.images import MIN_SIDE, ImageError, decode_image, photo_suffix
from resources.uploads import UploadBucket, UploadError
from resources.warehouse import Warehouse

_VIDEO_SUFFIXES = {"mov": ".mp4", "matroska": ".mkv", "avi": ".avi", "mpegts": ".ts", "mpeg": ".mpg", "flv": ".flv",
                   "ogg": ".ogv", "asf": ".wmv"}  # fmt: skip


class Rejected(Exception):
    """An item that is not stored; the message is the reason, media_type what its content turned out to be."""

    def __init__(self, reason: str, media_type: str | None = None):
        super().__init__(reason)
        self.media_type = media_type


@dataclasses.dataclass(frozen=True)
class Item:
    source: str  # s3 or local
    location: str  # s3://bucket/key or file:///path, as found: recorded, never used to build a storage key
    open: Callable[[], contextlib.AbstractContextManager[Path]]  # a local file holding the item's bytes


@dataclasses.dataclass(frozen=True)
class Media:
    media_type: str  # photo or video
    suffix: str
    width: int
    height: int
    probe: VideoProbe | None = None


def image_format(path: Path) -> str | None:
    """The image format Pillow recognizes from the file's header (nothing is decoded), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                fmt = image.format or "image"
    except Image.DecompressionBombError:
        return "image"  # an image too large to decode: decode_image gives the reason
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None
    return None if fmt == "MPEG" else fmt  # Pillow names MPEG video streams but can't decode them


def inspect_media(path: Path, min_side: int = MIN_SIDE) -> Media:
    """Photo or video, by content: what Pillow recognizes is a photo, what PyAV can decode is a video.

    Pillow goes first because FFmpeg also opens a JPEG or PNG as a one-frame "video".

    Raises:
        Rejected: neither an image nor a video, or an image that can't be used (too small, truncated, a bomb).
    """
    fmt = image_format(path)
    if fmt:
        try:
            image = decode_image(path.read_bytes(), min_side)
        except ImageError as error:
            raise Rejected(str(error), "photo") from error
        return Media("photo", photo_suffix(fmt), image.width, image.height)
    try:
        probe = probe_video(path)
    except MediaError as error:
        raise Rejected(f"neither an image nor a video: {error}") from error
    import av

    with av.open(str(path)) as opened:  # probe_video just opened it
        container = opened.format.name
    if container == "image2" or container.endswith("_pipe"):
        raise Rejected(f"neither an image nor a video: a still image Pillow does not read ({container})")
    return Media("video", _VIDEO_SUFFIXES.get(container.split(",")[0], ".video"), probe.width, probe.height, probe)


def local_items(folder: str) -> list[Item]:
    """Every visible file under a folder, recursively (hidden files and folders skipped), in path order."""
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise UploadError(f"local folder not found: {root}")
    paths: list[Path] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        paths += [Path(directory) / name for name in names if not name.startswith(".")]
    return [Item("local", path.as_uri(), functools.partial(contextlib.nullcontext, path))
            for path in sorted(paths) if path.is_file()]  # fmt: skip


def folder_belongs(folder: str | None, partition_key: str, keyword: str) -> bool:
    """Whether an upload folder's text is this partition's keyword (a refused folder belongs to none)."""
    try:
        text = normalize_keyword(folder) if folder is not None else None
    except ValueError:
        return False
    return text is not None and (keyword_slug(text) == partition_key or text == keyword)


def s3_items(
    uploads: UploadBucket, keys: list[str], partition_key: str, keyword: str
) -> tuple[list[Item], list[tuple[str, str]], set[str]]:
    """The bucket's objects of these keys that belong to this partition's folders.

    Returns:
        the items, (item, reason) for keys refused, and the names under which errors of the bucket itself are
        recorded (so that a run that looked at the bucket again replaces them).
    """
    if not uploads.configured:
        skipped = [("s3", f"no upload bucket configured: {len(keys)} S3 keys skipped")] if keys else []
        return [], skipped, {"s3"} if keys else set()
    where = uploads.location(uploads.root)

    def belongs(key: str) -> bool:
        return folder_belongs(uploads.keyword_folder(key), partition_key, keyword)

    wanted = list(dict.fromkeys(keys))
    errors = [(uploads.location(key), f"not an upload of this keyword (not in a {where}<keyword>/ folder)")
              for key in wanted if not belongs(key)]  # fmt: skip
    items = [Item("s3", uploads.location(key), functools.partial(uploads.download, key)) for key in wanted
             if belongs(key)]  # fmt: skip
    return items, errors, {"s3", where}


def remember_keyword(warehouse: Warehouse, partition_key: str, text: str | None) -> str | None:
    """Record the keyword text of a partition new to the keywords table; returns why it was not, if it was not."""
    if not text:
        return None
    try:
        keyword = normalize_keyword(text)
    except ValueError as error:
        return f"keyword {text!r} refused: {error}"
    if keyword_slug(keyword) != partition_key:
        return f"keyword {keyword!r} is partition {keyword_slug(keyword)!r}, not {partition_key!r}: not recorded"
    _, rejected = register_keywords(warehouse, [keyword])
    return rejected[0][1] if rejected else None


def local_path(location: str) -> Path:
    """The file a ``file://`` location names: the inverse of Path.as_uri (which quotes the file system's bytes), so
    a name that is not UTF-8 opens again."""
    return Path(os.fsdecode(urllib.parse.unquote_to_bytes(urllib.parse.urlparse(location).path)))


def local_version(location: str) -> str | None:
    """A local file's counterpart of an ETag: its size and modification time (``<bytes>-<mtime ns>``); None when it
    can't be read. A file rewritten in place gets a new version."""
    try:
        stat = local_path(location).stat()
    except (OSError, ValueError):
        return None
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def item_for(uploads: UploadBucket, source: str, location: str) -> Item:
    """The item a registry row names, ready to open: a file under ``file://`` or an object of the upload bucket.

    Raises:
        UploadError: an S3 location outside the configured bucket, or no bucket configured.
    """
    if source == "local":
        return Item("local", location, functools.partial(contextlib.nullcontext, local_path(location)))
    prefix = f"s3://{uploads.bucket}/"
    if not uploads.configured or not location.startswith(prefix):
        raise UploadError(f"not an object of the configured upload bucket: {location[:200]!r}")
    return Item("s3", location, functools.partial(uploads.download, location[len(prefix) :]))
