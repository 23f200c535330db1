"""The category list descriptions are sorted into: a CSV in the project (``categories.csv`` beside this module,
editable), or another CSV a keyword's settings name. Its version, a digest of what it says, is kept with every
result, so editing the list redoes exactly the categorizations it changes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LIST = Path(__file__).with_name("categories.csv")
MAX_CATEGORIES = 200
MAX_NAME_CHARS = 80


class CategoryListError(ValueError):
    """The list can't be used (unreadable, empty, a duplicate or blank category); the message says where."""


@dataclass(frozen=True)
class CategoryList:
    """A category list as read: its file name, version and (category, description) rows in order."""

    name: str
    version: str
    rows: tuple[tuple[str, str], ...]

    @property
    def categories(self) -> list[str]:
        return [category for category, _ in self.rows]

    def lookup(self, text: str) -> str | None:
        """The listed spelling of ``text`` (case and inner spacing aside), or None when it is not on the list."""
        wanted = " ".join(str(text).split()).casefold()
        return next((category for category in self.categories if category.casefold() == wanted), None)


def parse_category_list(text: str, name: str) -> CategoryList:
    """A list from CSV text with a ``category`` column and an optional ``description`` column (a file without
    that header: first cell a category, second its description).

    Raises:
        CategoryListError: no category, a category listed twice (case aside), one too long, or too many.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    lines = [[cell.strip() for cell in line] for line in reader if any(cell.strip() for cell in line)]
    header = [cell.casefold() for cell in lines[0]] if lines else []
    has_header = "category" in header
    at = header.index("category") if has_header else 0
    about = (header.index("description") if "description" in header else None) if has_header else 1
    body = lines[1:] if has_header else lines
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(body, start=2 if has_header else 1):
        category = " ".join(line[at].split()) if at < len(line) else ""
        description = line[about] if about is not None and about < len(line) else ""
        if not category:
            raise CategoryListError(f"{name}, line {number}: no category")
        if len(category) > MAX_NAME_CHARS:
            raise CategoryListError(f"{name}, line {number}: a category longer than {MAX_NAME_CHARS} characters")
        if category.casefold() in seen:
            raise CategoryListError(f"{name}, line {number}: {category!r} is listed twice")
        seen.add(category.casefold())
        rows.append((category, description))
    if not rows:
        raise CategoryListError(f"{name}: no categories")
    if len(rows) > MAX_CATEGORIES:
        raise CategoryListError(f"{name}: {len(rows)} categories, at most {MAX_CATEGORIES}")
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]
    return CategoryList(name=name, version=digest, rows=tuple(rows))


def load_category_list(path: str | None = None) -> CategoryList:
    """The project's list, or the CSV at ``path``.

    Raises:
        CategoryListError: the file can't be read or holds no usable list.
    """
    file = Path(path).expanduser() if path else DEFAULT_LIST
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CategoryListError(f"category list {file.name}: {type(error).__name__}: {error}") from None
    return parse_category_list(text, file.name)
