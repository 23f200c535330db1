"""Media shared by keywords: keys that collide in text, two keywords at the same moment, a re-download under
another container, a keyword deleted while another still refers to its media."""

import threading
from pathlib import Path

import dagster as dg
from harness import query, query_dicts

from mining_assets.blob_gc import blob_gc
from mining_assets.frames import frames
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.partitions import storage_key
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from resources.youtube import YouTubeResource

SOURCE = [media_registry, media, video_frames, frames]
VIDEO_ONLY = {"media_registry": {"config": {"uploads": False, "stock_sources": []}},
              "video_frames": {"config": {"strategy": "keyframes"}}}  # fmt: skip
COLLIDING = ["glass door", "glass-door", "Glass Door", "glass_door", "glass__door"]


def run(instance, resources, key: str, selection=SOURCE, ops=VIDEO_ONLY):
    result = dg.materialize(selection, partition_key=key, resources=resources, instance=instance,
                            run_config={"ops": ops}, raise_on_error=False)  # fmt: skip
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def keys_of(resources, texts: list[str], instance) -> list[str]:
    """Partition keys as the CLI makes them (registered) and as the UI's "Add partition" does (the text itself)."""
    registered = [key for key, _ in register_keywords(resources["warehouse"], texts[:1])[0]]
    keys = registered + texts  # "glass door" -> glass-door (the CLI); the rest as typed in the UI
    add_keyword_partitions(instance, keys)
    return list(dict.fromkeys(keys))


def catalog(resources, key: str) -> set[tuple]:
    return {(r["media_id"], r["frame_index"], r["blob_key"], r["sha256"])
            for r in query_dicts(resources, "SELECT * FROM frames WHERE partition_key = ?", key)}  # fmt: skip


