"""media_registry: every item a keyword's sources name — YouTube search and URLs, a local folder, the upload
bucket's keyword folders, the stock-photo APIs — one row each, before anything is fetched. A dataset's partition
(``dataset--<name>``) asks only its dataset (``sources.datasets``): the objects its list names, and the analysis of
the list (``dataset_matches``)."""

import functools

import dagster as dg
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec, sources_asked
from mining_assets.keyword_settings import stage_config
from mining_assets.metadata import markdown_table
from mining_assets.partitions import is_dataset_key, keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.sources.datasets import dataset_registry
from mining_assets.sources.stock import STOCK_SOURCES, collect_hits, registry_row
from mining_assets.sources.templates import TemplateError, resolve_template
from mining_assets.sources.uploads import Item, folder_belongs, local_items, remember_keyword, s3_items
from mining_assets.sources.videos import youtube_candidates
from mining_assets.warehouse import (
    execute_with_rows,
    keyword_text,
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    tables,
    unique_key_spec,
)
from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource
from resources.uploads import UploadBucket, UploadError, UploadMissing
from resources.warehouse import Warehouse
from resources.youtube import YouTubeResource

STAGE = "media_registry"
OWNED = ["registry", "upload_objects"]  # the tables this asset writes, besides its errors
DATASET_OWNED = [*OWNED, "dataset_matches"]  # and for a dataset's partition, the analysis of its list
COLUMNS = [name for name in tables()["registry"]["columns"] if name != "discovered_at"]
# an item known before keeps what was recorded of it; what a source says now fills in what was missing
UPSERT = f"""
MERGE INTO registry USING (SELECT * FROM _incoming) AS incoming
ON registry.partition_key = incoming.partition_key AND registry.item = incoming.item
WHEN MATCHED THEN UPDATE SET
    {", ".join(f"{c} = coalesce(incoming.{c}, registry.{c})" for c in COLUMNS if c not in ("partition_key", "item"))}
WHEN NOT MATCHED THEN INSERT ({", ".join(COLUMNS)}, discovered_at)
    VALUES ({", ".join("incoming." + c for c in COLUMNS)}, now()::TIMESTAMP)
"""
# an object version (bucket, key, ETag) registered once stays as it was first recorded
RECORD_UPLOADS = """
MERGE INTO upload_objects USING (SELECT * FROM _incoming) AS incoming
ON upload_objects.bucket = incoming.bucket AND upload_objects.key = incoming.key
    AND upload_objects.etag = incoming.etag
WHEN MATCHED THEN UPDATE SET registered_at = now()::TIMESTAMP
WHEN NOT MATCHED THEN INSERT (bucket, key, etag, partition_key, registered_at)
    VALUES (incoming.bucket, incoming.key, incoming.etag, incoming.partition_key, now()::TIMESTAMP)
"""


SOURCES_TAG = "mining/sources"  # a job's sources (youtube, uploads, stock): what the registry asks when not told


class ListedObject(dg.Config):
    """An object of the upload bucket as a listing showed it."""

    key: str
    etag: str


class MediaRegistryConfig(dg.Config):
    """Which sources a keyword's registry asks. Unset (None): those of the run's job (its `mining/sources` tag:
    video_pipeline YouTube, photo_pipeline the stock APIs, upload_pipeline the upload bucket), or all of them."""

    youtube_search: bool | None = None  # search YouTube for the keyword
    max_results: int = 10
    urls: list[str] = []  # video pages to add (YouTube or any page yt-dlp reads)
    local_dir: str | None = None  # a folder of photos and videos, read recursively (hidden files skipped); a
    # template: {partition_key} stands for the keyword's partition key (/photos/{partition_key})
    uploads: bool | None = None  # the upload bucket's folders of this keyword, when a bucket is configured
    s3_prefixes: list[str] = []  # more prefixes of the upload bucket read for this keyword; templates, like local_dir
    s3_keys: list[str] | None = None  # only these objects of the bucket (their ETags asked of S3); None: list folders
    s3_objects: list[ListedObject] | None = None  # only these objects, with their listed ETags (the uploads sensor)
    stock_sources: list[str] | None = None  # of pexels, unsplash, pixabay
    per_query: int = 30  # photos asked of each stock source for each query
    queries: list[str] | None = None  # stock-photo queries; None: the keyword itself
    keyword: str | None = None  # the keyword as uploaded (the S3 folder name), recorded when the partition is new
    license: str = "as uploaded"  # recorded for uploads and local files


