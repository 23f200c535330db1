"""mongo_export through pymongo's API against mongomock (no MongoDB server is installable here): one document per
media item, per-keyword statistics, idempotent re-runs, stale documents removed, and the URI never shown."""

import dagster as dg
import numpy as np
import pandas as pd
import pymongo
import pytest
from harness import query, query_dicts
from mongo_support import SECRET, URI, UnparseableUriResource
from vision_support import seed_media

from mining_assets.exports.mongo import mongo_export
from mining_assets.partitions import keyword_slug
from mining_assets.poses.datasets import pose_datasets
from mining_assets.warehouse import insert_rows, replace_partition_rows
from resources.mongo import MongoConfigError, MongoResource, redacted_host

VIDEO, PHOTO = "youtube-vid001", "pexels-42"
VIDEO_URL, PHOTO_URL = "https://www.youtube.com/watch?v=vid001", "https://www.pexels.com/photo/42/"
MODELS = "mediapipe:pose_landmarker_full.task@3f2a1b0c9d8e+hand_landmarker.task@7a6b5c4d3e2f"
TIMESTAMPS = ("exported_at", "first_exported_at")


def db(resources: dict):
    """The export database, through pymongo's API (a mongomock client on the test's store)."""
    return resources["mongo"].get_client()[resources["mongo"].database]


def flat_landmarks(rng, points: int, dims: int, visibility: float | None = None) -> list[float]:
    values = rng.uniform(0.05, 0.95, (points, dims)).astype(np.float32)
    if visibility is not None:
        values[:, 3] = visibility
    return values.reshape(-1).tolist()


def seed(resources: dict, keyword: str) -> str:
    """A video of 5 frames in time order (one without hands, one without a pose) and a photo, with their sources."""
    rng = np.random.default_rng(7)
    partition_key = keyword_slug(keyword)
    hands = [(True, True), (True, False), (False, False), (True, True), (False, True)]
    rows = []
    for i, (left, right) in enumerate([*hands, (True, True)]):
        photo, found = i == 5, i != 3
        rows.append({
            "partition_key": partition_key, "frame_id": PHOTO if photo else f"{VIDEO}-{i}",
            "frame_sha256": f"{i:064x}", "media_id": PHOTO if photo else VIDEO,
            "media_type": "photo" if photo else "video",
            "sequence_index": 0 if photo else i, "timestamp_s": None if photo else 0.5 * i, "image_width": 640,
            "image_height": 480, "pose_found": found,
            "pose_landmarks": flat_landmarks(rng, 33, 4, 0.5 + 0.1 * i) if found else None,
            "pose_world_landmarks": flat_landmarks(rng, 33, 3) if found else None,
            "left_hand": flat_landmarks(rng, 21, 3) if left else None, "left_hand_score": 0.9 if left else None,
            "right_hand": flat_landmarks(rng, 21, 3) if right else None, "right_hand_score": 0.8 if right else None,
            "models": MODELS,
        })  # fmt: skip
    video = {"media_id": VIDEO, "media_type": "video", "source": "youtube", "blob_key": f"videos/{VIDEO}.mp4",
             "url": VIDEO_URL, "page_url": VIDEO_URL, "channel": "Door Channel"}  # fmt: skip
    photo = {"media_id": PHOTO, "media_type": "photo", "source": "pexels", "blob_key": f"photos/{PHOTO}.jpg",
             "url": "https://images.pexels.com/42.jpg", "page_url": PHOTO_URL, "query": keyword,
             "photographer": "Ana", "license": "Pexels License"}  # fmt: skip
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            replace_partition_rows(conn, "keywords", partition_key,
                                   pd.DataFrame([{"partition_key": partition_key, "keyword": keyword}]))  # fmt: skip
            seed_media(conn, partition_key, keyword, [video, photo])
            insert_rows(conn, "poses", pd.DataFrame(rows))
    return partition_key


def run(resources, instance, partition_key, assets=(pose_datasets, mongo_export), raise_on_error=True):
    instance.add_dynamic_partitions("keyword", [partition_key])
    return dg.materialize(list(assets), partition_key=partition_key, resources=resources, instance=instance,
                          raise_on_error=raise_on_error)  # fmt: skip


def meta(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("mongo_export")[0].metadata.items()}


def without(document: dict, *names: str) -> dict:
    return {k: v for k, v in document.items() if k not in names}


