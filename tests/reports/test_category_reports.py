"""category_reports over seeded tables: which partitions it reports, the files it stores and records, the
metadata it shows (escaped), and how a re-run replaces or keeps its files."""

import base64
import csv
import io
import re

import dagster as dg
import pandas as pd
import pytest
from harness import meta, query_dicts
from PIL import Image

from mining_assets.partitions import storage_key
from mining_assets.reports.category_reports import PREFIX, category_reports
from mining_assets.warehouse import insert_rows

REAL, GEN, SKETCH, KEYWORD = "dataset--real-photos", "dataset--gen", "dataset--sketches", "glass-door"
SCRIPT = "<script>alert(1)</script>, in a forest"
BOLD = "<b>x</b>"
LIST = ["street", BOLD, "nature", "$x$ cost", "room"]
# (partition, frame id, the name its list gives (None: no registry row), categories, description content)
FRAMES = [
    (REAL, "r1", "IMG_0001.JPG", ["street", BOLD], "A street at night"),
    (REAL, "r2", "IMG_0002.JPG", ["nature"], SCRIPT),
    (REAL, "r3", None, ["street"], None),
    (GEN, "g1", "gen_001.png", ["$x$ cost", "street"], '=HYPERLINK("http://x")'),
    (GEN, "g2", "gen_002.png", [BOLD], "A render of a room"),
    (SKETCH, "s1", "s.png", ["nature"], "a sketch"),
    (KEYWORD, "k1", None, ["room"], "a glass door"),
]
DATASETS = [(REAL, "real photos", "REAL"), (GEN, "gen <i>images</i>", "GEN"), (SKETCH, "sketches", "SKETCH")]


def source_url(partition_key: str, frame_id: str) -> str:
    if partition_key == KEYWORD:
        return f"https://example.com/photos/{frame_id}.jpg?w=640"
    return f"s3://uploads/{storage_key(partition_key)}/{frame_id}.jpg"


def seed(resources, frames=FRAMES, datasets=DATASETS) -> None:
    """The rows category_reports reads, written straight into the warehouse."""
    rows: dict[str, list[dict]] = {}
    for partition_key, name, label in datasets:
        rows.setdefault("datasets", []).append(
            {
                "partition_key": partition_key,
                "name": name,
                "label": label,
                "list_location": "s3://uploads/list.csv",
                "s3_prefix": "real/",
            }
        )
    for position, category in enumerate(LIST):
        rows.setdefault("category_lists", []).append(
            {"list_version": "v1", "list_name": "categories.csv", "position": position, "category": category}
        )
    for partition_key, frame_id, listed, categories, description in frames:
        sha, url = f"sha-{frame_id}", source_url(partition_key, frame_id)
        rows.setdefault("frames", []).append(
            {
                "partition_key": partition_key,
                "keyword": partition_key,
                "frame_id": frame_id,
                "media_id": frame_id,
                "source": "s3",
                "media_type": "photo",
                "width": 64,
                "height": 48,
                "blob_key": f"photos/{frame_id}.jpg",
                "uri": f"file:///photos/{frame_id}.jpg",
                "sha256": sha,
                "source_url": url,
            }
        )
        if listed:
            rows.setdefault("registry", []).append(
                {
                    "partition_key": partition_key,
                    "keyword": partition_key,
                    "item": url,
                    "source": "s3",
                    "url": url,
                    "page_url": url,
                    "title": listed,
                }
            )
        if categories:
            rows.setdefault("frame_categories", []).append(
                {
                    "partition_key": partition_key,
                    "frame_id": frame_id,
                    "frame_sha256": sha,
                    "work_key": "c1",
                    "method": "gemini",
                    "list_version": "v1",
                    "categories": categories,
                    "primary_category": categories[0],
                }
            )
        if description:
            rows.setdefault("frame_descriptions", []).append(
                {"partition_key": partition_key, "frame_id": frame_id, "frame_sha256": sha, "work_key": "d1"}
            )
            rows.setdefault("descriptions", []).append(
                {
                    "frame_sha256": sha,
                    "work_key": "d1",
                    "model": "m",
                    "prompt_version": "p1",
                    "content": description,
                    "objects": ["door"],
                    "reply": "{}",
                    "via": "sync",
                }
            )
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            for table, table_rows in rows.items():
                insert_rows(conn, table, pd.DataFrame(table_rows))


def report(resources, instance, **config):
    result = dg.materialize([category_reports], resources=resources, instance=instance,
                            run_config={"ops": {"category_reports": {"config": config}}})  # fmt: skip
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    return meta(result, "category_reports"), check