def upload_rows(items, license_text: str) -> list[dict]:
    """Registry rows of uploads: named by location until their content is read."""
    return [
        {"item": item.location, "source": item.source, "url": item.location, "page_url": item.location,
         "title": item.location.rsplit("/", 1)[-1], "license": license_text}
        for item in items
    ]  # fmt: skip


def keyword_objects(uploads: UploadBucket, partition_key: str, keyword: str) -> dict[str, str]:
    """key -> ETag of every object in the bucket's folders of this keyword, listed folder by folder, page by page.

    Raises:
        UploadError: a listing failed.
    """
    return {
        obj.key: obj.etag
        for prefix, folder in uploads.keyword_folders()
        if folder_belongs(folder, partition_key, keyword)
        for obj in uploads.list_objects(prefix)
    }


def s3_uploads(
    config: MediaRegistryConfig, uploads: UploadBucket, partition_key: str, keyword: str
) -> tuple[list[Item], list[tuple[str, str]], set[str], list[dict]]:
    """The upload bucket's items for this partition (the objects the config names, or its folders' objects), the
    (item, reason) failures, the names their errors are recorded under, and the ``upload_objects`` rows of the
    items registered (bucket, key, ETag: the listing's, or asked of S3 when only a key was given)."""
    named = config.s3_keys is not None or config.s3_objects is not None
    etags: dict[str, str | None] = dict.fromkeys(config.s3_keys or [])
    etags.update({obj.key: obj.etag for obj in config.s3_objects or []})
    if uploads.configured and not named:
        try:
            etags = dict(keyword_objects(uploads, partition_key, keyword))
        except UploadError as error:
            where = uploads.location(uploads.root)
            return [], [(where, str(error))], {"s3", where}, []
    items, errors, scope = s3_items(uploads, list(etags), partition_key, keyword)
    if not uploads.configured:
        return items, errors, scope, []
    keys = {uploads.location(key): key for key in etags}
    records = []
    for item in items:
        key = keys[item.location]
        if etags[key] is None:
            try:
                etags[key] = uploads.head(key).etag
            except UploadMissing:  # registered all the same: media records it as not found
                continue
            except UploadError as error:
                errors.append((item.location, f"not recorded in upload_objects (its ETag is unknown): {error}"))
                continue
        records.append({"bucket": uploads.bucket, "key": key, "etag": etags[key]})
    return items, errors, scope, records


def prefix_uploads(
    uploads: UploadBucket, templates: list[str], partition_key: str
) -> tuple[list[Item], list[tuple[str, str]], set[str]]:
    """The objects under each of the upload bucket's ``s3_prefixes`` templates for this partition, the (item,
    reason) failures (a template refused for this key, a listing that failed: that prefix's failure, the rest go
    on), and the names their errors are recorded under.

    They are not recorded in ``upload_objects``: that table tells the uploads sensor which objects of the keyword
    folders it has brought, and a prefix may lie inside another keyword's folder."""
    if not uploads.configured:
        return [], [("s3_prefixes", f"no upload bucket configured: {len(templates)} prefixes skipped")], {"s3_prefixes"}
    items: list[Item] = []
    errors: list[tuple[str, str]] = []
    asked = {"s3_prefixes"}
    for template in dict.fromkeys(templates):
        name = uploads.location(template)
        asked.add(name)
        try:
            prefix = resolve_template(template, partition_key, "s3")
        except TemplateError as error:
            errors.append((name, f"s3_prefixes: {error}"))
            continue
        where = uploads.location(prefix)
        asked.add(where)
        try:
            keys = [obj.key for obj in uploads.list_objects(prefix)]
        except UploadError as error:
            errors.append((where, str(error)))
            continue
        items += [Item("s3", uploads.location(key), functools.partial(uploads.download, key)) for key in keys]
    return items, errors, asked


def prefixes_read(config: MediaRegistryConfig) -> bool:
    """Whether the run lists ``s3_prefixes``: it has some, and names no objects (a run that names them brings
    only those)."""
    return bool(config.s3_prefixes) and config.s3_keys is None and config.s3_objects is None


