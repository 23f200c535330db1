"""category_reports: the category distributions of datasets (REAL and GEN by default) side by side, as PNG plots and
one labels CSV per dataset in the blob store, the plots shown inline in the UI.

A report is named by its content (``report_id``: the partitions and rows reported, the plot settings), so an
unchanged re-run stores nothing and writes no row. Its files lie under ``reports/category_reports/<report_id>/``,
named from storage keys only (``mining_assets.partitions.storage_key``), never from a dataset's name; the
``category_report_files`` table records the latest report's files. ``blob_gc`` does not look under ``reports/``, so
this asset deletes the files of the report it supersedes, once the new files and their rows are stored.
"""

# no ``from __future__ import annotations``: Dagster cannot resolve a Config's ``list[str]`` field from a string
import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from mining_assets.language.categories import categories
from mining_assets.language.descriptions import descriptions
from mining_assets.metadata import markdown_table
from mining_assets.partitions import storage_key
from mining_assets.reports.category_counts import PartitionReport, image_name, ordered, plotted, report_id, unique_names
from mining_assets.reports.labels_csv import LabelRow, labels_csv
from mining_assets.reports.plots import data_uri, distribution_png, shares_png, side_by_side_png
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.common import metadata_location
from mining_assets.warehouse import insert_rows, keyword_text, query_dicts, table_definition_metadata
from resources.blob_store import BlobDeleteError, BlobStore, check_key
from resources.warehouse import Warehouse

PREFIX = "reports/category_reports"
FILES_TABLE = "category_report_files"
ROWS_LEASE = "table:category_report_files"  # not a partition's lease: no slug has a colon
# held from the first file stored to the last superseded one deleted: a concurrent run never deletes files another
# run has just stored (or found stored) for the report it records
FILES_LEASE = "files:category_reports"
EXAMPLES = 20
LEFTOVER_AGE = timedelta(hours=1)  # an unrecorded report file older than this was left by a run that died

DATASETS = "SELECT partition_key, name, label FROM datasets ORDER BY partition_key, added_at DESC NULLS LAST"
# each categorized frame of the partitions, with its listed name (the title of the registry row naming the frame's
# source), its source URL and its description's content; one row per frame
FRAME_ROWS = """
WITH listed AS (
    SELECT partition_key, location, min(title) AS title
    FROM (SELECT partition_key, page_url AS location, title FROM registry
          UNION ALL SELECT partition_key, url AS location, title FROM registry)
    WHERE partition_key IN $1 AND nullif(trim(title), '') IS NOT NULL
    GROUP BY ALL
)
SELECT c.partition_key, c.frame_id, c.categories, c.primary_category, f.source_url, l.title AS listed_name,
       d.content AS description
FROM frame_categories c
LEFT JOIN frames f ON f.partition_key = c.partition_key AND f.frame_id = c.frame_id
LEFT JOIN listed l ON l.partition_key = c.partition_key AND l.location = f.source_url
LEFT JOIN frame_descriptions fd ON fd.partition_key = c.partition_key AND fd.frame_id = c.frame_id
LEFT JOIN descriptions d ON d.frame_sha256 = fd.frame_sha256 AND d.work_key = fd.work_key
WHERE c.partition_key IN $1
QUALIFY row_number() OVER (PARTITION BY c.partition_key, c.frame_id
                           ORDER BY d.described_at DESC NULLS LAST, d.work_key) = 1
"""
LIST_ORDER = """
SELECT category, min(position) AS position FROM category_lists
WHERE list_version IN (SELECT DISTINCT list_version FROM frame_categories WHERE partition_key IN $1)
GROUP BY category ORDER BY position, category
"""


class CategoryReportsConfig(dg.Config):
    partitions: list[str] | None = None  # the partitions to report, in this order; None: datasets with these labels
    labels: list[str] = ["REAL", "GEN"]  # the dataset labels reported when partitions is None, in this order
    max_categories: int = 30  # categories a plot shows, the most frequent; the rest are summed into one bar


@dataclass(frozen=True)
class ReportFile:
    kind: str  # 'distribution', 'side_by_side', 'shares' (PNG) or 'labels' (CSV)
    partition_key: str | None  # None for a plot of several partitions
    name: str  # the file's name in the report's folder
    data: bytes


