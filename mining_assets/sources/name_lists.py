"""A dataset's list of file names and how each name is matched to one object under a prefix (pure: no Dagster, no
S3): by file name whatever the extension, sub-folders searched; a name that matches no object or several is never
guessed."""

import csv
import dataclasses
import io
import posixpath
import re
import unicodedata

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
NAME_COLUMNS = ("image_name", "file_name", "filename", "name", "image")  # header names, in order of preference
MAX_NAME_CHARS = 1024  # S3's longest key


class DatasetError(ValueError):
    """A dataset, its list or its prefix refused or unreadable; the message is the reason recorded."""


def read_name_list(text: str) -> list[str]:
    """The file names a CSV lists, in order: the column headed image_name, file_name, filename, name or image (any
    case; the first of these), else (no such header) every row's first cell. A BOM is dropped, blank rows and cells
    skipped, white space around a name trimmed; a comma, else a tab, else a semicolon on the first line separates
    cells. Names are kept as listed, hostile ones too: ``match_names`` refuses them with the reason.

    Raises:
        DatasetError: the text is not CSV Python can read (a cell over the csv module's size limit).
    """
    text = text.removeprefix("\ufeff")
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = next((mark for mark in (",", "\t", ";") if mark in first), ",")
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    except csv.Error as error:
        raise DatasetError(f"the list is not readable CSV: {error}") from error
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        named = [header.index(name) for name in NAME_COLUMNS if name in header]
        if named:
            column, rows = named[0], rows[1:]
    cells = (row[column].strip() if column < len(row) else "" for row in rows)
    return [cell for cell in cells if cell]


def printable(name: str) -> str:
    """A name as it is recorded: control characters (a NUL ...) written as ``\\xNN``, the rest as listed."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in name)


def refusal(name: str) -> str | None:
    """Why a listed name is not matched (None: it is matched): a NUL or other control character, an absolute path,
    a ``..`` segment, a URL, no file name, or a name longer than an S3 key can be."""
    if "\x00" in name:
        return "holds a NUL character"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "holds control characters"
    if len(name) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    if "://" in name:
        return "a URL, not a file name: list the files' names under the dataset's prefix"
    if name.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path: list the files' names (or paths) relative to the dataset's prefix"
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        return "a '..' segment: only files under the dataset's prefix are matched"
    if parts[-1] in ("", "."):
        return "names no file (a folder?)"
    return None


def split_name(name: str) -> tuple[tuple[str, ...], str]:
    """(folders, file name) of a listed name or an object's key below the prefix (``/`` or ``\\`` separated;
    empty and ``.`` segments dropped)."""
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".")]
    return tuple(parts[:-1]), parts[-1]


def image_stem(file_name: str) -> str | None:
    """The file name without its extension when that is an image's (any case), else None."""
    stem, suffix = posixpath.splitext(file_name)
    return stem if stem and suffix.lower() in IMAGE_SUFFIXES else None


@dataclasses.dataclass
class Matches:
    """How a list's names matched the objects under a prefix: each distinct listed name is found (the one object
    it names), missing, ambiguous (the objects it could be; none is fetched) or refused (the reason)."""

    found: dict[str, str] = dataclasses.field(default_factory=dict)  # listed name -> object key
    missing: list[str] = dataclasses.field(default_factory=list)
    ambiguous: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # listed name -> candidate keys
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # listed name (printable) -> reason
    repeated: int = 0  # names listed more than once, counted once: their further listings
    listed: list[str] = dataclasses.field(default_factory=list)  # the distinct names in list order (printable)

    def summary(self) -> dict[str, int]:
        """The counts the pre-download analysis shows."""
        return {"listed": len(self.listed), "found": len(self.found), "missing": len(self.missing),
                "ambiguous": len(self.ambiguous), "refused": len(self.refused), "repeated": self.repeated}  # fmt: skip

    def status(self, name: str) -> str:
        """found, ambiguous, refused or missing: what became of a listed name."""
        for status, names in (("found", self.found), ("ambiguous", self.ambiguous), ("refused", self.refused)):
            if name in names:
                return status
        return "missing"


def match_names(names: list[str], keys: list[str], prefix: str, bucket: str | None = None) -> Matches:
    """Match each listed name to the object it names among ``keys`` (the objects under ``prefix``, sub-folders
    included), by file name whatever its extension: ``cat.jpg`` finds ``sub/cat.png``.

    A name with an extension that exactly one object has as its file name is that object (even beside a
    ``cat.png``); with its extension in another case, likewise. Otherwise the candidates are the images (.jpg .jpeg
    .png .webp .bmp .gif .tif .tiff, any case) whose file name without the extension is the listed one's (exactly):
    one is found, none missing, several ambiguous. A listed name with folders (``sub/cat.jpg``) matches only
    objects in such folders. ``s3://<bucket>/<prefix>...`` locations are read as names below the prefix.

    >>> m = match_names(["cat.jpg", "dog", "cow.png"], ["p/a/cat.png", "p/dog.webp", "p/x/cow.jpg", "p/cow.gif"], "p/")
    >>> m.found, m.ambiguous
    ({'cat.jpg': 'p/a/cat.png', 'dog': 'p/dog.webp'}, {'cow.png': ['p/cow.gif', 'p/x/cow.jpg']})
    """
    by_name: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    folders_of: dict[str, tuple[str, ...]] = {}
    for key in sorted(set(keys)):
        if not key.startswith(prefix) or key.endswith("/"):
            continue
        folders, file_name = split_name(key[len(prefix) :])
        folders_of[key] = folders
        by_name.setdefault(file_name, []).append(key)
        stem = image_stem(file_name)
        if stem is not None:
            by_stem.setdefault(stem, []).append(key)
    location = f"s3://{bucket}/{prefix}" if bucket else None
    matches = Matches()
    seen: set[str] = set()
    for listed in names:
        if listed in seen:
            matches.repeated += 1
            continue
        seen.add(listed)
        matches.listed.append(printable(listed))  # the name itself, unless it holds control characters (refused)
        name = listed[len(location) :] if location and listed.startswith(location) else listed
        reason = refusal(name)
        if reason is not None and name.startswith("s3://"):
            reason = f"an object outside the dataset's prefix{f' {location}' if location else ''}, or in another bucket"
        if reason is not None:
            matches.refused[printable(listed)] = reason
            continue
        folders, file_name = split_name(name)

        def within(found: list[str], folders=folders) -> list[str]:
            return [key for key in found if folders_of[key][len(folders_of[key]) - len(folders) :] == folders]

        stem = image_stem(file_name)
        exact = within(by_name.get(file_name, []))
        if not exact and stem is not None:  # the extension in another case: CAT.JPG, cat.Jpg
            suffix = file_name[len(stem) :].lower()
            exact = [key for key in within(by_stem.get(stem, [])) if key.lower().endswith(suffix)]
        candidates = exact if len(exact) == 1 else within(by_stem.get(file_name if stem is None else stem, []))
        if len(candidates) == 1:
            matches.found[listed] = candidates[0]
        elif candidates:
            matches.ambiguous[listed] = candidates
        else:
            matches.missing.append(listed)
    return matches
