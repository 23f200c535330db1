"""Adding keywords: one slug partition per keyword, with its exact text kept in the warehouse."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mining_assets.partitions import keyword_partitions, keyword_slug, normalize_keyword

if TYPE_CHECKING:
    import dagster as dg
    import duckdb

    from resources.warehouse import Warehouse

# The write lease of the keywords table (not a partition's: no slug has a colon). DuckLake takes two inserts of one
# key by concurrent writers (on a PostgreSQL catalog both commit), so whatever writes keywords holds it.
KEYWORDS_LEASE = "table:keywords"
# the one statement that writes the keywords table: the CLI, the jobs, the sensors and uploads all come here
RECORD_KEYWORD = """
MERGE INTO keywords USING (SELECT ?::VARCHAR AS partition_key, ?::VARCHAR AS keyword) AS incoming
ON keywords.partition_key = incoming.partition_key
WHEN NOT MATCHED THEN INSERT (partition_key, keyword, added_at)
    VALUES (incoming.partition_key, incoming.keyword, now()::TIMESTAMP)
"""


def register_keywords(
    warehouse: Warehouse, texts: Iterable[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Record each keyword's text under its partition key, in one transaction holding the keywords lease.

    Returns what ``record_keywords`` returns.
    """
    for attempt in warehouse.retrying(lease=KEYWORDS_LEASE):
        with attempt as conn:
            result = record_keywords(conn, texts)
    return result


def record_keywords(
    conn: duckdb.DuckDBPyConnection, texts: Iterable[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Record each keyword's text under its partition key, in the caller's transaction.

    ``conn`` is a cursor inside a retried block holding ``KEYWORDS_LEASE`` (the lease keeps a concurrent writer
    from recording the same key beside this one): a keyword already recorded is left as it is, so the block may
    run again. ``register_keywords`` is that block.

    Returns:
        (partition_key, keyword) pairs, deduplicated, and (text, reason) for each keyword refused: empty, too
        long, control characters (the text as given), or a key that already belongs to a different text (the
        normalized text).
    """
    pairs: dict[str, str] = {}
    rejected: list[tuple[str, str]] = []
    for text in texts:
        try:
            keyword = normalize_keyword(text)
        except ValueError as error:
            rejected.append((str(text), str(error)))
            continue
        key = keyword_slug(keyword)
        row = conn.execute("SELECT keyword FROM keywords WHERE partition_key = ?", [key]).fetchone()
        if row and row[0] != keyword:
            rejected.append((keyword, f"partition key {key!r} already belongs to keyword {row[0]!r}"))
            continue
        if not row:
            conn.execute(RECORD_KEYWORD, [key, keyword])
        pairs.setdefault(key, keyword)
    return list(pairs.items()), rejected


def parse_keyword_list(text: str) -> list[str]:
    """Keywords from a list file: one per line; blank lines and lines starting with # are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def add_keyword_partitions(instance: dg.DagsterInstance, keys: Iterable[str]) -> list[str]:
    """Add the keys that are not partitions yet; return those that were new."""
    existing = set(instance.get_dynamic_partitions(keyword_partitions.name))
    new = [key for key in dict.fromkeys(keys) if key not in existing]
    if new:
        instance.add_dynamic_partitions(keyword_partitions.name, new)
    return new