def chosen_partitions(conn, config: CategoryReportsConfig) -> tuple[list[PartitionReport], str]:
    """The partitions to report (their rows not read yet), and why there are none when there are none."""
    datasets: dict[str, dict] = {}
    for row in query_dicts(conn, DATASETS):
        datasets.setdefault(row["partition_key"], row)
    if config.partitions is not None:
        reports = [
            PartitionReport(key, datasets[key]["name"], datasets[key]["label"])
            if key in datasets
            else PartitionReport(key, keyword_text(conn, key), None)
            for key in dict.fromkeys(config.partitions)
        ]
        return reports, "" if reports else "the partitions config names no partition"
    rank = {label: index for index, label in enumerate(dict.fromkeys(label.strip().upper() for label in config.labels))}
    picked = sorted(
        (row for row in datasets.values() if row["label"].upper() in rank),
        key=lambda row: (rank[row["label"].upper()], row["partition_key"]),
    )
    reports = [PartitionReport(row["partition_key"], row["name"], row["label"]) for row in picked]
    if reports:
        return reports, ""
    if not datasets:
        return [], "the datasets table holds no dataset"
    present = sorted({row["label"].upper() for row in datasets.values()})
    return [], f"no dataset has a label in {list(rank)} (the datasets' labels: {', '.join(present)})"


def read_rows(conn, reports: list[PartitionReport]) -> list[str]:
    """Fill each report's rows (sorted by image name, then frame id); returns the categories in list order."""
    if not reports:
        return []
    keys = [report.partition_key for report in reports]
    by_key = {report.partition_key: report for report in reports}
    found: dict[str, list[tuple[str, str, LabelRow]]] = {key: [] for key in keys}
    for row in query_dicts(conn, FRAME_ROWS, [keys]):
        name = image_name(row["listed_name"], row["source_url"], row["frame_id"])
        categories = list(row["categories"] or []) or [row["primary_category"]]
        found[row["partition_key"]].append((name, row["frame_id"], LabelRow(name, row["description"], categories)))
    for key, rows in found.items():
        by_key[key].rows = [label_row for *_, label_row in sorted(rows, key=lambda item: item[:2])]
    return [row["category"] for row in query_dicts(conn, LIST_ORDER, [keys])]


def build_files(
    reports: list[PartitionReport], order: list[str], max_categories: int, names: dict[str, str]
) -> list[ReportFile]:
    """The report's files: per partition with frames, its distribution plot and labels CSV; over them all, the
    counts side by side and their shares (none when no partition has frames)."""
    reported = [report for report in reports if report.frames]
    files: list[ReportFile] = []
    for report in reported:
        key, part = report.partition_key, storage_key(report.partition_key)
        _, values = plotted({key: report.counts(order)}, order, max_categories)
        title = f"{names[key]}: frames per category ({report.frames} frames)"
        files.append(ReportFile("distribution", key, f"distribution-{part}.png", distribution_png(values[key], title)))
        files.append(ReportFile("labels", key, f"labels-{part}.csv", labels_csv(report.rows)))
    if reported:
        shown, values = plotted({r.partition_key: r.counts(order) for r in reported}, order, max_categories)
        counts = {names[key]: value for key, value in values.items()}
        frames = {names[r.partition_key]: r.frames for r in reported}
        files.append(ReportFile("side_by_side", None, "side_by_side.png", side_by_side_png(counts, shown)))
        files.append(ReportFile("shares", None, "shares.png", shares_png(counts, frames, shown)))
    return files


def store_report(
    warehouse: Warehouse, blob_store: BlobStore, report: str, files: list[ReportFile]
) -> tuple[dict[str, str], int, int, list[str], int]:
    """Store the files not stored yet, record them (replacing the rows of the report before, unless they already
    are these), then delete the previous report's files no row records now, and any unrecorded file under the
    prefix older than ``LEFTOVER_AGE`` (stored by a run that died before recording it).

    Returns each file's URI by key, how many files were written, how many superseded files were deleted, those the
    store refused to delete (``key: code message``), and the table's row count.
    """
    import pandas as pd

    keys = {check_key(f"{PREFIX}/{report}/{file.name}"): file for file in files}
    uris: dict[str, str] = {}
    written = 0
    with warehouse.lease(FILES_LEASE):
        for key, file in keys.items():
            # a key names its content (the report id): one stored already holds these bytes
            if blob_store.exists(key):
                uris[key] = blob_store.uri(key)
            else:
                uris[key] = blob_store.put_bytes(key, file.data)
                written += 1
        rows = pd.DataFrame(
            [(report, file.partition_key, file.kind, key, uris[key]) for key, file in keys.items()],
            columns=["report_id", "report_partition", "kind", "blob_key", "uri"],
        )
        for attempt in warehouse.retrying(lease=ROWS_LEASE):
            with attempt as conn:
                previous = query_dicts(conn, f"SELECT report_id, blob_key, uri FROM {FILES_TABLE}")
                recorded = sorted((row["report_id"], row["blob_key"], row["uri"]) for row in previous)
                if recorded != sorted((report, key, uri) for key, uri in uris.items()):
                    # table names written out: the one-writer test (tests/test_definitions.py) reads them
                    conn.execute("DELETE FROM category_report_files")
                    insert_rows(conn, "category_report_files", rows)
                total = conn.execute(f"SELECT count(*) FROM {FILES_TABLE}").fetchone()[0]
        superseded = {row["blob_key"] for row in previous if row["blob_key"].startswith(PREFIX + "/")} - set(keys)
        # files a run stored and never recorded (it died first): old enough that no live run is still recording them
        cutoff = datetime.now(UTC) - LEFTOVER_AGE
        superseded |= {entry.key for entry in blob_store.list_entries(PREFIX) if entry.modified < cutoff} - set(keys)
        superseded = sorted(superseded)
        try:
            deleted, refused = blob_store.delete(superseded), []
        except BlobDeleteError as error:
            deleted = error.deleted
            refused = [f"{key}: {code} {message}".rstrip() for key, code, message in error.failures]
    return uris, written, deleted, refused, int(total)