def recorded(resources) -> list[dict]:
    return query_dicts(resources, "SELECT * FROM category_report_files ORDER BY blob_key")


def stored_keys(resources) -> list[str]:
    return resources["blob_store"].list_keys(PREFIX)


def inline_png(markdown: str) -> bytes:
    (encoded,) = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    return base64.b64decode(encoded)


def read_csv(resources, partition_key: str) -> list[dict]:
    (row,) = [r for r in recorded(resources) if r["kind"] == "labels" and r["report_partition"] == partition_key]
    return list(csv.DictReader(io.StringIO(resources["blob_store"].get_bytes(row["blob_key"]).decode("utf-8"))))


def test_default_config_reports_the_real_and_gen_datasets(resources, instance):
    seed(resources)
    metadata, check = report(resources, instance)
    assert metadata["partitions"] == [REAL, GEN]  # REAL before GEN, as the labels are listed; SKETCH not chosen
    assert metadata["frames_by_partition"] == {REAL: 3, GEN: 2}
    assert metadata["categories_by_partition"] == {
        REAL: {"street": 2, BOLD: 1, "nature": 1},
        GEN: {"street": 1, BOLD: 1, "$x$ cost": 1},
    }
    assert metadata["empty_partitions"] == []
    assert check.passed and check.check_name == "reported"
    rows = recorded(resources)
    assert {row["report_id"] for row in rows} == {metadata["report_id"]}
    assert sorted((row["kind"], row["report_partition"]) for row in rows) == sorted([
        ("distribution", REAL), ("distribution", GEN), ("labels", REAL), ("labels", GEN),
        ("side_by_side", None), ("shares", None)])  # fmt: skip
    assert stored_keys(resources) == [row["blob_key"] for row in rows]
    assert all(row["blob_key"].startswith(f"{PREFIX}/{metadata['report_id']}/") for row in rows)
    plots = {"side_by_side": "plot_side_by_side", "shares": "plot_shares"}
    for row in rows:
        if row["kind"] == "labels":
            continue
        png = resources["blob_store"].get_bytes(row["blob_key"])
        Image.open(io.BytesIO(png)).verify()
        name = plots.get(row["kind"]) or f"plot_{storage_key(row['report_partition'])}"
        assert inline_png(metadata[name]) == png
        assert len(png) < 100_000
    location = metadata[f"uri_distribution_{storage_key(REAL)}"]
    assert resources["blob_store"].path_for(next(r["blob_key"] for r in rows if r["kind"] == "shares")).exists()
    assert location.endswith(f"distribution-{storage_key(REAL)}.png")

    assert read_csv(resources, REAL) == [
        {"image_name": "IMG_0001.JPG", "description": "A street at night", "categories": f"street; {BOLD}"},
        {"image_name": "IMG_0002.JPG", "description": SCRIPT, "categories": "nature"},
        {"image_name": "r3.jpg", "description": "", "categories": "street"},  # no listed name: the URL's file name
    ]
    assert read_csv(resources, GEN) == [
        {"image_name": "gen_001.png", "description": '\'=HYPERLINK("http://x")', "categories": "$x$ cost; street"},
        {"image_name": "gen_002.png", "description": "A render of a room", "categories": BOLD},
    ]


def test_markup_in_names_and_descriptions_is_escaped_in_the_metadata(resources, instance):
    seed(resources)
    metadata, _ = report(resources, instance)
    markdown = [value for value in metadata.values() if isinstance(value, str)]
    assert "&lt;b&gt;x&lt;/b&gt;" in metadata["counts"] and "gen &lt;i&gt;images&lt;/i&gt;" in metadata["counts"]
    for text in markdown:
        assert "<script" not in text and "<b>" not in text and "<i>" not in text, text[:200]
    assert "<script" not in repr(metadata)
    (row,) = [r for r in recorded(resources) if r["kind"] == "labels" and r["report_partition"] == REAL]
    raw = resources["blob_store"].get_bytes(row["blob_key"]).decode("utf-8")
    assert f'"{SCRIPT}"' in raw  # as written, in its quoted cell


def test_an_unchanged_rerun_writes_nothing_and_keeps_the_report(resources, instance):
    seed(resources)
    first, _ = report(resources, instance)
    before = {entry.key: entry.modified for entry in resources["blob_store"].list_entries(PREFIX)}
    rows = recorded(resources)
    second, _ = report(resources, instance)
    assert second["report_id"] == first["report_id"]
    assert second["files_written"] == 0 and second["files_deleted"] == 0 and first["files_written"] == 6
    assert {entry.key: entry.modified for entry in resources["blob_store"].list_entries(PREFIX)} == before
    assert recorded(resources) == rows  # the same rows, their created_at included: nothing rewritten
    assert second["plot_shares"] == first["plot_shares"]


