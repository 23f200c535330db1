"""The `mining` command line, offline, against the lake and Dagster home in each test's tmp_path."""

import json
import os
import stat
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner

from mining_assets import cli
from mining_assets.keywords import KEYWORDS_LEASE
from mining_assets.partitions import is_slug, keyword_partitions, keyword_slug
from mining_assets.warehouse import MEDIA_STATUSES
from resources.warehouse import Warehouse, warehouse_from_env

HOSTILE_KEY = keyword_slug("<b>door</b>")
DOTDOT_KEY = keyword_slug("../x")


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli.main, list(args), input=input)


def instance_partitions() -> set[str]:
    with dg.DagsterInstance.get() as instance:
        return set(instance.get_dynamic_partitions(keyword_partitions.name))


def lake_dir() -> Path:
    """Where the environment's embedded lake lives (its catalog file and data folder)."""
    return Path(warehouse_from_env().catalog.split(":", 1)[1]).parent


def insert_video(conn, key: str, media_id: str, status: str, error: str | None = None, **fields) -> None:
    """A video of a keyword in ``status``, as the owners' rows make it (the status is the media_status view's)."""
    row = {"partition_key": key, "keyword": key, "item": media_id, "media_id": media_id, "source": "youtube",
           "media_type": "video", "url": f"https://example.test/watch?v={media_id}", "title": f"title {media_id}",
           **fields}  # fmt: skip
    row["page_url"] = row["url"]
    conn.execute(
        f"INSERT INTO registry ({', '.join(row)}, discovered_at) "
        f"VALUES ({', '.join('?' * len(row))}, now()::TIMESTAMP)",
        list(row.values()),
    )
    if status == "failed":
        conn.execute("INSERT INTO media_errors VALUES (?, ?, ?, now()::TIMESTAMP)", [key, media_id, error])
    if status in ("downloaded", "framed", "complete"):
        conn.execute(
            "INSERT INTO media (media_id, media_type, source, blob_key, uri, sha256, size_bytes, width, height) "
            "VALUES (?, 'video', 'youtube', ?, 'u', 's', 1, 64, 48)",
            [media_id, f"videos/{media_id}.mp4"],
        )
        conn.execute("INSERT INTO keyword_media VALUES (?, ?, ?, NULL, now()::TIMESTAMP)", [key, media_id, media_id])
    if status in ("framed", "complete"):
        conn.execute("INSERT INTO video_samples VALUES (?, 's1', 'time', 30, 1.0, 0, 90, 3, NULL, now()::TIMESTAMP)",
                     [media_id])  # fmt: skip
        conn.execute("INSERT INTO keyword_samples VALUES (?, ?, 's1', now()::TIMESTAMP)", [key, media_id])


def insert_frame(conn, key: str, media_id: str, index: int) -> None:
    conn.execute(
        "INSERT INTO frames (partition_key, keyword, frame_id, media_id, source, media_type, frame_index, timestamp_s,"
        " width, height, blob_key, uri, sha256, created_at)"
        " VALUES (?, ?, ?, ?, 'youtube', 'video', ?, ?, 64, 48, 'b', 'u', 's', now()::TIMESTAMP)",
        [key, key, f"{media_id}-{index}", media_id, index, index / 10],
    )


def insert_keyword(conn, key: str, text: str) -> None:
    conn.execute("INSERT INTO keywords (partition_key, keyword, added_at) VALUES (?, ?, now()::TIMESTAMP)", [key, text])


@pytest.fixture
def warehouse() -> Warehouse:
    """The environment's lake with 5 videos and 3 frames under glass-door, and 2 videos under the hostile keyword."""
    lake = warehouse_from_env()
    for attempt in lake.retrying():
        with attempt as conn:
            insert_keyword(conn, "glass-door", "glass door")
            insert_keyword(conn, HOSTILE_KEY, "<b>door</b>")
            insert_video(conn, "glass-door", "v3", "pending")
            insert_video(conn, "glass-door", "v1", "complete")
            insert_video(conn, "glass-door", "v2", "complete")
            insert_video(conn, "glass-door", "v4", "framed")
            insert_video(
                conn,
                "glass-door",
                "v5",
                "failed",
                title="evil\x1b[31mred\ntitle",
                url="https://example.test/" + "a" * 200,
                error="download failed: " + "x" * 200,
            )
            insert_video(conn, HOSTILE_KEY, "h1", "downloaded")
            insert_video(conn, HOSTILE_KEY, "h2", "pending", title='it\'s "quoted", with, commas')
            for index in range(3):
                insert_frame(conn, "glass-door", "v1", index)
            insert_frame(conn, "glass-door", "v2", 0)  # v1 and v2 are in the frames catalog: complete
    return lake


