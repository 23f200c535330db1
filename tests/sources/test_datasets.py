"""Datasets (a CSV of file names under a prefix of the upload bucket, labelled REAL or GEN, a partition of its own):
the list read and matched to the bucket's objects (pure), add_dataset, and the source chain for a dataset partition
on a moto bucket: the analysis before anything is fetched, only the found files fetched, re-runs and resumed runs
that fetch only what is new."""

import threading

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource
from harness import meta, query_dicts
from test_uploads import make_bucket, put
from vision_support import encode, scene

from mining_assets.frames import frames
from mining_assets.partitions import dataset_key
from mining_assets.sources.datasets import (
    add_dataset,
    analysis_metadata,
    dataset_of,
    normalized_label,
    normalized_prefix,
    read_list,
)
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.sources.name_lists import DatasetError, match_names, read_name_list
from mining_assets.video.frames import video_frames
from resources.uploads import UploadBucket, UploadError

SOURCE_ASSETS = [media_registry, media, video_frames, frames]
KEY = "dataset--cats"
PREFIX = "datasets/cats/"


# ---------------------------------------------------------------------- reading the list
@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("image_name,label\ncat.jpg,REAL\ndog.png,GEN\n", ["cat.jpg", "dog.png"]),
        ("label,File_Name\nREAL,cat.jpg\n", ["cat.jpg"]),
        ("id,FILENAME,caption\n1,cat.jpg,a cat\n", ["cat.jpg"]),
        ("id,Image\n1,cat.jpg\n", ["cat.jpg"]),
        (" name ,x\ncat.jpg,1\n", ["cat.jpg"]),
        ("name,image_name\nA cat,cat.jpg\n", ["cat.jpg"]),  # image_name is the preferred column
        ("cat.jpg\ndog.png\n", ["cat.jpg", "dog.png"]),  # no header: every row's first cell
        ("cat.jpg,REAL\ndog.png,GEN\n", ["cat.jpg", "dog.png"]),
        ("\ufeffimage_name\ncat.jpg\n", ["cat.jpg"]),  # BOM (Excel's UTF-8 CSV)
        ("\ufeffcat.jpg\n", ["cat.jpg"]),
        ("name\n\n  cat.jpg  \n,\n\r\ndog.png\r\n   \n", ["cat.jpg", "dog.png"]),  # blank rows, white space
        ('name\n"a, b.jpg"\n"c ""d"".png"\n', ["a, b.jpg", 'c "d".png']),
        ("image_name\tlabel\ncat.jpg\tREAL\n", ["cat.jpg"]),
        ("label;file_name\nREAL;cat.jpg\n", ["cat.jpg"]),
        ("name\nz.jpg\na.jpg\nm.jpg\nz.jpg\n", ["z.jpg", "a.jpg", "m.jpg", "z.jpg"]),  # order kept, repeats too
        ("label,name\nREAL\nGEN,dog.png\n", ["dog.png"]),  # a row without the column is blank
        ("image_name\n", []),
        ("", []),
        ("name\n../x.jpg\n/etc/passwd\n", ["../x.jpg", "/etc/passwd"]),  # kept: match_names refuses them
    ],
)
def test_read_name_list(text, names):
    assert read_name_list(text) == names


# ---------------------------------------------------------------------- matching the names
P = "p/"