def local_uploads(config: MediaRegistryConfig, partition_key: str) -> tuple[list[dict], list[tuple[str, str]], str]:
    """Registry rows of the local folder (``local_dir``, a template resolved for this partition), the failure of
    the folder (refused or unreadable), and the name its errors are recorded under (the folder as configured)."""
    try:
        folder = resolve_template(config.local_dir, partition_key)
        return upload_rows(local_items(folder), config.license), [], config.local_dir
    except (TemplateError, UploadError) as error:
        return [], [(config.local_dir, str(error))], config.local_dir


def resolved(config: MediaRegistryConfig, tags: dict[str, str]) -> MediaRegistryConfig:
    """The config with each unset source filled in from the run's job (``SOURCES_TAG``), or on when untagged."""
    tagged = tags.get(SOURCES_TAG)
    chosen = {name.strip() for name in tagged.split(",")} if tagged is not None else {"youtube", "uploads", "stock"}
    return config.model_copy(update={
        "youtube_search": "youtube" in chosen if config.youtube_search is None else config.youtube_search,
        "uploads": "uploads" in chosen if config.uploads is None else config.uploads,
        "stock_sources": (list(STOCK_SOURCES) if "stock" in chosen else []) if config.stock_sources is None
        else config.stock_sources,
    })  # fmt: skip


