"""What a category report counts, Dagster-free: each image's name, frames per category, the categories a plot
shows (the most frequent, the rest summed into one bar), and the report's id."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from mining_assets.reports.labels_csv import LabelRow

REPORT_ID_CHARS = 16
# bumped when what a report draws or writes changes, so that the same rows then make a new report (new files)
REPORT_VERSION = 1


@dataclass
class PartitionReport:
    """One reported partition: how it is shown, and its categorized frames as label rows."""

    partition_key: str
    name: str  # shown in plots and tables: a dataset's name, a keyword's text
    label: str | None  # a dataset's label (REAL, GEN ...); None for a keyword
    rows: list[LabelRow] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.rows)

    def counts(self, order: Sequence[str]) -> dict[str, int]:
        """Frames per category (a frame counts once in each of its categories), in ``order`` (categories outside it
        last, by count), only categories some frame has."""
        found = Counter(category for row in self.rows for category in dict.fromkeys(row.categories))
        return {category: found[category] for category in ordered(found, order)}


def image_name(listed_name: str | None, source_url: str | None, frame_id: str) -> str:
    """The name an image is known by: the file name its list gives (the registry title), else the last segment of
    its source URL's path (``s3://bucket/a/b.jpg`` -> ``b.jpg``), else the frame id."""
    if listed_name and listed_name.strip():
        return listed_name
    if source_url:
        segment = unquote(urlsplit(source_url).path.rstrip("/").rsplit("/", 1)[-1])
        if segment:
            return segment
    return frame_id


def ordered(found: Mapping[str, int], order: Sequence[str]) -> list[str]:
    """The categories of ``found`` in list order; those no list holds after them, most frequent first."""
    position = {category: index for index, category in enumerate(dict.fromkeys(order))}
    listed = sorted((c for c in found if c in position), key=position.__getitem__)
    unlisted = sorted((c for c in found if c not in position), key=lambda c: (-found[c], c))
    return listed + unlisted


def other_label(count: int) -> str:
    """The bar that sums the categories a plot leaves out (parenthesized: no category name is mistaken for it)."""
    return f"(other: {count} categories)" if count != 1 else "(other: 1 category)"


def plotted(
    counts_by_partition: Mapping[str, Mapping[str, int]], order: Sequence[str], max_categories: int
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The categories a plot shows and each partition's counts of them.

    At most ``max_categories`` categories, the most frequent over all partitions, shown in list order; the rest,
    if any, are summed into one last bar (``other_label``) per partition.
    """
    total: Counter[str] = Counter()
    for counts in counts_by_partition.values():
        total.update({category: count for category, count in counts.items() if count})
    every = ordered(total, order)
    rank = {category: index for index, category in enumerate(every)}
    keep = set(sorted(every, key=lambda c: (-total[c], rank[c]))[: max(1, max_categories)])
    shown = [category for category in every if category in keep]
    left_out = [category for category in every if category not in keep]
    values = {
        key: {category: int(counts.get(category, 0)) for category in shown}
        for key, counts in counts_by_partition.items()
    }
    if left_out:
        other = other_label(len(left_out))
        shown.append(other)
        for key, counts in counts_by_partition.items():
            values[key][other] = int(sum(counts.get(category, 0) for category in left_out))
    return shown, values


def unique_names(reports: Iterable[PartitionReport], suffix) -> dict[str, str]:
    """Each partition's shown name, made distinct: a name two partitions share gets ``suffix(partition_key)``."""
    reports = list(reports)
    seen = Counter(report.name for report in reports)
    return {r.partition_key: r.name if seen[r.name] == 1 else f"{r.name} [{suffix(r.partition_key)}]" for r in reports}


def report_id(reports: Sequence[PartitionReport], order: Sequence[str], max_categories: int) -> str:
    """16 hex of sha256 over what the report shows: the partitions chosen (in order, with their names and labels),
    every row reported, the category order and the plot settings. The same rows give the same id, so an unchanged
    re-run names the same files."""
    content = {
        "version": REPORT_VERSION,
        "max_categories": max_categories,
        "order": list(order),
        "partitions": [
            [r.partition_key, r.name, r.label, [[row.image_name, row.description, list(row.categories)]
                                                 for row in r.rows]]
            for r in reports
        ],
    }  # fmt: skip
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:REPORT_ID_CHARS]