@pytest.mark.parametrize(
    ("listed", "keys", "status", "expected"),
    [
        ("cat.jpg", ["p/cat.png"], "found", "p/cat.png"),  # extension mismatch
        ("cat.png", ["p/cat.jpg"], "found", "p/cat.jpg"),
        ("cat.jpg", ["p/a/b/cat.webp"], "found", "p/a/b/cat.webp"),  # sub-folders searched
        ("cat", ["p/cat.tiff"], "found", "p/cat.tiff"),  # no extension listed
        ("cat.jpg", ["p/cat.jpg", "p/cat.png"], "found", "p/cat.jpg"),  # the exact name wins
        ("cat.jpg", ["p/a/cat.jpg", "p/b/cat.png"], "found", "p/a/cat.jpg"),
        ("cat.JPG", ["p/cat.jpg", "p/cat.png"], "found", "p/cat.jpg"),  # extension case ignored
        ("cat.jpg", ["p/cat.PNG"], "found", "p/cat.PNG"),
        ("cat.jpg", ["p/cat.JPEG", "p/cat.txt"], "found", "p/cat.JPEG"),  # only image extensions count
        ("cat.gif", ["p/x/cat.png", "p/y/cat.jpg"], "ambiguous", ["p/x/cat.png", "p/y/cat.jpg"]),
        ("cat", ["p/cat.jpg", "p/cat.png"], "ambiguous", ["p/cat.jpg", "p/cat.png"]),  # same name, two extensions
        ("cat.jpg", ["p/a/cat.jpg", "p/b/cat.jpg"], "ambiguous", ["p/a/cat.jpg", "p/b/cat.jpg"]),
        ("cat.jpg", ["p/cat.jpg", "p/cat.JPG"], "found", "p/cat.jpg"),  # exactly that file name
        ("cat.Jpg", ["p/cat.jpg", "p/cat.JPG"], "ambiguous", ["p/cat.JPG", "p/cat.jpg"]),
        ("a/cat.jpg", ["p/a/cat.png", "p/b/cat.png"], "found", "p/a/cat.png"),  # folders narrow the search
        ("x/a/cat.jpg", ["p/x/a/cat.png", "p/a/cat.png"], "found", "p/x/a/cat.png"),
        ("a\\cat.jpg", ["p/a/cat.png", "p/b/cat.png"], "found", "p/a/cat.png"),
        ("./cat.jpg", ["p/cat.png"], "found", "p/cat.png"),
        ("cat.jpg", ["p/cat.txt"], "missing", None),
        ("cat.txt", ["p/cat.txt"], "found", "p/cat.txt"),  # named exactly: media decides by content
        ("cat.jpg", ["p/dog.jpg", "p/catalog.jpg", "p/cat.jpg.bak"], "missing", None),
        ("CAT.jpg", ["p/cat.jpg"], "missing", None),  # the stem is compared exactly
        ("cat.jpg", ["other/cat.jpg", "p2/cat.jpg"], "missing", None),  # outside the prefix
        ("cat.jpg", ["p/cat.jpg/"], "missing", None),  # a folder marker
        ("img.2024.01", ["p/img.2024.01.png"], "found", "p/img.2024.01.png"),  # a dot that is no image extension
        ("<b>cat</b>.jpg", ["p/<b>cat</b>.png"], "found", "p/<b>cat</b>.png"),  # HTML is only a name
        ("s3://b/p/a/cat.jpg", ["p/a/cat.png"], "found", "p/a/cat.png"),  # a location in the prefix: its path
    ],
)
def test_match_names(listed, keys, status, expected):
    matches = match_names([listed], keys, P, bucket="b")
    assert matches.status(listed) == status
    assert {"found": matches.found, "ambiguous": matches.ambiguous}.get(status, {}).get(listed) == expected
    assert matches.missing == ([listed] if status == "missing" else [])
    assert matches.summary()["listed"] == 1 and matches.summary()[status] == 1