def test_a_changed_category_makes_new_files_and_deletes_the_old(resources, instance):
    seed(resources)
    first, _ = report(resources, instance)
    old = stored_keys(resources)
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            conn.execute("UPDATE frame_categories SET categories = ['room'], primary_category = 'room' "
                         "WHERE frame_id = 'g2'")  # fmt: skip
    second, _ = report(resources, instance)
    assert second["report_id"] != first["report_id"]
    assert second["files_written"] == 6 and second["files_deleted"] == 6
    new = stored_keys(resources)
    assert not set(old) & set(new)
    assert new == [row["blob_key"] for row in recorded(resources)]
    assert {row["report_id"] for row in recorded(resources)} == {second["report_id"]}
    assert second["categories_by_partition"][GEN] == {"street": 1, "$x$ cost": 1, "room": 1}


def test_files_a_dead_run_left_unrecorded_are_deleted_once_old_and_young_ones_kept(resources, instance):
    import os
    import time

    seed(resources)
    store = resources["blob_store"]
    old, young = f"{PREFIX}/0123456789abcdef/side_by_side.png", f"{PREFIX}/fedcba9876543210/shares.png"
    for key in (old, young):
        store.put_bytes(key, b"a plot a run stored before it died")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(store.path_for(old), (two_hours_ago, two_hours_ago))
    first, _ = report(resources, instance)
    assert not store.exists(old) and store.exists(young)  # a young one may belong to a run still recording it
    assert first["files_deleted"] == 1
    assert sorted(stored_keys(resources)) == sorted([young, *(row["blob_key"] for row in recorded(resources))])


def test_partitions_config_picks_a_keyword_partition(resources, instance):
    seed(resources)
    metadata, check = report(resources, instance, partitions=[KEYWORD])
    assert metadata["partitions"] == [KEYWORD] and metadata["frames_by_partition"] == {KEYWORD: 1}
    assert check.passed
    assert {f"plot_{storage_key(KEYWORD)}", "plot_side_by_side", "plot_shares"} <= set(metadata)
    assert read_csv(resources, KEYWORD) == [{"image_name": "k1.jpg", "description": "a glass door",
                                             "categories": "room"}]  # fmt: skip
    assert sorted(row["kind"] for row in recorded(resources)) == ["distribution", "labels", "shares", "side_by_side"]


def test_no_dataset_at_all_succeeds_with_a_warning(resources, instance):
    seed(resources, frames=[f for f in FRAMES if f[0] == KEYWORD], datasets=[])
    metadata, check = report(resources, instance)
    assert metadata["partitions"] == [] and "no dataset" in metadata["reason"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["reason"].text == metadata["reason"]
    assert recorded(resources) == [] and stored_keys(resources) == []
    assert not any(key.startswith("plot_") for key in metadata)


def test_a_report_without_datasets_replaces_the_previous_one(resources, instance):
    seed(resources)
    report(resources, instance)
    metadata, check = report(resources, instance, labels=["NOT-A-LABEL"])
    assert not check.passed and "NOT-A-LABEL" in metadata["reason"]
    assert recorded(resources) == [] and stored_keys(resources) == [] and metadata["files_deleted"] == 6


def test_a_dataset_without_categorized_frames_is_listed_empty(resources, instance):
    empty = "dataset--empty"
    seed(resources, datasets=[*DATASETS, (empty, "empty one", "REAL")])
    metadata, check = report(resources, instance)
    assert metadata["partitions"] == [empty, REAL, GEN]
    assert metadata["empty_partitions"] == [empty] and metadata["frames_by_partition"][empty] == 0
    assert f"plot_{storage_key(empty)}" not in metadata and f"plot_{storage_key(REAL)}" in metadata
    assert check.passed
    assert empty not in {row["report_partition"] for row in recorded(resources)}


def test_only_empty_partitions_warn(resources, instance):
    seed(resources)
    metadata, check = report(resources, instance, partitions=["nothing-here"])
    assert metadata["empty_partitions"] == ["nothing-here"] and not check.passed
    assert "nothing-here" in check.metadata["reason"].text


@pytest.mark.parametrize("max_categories", [1, 2])
def test_max_categories_sums_the_rest_into_one_bar(resources, instance, max_categories):
    seed(resources)
    wide, _ = report(resources, instance)
    narrow, _ = report(resources, instance, max_categories=max_categories)
    assert narrow["report_id"] != wide["report_id"] and narrow["plot_shares"] != wide["plot_shares"]
    assert narrow["categories_by_partition"] == wide["categories_by_partition"]  # the counts are all reported