def _header(text: str) -> str:
    """A table header cell escaped as ``markdown_table`` escapes its cells."""
    return html.escape(" ".join(str(text).split())[:80]).replace("|", "&#124;")


def counts_table(reports: list[PartitionReport], order: list[str], names: dict[str, str]) -> str:
    """Every category's frames in each partition, side by side, as an HTML-escaped Markdown table."""
    counts = {r.partition_key: r.counts(order) for r in reports}
    total: dict[str, int] = {}
    for value in counts.values():
        for category, count in value.items():
            total[category] = total.get(category, 0) + count
    headers = ["category", *(_header(names[r.partition_key]) for r in reports)]
    rows = [["(label)", *(r.label or "" for r in reports)], ["(frames)", *(r.frames for r in reports)]]
    rows += [
        [category, *(counts[r.partition_key].get(category, 0) for r in reports)] for category in ordered(total, order)
    ]
    return markdown_table(headers, rows)


@dg.asset(
    deps=[descriptions, categories],
    group_name="reports",
    kinds={"duckdb", "matplotlib"},
    retry_policy=STEP_RETRY,
    metadata=table_definition_metadata(FILES_TABLE),
    check_specs=[
        dg.AssetCheckSpec(
            "reported",
            asset="category_reports",
            description="Warns when the report has no partition with categorized frames to plot, with the reason.",
        )
    ],
)
def category_reports(
    context: dg.AssetExecutionContext, config: CategoryReportsConfig, blob_store: BlobStore, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The categories of the datasets (REAL and GEN by default) side by side: plots and a labels CSV per dataset."""
    for attempt in warehouse.retrying():
        with attempt as conn:  # one snapshot: every partition's rows as of the same moment
            reports, reason = chosen_partitions(conn, config)
            order = read_rows(conn, reports)
    names = unique_names(reports, storage_key)
    report = report_id(reports, order, config.max_categories)
    files = build_files(reports, order, config.max_categories, names)
    uris, written, deleted, refused, total = store_report(warehouse, blob_store, report, files)
    empty = [r.partition_key for r in reports if not r.frames]
    if reports and not files:
        reason = f"no chosen partition has categorized frames (frame_categories): {', '.join(empty[:EXAMPLES])}"
    context.log.info(f"category report {report}: {len(files)} file(s), {written} written, {deleted} superseded deleted")

    metadata: dict = {
        "report_id": report,
        "partitions": dg.MetadataValue.json([r.partition_key for r in reports]),
        "frames_by_partition": dg.MetadataValue.json({r.partition_key: r.frames for r in reports}),
        "categories_by_partition": dg.MetadataValue.json({r.partition_key: r.counts(order) for r in reports}),
        "empty_partitions": dg.MetadataValue.json(empty),
        "counts": dg.MetadataValue.md(counts_table(reports, order, names) if reports else "_no partition reported_"),
        "files_written": written,
        "files_deleted": deleted,
        "files_not_deleted": dg.MetadataValue.json(refused[:EXAMPLES]),  # the store refused: still under reports/
        "dagster/row_count": dg.MetadataValue.int(total),
    }
    if reason:
        metadata["reason"] = reason
    for key, file in zip(uris, files, strict=True):
        part = storage_key(file.partition_key) if file.partition_key is not None else None
        suffix = f"{file.kind}_{part}" if part else file.kind
        metadata[f"uri_{suffix}"] = metadata_location(uris[key])
        if file.kind != "labels":
            plot = part if file.kind == "distribution" else file.kind
            alt = f"{file.kind} {part}" if part else file.kind.replace("_", " ")
            metadata[f"plot_{plot}"] = dg.MetadataValue.md(f"![{alt}]({data_uri(file.data)})")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="reported",
                passed=bool(files),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "partitions": len(reports),
                    "reported": len(reports) - len(empty),
                    "reason": "" if files else reason,
                },
            )
        ],
    )