def run_at_once(resources, keys: list[str]) -> dict[str, bool]:
    """The source path of every key at the same moment, each run with its own instance (as a run of another process
    has; one ephemeral instance is not shared by threads); whether each succeeded."""
    outcomes: dict[str, bool] = {}

    def one(key: str) -> None:
        with dg.DagsterInstance.ephemeral() as own:
            add_keyword_partitions(own, [key])
            result = dg.materialize(SOURCE, partition_key=key, resources=resources, instance=own,
                                    run_config={"ops": VIDEO_ONLY}, raise_on_error=False)  # fmt: skip
            outcomes[key] = result.success

    threads = [threading.Thread(target=one, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return outcomes


def assert_every_catalog_whole(resources, keys: list[str]) -> None:
    store = resources["blob_store"]
    for key in keys:
        rows = catalog(resources, key)
        assert len(rows) == 3 + 4, key  # keyframes of both videos
        assert all(store.exists(blob_key) for _, _, blob_key, _ in rows), key


def test_keys_that_collide_in_text_materialized_one_after_the_other_keep_each_others_files(instance, resources):
    keys = keys_of(resources, COLLIDING, instance)
    assert len({storage_key(key) for key in keys}) == len(keys)
    for key in keys:
        run(instance, resources, key)
    assert_every_catalog_whole(resources, keys)
    assert len({frozenset(catalog(resources, key)) for key in keys}) == 1  # the same frames, stored once
    assert query(resources, "SELECT count(*) FROM media")[0][0] == 2
    assert query(resources, "SELECT count(*), count(DISTINCT (media_id, sampling, frame_index)) FROM video_frames")[
        0
    ] == (7, 7)
    assert len(resources["blob_store"].list_keys("frames")) == 7


def test_colliding_keys_and_one_video_found_by_every_keyword_at_the_same_moment(instance, resources):
    """Every keyword finds the same two videos at once: each fetches and samples them (done twice), and each is
    stored once (one media row, one sample, one file per frame)."""
    keys = keys_of(resources, COLLIDING, instance)
    assert run_at_once(resources, keys) == dict.fromkeys(keys, True)
    assert_every_catalog_whole(resources, keys)
    assert query(resources, "SELECT count(*), count(DISTINCT media_id) FROM media")[0] == (2, 2)
    assert query(resources, "SELECT count(*) FROM video_samples")[0][0] == 2
    assert query(resources, "SELECT count(*), count(DISTINCT (media_id, sampling, frame_index)) FROM video_frames")[
        0
    ] == (7, 7)
    assert query(resources, "SELECT count(*) FROM keyword_media")[0][0] == 2 * len(keys)
    assert len(resources["blob_store"].list_keys("frames")) == 7
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"complete"}


class _MkvOnSecondDownload(YouTubeResource):
    """A site that serves the same video in another container the second time (e.g. webm after mp4)."""

    def download(self, url, dest_dir):
        path = super().download(url, dest_dir)
        marker = Path(dest_dir).parent / f"seen-{abs(hash(url))}"
        if not marker.exists():
            marker.write_text("1")
            return path
        return path.rename(path.with_suffix(".mkv"))


def test_a_video_that_changes_container_on_re_download_is_one_media_row(instance, resources, media_server, tmp_path):
    resources["youtube"] = _MkvOnSecondDownload(search_url_template=media_server + "/search.html?q={query}",
                                                retries=0)  # fmt: skip
    key = "glass-door"
    add_keyword_partitions(instance, [key])
    run(instance, resources, key)
    first = {r["media_id"]: r["blob_key"] for r in query_dicts(resources, "SELECT media_id, blob_key FROM media")}
    assert all(k.endswith(".mp4") for k in first.values())
    resources["blob_store"].delete(list(first.values()))  # the files are lost: the next run downloads again
    run(instance, resources, key)
    second = {r["media_id"]: r["blob_key"] for r in query_dicts(resources, "SELECT media_id, blob_key FROM media")}
    assert second.keys() == first.keys() and all(k.endswith(".mkv") for k in second.values())
    assert sorted(resources["blob_store"].list_keys("videos")) == sorted(second.values())
    assert {r[0] for r in query(resources, "SELECT status FROM media_status")} == {"complete"}


def test_a_keyword_deleted_while_another_refers_to_its_media_leaves_the_other_whole(instance, resources):
    first, second = "glass-door", "sliding-door"
    add_keyword_partitions(instance, [first, second])
    for key in (first, second):
        run(instance, resources, key)
    # the first keyword is deleted: its partition, and every row of it
    instance.delete_dynamic_partition("keyword", first)
    for attempt in resources["warehouse"].retrying(lease=first):
        with attempt as conn:
            for table in ("registry", "keyword_media", "keyword_samples", "frames"):
                conn.execute(f"DELETE FROM {table} WHERE partition_key = ?", [first])
    result = dg.materialize([blob_gc], resources=resources, instance=instance,
                            run_config={"ops": {"blob_gc": {"config": {"min_age_hours": 0}}}})  # fmt: skip
    assert result.success
    assert_every_catalog_whole(resources, [second])
    assert len(resources["blob_store"].list_keys("videos")) == 2
    # once no keyword refers to them, the collector removes them
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            for table in ("registry", "keyword_media", "keyword_samples", "frames", "media", "video_samples",
                          "video_frames"):  # fmt: skip
                conn.execute(f"DELETE FROM {table}")
    dg.materialize([blob_gc], resources=resources, instance=instance,
                   run_config={"ops": {"blob_gc": {"config": {"min_age_hours": 0}}}})  # fmt: skip
    assert resources["blob_store"].list_keys("videos") == [] and resources["blob_store"].list_keys("frames") == []


def test_two_keywords_finding_the_same_videos_at_once_on_postgres_store_them_once(instance, resources,
                                                                                  production_lake):  # fmt: skip
    """On a PostgreSQL catalog two inserts of one key by concurrent writers both commit (measured): the table
    leases of media and video_frames keep the shared rows single."""
    resources = {**resources, "warehouse": production_lake}
    keys = ["glass-door", "sliding-door", "glass door"]
    assert run_at_once(resources, keys) == dict.fromkeys(keys, True)
    assert_every_catalog_whole(resources, keys)
    assert query(resources, "SELECT count(*), count(DISTINCT media_id) FROM media")[0] == (2, 2)
    assert query(resources, "SELECT count(*) FROM video_samples")[0][0] == 2
    assert query(resources, "SELECT count(*) FROM video_frames")[0][0] == 7


def test_unique_key_covers_the_shared_tables_too(instance, resources):
    add_keyword_partitions(instance, ["glass-door"])
    run(instance, resources, "glass-door")
    resources["warehouse"].execute("INSERT INTO media SELECT * FROM media LIMIT 1")
    resources["warehouse"].execute("INSERT INTO video_samples SELECT * FROM video_samples LIMIT 1")
    result = run(instance, resources, "glass-door", [media, video_frames], {"video_frames": VIDEO_ONLY["video_frames"]})
    found = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert found[("media", "unique_key")].metadata["duplicated_keys"].value == {"keyword_media": 0, "media": 1}
    assert not found[("media", "unique_key")].passed and not found[("video_frames", "unique_key")].passed
    assert found[("video_frames", "unique_key")].metadata["duplicated_keys"].value == {
        "keyword_samples": 0, "video_samples": 1, "video_frames": 0}  # fmt: skip
