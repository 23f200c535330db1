"""The `mining` command line, offline, against a warehouse and Dagster home in each test's tmp_path."""

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
from mining_assets.partitions import is_slug, keyword_partitions, keyword_slug
from mining_assets.warehouse import connect
from resources import settings

HOSTILE_KEY = keyword_slug("<b>door</b>")
DOTDOT_KEY = keyword_slug("../x")


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def instance_partitions() -> set[str]:
    with dg.DagsterInstance.get() as instance:
        return set(instance.get_dynamic_partitions(keyword_partitions.name))


def insert_video(conn, key: str, media_id: str, status: str, **fields) -> None:
    row = {
        "partition_key": key,
        "keyword": key,
        "media_id": media_id,
        "source": "youtube",
        "url": f"https://example.test/watch?v={media_id}",
        "title": f"title {media_id}",
        "status": status,
        **fields,
    }
    columns = ", ".join(row)
    conn.execute(f"INSERT INTO videos ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def insert_frame(conn, key: str, media_id: str, index: int) -> None:
    conn.execute(
        "INSERT INTO frames (partition_key, keyword, frame_id, media_id, source, media_type, frame_index, timestamp_s,"
        " width, height, blob_key, uri, sha256) VALUES (?, ?, ?, ?, 'youtube', 'video', ?, ?, 64, 48, 'b', 'u', 's')",
        [key, key, f"{media_id}-{index}", media_id, index, index / 10],
    )


@pytest.fixture
def warehouse() -> str:
    """A warehouse with 5 videos and 3 frames under glass-door, and 2 videos under the hostile keyword."""
    path = Path(settings.warehouse_path())
    path.parent.mkdir(parents=True)
    with connect(str(path)) as conn:
        conn.execute("INSERT INTO keywords (partition_key, keyword) VALUES ('glass-door', 'glass door')")
        conn.execute("INSERT INTO keywords (partition_key, keyword) VALUES (?, '<b>door</b>')", [HOSTILE_KEY])
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
    return str(path)


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
    with connect(settings.warehouse_path(), read_only=True) as conn:
        assert dict(conn.execute("SELECT partition_key, keyword FROM keywords").fetchall()) == {
            "glass-door": "glass door",
            DOTDOT_KEY: "../x",
            HOSTILE_KEY: "<b>door</b>",
        }

    again = invoke("keywords", "add", "glass door", "  glass   door ", "window")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == ["known glass-door  glass door", "added window  window"]
    assert instance_partitions() == {"glass-door", DOTDOT_KEY, HOSTILE_KEY, "window"}


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
    path = Path(settings.warehouse_path())
    path.parent.mkdir(parents=True)
    with connect(str(path)) as conn:
        conn.execute("INSERT INTO keywords (partition_key, keyword) VALUES ('glass-door', 'something else')")
    only_taken = invoke("keywords", "add", "glass door")
    assert only_taken.exit_code == 1
    assert "refused 'glass door': partition key 'glass-door' already belongs to keyword 'something else'" in (
        only_taken.stderr
    )
    mixed = invoke("keywords", "add", "glass door", "window")
    assert mixed.exit_code == 0
    assert mixed.stdout.splitlines() == ["added window  window"]
    assert instance_partitions() == {"window"}


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
    path = settings.warehouse_path()
    assert f"no warehouse yet at {path}: add a keyword and materialize video_registry" in result.stderr
    assert not Path(path).exists()
    assert not Path(path).parent.exists()
    assert not (tmp_path / "out.csv").exists()


def status_rows(output: str) -> dict[str, list[str]]:
    lines = output.splitlines()
    assert lines[0].split() == ["partition", "pending", "downloaded", "framed", "complete", "failed", "total", "frames"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_registry_status(warehouse):
    result = invoke("registry", "status")
    assert result.exit_code == 0, result.output
    assert status_rows(result.stdout) == {
        "glass-door": ["1", "0", "1", "2", "1", "5", "3"],
        HOSTILE_KEY: ["1", "1", "0", "0", "0", "2", "0"],
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
    assert unknown.stdout.strip() == "no videos yet"
    empty = invoke("registry", "status", "--keyword", "   ")
    assert empty.exit_code == 2
    assert "keyword is empty" in empty.stderr


def test_registry_list(warehouse):
    result = invoke("registry", "list", "--keyword", "glass door")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["media_id", "status", "source", "title", "url", "error"]
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
    assert [line.split()[1] for line in complete.stdout.splitlines()[1:]] == ["v1"]
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
    with connect(warehouse, read_only=True) as conn:
        columns = [row[0] for row in conn.execute("DESCRIBE videos").fetchall()]
    assert list(first) == columns


def test_registry_export_needs_a_format(warehouse, tmp_path):
    result = invoke("registry", "export", "--output", str(tmp_path / "videos.txt"))
    assert result.exit_code == 2
    assert "pass --format" in result.stderr
    assert not (tmp_path / "videos.txt").exists()


def test_dev_command_prepares_home_and_builds_argv(tmp_path):
    argv = cli.dev_command("0.0.0.0", 3123)
    assert argv[1:] == ["dev", "-m", "mining_assets.definitions", "-h", "0.0.0.0", "-p", "3123"]
    assert Path(argv[0]).name == "dagster" and os.access(argv[0], os.X_OK)
    home = tmp_path / "dagster_home"
    assert os.environ["DAGSTER_HOME"] == str(home)
    assert (tmp_path / "data").is_dir()
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config == {
        "telemetry": {"enabled": False},
        "concurrency": {"pools": {"default_limit": 1}, "runs": {"max_concurrent_runs": 4}},
    }
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


def test_reading_an_empty_warehouse_file_explains_instead_of_crashing():
    path = Path(settings.warehouse_path())
    path.parent.mkdir(parents=True)
    duckdb.connect(str(path)).close()
    result = invoke("registry", "status")
    assert result.exit_code == 1
    assert f"warehouse at {path} is incomplete" in result.stderr
    assert "Traceback" not in result.output


def test_default_instance_yaml_matches_the_committed_one():
    """`mining dev` writes this file where none exists; it must say what dagster_home/dagster.yaml says."""
    committed = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"
    assert yaml.safe_load(cli.DEFAULT_INSTANCE_YAML) == yaml.safe_load(committed.read_text())
