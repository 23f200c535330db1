"""mining warehouse migrate: a lake the earlier data model wrote (tests/data/lake_v1, rows of a real run) converted
to the current one, checked by what the earlier rows said."""

import csv
import hashlib
from pathlib import Path

import duckdb
import pytest

from mining_assets.migrate import migrate_lake
from mining_assets.warehouse import KEYS, LegacyLake, duplicate_keys, query_dicts, tables
from resources.warehouse import LAKE, Warehouse, close_all, extension_directory, prepare_sqlite_catalog

LAKE_V1 = Path(__file__).parent / "data" / "lake_v1"
OUTPUT_TABLES = ["detections", "filtered_frames", "frame_embeddings", "frame_scores", "unique_frames",
                 "quality_scores", "poses"]  # fmt: skip


def build_v1_lake(folder: Path) -> Warehouse:
    """An embedded lake under ``folder`` holding the earlier schema and the fixture's rows, written through a plain
    DuckDB connection (the current ``Warehouse`` would create the current tables on attach)."""
    warehouse = Warehouse(catalog=f"sqlite:{folder / 'catalog.sqlite'}", data_path=f"{folder / 'data'}/")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    prepare_sqlite_catalog(str(folder / "catalog.sqlite"))
    conn = duckdb.connect(config={"extension_directory": extension_directory(), "autoinstall_known_extensions": False,
                                  "autoload_known_extensions": False})  # fmt: skip
    try:
        conn.execute("LOAD ducklake; LOAD sqlite_scanner")
        conn.execute(f"ATTACH 'ducklake:{warehouse.catalog}' AS {LAKE} (DATA_PATH '{warehouse.data_path}')")
        conn.execute(f"USE {LAKE}")
        conn.execute((LAKE_V1 / "schema.sql").read_text(encoding="utf-8"))
        for path in sorted(LAKE_V1.glob("*.csv")):
            conn.execute(f"COPY {path.stem} FROM '{path}' (HEADER, ALLOW_QUOTED_NULLS false)")
        for path in sorted(LAKE_V1.glob("*.json")):
            conn.execute(f"COPY {path.stem} FROM '{path}' (FORMAT JSON)")
    finally:
        conn.close()
    return warehouse