def test_one_document_per_media_item_and_keyword_statistics(mongo_resources, instance):
    partition_key = seed(mongo_resources, "glass door")
    result = run(mongo_resources, instance, partition_key)
    assert meta(result) | {"skipped": None} == {
        "documents": 2, "upserted": 2, "modified": 0, "unchanged": 0, "removed": 0,
        "database": "data_mining_empire", "collection": "robot_training_data",
        "statistics_collection": "mining_statistics", "host": "mongodb://***@mongo.internal.test:27017",
        "skipped": None,
    }  # fmt: skip
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"files_verified": True, "unique_key": True, "documents_match_warehouse": True,
                      "produced_output": True}  # fmt: skip
    database = db(mongo_resources)
    video, photo = (database["robot_training_data"].find_one({"_id": f"{partition_key}:{m}"}) for m in (VIDEO, PHOTO))
    assert {k: video[k] for k in ("keyword", "media_id", "media_type", "source", "source_url", "license")} == {
        "keyword": "glass door", "media_id": VIDEO, "media_type": "video", "source": "youtube",
        "source_url": VIDEO_URL, "license": None}  # fmt: skip
    assert video["pose"] == {
        "frames": 5, "frames_with_pose": 4, "frames_with_hands": 4, "frames_with_both_hands": 2,
        "mean_visibility": pytest.approx(np.mean([0.5, 0.6, 0.7, 0.9]), abs=1e-6),
        "first_timestamp_s": 0.0, "last_timestamp_s": 2.0, "span_s": 2.0,
    }  # fmt: skip
    assert (photo["license"], photo["creator"], photo["source_url"]) == ("Pexels License", "Ana", PHOTO_URL)
    assert photo["pose"]["span_s"] is None and photo["pose"]["frames"] == 1
    files = {row["media_id"]: row for row in query_dicts(
        mongo_resources, "SELECT media_id, uri, sha256, sidecar_key FROM pose_datasets")}  # fmt: skip
    store = mongo_resources["blob_store"]
    assert (video["hdf5"]["uri"], video["hdf5"]["sha256"]) == (files[VIDEO]["uri"], files[VIDEO]["sha256"])
    assert video["hdf5"]["sidecar_uri"] == store.uri(files[VIDEO]["sidecar_key"])
    assert store.exists(video["hdf5"]["sidecar_key"])
    assert video["hdf5"]["keyword_file_uri"] == files["*"]["uri"]
    assert video["models"] == [MODELS] and video["source_deleted"] is False
    assert video["exported_at"] == video["first_exported_at"]
    statistics = database["mining_statistics"].find_one({"_id": partition_key})
    assert {k: statistics[k] for k in ("keyword", "media_items", "videos", "photos", "frames", "frames_with_pose",
                                       "frames_with_hands")} == {
        "keyword": "glass door", "media_items": 2, "videos": 1, "photos": 1, "frames": 6, "frames_with_pose": 5,
        "frames_with_hands": 5}  # fmt: skip
    assert statistics["mean_visibility"] == pytest.approx(np.mean([0.5, 0.6, 0.7, 0.9, 1.0]), abs=1e-6)
    indexes = database["robot_training_data"].index_information()
    assert indexes["keyword_media_id"]["key"] == [("keyword", 1), ("media_id", 1)]


def test_rerun_leaves_exactly_the_same_documents(mongo_resources, instance):
    partition_key = seed(mongo_resources, "glass door")
    run(mongo_resources, instance, partition_key)
    collections = ("robot_training_data", "mining_statistics")
    first = {name: list(db(mongo_resources)[name].find(sort=[("_id", 1)])) for name in collections}

    result = run(mongo_resources, instance, partition_key, assets=[mongo_export])
    assert (meta(result)["upserted"], meta(result)["modified"], meta(result)["unchanged"]) == (0, 0, 2)
    again = {name: list(db(mongo_resources)[name].find(sort=[("_id", 1)])) for name in collections}
    assert again == first  # nothing changed, so not even exported_at moved

    run(mongo_resources, instance, partition_key)  # new HDF5 files too: only timestamps and file hashes may move
    after = {name: list(db(mongo_resources)[name].find(sort=[("_id", 1)])) for name in collections}
    assert [len(after[name]) for name in collections] == [2, 1]
    for name in collections:
        for old, new in zip(first[name], after[name], strict=True):
            assert new["first_exported_at"] == old["first_exported_at"]
            ignored = (*TIMESTAMPS, "content_sha256", "hdf5", "keyword_hdf5_uri")
            assert without(new, *ignored) == without(old, *ignored)
            if "hdf5" in new:  # a new file (its created_at is the run's), named by its content
                named = ("sha256", "uri", "key", "sidecar_uri", "sidecar_key", "keyword_file_uri")
                assert without(new["hdf5"], *named) == without(old["hdf5"], *named)
                assert new["hdf5"]["sha256"][:12] in new["hdf5"]["key"]