@pytest.mark.parametrize(
    ("listed", "reason"),
    [
        ("../x.jpg", "'..' segment"),
        ("a/../../x.jpg", "'..' segment"),
        ("a\\..\\x.jpg", "'..' segment"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\x.jpg", "absolute path"),
        ("C:\\photos\\x.jpg", "absolute path"),
        ("~/x.jpg", "absolute path"),
        ("a\x00b.jpg", "NUL"),
        ("a\x07b.jpg", "control characters"),
        ("photos/", "names no file"),
        ("x" * 1025, "longer than 1024"),
        ("s3://other-bucket/p/x.jpg", "outside the dataset's prefix s3://b/p/, or in another bucket"),
        ("s3://b/elsewhere/x.jpg", "outside the dataset's prefix"),
        ("https://example.com/x.jpg", "a URL"),
    ],
)
def test_hostile_names_are_refused_with_the_reason_and_never_matched(listed, reason):
    keys = ["p/x.jpg", "p/a/b.jpg", "x.jpg", "etc/passwd", "p/etc/passwd", "p/photos/x.jpg"]
    matches = match_names([listed], keys, P, bucket="b")
    assert not matches.found and not matches.missing and not matches.ambiguous
    ((name, why),) = matches.refused.items()
    assert reason in why
    assert "\x00" not in name and "\x07" not in name  # recorded printable: a\x00b.jpg


def test_a_name_listed_twice_counts_once_and_the_summary_adds_up():
    names = ["a.jpg", "b.jpg", "a.jpg", "c.png", "a.jpg", "../d.jpg", "e", "b.jpg"]
    keys = ["p/a.png", "p/b.jpg", "p/x/e.jpg", "p/y/e.png", "p/notes.txt"]
    matches = match_names(names, keys, P)
    assert matches.found == {"a.jpg": "p/a.png", "b.jpg": "p/b.jpg"}
    assert matches.missing == ["c.png"] and matches.ambiguous == {"e": ["p/x/e.jpg", "p/y/e.png"]}
    assert set(matches.refused) == {"../d.jpg"}
    assert matches.listed == ["a.jpg", "b.jpg", "c.png", "../d.jpg", "e"]
    assert matches.summary() == {"listed": 5, "found": 2, "missing": 1, "ambiguous": 1, "refused": 1, "repeated": 3}


def test_the_analysis_table_escapes_html_and_names_candidates():
    names = ["<script>alert(1)</script>.jpg", "x|y.jpg", "dup", *(f"gone{i}.jpg" for i in range(30))]
    matches = match_names(names, ["p/a/dup.jpg", "p/b/dup.png"], P)
    table = analysis_metadata(matches)["dataset_problems"].value
    assert "<script>" not in table and "&lt;script&gt;" in table and "x&#124;y.jpg" in table
    assert "p/a/dup.jpg, p/b/dup.png" in table
    assert len(table.splitlines()) == 2 + 20  # header, rule, the first 20 names not fetched
    assert analysis_metadata(matches)["dataset_analysis"].value["missing"] == 32


@pytest.mark.parametrize(
    ("given", "prefix"),
    [("datasets/cats", "datasets/cats/"), ("datasets/cats/", "datasets/cats/"), (" a/b ", "a/b/"), ("", ""),
     ("s3://uploads-b/x/y", "x/y/")],
)  # fmt: skip
def test_prefixes_are_normalized(given, prefix):
    assert normalized_prefix(given, UploadBucket(bucket="uploads-b", s3=S3Resource())) == prefix


@pytest.mark.parametrize(
    ("given", "reason"),
    [("/datasets", "starts with '/'"), ("a/../b", "'..' segment"), ("..", "'..' segment"), ("a\x00b", "NUL"),
     ("s3://elsewhere/x", "not the upload bucket")],
)  # fmt: skip
def test_hostile_prefixes_are_refused(given, reason):
    with pytest.raises(DatasetError, match=reason):
        normalized_prefix(given, UploadBucket(bucket="uploads-b", s3=S3Resource()))


@pytest.mark.parametrize(("label", "word"), [("real", "REAL"), (" GEN ", "GEN"), ("synthetic-v2", "SYNTHETIC-V2")])
def test_labels_are_upper_case_words(label, word):
    assert normalized_label(label) == word


@pytest.mark.parametrize("label", ["", "  ", "two words", "<b>", "x" * 41])
def test_labels_that_are_not_one_word_are_refused(label):
    with pytest.raises(DatasetError):
        normalized_label(label)


def test_read_list_reads_local_files_and_refuses_what_it_cannot_read(tmp_path):
    unconfigured = UploadBucket.unconfigured()
    (tmp_path / "list.csv").write_text("name\ncat.jpg\n", encoding="utf-8-sig")
    assert read_list(unconfigured, str(tmp_path / "list.csv")) == "name\ncat.jpg\n"
    assert read_list(unconfigured, (tmp_path / "list.csv").as_uri()) == "name\ncat.jpg\n"
    (tmp_path / "latin1.csv").write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    for location, reason in [
        (str(tmp_path / "nope.csv"), "not a file"),
        (str(tmp_path), "not a file"),
        (str(tmp_path / "latin1.csv"), "not UTF-8"),
        ("https://example.com/list.csv", "neither s3://"),
        ("s3://some-bucket/list.csv", "no upload bucket is configured"),
    ]:
        with pytest.raises(DatasetError, match=reason):
            read_list(unconfigured, location)


# ---------------------------------------------------------------------- Dagster, on a moto bucket
CATS_LIST = "image_name,label\ncat1.jpg,REAL\ncat2.jpg,REAL\ncat3.jpg,REAL\ncat4,REAL\ncat5.jpg,REAL\n" \
            "../../etc/passwd,REAL\ncat2.jpg,REAL\ncat6,REAL\n<i>cat7</i>.jpg,REAL\ncat1.png,REAL\n"  # fmt: skip
FOUND = {"cat1.jpg": "a/cat1.png", "cat2.jpg": "cat2.jpg", "cat3.jpg": "b/cat3.jpg", "cat6": "cat6.webp",
         "<i>cat7</i>.jpg": "deep/er/<i>cat7</i>.jpg"}  # fmt: skip
ANALYSIS = {"listed": 9, "found": 6, "missing": 1, "ambiguous": 1, "refused": 1, "repeated": 1}


@pytest.fixture
def bucket(s3_endpoint):
    """A dataset's files under datasets/cats/ (one named .png that the list calls .jpg, two cat3 of which the list
    names one exactly, two cat4 it names without an extension), its list, and objects the list does not name."""
    bucket = make_bucket(s3_endpoint)
    for seed, name in enumerate([*FOUND.values(), "c/cat3.png", "x/cat4.jpg", "y/cat4.png", "unlisted.jpg"]):
        put(bucket, PREFIX + name, encode(scene(seed, size=(80, 60))))
    put(bucket, PREFIX + "notes.txt", b"not listed, not an image\n")
    put(bucket, "lists/cats.csv", CATS_LIST.encode())
    put(bucket, "uploads/robot arm/other.jpg", encode(scene(40)))  # a keyword's upload
    return bucket


def define(instance, resources, raise_on_error=True, **config):
    """Run add_dataset with ``config`` over the defaults of the cats dataset."""
    fields = {"name": "cats", "label": "real", "list_location": "s3://{bucket}/lists/cats.csv", "s3_prefix": PREFIX,
              **config}  # fmt: skip
    fields["list_location"] = fields["list_location"].format(bucket=resources["uploads"].bucket)
    return add_dataset.execute_in_process(
        run_config={"ops": {"record_dataset": {"config": fields}}},
        instance=instance,
        resources={"uploads": resources["uploads"], "warehouse": resources["warehouse"]},
        raise_on_error=raise_on_error,
    )


def run(instance, resources, partition_key=KEY, registry=None, **ops):
    """The source chain for a partition; the registry is also asked for YouTube and a stock API, which a dataset's
    partition never asks."""
    configs = {"media_registry": {"youtube_search": True, "stock_sources": ["pexels"], "uploads": True,
                                  **(registry or {})}, **ops}  # fmt: skip
    result = dg.materialize(
        SOURCE_ASSETS,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config={"ops": {name: {"config": value} for name, value in configs.items()}},
    )
    assert result.success
    return result


def registry_errors(resources) -> dict[str, str]:
    rows = query_dicts(resources, "SELECT item, reason FROM media_registry_errors WHERE partition_key = ?", KEY)
    return {row["item"]: row["reason"] for row in rows}


def test_add_dataset_adds_the_partition_and_the_row_and_a_second_run_updates_it(instance, resources, bucket):
    resources = {**resources, "uploads": bucket}
    result = define(instance, resources)
    assert result.success
    assert instance.get_dynamic_partitions("keyword") == [KEY] == [dataset_key("cats")]
    (row,) = query_dicts(resources, "SELECT * FROM datasets")
    assert {k: row[k] for k in ("partition_key", "name", "label", "s3_prefix")} == {
        "partition_key": KEY, "name": "cats", "label": "REAL", "s3_prefix": PREFIX}  # fmt: skip
    assert row["list_location"] == f"s3://{bucket.bucket}/lists/cats.csv" and row["added_at"] is not None

    again = define(instance, resources, label="gen", s3_prefix="datasets/cats")
    assert again.success
    assert instance.get_dynamic_partitions("keyword") == [KEY]
    (updated,) = query_dicts(resources, "SELECT * FROM datasets")
    assert updated["label"] == "GEN" and updated["s3_prefix"] == PREFIX and updated["added_at"] == row["added_at"]
    (output,) = [e for e in again.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert metadata["changed"] == {"label": "GEN"} and metadata["partition_added"] is False
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            assert dataset_of(conn, KEY)["label"] == "GEN" and dataset_of(conn, "cats") is None


@pytest.mark.parametrize(
    ("config", "reason"),
    [({"name": "  "}, "keyword is empty"), ({"label": "not one"}, "label"), ({"s3_prefix": "../x"}, "'..' segment"),
     ({"s3_prefix": "/datasets"}, "starts with '/'"), ({"list_location": "s3://elsewhere/cats.csv"}, "elsewhere"),
     ({"list_location": " "}, "empty")],
)  # fmt: skip
def test_add_dataset_refuses_with_the_reason_and_adds_nothing(instance, resources, bucket, config, reason):
    result = define(instance, {**resources, "uploads": bucket}, raise_on_error=False, **config)
    assert not result.success
    failures = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert any(reason in text for text in failures), failures
    assert instance.get_dynamic_partitions("keyword") == []
    assert query_dicts(resources, "SELECT * FROM datasets") == []


@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_dataset_partition_fetches_only_the_names_found_and_a_rerun_fetches_nothing(
    instance, resources, bucket, tmp_path, where
):
    resources = {**resources, "uploads": bucket}
    if where == "local":
        (tmp_path / "cats.csv").write_text(CATS_LIST)
        define(instance, resources, list_location=str(tmp_path / "cats.csv"))
    else:
        define(instance, resources)
    result = run(instance, resources)

    registry = meta(result, "media_registry")
    assert registry["dataset_analysis"] == ANALYSIS and registry["dataset_label"] == "REAL"
    assert {"youtube search", "pexels", "upload bucket"} <= set(registry["skipped_sources"])
    assert registry["items"] == 5 and registry["by_source"] == {"s3": 5}  # no video, no stock photo
    assert "&lt;i&gt;" not in registry["dataset_problems"]  # found: not in the table
    assert "cat4" in registry["dataset_problems"] and f"{PREFIX}x/cat4.jpg, {PREFIX}y/cat4.png" in \
        registry["dataset_problems"]  # fmt: skip
    rows = query_dicts(resources, "SELECT item, source, keyword, title FROM registry ORDER BY title")
    assert {r["title"]: r["item"] for r in rows} == {n: bucket.location(PREFIX + k) for n, k in FOUND.items()}
    assert {(r["source"], r["keyword"]) for r in rows} == {("s3", "cats")}
    errors = registry_errors(resources)
    assert set(errors) == {"cat4", "cat5.jpg", "../../etc/passwd"}
    assert errors["cat5.jpg"] == (f"listed but not found under s3://{bucket.bucket}/{PREFIX} (searched sub-folders, "
                                  "any image extension)")  # fmt: skip
    assert errors["cat4"] == f"ambiguous: 2 files match: {PREFIX}x/cat4.jpg, {PREFIX}y/cat4.png — not fetched"
    assert "'..' segment" in errors["../../etc/passwd"]
    matches = query_dicts(resources, "SELECT listed_name, status, object_key, candidates, analysed_at "
                                     "FROM dataset_matches WHERE partition_key = ?", KEY)  # fmt: skip
    assert {m["listed_name"]: m["status"] for m in matches} == {
        **dict.fromkeys([*FOUND, "cat1.png"], "found"),
        "cat4": "ambiguous",
        "cat5.jpg": "missing",
        "../../etc/passwd": "refused",
    }
    by_name = {m["listed_name"]: m for m in matches}
    assert by_name["cat1.jpg"]["object_key"] == PREFIX + "a/cat1.png" and by_name["cat5.jpg"]["object_key"] is None
    assert by_name["cat1.png"]["object_key"] == PREFIX + "a/cat1.png"  # two names, one object: registered once
    assert by_name["cat4"]["candidates"] == [PREFIX + "x/cat4.jpg", PREFIX + "y/cat4.png"]
    recorded = query_dicts(resources, "SELECT key, etag, partition_key FROM upload_objects ORDER BY key")
    assert [r["key"] for r in recorded] == sorted(PREFIX + k for k in FOUND.values())
    assert {r["partition_key"] for r in recorded} == {KEY} and all(r["etag"] for r in recorded)

    assert meta(result, "media")["fetched_now"] == 5 and meta(result, "media")["failed_now"] == 0
    catalog = query_dicts(resources, "SELECT keyword, media_type, source, source_url FROM frames "
                                     "WHERE partition_key = ?", KEY)  # fmt: skip
    assert len(catalog) == 5 and {(f["keyword"], f["media_type"], f["source"]) for f in catalog} == {
        ("cats", "photo", "s3")
    }
    assert {f["source_url"] for f in catalog} == {bucket.location(PREFIX + k) for k in FOUND.values()}

    owned = ("registry", "keyword_media", "media", "frames", "dataset_matches", "upload_objects")
    before = {t: query_dicts(resources, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in owned}
    again = run(instance, resources)
    assert meta(again, "media")["fetched_now"] == 0 and meta(again, "media_registry")["new_items"] == 0
    assert meta(again, "media_registry")["dataset_analysis"] == ANALYSIS
    assert before == {t: query_dicts(resources, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in before}
    assert registry_errors(resources) == errors
    assert all(check.passed for check in again.get_asset_check_evaluations() if check.check_name == "unique_key")


def test_a_run_whose_downloads_failed_is_resumed_by_the_next_which_fetches_only_the_rest(
    instance, resources, bucket, monkeypatch
):
    resources = {**resources, "uploads": bucket}
    define(instance, resources)
    download = UploadBucket.download
    calls: list[str] = []
    lock = threading.Lock()

    def failing_after_two(self, key):
        with lock:
            if key.startswith(PREFIX):
                calls.append(key)
                if len(calls) > 2:
                    raise UploadError("download failed: connection reset (test)")
        return download(self, key)

    monkeypatch.setattr(UploadBucket, "download", failing_after_two)
    first = run(instance, resources, media={"max_concurrent_downloads": 1})
    assert meta(first, "media")["fetched_now"] == 2 and meta(first, "media")["failed_now"] == 3
    assert len(query_dicts(resources, "SELECT * FROM frames WHERE partition_key = ?", KEY)) == 2

    monkeypatch.setattr(UploadBucket, "download", download)
    calls.clear()
    fetched: list[str] = []

    def counting(self, key):
        fetched.append(key)
        return download(self, key)

    monkeypatch.setattr(UploadBucket, "download", counting)
    second = run(instance, resources)
    assert meta(second, "media")["fetched_now"] == 3 and meta(second, "media")["failed_now"] == 0
    assert len([key for key in fetched if key.startswith(PREFIX)]) == 3  # the two stored are not read again
    assert len(query_dicts(resources, "SELECT * FROM frames WHERE partition_key = ?", KEY)) == 5
    assert query_dicts(resources, "SELECT * FROM media_errors WHERE partition_key = ?", KEY) == []


def test_a_listed_file_uploaded_later_is_found_and_fetched_alone_on_the_next_run(instance, resources, bucket):
    resources = {**resources, "uploads": bucket}
    define(instance, resources)
    run(instance, resources)
    put(bucket, PREFIX + "late/cat5.png", encode(scene(50, size=(80, 60))))
    again = run(instance, resources)
    assert meta(again, "media_registry")["dataset_analysis"] == {**ANALYSIS, "found": 7, "missing": 0}
    assert meta(again, "media_registry")["new_items"] == 1 and meta(again, "media")["fetched_now"] == 1
    assert "cat5.jpg" not in registry_errors(resources)
    (match,) = query_dicts(resources, "SELECT * FROM dataset_matches WHERE listed_name = 'cat5.jpg'")
    assert match["status"] == "found" and match["object_key"] == PREFIX + "late/cat5.png"
    assert len(query_dicts(resources, "SELECT * FROM frames WHERE partition_key = ?", KEY)) == 6


def test_a_partition_without_a_dataset_records_why_and_registers_nothing(instance, resources, bucket):
    instance.add_dynamic_partitions("keyword", ["dataset--nothing"])
    result = run(instance, {**resources, "uploads": bucket}, partition_key="dataset--nothing")
    assert meta(result, "media_registry")["items"] == 0
    rows = query_dicts(resources, "SELECT item, reason FROM media_registry_errors")
    assert rows == [{"item": "dataset--nothing", "reason": "no dataset is defined for this partition: run add_dataset"}]
    assert query_dicts(resources, "SELECT * FROM registry") == []


def test_a_list_in_another_bucket_is_refused_with_a_recorded_reason(instance, resources, bucket, s3_endpoint):
    other = make_bucket(s3_endpoint)  # the dataset was added when the upload bucket was another one
    put(other, "lists/cats.csv", CATS_LIST.encode())
    define(instance, {**resources, "uploads": other}, s3_prefix=PREFIX)
    result = run(instance, {**resources, "uploads": bucket})
    assert meta(result, "media_registry")["items"] == 0
    errors = registry_errors(resources)
    reason = errors[f"s3://{other.bucket}/lists/cats.csv"]
    assert f"in bucket {other.bucket!r}, not the upload bucket {bucket.bucket!r}: refused" in reason
    assert query_dicts(resources, "SELECT * FROM registry") == []
    assert query_dicts(resources, "SELECT * FROM dataset_matches") == []


def test_objects_in_a_keyword_folder_are_fetched_but_left_to_the_uploads_sensor(instance, resources, bucket):
    """A dataset whose files lie in a keyword's upload folder fetches them without marking them as brought for the
    keyword (upload_objects tells the uploads sensor which of those folders' objects runs brought)."""
    resources = {**resources, "uploads": bucket}
    put(bucket, "lists/robots.csv", b"other.jpg\n")
    define(instance, resources, name="robots", list_location="s3://{bucket}/lists/robots.csv",
           s3_prefix="uploads/robot arm/")  # fmt: skip
    result = run(instance, resources, partition_key="dataset--robots")
    assert meta(result, "media_registry")["dataset_analysis"]["found"] == 1
    assert meta(result, "media")["fetched_now"] == 1
    assert query_dicts(resources, "SELECT * FROM upload_objects") == []


def test_the_doctests_hold():
    import doctest

    import mining_assets.sources.name_lists as name_lists

    failed, tried = doctest.testmod(name_lists)
    assert tried >= 2 and not failed