def keyword_texts() -> dict[str, str]:
    rows = warehouse_from_env().query_dicts("SELECT partition_key, keyword FROM keywords")
    return {row["partition_key"]: row["keyword"] for row in rows}


def test_keywords_add_hostile_and_duplicate_texts(tmp_path):
    result = invoke("keywords", "add", "glass door", "../x", "<b>door</b>", "glass door", "")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "added glass-door  glass door",
        f"added {DOTDOT_KEY}  ../x",
        f"added {HOSTILE_KEY}  <b>door</b>",
    ]
    assert result.stderr.splitlines() == ["refused '': keyword is empty"]
    assert os.environ["DAGSTER_HOME"] == str(tmp_path / "dagster_home")
    assert instance_partitions() == {"glass-door", DOTDOT_KEY, HOSTILE_KEY}
    assert all(is_slug(key) and "/" not in key and "<" not in key for key in instance_partitions())
    assert lake_dir() == tmp_path / "data" / "lake"
    assert keyword_texts() == {"glass-door": "glass door", DOTDOT_KEY: "../x", HOSTILE_KEY: "<b>door</b>"}

    again = invoke("keywords", "add", "glass door", "  glass   door ", "window")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == ["known glass-door  glass door", "added window  window"]
    assert instance_partitions() == {"glass-door", DOTDOT_KEY, HOSTILE_KEY, "window"}
    assert warehouse_from_env().query_dicts("SELECT count(*) AS n FROM keywords") == [{"n": 4}], "no key twice"


@pytest.mark.parametrize("args", [["keywords", "add", "glass door"], ["keywords", "preset", "actions"]])
def test_keyword_writers_hold_the_keywords_lease(args, monkeypatch):
    """DuckLake lets two concurrent inserts of one key both commit: the CLI writes keywords under their lease."""
    leases = []
    retrying = Warehouse.retrying

    def spy(self, lease=None):
        leases.append(lease)
        return retrying(self, lease=lease)

    monkeypatch.setattr(Warehouse, "retrying", spy)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert KEYWORDS_LEASE in leases


def test_keywords_add_exits_1_when_every_keyword_is_refused():
    result = invoke("keywords", "add", "", "   ", "a\x07b")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "refused '': keyword is empty",
        "refused '   ': keyword is empty",
        "refused 'a\\x07b': keyword contains control characters",
    ]
    assert instance_partitions() == set()


def test_keywords_add_refuses_a_key_taken_by_other_text_but_keeps_the_rest():
    for attempt in warehouse_from_env().retrying():
        with attempt as conn:
            insert_keyword(conn, "glass-door", "something else")
    only_taken = invoke("keywords", "add", "glass door")
    assert only_taken.exit_code == 1
    assert "refused 'glass door': partition key 'glass-door' already belongs to keyword 'something else'" in (
        only_taken.stderr
    )
    mixed = invoke("keywords", "add", "glass door", "window")
    assert mixed.exit_code == 0
    assert mixed.stdout.splitlines() == ["added window  window"]
    assert instance_partitions() == {"window"}
    assert keyword_texts() == {"glass-door": "something else", "window": "window"}


def test_keywords_list_shows_text_and_falls_back_to_the_key():
    assert invoke("keywords", "add", "glass door", "<b>door</b>").exit_code == 0
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(keyword_partitions.name, ["typed in the UI"])
    result = invoke("keywords", "list")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == sorted(
        ["glass-door\tglass door", f"{HOSTILE_KEY}\t<b>door</b>", "typed in the UI\ttyped in the UI"]
    )