def test_documents_of_media_no_longer_present_are_removed(mongo_resources, instance):
    partition_key = seed(mongo_resources, "glass door")
    other = seed(mongo_resources, "door handle")
    run(mongo_resources, instance, partition_key)
    run(mongo_resources, instance, other)
    query(mongo_resources, "DELETE FROM poses WHERE partition_key = ? AND media_id = ?", partition_key, PHOTO)
    result = run(mongo_resources, instance, partition_key)
    assert (meta(result)["removed"], meta(result)["documents"]) == (1, 1)
    documents = db(mongo_resources)["robot_training_data"]
    assert sorted(d["_id"] for d in documents.find()) == [f"{other}:{PHOTO}", f"{other}:{VIDEO}",
                                                          f"{partition_key}:{VIDEO}"]  # fmt: skip
    assert db(mongo_resources)["mining_statistics"].find_one({"_id": partition_key})["media_items"] == 1


def run_log_text(instance, result) -> str:
    """Every event of a run (messages, metadata, errors) and its config, as stored."""
    entries = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    return "\n".join([*entries, repr(instance.get_run_by_id(result.run_id).run_config)])


def test_the_uri_never_reaches_metadata_or_logs(mongo_resources, instance, capfd):
    partition_key = seed(mongo_resources, "glass door")
    result = run(mongo_resources, instance, partition_key)
    text = run_log_text(instance, result)
    assert "mongo.internal.test" in text  # the redacted host is shown
    failing = run(
        {**mongo_resources, "mongo": UnparseableUriResource()}, instance, partition_key, [mongo_export], False
    )
    assert not failing.success
    failure = run_log_text(instance, failing)
    assert "cannot make a MongoDB client for mongodb://***@mongo.internal.test:27017" in failure
    output = capfd.readouterr()
    for shown in (text, failure, output.out, output.err):
        assert SECRET not in shown and URI not in shown


def test_a_missing_uri_names_the_variable_and_other_assets_do_not_need_it(mongo_resources, instance, monkeypatch):
    monkeypatch.delenv("MONGODB_URI")
    partition_key = seed(mongo_resources, "glass door")
    assert run(mongo_resources, instance, partition_key, [pose_datasets]).success
    result = run(mongo_resources, instance, partition_key, [mongo_export], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no MongoDB URI: set MONGODB_URI" in failure.step_failure_data.error.to_string()


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://robot:pw@db1:27017,db2:27017/data?authSource=admin", "mongodb://***@db1:27017,db2:27017"),
        ("mongodb+srv://robot:p%40ss@cluster0.example.net/?retryWrites=true", "mongodb+srv://***@cluster0.example.net"),
        ("mongodb://robot:pa/ss@host:1/db", "mongodb://***@host:1"),
        ("mongodb://localhost", "mongodb://localhost"),
        ("localhost:27017", "<not a MongoDB URI>"),
    ],
)
def test_redacted_host_shows_no_credentials(uri, shown):
    assert redacted_host(uri) == shown


def test_the_production_resource_makes_a_pymongo_client(monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    with pytest.raises(MongoConfigError, match="set MONGODB_URI"):
        MongoResource().get_client()
    monkeypatch.setenv("MONGODB_URI", "mongodb://robot:pw@127.0.0.1:9/?serverSelectionTimeoutMS=50")
    client = MongoResource(database="robots").get_client()
    try:
        assert isinstance(client, pymongo.MongoClient)  # pymongo connects on first use: nothing is contacted here
        assert "127.0.0.1:9" in repr(client) and ":pw@" not in repr(client)
    finally:
        client.close()
    monkeypatch.setenv("MONGODB_URI", f"mongodb://robot:{SECRET}@host:notaport")
    with pytest.raises(MongoConfigError) as error:
        MongoResource().get_client()
    assert SECRET not in str(error.value) and error.value.__cause__ is None
