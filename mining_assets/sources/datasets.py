"""Datasets: a named list of images (a CSV of file names) whose files lie under a prefix of the upload bucket, each a
keyword partition of its own (``dataset--<slug of its name>``), labelled REAL (photographs), GEN (generated images)
or another word.

The job ``add_dataset`` records a dataset (table ``datasets``, DDL beside this module, written only here) and adds
its partition. For such a partition media_registry asks only the dataset (``dataset_registry``): it reads the list,
lists the prefix (sub-folders included) and matches each listed name to one object (``match_names``) before anything
is fetched; a name that matches no object or several is recorded with its reason and never guessed.
"""

import dataclasses
import re
import unicodedata
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from mining_assets.metadata import markdown_table
from mining_assets.partitions import dataset_key, keyword_partitions, normalize_keyword
from mining_assets.sources.name_lists import DatasetError, Matches, match_names, read_name_list
from mining_assets.sources.uploads import local_path
from mining_assets.warehouse import query_dicts
from resources.uploads import UploadBucket, UploadError
from resources.warehouse import Warehouse

MAX_LIST_BYTES = 64 * 2**20
SHOWN = 20  # names of problems shown in the metadata table
CANDIDATES_NAMED = 5  # candidates named in an ambiguous name's recorded reason
DATASETS_LEASE = "table:datasets"  # the write lease of the datasets table (no partition key has a colon)
UPSERT_DATASET = """
MERGE INTO datasets USING (SELECT ?::VARCHAR AS partition_key, ?::VARCHAR AS name, ?::VARCHAR AS label,
                                  ?::VARCHAR AS list_location, ?::VARCHAR AS s3_prefix) AS incoming
ON datasets.partition_key = incoming.partition_key
WHEN MATCHED THEN UPDATE SET name = incoming.name, label = incoming.label, list_location = incoming.list_location,
    s3_prefix = incoming.s3_prefix
WHEN NOT MATCHED THEN INSERT (partition_key, name, label, list_location, s3_prefix, added_at)
    VALUES (incoming.partition_key, incoming.name, incoming.label, incoming.list_location, incoming.s3_prefix,
            now()::TIMESTAMP)
"""


# ---------------------------------------------------------------------- the dataset's settings
def upload_key(location: str, uploads: UploadBucket, what: str) -> str:
    """The key an ``s3://`` location names in the upload bucket.

    Raises:
        DatasetError: no upload bucket is configured, or the location is in another bucket.
    """
    bucket, _, key = location.removeprefix("s3://").partition("/")
    if not uploads.configured:
        raise DatasetError(f"{what} {location!r} is in S3, and no upload bucket is configured")
    if bucket != uploads.bucket:
        raise DatasetError(
            f"{what} {location!r} is in bucket {bucket!r}, not the upload bucket {uploads.bucket!r}: refused "
            "(a dataset is read from the upload bucket only)"
        )
    return key


def normalized_prefix(s3_prefix: str, uploads: UploadBucket) -> str:
    """The upload bucket's prefix a dataset's files lie under, ending in ``/`` (empty: the whole bucket); an
    ``s3://<upload bucket>/...`` location is read as its prefix.

    Raises:
        DatasetError: a NUL or control character, a leading ``/``, a ``..`` segment, or another bucket.
    """
    prefix = s3_prefix.strip()
    if prefix.startswith("s3://"):
        prefix = upload_key(prefix, uploads, "the prefix")
    if any(unicodedata.category(c) == "Cc" for c in prefix):
        raise DatasetError("the prefix holds a NUL or control character")
    if prefix.startswith("/"):
        raise DatasetError(f"the prefix {prefix!r} starts with '/': give it relative to the bucket (images/real/)")
    if ".." in prefix.split("/"):
        raise DatasetError(f"the prefix {prefix!r} has a '..' segment")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def normalized_label(label: str) -> str:
    """The label in upper case: REAL (photographs), GEN (generated images), or any other word (letters, digits,
    ``_``, inner ``-``).

    Raises:
        DatasetError: empty, more than one word, or longer than 40 characters.
    """
    word = label.strip().upper()
    if not re.fullmatch(r"\w+(?:-\w+)*", word) or len(word) > 40:
        raise DatasetError(f"label {label!r} refused: one word, such as REAL or GEN")
    return word