def test_keywords_list_when_empty():
    result = invoke("keywords", "list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no keyword partitions yet" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["registry", "status"],
        ["registry", "list"],
        ["registry", "export", "--output", "out.csv"],
    ],
)
def test_reading_commands_without_a_warehouse(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 1
    catalog = tmp_path / "data" / "lake" / "catalog.sqlite"
    assert f"no warehouse yet (catalog sqlite:{catalog} (MINING_LAKE_CATALOG), data " in result.stderr
    assert "add a keyword and materialize media_registry" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "data" / "lake").exists(), "reading creates no lake"
    assert not (tmp_path / "out.csv").exists()


def test_a_catalog_that_is_not_a_database_explains_instead_of_crashing():
    """The lake's catalog file holds garbage: every command says so and leaves the file as it was."""
    catalog = lake_dir() / "catalog.sqlite"
    catalog.parent.mkdir(parents=True)
    garbage = b"not a database\n" * 100
    catalog.write_bytes(garbage)
    for args in (["registry", "status"], ["keywords", "add", "glass door"], ["sql", "SELECT 1"]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        assert "file is not a database" in result.stderr, args
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), args
    assert catalog.read_bytes() == garbage


def test_a_catalog_path_that_is_a_folder_explains_instead_of_crashing():
    catalog = lake_dir() / "catalog.sqlite"
    catalog.mkdir(parents=True)
    reading = invoke("registry", "status")
    assert reading.exit_code == 1
    assert f"catalog sqlite:{catalog}" in reading.stderr
    writing = invoke("keywords", "add", "glass door")
    assert writing.exit_code == 1
    assert f'Unable to open database "{catalog}"' in writing.stderr
    for result in (reading, writing):
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert catalog.is_dir() and not any(catalog.iterdir())


@pytest.mark.parametrize("args", [["registry", "status"], ["keywords", "add", "glass door"], ["sql", "SELECT 1"]])
def test_a_catalog_setting_of_unknown_kind_explains_instead_of_crashing(args, monkeypatch):
    monkeypatch.setenv("MINING_LAKE_CATALOG", "mysql:lake")
    result = invoke(*args)
    assert result.exit_code == 1
    assert "MINING_LAKE_CATALOG must start with sqlite: or postgres: (got 'mysql')" in result.stderr
    assert isinstance(result.exception, SystemExit), "a message, not a traceback"


