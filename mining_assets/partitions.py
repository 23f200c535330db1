"""Keyword partitions and the slug rules that turn free keyword text into safe partition keys.

A keyword such as ``glass door`` becomes the partition key ``glass-door``. Text that the readable form cannot
carry exactly (capitals, punctuation, quotes, HTML, emoji, ``../``, very long text) gets a short hash of the
exact text appended after an underscore, a character readable slugs never contain, so two different keywords
never share a key. The exact text is kept beside the key in the warehouse ``keywords`` table.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import dagster as dg

keyword_partitions = dg.DynamicPartitionsDefinition(name="keyword")

MAX_KEYWORD_CHARS = 500
_READABLE_MAX = 48
_HASH_CHARS = 12
_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:_[0-9a-f]{12})?$")


def normalize_keyword(text: str) -> str:
    """Canonical form of a keyword: Unicode NFC, surrounding white space dropped, inner runs folded to one space.

    Raises:
        ValueError: the keyword is empty, too long, or holds control characters.
    """
    if not isinstance(text, str):
        raise ValueError(f"keyword must be text, got {type(text).__name__}")
    folded = " ".join(unicodedata.normalize("NFC", text).split())
    if not folded:
        raise ValueError("keyword is empty")
    if len(folded) > MAX_KEYWORD_CHARS:
        raise ValueError(f"keyword is longer than {MAX_KEYWORD_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in folded):
        raise ValueError("keyword contains control characters")
    return folded


def _readable(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    words = re.findall(r"[a-z0-9]+", ascii_text)
    readable = ""
    for word in words:
        candidate = f"{readable}-{word}" if readable else word
        if len(candidate) > _READABLE_MAX:
            break
        readable = candidate
    return readable or (words[0][:_READABLE_MAX] if words else "kw")


def keyword_slug(text: str) -> str:
    """The partition key for a keyword: readable, safe in paths and URLs, and distinct for distinct keywords.

    >>> keyword_slug("glass door")
    'glass-door'
    >>> keyword_slug("Glass Door").startswith("glass-door_")
    True
    """
    keyword = normalize_keyword(text)
    readable = _readable(keyword)
    if readable.replace("-", " ") == keyword:
        return readable
    digest = hashlib.sha256(keyword.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{readable}_{digest}"


def is_slug(key: str) -> bool:
    """Whether a partition key already has the slug form (and so is safe to use in storage paths)."""
    return bool(_SLUG_RE.match(key)) and len(key) <= _READABLE_MAX + 1 + _HASH_CHARS


STORAGE_HASH_CHARS = 16
DATASET_PREFIX = "dataset--"  # a dataset's partition key: this and a slug (dataset_key)


def storage_key(partition_key: str) -> str:
    """The path component for a partition's own files: distinct for distinct keys, safe in any store.

    A key that is already a slug is its own storage key; any other key (one added by hand in the UI, say
    ``glass door``) is ``<readable slug>__<first 16 hex of sha256(key)>``. Slugs never contain ``__``, so the two
    forms never meet, and two keys that differ only in case, spaces, punctuation or underscores never share files.

    A dataset's key (``dataset--`` and a slug, ``dataset_key``) is its own storage key too: neither a slug nor a
    hashed form ever holds ``--``.

    >>> storage_key("glass-door")
    'glass-door'
    >>> storage_key("glass door")
    'glass-door__da33056f90504db8'
    >>> storage_key("dataset--real-photos")
    'dataset--real-photos'
    """
    if is_slug(partition_key) or (
        partition_key.startswith(DATASET_PREFIX) and is_slug(partition_key.removeprefix(DATASET_PREFIX))
    ):
        return partition_key
    digest = hashlib.sha256(partition_key.encode("utf-8", "surrogatepass")).hexdigest()[:STORAGE_HASH_CHARS]
    return f"{_readable(partition_key)}__{digest}"


# A dataset (a named list of images under a prefix of the upload bucket) is a keyword partition of its own, keyed
# ``dataset--<slug of its name>``: a keyword's slug never holds ``--``, so the two kinds of key never meet.
def dataset_key(name: str) -> str:
    """The partition key of a dataset: ``dataset--`` and the slug of its name (the keyword slug rules).

    >>> dataset_key("real photos 2024")
    'dataset--real-photos-2024'
    >>> dataset_key("Real Photos").startswith("dataset--real-photos_")
    True

    Raises:
        ValueError: the name is empty, too long, or holds control characters (``normalize_keyword``).
    """
    return DATASET_PREFIX + keyword_slug(name)


def is_dataset_key(key: str) -> bool:
    """Whether a partition key is a dataset's (any key that starts with ``dataset--``, slug or not: a key added by
    hand in the UI with that start is a dataset's too, and its registry says no dataset is defined for it).

    >>> is_dataset_key("dataset--cats"), is_dataset_key("cats"), is_dataset_key("dataset-cats")
    (True, False, False)
    """
    return isinstance(key, str) and key.startswith(DATASET_PREFIX)