def read_list(uploads: UploadBucket, list_location: str) -> str:
    """The text of a dataset's list: ``s3://<upload bucket>/<key>`` read through the upload bucket, or a local file
    (a path, or a ``file://`` URI).

    Raises:
        DatasetError: another bucket or another kind of URL, a file or object that is not there or can't be read,
            one larger than 64 MiB, or text that is not UTF-8.
    """
    where = list_location.strip()
    try:
        if where.startswith("s3://"):
            key = upload_key(where, uploads, "the list")
            with uploads.download(key) as path:
                data = read_capped(path, where)
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", where) and not where.startswith("file://"):
            raise DatasetError(f"the list {where!r} is neither s3://<upload bucket>/<key> nor a local file")
        else:
            path = local_path(where) if where.startswith("file://") else Path(where).expanduser()
            if not path.is_file():
                raise DatasetError(f"the list {where!r} is not a file here")
            data = read_capped(path, where)
    except UploadError as error:
        raise DatasetError(f"the list {where!r} can't be read: {error}") from error
    except OSError as error:
        raise DatasetError(f"the list {where!r} can't be read: {error.strerror or error}") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"the list {where!r} is not UTF-8 text (byte {error.start})") from error


def read_capped(path: Path, where: str) -> bytes:
    if path.stat().st_size > MAX_LIST_BYTES:
        raise DatasetError(f"the list {where!r} is larger than {MAX_LIST_BYTES // 2**20} MiB")
    return path.read_bytes()


def dataset_of(conn, partition_key: str) -> dict | None:
    """The ``datasets`` row of a partition, or None when no dataset is defined for it."""
    rows = query_dicts(conn, "SELECT * FROM datasets WHERE partition_key = ?", [partition_key])
    return rows[0] if rows else None


# ---------------------------------------------------------------------- what the registry registers of a dataset
@dataclasses.dataclass
class DatasetRegistry:
    """What media_registry registers for a dataset partition, and what it shows of the analysis."""

    keyword: str  # the dataset's name (the partition key when none is defined): the registry rows' keyword
    rows: list[dict]  # registry rows: one per object found
    records: list[dict]  # upload_objects rows (bucket, key, ETag as listed) of the objects found
    errors: list[tuple[str, str]]  # (item, reason): the dataset's own failures, each name not found, ambiguous, refused
    matches: pd.DataFrame | None  # the partition's dataset_matches rows; None: no analysis was made (kept as it was)
    metadata: dict


def dataset_registry(
    warehouse: Warehouse, uploads: UploadBucket, partition_key: str, license_text: str
) -> DatasetRegistry:
    """The registry rows of a dataset partition's found objects, with the analysis made before anything is fetched.
    No dataset defined, no upload bucket, a list or a listing that can't be read: the dataset's recorded failure,
    with no rows (and the earlier analysis kept)."""
    for attempt in warehouse.retrying():
        with attempt as conn:
            dataset = dataset_of(conn, partition_key)
    if dataset is None:
        reason = "no dataset is defined for this partition: run add_dataset"
        return DatasetRegistry(partition_key, [], [], [(partition_key, reason)], None, {"dataset_label": "none"})
    shown = {"dataset_name": dataset["name"], "dataset_label": dataset["label"],
             "dataset_list": dataset["list_location"]}  # fmt: skip
    try:
        if not uploads.configured:
            raise DatasetError("no upload bucket configured: a dataset's files are read from it")
        prefix = normalized_prefix(dataset["s3_prefix"], uploads)
        where = uploads.location(prefix)
        names = read_name_list(read_list(uploads, dataset["list_location"]))
    except DatasetError as error:
        return DatasetRegistry(dataset["name"], [], [], [(dataset["list_location"], str(error))], None, shown)
    try:
        etags = {obj.key: obj.etag for obj in uploads.list_objects(prefix)}
    except UploadError as error:
        return DatasetRegistry(dataset["name"], [], [], [(where, str(error))], None, {**shown, "dataset_prefix": where})
    matches = match_names(names, list(etags), prefix, uploads.bucket)
    titles: dict[str, str] = {}  # object key -> the first name that found it (cat.jpg and cat.png may find one)
    for name, key in matches.found.items():
        titles.setdefault(key, name)
    rows = [{"item": uploads.location(key), "source": "s3", "url": uploads.location(key),
             "page_url": uploads.location(key), "title": name, "license": license_text}
            for key, name in titles.items()]  # fmt: skip
    # an object in a keyword's folder is not recorded: upload_objects tells the uploads sensor which of those
    # folders' objects runs brought, and this run brings it for the dataset, not for the keyword
    records = [{"bucket": uploads.bucket, "key": key, "etag": etags[key]} for key in titles
               if uploads.keyword_folder(key) is None]  # fmt: skip
    return DatasetRegistry(
        dataset["name"], rows, records, problems(matches, where), match_rows(matches, partition_key),
        {**shown, "dataset_prefix": where, **analysis_metadata(matches)},
    )  # fmt: skip