def v1_rows(table: str) -> list[dict]:
    with open(LAKE_V1 / f"{table}.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def rows(warehouse: Warehouse, sql: str, params=()) -> list[dict]:
    return warehouse.query_dicts(sql, params)


@pytest.fixture
def v1_lake(tmp_path) -> Warehouse:
    return build_v1_lake(tmp_path / "lake_v1")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> tuple[Warehouse, dict]:
    """One converted lake for the module's read-only checks."""
    warehouse = build_v1_lake(tmp_path_factory.mktemp("migrated"))
    report = migrate_lake(warehouse)
    close_all()  # what follows attaches the converted lake afresh, as a new process would
    return warehouse, report


def item_of(row: dict, location: str) -> str:
    return row[location] if row["source"] in ("local", "s3") else row["media_id"]


def test_attaching_an_earlier_lake_asks_for_the_migration(v1_lake):
    with pytest.raises(LegacyLake, match="mining warehouse migrate"):
        v1_lake.execute("SELECT 1")


def test_every_earlier_item_is_a_registry_item(migrated):
    warehouse, _ = migrated
    registry = {(r["partition_key"], r["item"]): r for r in rows(warehouse, "SELECT * FROM registry")}
    expected = {(r["partition_key"], item_of(r, "url")) for r in v1_rows("videos")}
    expected |= {(r["partition_key"], item_of(r, "image_url")) for r in v1_rows("photos")}
    expected |= {(r["partition_key"], r["location"]) for r in v1_rows("uploads")}
    assert set(registry) == expected
    assert len(registry) == 4 + 13 + 5 - 3  # clip.mp4 and both grace photos are uploads too
    pexels = registry[("stock-kw", "pexels-1")]
    assert (pexels["media_id"], pexels["media_type"], pexels["source_id"]) == ("pexels-1", "photo", "1")
    assert pexels["url"] == "http://127.0.0.1:43057/img/p1.jpg" and pexels["page_url"].endswith("/photo/1/")
    clip = registry[("uploads-kw", "file:///tmp/v1media/uploads/clip.mp4")]
    assert clip["media_id"] is None and clip["media_type"] is None  # uploads are named by content when fetched
    assert (clip["title"], clip["duration_s"]) == ("clip.mp4", 3.0)
    grace = registry[("uploads-kw", "file:///tmp/v1media/uploads/grace_hopper.jpg")]
    assert (grace["license"], grace["query"]) == ("CC BY 4.0", None)


def test_media_once_per_stored_id_and_each_keyword_links_to_it(migrated):
    warehouse, report = migrated
    media = {r["media_id"]: r for r in rows(warehouse, "SELECT * FROM media")}
    stored = {r["media_id"] for r in v1_rows("videos") if r["blob_key"]}
    stored |= {r["media_id"] for r in v1_rows("photos") if r["status"] == "stored"}
    assert set(media) == stored and report["rows"]["media"] == len(stored) == 11
    door_a = media["local-d494018fc405ce9c"]
    assert (door_a["media_type"], door_a["codec"], door_a["frame_count"], door_a["size_bytes"]) == (
        "video", "h264", 60, 63046)  # fmt: skip
    assert media["local-a8ca6d734765703b"]["size_bytes"] == 61306  # from uploads
    members = rows(warehouse, "SELECT * FROM keyword_media WHERE media_id = 'local-d494018fc405ce9c' ORDER BY 1")
    assert [(m["partition_key"], m["item"], m["duplicate_of"]) for m in members] == [
        ("glass door", "file:///tmp/v1media/glass%20door/door_a.mp4", None),
        ("glass-door", "file:///tmp/v1media/glass-door/door_a.mp4", None),
    ]
    repeat = rows(warehouse, "SELECT * FROM keyword_media WHERE item = 'unsplash-u3'")
    assert [(r["media_id"], r["duplicate_of"]) for r in repeat] == [("pexels-1", "pexels-1")]


def test_media_status_says_what_the_earlier_status_said(migrated):
    warehouse, _ = migrated
    status = {(r["partition_key"], r["item"]): r for r in rows(warehouse, "SELECT * FROM media_status")}
    earlier = [(r, item_of(r, "url")) for r in v1_rows("videos")]
    earlier += [(r, item_of(r, "image_url")) for r in v1_rows("photos")]
    earlier += [(r, r["location"]) for r in v1_rows("uploads")]
    for row, item in earlier:
        now = status[(row["partition_key"], item)]
        if row["status"] == "failed":
            assert (now["status"], now["error"]) == ("failed", row["error"]), item
        elif row["status"] == "duplicate":
            assert now["duplicate_of"] is not None and now["status"] == "complete", item
        else:  # complete videos; stored photos, all catalogued in frames
            assert now["status"] == "complete", item


def test_frames_are_kept_and_the_old_frames_are_legacy_samples(migrated):
    warehouse, _ = migrated
    frames = rows(warehouse, "SELECT * EXCLUDE (created_at) FROM frames ORDER BY partition_key, frame_id")
    earlier = sorted(v1_rows("frames"), key=lambda r: (r["partition_key"], r["frame_id"]))
    assert [(r["partition_key"], r["frame_id"], r["blob_key"], r["sha256"]) for r in frames] == [
        (r["partition_key"], r["frame_id"], r["blob_key"], r["sha256"]) for r in earlier
    ]
    samples = rows(warehouse, "SELECT * FROM keyword_samples JOIN video_samples USING (media_id, sampling)")
    assert len(samples) == 4  # door_a in both glass-door keys, door_b, clip
    for sample in samples:
        assert sample["sampling"] == "l" + hashlib.sha256(sample["partition_key"].encode()).hexdigest()[:12]
        assert (sample["strategy"], sample["every_s"], sample["max_frames"]) == ("legacy", 0, 0)
    new = rows(warehouse, "SELECT * FROM video_frames")
    assert len(new) == len(v1_rows("video_frames"))
    assert {(r["media_id"], r["frame_index"], r["blob_key"]) for r in new} == {
        (r["media_id"], int(r["frame_index"]), r["blob_key"]) for r in v1_rows("video_frames")
    }


def test_every_output_row_names_its_frame_content(migrated):
    warehouse, report = migrated
    assert report["rows_left_out"] == {}
    for table in OUTPUT_TABLES:
        wrong = rows(warehouse, f"SELECT count(*) AS n FROM {table} o JOIN frames f USING (partition_key, frame_id) "
                                "WHERE o.frame_sha256 IS DISTINCT FROM f.sha256")  # fmt: skip
        unmatched = rows(warehouse, f"SELECT count(*) AS n FROM {table} o ANTI JOIN frames f "
                                    "USING (partition_key, frame_id)")  # fmt: skip
        assert (wrong[0]["n"], unmatched[0]["n"]) == (0, 0), table
    for table in ("detections", "filtered_frames", "frame_embeddings", "frame_scores", "unique_frames"):
        assert report["rows"][table] == len(v1_rows(table)), table
    assert report["rows"]["poses"] == report["rows"]["quality_scores"] == 5  # the .json fixtures' lines


def test_errors_are_kept_under_their_stage(migrated):
    warehouse, report = migrated
    errors = rows(warehouse, "SELECT * FROM ingest_errors ORDER BY stage, item")
    assert len(errors) == len(v1_rows("ingest_errors")) == report["errors_before"]
    by_stage = {(e["stage"], e["item"]): e["reason"] for e in errors}
    assert by_stage[("media_registry", "pixabay")] == "search 'stock kw': no API key: set PIXABAY_API_KEY"
    assert by_stage[("media", "file:///tmp/v1media/uploads/empty.mov")].endswith("empty file (0 bytes)")
    assert {stage for stage, _ in by_stage} == {"media", "media_registry"}
    assert sum(stage == "media" for stage, _ in by_stage) == 7


def test_pose_datasets_kept_and_no_source_deleted(migrated):
    _, report = migrated
    assert report["rows"]["pose_datasets"] == 4 and report["rows"]["deleted_sources"] == 0
    assert report["rows"]["keywords"] == 3 and report["rows"]["prompt_sets"] == 6


def test_every_key_is_unique(migrated):
    warehouse, _ = migrated
    for attempt in warehouse.retrying():
        with attempt as conn:
            partitions = [r[0] for r in conn.execute("SELECT DISTINCT partition_key FROM registry").fetchall()]
            for table in tables():
                if "partition_key" in tables()[table]["columns"]:
                    assert all(duplicate_keys(conn, table, key) == 0 for key in partitions), table
                else:
                    key = ", ".join(KEYS[table])
                    twice = query_dicts(conn, f"SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1")
                    assert twice == [], table


def test_a_second_migration_changes_nothing(migrated):
    warehouse, report = migrated
    again = migrate_lake(warehouse)
    assert again["migrated"] is False and again["rows"] == report["rows"]


def test_the_cli_migrates_the_environments_lake_and_then_finds_nothing_to_do(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mining_assets import cli

    lake = build_v1_lake(tmp_path / "lake")
    monkeypatch.setenv("MINING_LAKE_CATALOG", lake.catalog)
    monkeypatch.setenv("MINING_LAKE_DATA_PATH", lake.data_path)
    before = CliRunner().invoke(cli.main, ["registry", "status"])
    assert before.exit_code == 1 and "mining warehouse migrate" in before.stderr
    result = CliRunner().invoke(cli.main, ["warehouse", "migrate"])
    assert result.exit_code == 0, result.output
    assert "converted in one transaction" in result.stdout and "media: 11 rows" in result.stdout
    status = CliRunner().invoke(cli.main, ["registry", "status"])
    assert status.exit_code == 0, status.output
    assert "glass-door" in status.stdout and "uploads-kw" in status.stdout
    again = CliRunner().invoke(cli.main, ["warehouse", "migrate"])
    assert again.exit_code == 0 and "nothing changed" in again.stdout


def test_an_export_of_an_earlier_warehouse_file_is_imported_and_converted(tmp_path, monkeypatch):
    """An earlier single-file warehouse (EXPORT DATABASE ... FORMAT parquet) goes into an empty lake through
    `mining warehouse import`, and comes out in the current model with the same rows as a migrated lake."""
    from click.testing import CliRunner

    from mining_assets import cli

    old = duckdb.connect(str(tmp_path / "old.duckdb"))
    old.execute((LAKE_V1 / "schema.sql").read_text(encoding="utf-8"))
    for path in sorted(LAKE_V1.glob("*.csv")):
        old.execute(f"COPY {path.stem} FROM '{path}' (HEADER, ALLOW_QUOTED_NULLS false)")
    for path in sorted(LAKE_V1.glob("*.json")):
        old.execute(f"COPY {path.stem} FROM '{path}' (FORMAT JSON)")
    old.execute(f"EXPORT DATABASE '{tmp_path / 'export'}' (FORMAT parquet)")
    old.close()
    monkeypatch.setenv("MINING_LAKE_CATALOG", f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}")
    monkeypatch.setenv("MINING_LAKE_DATA_PATH", f"{tmp_path / 'lake' / 'data'}/")
    result = CliRunner().invoke(cli.main, ["warehouse", "import", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert "videos: 4 rows" in result.stdout and "media: 11 rows" in result.stdout
    from resources.warehouse import warehouse_from_env

    lake = warehouse_from_env()
    assert lake.query_dicts("SELECT count(*) AS n FROM registry") == [{"n": 19}]
    assert lake.query_dicts("SELECT count(*) AS n FROM frames") == [{"n": 18}]
    statuses = lake.query_dicts("SELECT status, count(*) AS n FROM media_status GROUP BY ALL ORDER BY ALL")
    assert statuses == [{"status": "complete", "n": 13}, {"status": "failed", "n": 6}]
    again = CliRunner().invoke(cli.main, ["warehouse", "import", str(tmp_path / "export")])
    assert again.exit_code == 1 and "only be imported into an empty lake" in again.stderr
