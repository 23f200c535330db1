"""Where the embedded defaults keep their files. Paths only, never secrets: those come through dg.EnvVar."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Root of the platform's local data (embedded lake, blob store): $MINING_DATA_DIR, else ./data."""
    return Path(os.environ.get("MINING_DATA_DIR") or "data").resolve()


def blob_root() -> str:
    """The local blob store's root: <data dir>/blobs."""
    return str(data_dir() / "blobs")


def keywords_file() -> Path:
    """The keyword list the keyword sensor watches: $MINING_WATCHLIST, else ./keywords.txt."""
    return Path(os.environ.get("MINING_WATCHLIST") or "keywords.txt").resolve()


def dagster_home() -> Path:
    """$DAGSTER_HOME, else ./dagster_home (the project's embedded SQLite instance)."""
    return Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()