def gather(
    config: MediaRegistryConfig,
    partition_key: str,
    keyword: str,
    youtube: YouTubeResource,
    uploads: UploadBucket,
    stock: dict,
) -> tuple[list[dict], list[tuple[str, str]], set[str], list[dict]]:
    """Every item the asked sources name, the (item, reason) failures, the names of the sources asked (so that
    the errors of sources not asked this time are kept), and the ``upload_objects`` rows of the uploads named."""
    rows: list[dict] = []
    records: list[dict] = []
    errors: list[tuple[str, str]] = []
    asked: set[str] = set()
    if config.youtube_search or config.urls:
        asked |= {"youtube search"} if config.youtube_search else set()
        candidates, failures = youtube_candidates(keyword, config.youtube_search, config.max_results, config.urls,
                                                  youtube)  # fmt: skip
        asked |= {candidate.media_id for candidate in candidates}
        errors += failures
        rows += [
            {"item": c.media_id, "source": c.source, "media_id": c.media_id, "media_type": "video", "url": c.url,
             "page_url": c.url, "query": keyword if config.youtube_search else None, "title": c.title,
             "channel": c.channel, "duration_s": c.duration_s}
            for c in candidates
        ]  # fmt: skip
    if config.local_dir:
        found, failures, name = local_uploads(config, partition_key)
        asked.add(name)
        errors += failures
        rows += found
    if config.uploads or config.s3_keys or config.s3_objects:
        items, failures, scope, records = s3_uploads(config, uploads, partition_key, keyword)
        asked |= scope
        errors += failures
        rows += upload_rows(items, config.license)
    if prefixes_read(config):
        items, failures, scope = prefix_uploads(uploads, config.s3_prefixes, partition_key)
        asked |= scope
        errors += failures
        rows += upload_rows(items, config.license)
    if config.stock_sources:
        unknown = sorted(set(config.stock_sources) - set(stock))
        sources = {name: stock[name] for name in config.stock_sources if name in stock}
        asked |= set(config.stock_sources)
        queries = [q for q in dict.fromkeys(" ".join(q.split()) for q in (config.queries or [keyword])) if q]
        hits, failures = collect_hits(sources, queries, config.per_query)
        errors += failures + [(name, "unknown source") for name in unknown]
        rows += [registry_row(query, hit) for query, hit in hits]
    unique: dict[str, dict] = {}
    for row in rows:
        unique.setdefault(row["item"], row)
    return list(unique.values()), errors, asked, records


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    group_name="sources",
    kinds={"youtube", "s3", "duckdb"},
    metadata=table_definition_metadata("registry"),
    check_specs=[
        dg.AssetCheckSpec(
            "sources_answered",
            asset="media_registry",
            blocking=False,
            description="Warns when a source asked (a search, a listing, a URL, a stock API) failed.",
        ),
        unique_key_spec("media_registry", DATASET_OWNED),
        output_spec("media_registry", "items"),
    ],
)
def media_registry(
    context: dg.AssetExecutionContext,
    config: MediaRegistryConfig,
    youtube: YouTubeResource,
    uploads: UploadBucket,
    pexels: PexelsSource,
    unsplash: UnsplashSource,
    pixabay: PixabayPhotoSource,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Everything a keyword's sources name (videos, uploads, stock photos), one row per item, fetched or not."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    dataset = None
    note = None if is_dataset_key(partition_key) else remember_keyword(warehouse, partition_key, config.keyword)
    if note:
        context.log.warning(note)
    for attempt in warehouse.retrying():
        with attempt as conn:
            keyword = keyword_text(conn, partition_key)
    stock = {"pexels": pexels, "unsplash": unsplash, "pixabay": pixabay}
    config = resolved(config, context.run.tags)
    names = sources_asked(config) + [f"upload bucket prefix {t}" for t in config.s3_prefixes if prefixes_read(config)]
    if is_dataset_key(partition_key):  # only the dataset: whatever else the run or its job asks is skipped
        dataset = dataset_registry(warehouse, uploads, partition_key, config.license)
        rows, errors, records, keyword = dataset.rows, dataset.errors, dataset.records, dataset.keyword
        skipped, names, asked = names, [f"dataset {keyword}"], None
    else:
        rows, errors, asked, records = gather(config, partition_key, keyword, youtube, uploads, stock)
    uploaded = pd.DataFrame(records, columns=["bucket", "key", "etag"]).drop_duplicates(["bucket", "key", "etag"])
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("partition_key", "keyword")])
    frame = frame.assign(partition_key=partition_key, keyword=keyword)[COLUMNS].astype(object)
    frame = frame.where(frame.notna(), None)  # missing fields are NULL, never NaN
    # the lease keeps a second registry run of this keyword from inserting the same new items beside this one
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            known = {row[0] for row in conn.execute(
                "SELECT item FROM registry WHERE partition_key = ?", [partition_key]).fetchall()}  # fmt: skip
            if len(frame):
                execute_with_rows(conn, UPSERT, frame)
            if len(uploaded):  # in the registry's transaction: an object counts as registered once its row is there
                execute_with_rows(conn, RECORD_UPLOADS, uploaded.assign(partition_key=partition_key))
            if dataset is not None and dataset.matches is not None:  # the analysis of this run's list
                replace_partition_rows(conn, "dataset_matches", partition_key, dataset.matches)
            earlier = conn.execute(
                "SELECT item, reason FROM media_registry_errors WHERE partition_key = ?", [partition_key]
            ).fetchall()
            # the errors of sources not asked this time are kept (a dataset's run asks all of its own)
            kept = [(item, reason) for item, reason in earlier if asked is not None and item not in asked]
            record_errors(conn, partition_key, STAGE, sorted({*errors, *kept}))
            by_source = dict(conn.execute(
                "SELECT source, count(*) FROM registry WHERE partition_key = ? GROUP BY source ORDER BY source",
                [partition_key]).fetchall())  # fmt: skip
            table, unique = table_report(conn, partition_key, "registry", OWNED if dataset is None else DATASET_OWNED)
    for item, reason in errors:
        context.log.warning(f"{item}: {reason}")
    new = [row for row in rows if row["item"] not in known]
    found = f"no item found by {', '.join(names)}" if names else "no source was asked (run config, job's sources tag)"
    return dg.MaterializeResult(
        metadata={
            **table,
            "keyword": keyword,
            "items": sum(by_source.values()),
            "new_items": len(new),
            "uploads_recorded": len(uploaded),
            "by_source": dg.MetadataValue.json(by_source),
            **({} if dataset is None else {**dataset.metadata, "skipped_sources": dg.MetadataValue.json(skipped)}),
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
            "new_preview": dg.MetadataValue.md(
                markdown_table(
                    ["item", "source", "title"],
                    [(r["item"], r["source"], r.get("title") or r.get("description")) for r in new[:20]],
                    "_no new items_",
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="sources_answered",
                passed=not errors,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"failures": len(errors)},
            ),
            unique,
            output_check(len(names), len(rows), found + first_reasons(errors)),
        ],
    )