def problems(matches: Matches, where: str) -> list[tuple[str, str]]:
    """(listed name, reason) of each name not fetched: missing, ambiguous (with its candidates) or refused."""
    errors = [(name, f"listed but not found under {where} (searched sub-folders, any image extension)")
              for name in matches.missing]  # fmt: skip
    for name, keys in matches.ambiguous.items():
        named = ", ".join(keys[:CANDIDATES_NAMED]) + (f" and {len(keys) - CANDIDATES_NAMED} more" if
                                                       len(keys) > CANDIDATES_NAMED else "")  # fmt: skip
        errors.append((name, f"ambiguous: {len(keys)} files match: {named} — not fetched"))
    return errors + [(name, f"refused: {reason}") for name, reason in matches.refused.items()]


def match_rows(matches: Matches, partition_key: str) -> pd.DataFrame:
    """The ``dataset_matches`` rows of an analysis: one per distinct listed name."""
    rows = [(partition_key, name, matches.status(name), matches.found.get(name), matches.ambiguous.get(name, []))
            for name in matches.listed]  # fmt: skip
    columns = ["partition_key", "listed_name", "status", "object_key", "candidates"]
    return pd.DataFrame(rows, columns=columns).astype(object)


def analysis_metadata(matches: Matches) -> dict:
    """The pre-download analysis as the registry shows it: the counts, and up to 20 names that are not fetched with
    their candidates or reason, in list order."""
    shown = [
        (name, status, ", ".join(matches.ambiguous[name]) if status == "ambiguous" else matches.refused.get(name, ""))
        for name, status in ((name, matches.status(name)) for name in matches.listed if name not in matches.found)
    ][:SHOWN]
    return {
        "dataset_analysis": dg.MetadataValue.json(matches.summary()),
        "dataset_problems": dg.MetadataValue.md(
            markdown_table(["listed name", "status", "candidates / reason"], shown, "_every listed name was found_")
        ),
    }


# ---------------------------------------------------------------------- add_dataset
class AddDatasetConfig(dg.Config):
    name: str = Field(description="The dataset's name; its partition is dataset--<name as a slug>.")
    label: str = Field(description="REAL (photographs), GEN (generated images), or another word; kept upper case.")
    list_location: str = Field(description="The CSV of file names: s3://<upload bucket>/<key>, or a local path.")
    s3_prefix: str = Field(description="The upload bucket's prefix holding the files (sub-folders are searched).")


@dg.op(out=dg.Out(dg.Nothing))
def record_dataset(
    context: dg.OpExecutionContext, config: AddDatasetConfig, uploads: UploadBucket, warehouse: Warehouse
) -> dg.Output:
    """Record a dataset (its label, list and prefix) under its partition key and add the partition."""
    try:
        name = normalize_keyword(config.name)
        key = dataset_key(name)
        label = normalized_label(config.label)
        prefix = normalized_prefix(config.s3_prefix, uploads)
        where = config.list_location.strip()
        if not where:
            raise DatasetError("list_location is empty")
        if where.startswith("s3://"):
            upload_key(where, uploads, "the list")
    except ValueError as error:  # DatasetError too
        raise dg.Failure(f"dataset {config.name!r} refused: {error}", allow_retries=False) from error
    for attempt in warehouse.retrying(lease=DATASETS_LEASE):
        with attempt as conn:
            before = dataset_of(conn, key)
            conn.execute(UPSERT_DATASET, [key, name, label, where, prefix])
    new = key not in context.instance.get_dynamic_partitions(keyword_partitions.name)
    if new:
        context.instance.add_dynamic_partitions(keyword_partitions.name, [key])
    now = {"name": name, "label": label, "list_location": where, "s3_prefix": prefix}
    changed = {field: value for field, value in now.items() if before is None or before[field] != value}
    context.log.info(f"{'added' if before is None else 'updated'}: dataset {name!r} ({label}) -> partition {key}")
    return dg.Output(
        None,
        metadata={"partition_key": key, **now, "partition_added": new, "changed": dg.MetadataValue.json(changed)},
    )


@dg.job(
    description="Add a dataset (a CSV of file names under a prefix of the upload bucket, labelled REAL or GEN) as a "
    "partition of its own, dataset--<name>; a second run with the same name updates it. Launchpad config: "
    "ops.record_dataset.config: {name, label, list_location, s3_prefix}",
    executor_def=dg.in_process_executor,
)
def add_dataset() -> None:
    record_dataset()
