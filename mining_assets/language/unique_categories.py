"""unique_categories: the categories seen in a keyword's frames, with how many frames have each."""

import dagster as dg

from mining_assets.checks import output_check, output_spec
from mining_assets.language.categories import categories
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.warehouse import replace_partition_rows, table_definition_metadata, table_report, unique_key_spec
from resources.warehouse import Warehouse

COUNTS = """
WITH chosen AS (SELECT * FROM frame_categories WHERE partition_key = $1),
total AS (SELECT count(*) AS n FROM chosen),
named AS (SELECT unnest(categories) AS category, primary_category, list_version, method FROM chosen)
SELECT $1 AS partition_key, category, count(*) AS frames,
       count(*) FILTER (WHERE category = primary_category) AS primary_frames,
       count(*) FILTER (WHERE category = primary_category) / any_value(total.n) AS share,
       any_value(list_version) AS list_version, any_value(method) AS method
FROM named, total GROUP BY category ORDER BY primary_frames DESC, frames DESC, category
"""


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[categories],
    group_name="language",
    kinds={"duckdb"},
    metadata=table_definition_metadata("unique_categories"),
    check_specs=[
        unique_key_spec("unique_categories", ["unique_categories"]),
        output_spec("unique_categories", "categories"),
    ],
)
def unique_categories(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """The categories a keyword's frames were sorted into, with counts and shares."""
    partition_key = context.partition_key
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            rows = conn.execute(COUNTS, [partition_key]).df()
            (categorized,) = conn.execute(
                "SELECT count(*) FROM frame_categories WHERE partition_key = ?", [partition_key]
            ).fetchone()
            replace_partition_rows(conn, "unique_categories", partition_key, rows)
            table, unique = table_report(conn, partition_key, "unique_categories")
    listed = rows[["category", "frames", "primary_frames", "share"]].values.tolist()
    return dg.MaterializeResult(
        metadata={
            **table,
            "categorized_frames": int(categorized),
            "categories_seen": len(rows),
            "counts": dg.MetadataValue.json({row.category: int(row.frames) for row in rows.itertuples()}),
            "table": dg.MetadataValue.md(
                markdown_table(
                    ["category", "frames", "primary", "share"],
                    [(c, f, p, f"{s:.1%}") for c, f, p, s in listed],
                    "_no categories_",
                )
            ),
        },
        check_results=[unique, output_check(int(categorized), len(rows), "no category seen", upstream="categories")],
    )
