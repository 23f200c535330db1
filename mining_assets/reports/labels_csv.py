"""A dataset's labels as CSV: each image's listed name, its description and its categories."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import NamedTuple

LABEL_COLUMNS = ("image_name", "description", "categories")
CATEGORY_SEPARATOR = "; "
# a spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV injection"); tab and carriage
# return are on OWASP's list too
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class LabelRow(NamedTuple):
    image_name: str
    description: str | None  # the description's content; None when the frame has none
    categories: Sequence[str]


def spreadsheet_safe(text: str) -> str:
    """A cell's text, with a leading ``'`` when a spreadsheet would read it as a formula (it starts with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return): the sheet then shows the text instead of running it."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def labels_csv(rows: Iterable[LabelRow | tuple[str, str | None, Sequence[str]]]) -> bytes:
    """Rows as UTF-8 CSV with the header ``image_name,description,categories``, in the order given.

    ``description`` is the description's content (empty when there is none); ``categories`` are joined with
    ``"; "``. Quoting is the csv module's (a cell holding a comma, a quote or a line break is quoted, quotes
    doubled), so markup or commas in a description stay in their cell as written. Against spreadsheet formula
    injection, every cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    ``'`` (``spreadsheet_safe``): the only change made to any text.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(LABEL_COLUMNS)
    for image_name, description, categories in rows:
        cells = (image_name or "", description or "", CATEGORY_SEPARATOR.join(categories))
        writer.writerow([spreadsheet_safe(str(cell)) for cell in cells])
    return buffer.getvalue().encode("utf-8")