def status_rows(output: str) -> dict[str, list[str]]:
    lines = output.splitlines()
    assert lines[0].split() == ["partition", *MEDIA_STATUSES, "total", "frames"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_registry_status(warehouse):
    result = invoke("registry", "status")
    assert result.exit_code == 0, result.output
    assert status_rows(result.stdout) == {
        "glass-door": ["1", "0", "1", "2", "1", "0", "5", "4"],
        HOSTILE_KEY: ["1", "1", "0", "0", "0", "0", "2", "0"],
    }
    widths = {len(line) for line in result.stdout.splitlines()}
    assert len(widths) == 1, "columns are aligned (numbers right-aligned, so every line has the same length)"

    by_text = invoke("registry", "status", "--keyword", "<b>door</b>")
    by_key = invoke("registry", "status", "--keyword", HOSTILE_KEY)
    assert by_text.exit_code == by_key.exit_code == 0
    assert by_text.stdout == by_key.stdout
    assert list(status_rows(by_text.stdout)) == [HOSTILE_KEY]

    unknown = invoke("registry", "status", "--keyword", "no such keyword")
    assert unknown.exit_code == 0
    assert unknown.stdout.strip() == "no media yet"
    empty = invoke("registry", "status", "--keyword", "   ")
    assert empty.exit_code == 2
    assert "keyword is empty" in empty.stderr


def test_registry_list(warehouse):
    result = invoke("registry", "list", "--keyword", "glass door")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["media_id", "media_type", "status", "source", "title", "url", "error"]
    assert [line.split()[0] for line in lines[1:]] == ["v1", "v2", "v3", "v4", "v5"]
    failed = lines[-1]
    assert "\x1b" not in result.stdout
    assert "evil [31mred title" in failed
    assert "a" * 60 not in failed and "…" in failed
    assert "download failed: xxx" in failed

    everything = invoke("registry", "list")
    assert everything.exit_code == 0
    rows = everything.stdout.splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [
        [HOSTILE_KEY, "h1"],
        [HOSTILE_KEY, "h2"],
        ["glass-door", "v1"],
        ["glass-door", "v2"],
        ["glass-door", "v3"],
        ["glass-door", "v4"],
        ["glass-door", "v5"],
    ], "ordered by partition key (b-door-b_… sorts before glass-door), then media id"

    complete = invoke("registry", "list", "--status", "complete", "--limit", "1")
    assert complete.exit_code == 0
    assert [line.split()[3] for line in complete.stdout.splitlines()[1:]] == ["complete"]
    assert "1 of 2 shown" in complete.stderr
    assert invoke("registry", "list", "--status", "bogus").exit_code == 2
    assert invoke("registry", "list", "--limit", "0").exit_code == 2


def read_back(path: Path, fmt: str) -> list[tuple]:
    reader = {"csv": "read_csv", "json": "read_json", "parquet": "read_parquet"}[fmt]
    with duckdb.connect() as conn:
        return conn.execute(f"SELECT media_id, title FROM {reader}(?) ORDER BY media_id", [str(path)]).fetchall()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_registry_export(warehouse, tmp_path, fmt):
    output = tmp_path / "it's exports" / f"videos.{fmt}"
    result = invoke("registry", "export", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote 7 rows to {output} ({fmt})"
    rows = read_back(output, fmt)
    assert [media_id for media_id, _ in rows] == ["h1", "h2", "v1", "v2", "v3", "v4", "v5"]
    assert ("h2", 'it\'s "quoted", with, commas') in rows
    assert ("v5", "evil\x1b[31mred\ntitle") in rows, "exports keep the exact text"

    filtered = tmp_path / "filtered.out"
    result = invoke("registry", "export", "-o", str(filtered), "--format", fmt, "--keyword", "<b>door</b>")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote 2 rows to {filtered} ({fmt})"
    assert [media_id for media_id, _ in read_back(filtered, fmt)] == ["h1", "h2"]


def test_registry_export_keeps_all_columns(warehouse, tmp_path):
    output = tmp_path / "videos.json"
    assert invoke("registry", "export", "--output", str(output)).exit_code == 0
    first = json.loads(output.read_text().splitlines()[0])
    columns = [row["column_name"] for row in warehouse.query_dicts("DESCRIBE media_status")]
    assert list(first) == columns
    assert first["discovered_at"] is not None


def test_registry_export_needs_a_format(warehouse, tmp_path):
    result = invoke("registry", "export", "--output", str(tmp_path / "videos.txt"))
    assert result.exit_code == 2
    assert "pass --format" in result.stderr
    assert not (tmp_path / "videos.txt").exists()


def test_sql_prints_a_statements_rows(warehouse):
    result = invoke("sql", "SELECT count(*) AS n FROM registry")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["n", "7"]

    by_partition = invoke("sql", "SELECT partition_key, count(*) AS videos FROM registry GROUP BY ALL ORDER BY 1")
    assert by_partition.exit_code == 0, by_partition.output
    assert [line.split() for line in by_partition.stdout.splitlines()] == [
        ["partition_key", "videos"],
        [HOSTILE_KEY, "2"],
        ["glass-door", "5"],
    ]
    limited = invoke("sql", "--limit", "2", "SELECT media_id FROM lake.main.registry ORDER BY media_id")
    assert limited.exit_code == 0, limited.output
    assert limited.stdout.splitlines() == ["media_id", "h1", "h2"]
    nothing = invoke("sql", "SELECT media_id, title FROM registry WHERE false")
    assert nothing.stdout.strip() == "(no rows; columns media_id, title)"


@pytest.mark.parametrize(
    ("statement", "message"),
    [("SELEC 1", 'syntax error at or near "SELEC"'), ("SELECT * FROM nope", "Table with name nope does not exist")],
)
def test_sql_error_is_a_message(warehouse, statement, message):
    result = invoke("sql", statement)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert isinstance(result.exception, SystemExit), "a message, not a traceback"


def test_sql_writes_commit():
    result = invoke("sql", "INSERT INTO keywords (partition_key, keyword) VALUES ('door', 'door')")
    assert result.exit_code == 0, result.output
    assert keyword_texts() == {"door": "door"}


def test_sql_reads_statements_from_stdin():
    result = invoke("sql", input="SELECT 1 AS one;\n.quit\nSELECT 2 AS two;\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["one", "  1"], "nothing after .quit runs"
    assert result.stderr == "", "no banner or prompt when stdin is not a terminal"


def test_sql_from_stdin_goes_on_after_an_error_and_runs_a_last_statement_without_semicolon():
    lines = ["SELEC 1;", "SELECT 2", "  AS two;", "SELECT 3 AS three"]
    result = invoke("sql", input="\n".join(lines))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["two", "  2", "three", "    3"]
    assert result.stderr.startswith('error: Parser Error: syntax error at or near "SELEC"')


OLD_SCHEMA = """
CREATE TABLE keywords (
    partition_key VARCHAR PRIMARY KEY,
    keyword VARCHAR NOT NULL,
    added_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE registry (  -- columns in another order, one the lake has not, none of the lake's channel
    media_id VARCHAR NOT NULL,
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    page_url VARCHAR NOT NULL DEFAULT 'https://example.test/page',
    title VARCHAR,
    legacy_rank INTEGER,
    discovered_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (partition_key, item)
);
CREATE TABLE scratch (note VARCHAR);
INSERT INTO keywords (partition_key, keyword) VALUES ('glass-door', 'glass door'), ('window', 'Window');
INSERT INTO registry (partition_key, keyword, item, media_id, source, url, title, legacy_rank) VALUES
    ('glass-door', 'glass door', 'v1', 'v1', 'youtube', 'https://example.test/v1', 'it''s a door', 1),
    ('glass-door', 'glass door', 'v2', 'v2', 'youtube', 'https://example.test/v2', NULL, 2),
    ('window', 'Window', 'w1', 'w1', 'pexels', 'https://example.test/w1', 'a window', 3);
UPDATE registry SET title = 'two' WHERE media_id = 'v2';
INSERT INTO scratch VALUES ('left behind');
"""


@pytest.fixture
def old_export(tmp_path) -> Path:
    """An older warehouse file (keys, non-literal defaults, a column since dropped), exported by DuckDB to Parquet."""
    folder = tmp_path / "old export"
    with duckdb.connect(str(tmp_path / "old.duckdb")) as conn:
        conn.execute(OLD_SCHEMA)
        conn.execute(f"EXPORT DATABASE '{folder}' (FORMAT parquet)")
    return folder


def test_warehouse_import_loads_an_old_export_by_column_name(old_export):
    result = invoke("warehouse", "import", str(old_export))
    assert result.exit_code == 0, result.output
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert report == {
        "keywords": "2 rows",
        "registry": "3 rows; columns left out: legacy_rank",
        "scratch": "left out: not a table of this warehouse",
    }
    lake = warehouse_from_env()
    assert keyword_texts() == {"glass-door": "glass door", "window": "Window"}
    assert all(row["added_at"] is not None for row in lake.query_dicts("SELECT added_at FROM keywords"))
    items = lake.query_dicts(
        "SELECT partition_key, keyword, item, source, url, title, channel, discovered_at FROM registry ORDER BY item"
    )
    assert [{k: v for k, v in row.items() if not k.endswith("_at")} for row in items] == [
        {"partition_key": "glass-door", "keyword": "glass door", "item": "v1", "source": "youtube",
         "url": "https://example.test/v1", "title": "it's a door", "channel": None},
        {"partition_key": "glass-door", "keyword": "glass door", "item": "v2", "source": "youtube",
         "url": "https://example.test/v2", "title": "two", "channel": None},
        {"partition_key": "window", "keyword": "Window", "item": "w1", "source": "pexels",
         "url": "https://example.test/w1", "title": "a window", "channel": None},
    ]  # fmt: skip
    assert all(row["discovered_at"] is not None for row in items), "the export's timestamps come over"
    assert lake.query_dicts("SELECT count(*) AS n FROM frames") == [{"n": 0}], "tables the export lacks stay"

    status = invoke("registry", "status")
    assert status.exit_code == 0, status.output
    assert status_rows(status.stdout) == {
        "glass-door": ["2", "0", "0", "0", "0", "0", "2", "0"],
        "window": ["1", "0", "0", "0", "0", "0", "1", "0"],
    }


def test_warehouse_import_skips_filled_tables_and_replace_replaces_them(old_export):
    assert invoke("warehouse", "import", str(old_export)).exit_code == 0
    lake = warehouse_from_env()
    lake.execute("UPDATE registry SET title = 'changed in the lake' WHERE item = 'v1'")

    again = invoke("warehouse", "import", str(old_export))
    assert again.exit_code == 0, again.output
    assert "keywords: skipped: the lake's table already has 2 rows (--replace empties it first)" in again.stdout
    assert "registry: skipped: the lake's table already has 3 rows (--replace empties it first)" in again.stdout
    assert lake.query_dicts("SELECT title FROM registry WHERE item = 'v1'") == [{"title": "changed in the lake"}]

    replaced = invoke("warehouse", "import", "--replace", str(old_export))
    assert replaced.exit_code == 0, replaced.output
    assert "keywords: 2 rows (replaced 2)" in replaced.stdout
    assert "registry: 3 rows (replaced 3); columns left out: legacy_rank" in replaced.stdout
    counts = lake.query_dicts(
        "SELECT (SELECT count(*) FROM keywords) AS keywords, (SELECT count(DISTINCT partition_key) FROM keywords)"
        " AS keys, (SELECT count(*) FROM registry) AS items, (SELECT count(DISTINCT (partition_key, item))"
        " FROM registry) AS item_keys"
    )
    assert counts == [{"keywords": 2, "keys": 2, "items": 3, "item_keys": 3}], "no duplicates"
    assert lake.query_dicts("SELECT title FROM registry WHERE item = 'v1'") == [{"title": "it's a door"}]


def test_warehouse_import_of_a_folder_without_parquet_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("warehouse", "import", str(empty))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"(none): no Parquet files in {empty}"
    assert invoke("warehouse", "import", str(tmp_path / "missing")).exit_code == 2


def test_dev_command_prepares_home_and_builds_argv(tmp_path):
    argv = cli.dev_command("0.0.0.0", 3123)
    assert argv[1:] == ["dev", "-m", "mining_assets.definitions", "-h", "0.0.0.0", "-p", "3123"]
    assert Path(argv[0]).name == "dagster" and os.access(argv[0], os.X_OK)
    home = tmp_path / "dagster_home"
    assert os.environ["DAGSTER_HOME"] == str(home)
    assert (tmp_path / "data").is_dir()
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["telemetry"] == {"enabled": False}
    assert config["concurrency"]["runs"] == {
        "max_concurrent_runs": 4,
        "tag_concurrency_limits": [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ],
    }, "one run per keyword partition at a time"
    assert config["concurrency"]["pools"] == {"default_limit": 1}, "one model step of each pool at a time"
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert set(config) == {"telemetry", "concurrency", "run_monitoring", "run_retries", "run_coordinator"}
    with dg.DagsterInstance.get() as instance:
        assert instance.root_directory == str(home)


def test_dagster_home_defaults_to_the_working_directory_and_keeps_existing_config(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    assert cli.ensure_dagster_home() == tmp_path / "dagster_home"
    assert os.environ["DAGSTER_HOME"] == str(tmp_path / "dagster_home")
    assert (tmp_path / "dagster_home" / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def test_dagster_executable_falls_back_to_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dagster"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(cli.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli.dagster_executable() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(cli.click.ClickException):
        cli.dagster_executable()


def test_dev_execs_dagster_dev(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execvp", lambda file, argv: calls.append((file, argv)))
    result = invoke("dev", "--port", "4000")
    assert result.exit_code == 0, result.output
    [(file, argv)] = calls
    assert file == argv[0]
    assert argv[1:] == ["dev", "-m", "mining_assets.definitions", "-h", "127.0.0.1", "-p", "4000"]
    assert f"DAGSTER_HOME={tmp_path / 'dagster_home'}" in result.stderr
    assert invoke("dev", "--port", "0").exit_code == 2


def test_default_instance_yaml_matches_the_committed_one():
    """`mining dev` writes this file where none exists; it must say what dagster_home/dagster.yaml says."""
    committed = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"
    assert yaml.safe_load(cli.DEFAULT_INSTANCE_YAML) == yaml.safe_load(committed.read_text())
