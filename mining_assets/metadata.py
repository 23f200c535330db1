"""Small helpers for the metadata assets show in the Dagster UI."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "_none_", width: int = 80
) -> str:
    """Rows as a Markdown table; cells are HTML-escaped, pipes and line breaks removed, long text cut to width."""
    if not rows:
        return empty

    def cell(value: Any) -> str:
        text = "" if value is None else " ".join(str(value).split())
        return html.escape(text[:width]).replace("|", "&#124;")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
