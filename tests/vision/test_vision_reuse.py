"""The vision stages do only what is new: outputs are reused by frame content and work key (model, precision,
and for detections the labels and threshold) from any keyword's rows, and image features are kept, so a new
prompt runs only the text tower."""

import pytest
from harness import materialize_partition, meta, query_dicts
from vision_support import encode, scene, seed_frames

from mining_assets.keyword_settings import configure
from mining_assets.vision.detections import detections
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.unique import unique_frames
from mining_assets.work import model_settings, work_key
from resources.models.detector import OpenVocabDetector
from resources.models.embedder import ImageEmbedder
from resources.models.text_filter import TextImageFilter

STAGES = [filtered_frames, frame_embeddings, unique_frames, detections]
CONFIG = {
    "filtered_frames": {"threshold": 0.0},
    "unique_frames": {"threshold": 0.9999},
    "detections": {"threshold": 0.0, "labels": ["door"]},
}
PICTURES = {f"f{i}": encode(scene(i)) for i in range(1, 6)}


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Images each model is run on (the filter's image and text towers apart)."""
    counted = {"image_tower": 0, "text_tower": 0, "embedder": 0, "detector": 0}

    def counting(cls, name, role, size):
        real = getattr(cls, name)

        def call(self, *args, **kwargs):
            counted[role] += size(*args)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, call)

    counting(TextImageFilter, "image_features", "image_tower", lambda inputs: len(inputs["pixel_values"]))
    counting(TextImageFilter, "encode_prompts", "text_tower", lambda prompts: len(prompts))
    counting(ImageEmbedder, "embed_prepared", "embedder", lambda inputs: len(inputs["pixel_values"]))
    counting(OpenVocabDetector, "detect_prepared", "detector", lambda inputs, sizes, *rest: len(sizes))
    return counted


def run(resources, instance, partition_key, **config):
    result, checks = materialize_partition(resources, instance, partition_key, STAGES, **(CONFIG | config))
    assert [name for name, passed in checks.items() if not passed] == []
    return result


def rows(resources, table: str, partition_key: str, columns: str) -> list[dict]:
    return query_dicts(resources, f"SELECT {columns} FROM {table} WHERE partition_key = ? ORDER BY ALL", partition_key)


def test_an_unchanged_rerun_runs_no_model_and_leaves_the_same_rows(vision_resources, instance, calls):
    key = seed_frames(vision_resources, "glass door", PICTURES)
    first = run(vision_resources, instance, key)
    assert calls == {"image_tower": 5, "text_tower": 1, "embedder": 5, "detector": 5}
    assert meta(first, "detections")["detected_now"] == 5
    before = {
        table: rows(vision_resources, table, key, "* EXCLUDE (scored_at)" if table == "frame_scores" else "*")
        for table in ("frame_scores", "filtered_frames", "frame_embeddings", "detections", "detected_frames")
    }

    calls.update(dict.fromkeys(calls, 0))
    again = run(vision_resources, instance, key)
    assert calls == {"image_tower": 0, "text_tower": 0, "embedder": 0, "detector": 0}
    assert (meta(again, "filtered_frames")["scored_now"], meta(again, "filtered_frames")["scores_reused"]) == (0, 5)
    assert (meta(again, "frame_embeddings")["embedded_now"], meta(again, "frame_embeddings")["reused"]) == (0, 5)
    assert (meta(again, "detections")["detected_now"], meta(again, "detections")["reused"]) == (0, 5)
    for table, expected in before.items():
        columns = "* EXCLUDE (scored_at)" if table == "frame_scores" else "*"
        assert rows(vision_resources, table, key, columns) == expected, table

    # a setting changed between two runs (of a backfill, say): the next run redoes exactly the work it affects, and
    # keys its rows with the new setting
    keys_before = query_dicts(vision_resources, "SELECT DISTINCT work_key FROM detected_frames")
    configure(vision_resources["warehouse"], key, "detections", {"threshold": 0.5, "labels": ["door"]})
    calls.update(dict.fromkeys(calls, 0))
    result = run(vision_resources, instance, key, detections={})
    assert calls == {"image_tower": 0, "text_tower": 0, "embedder": 0, "detector": 5}
    assert meta(result, "detections")["detected_now"] == 5
    assert meta(result, "detections")["settings_from"]["threshold"] == {"value": 0.5, "from": "keyword"}
    keys_after = query_dicts(vision_resources, "SELECT DISTINCT work_key FROM detected_frames")
    assert len(keys_after) == 1 and keys_after != keys_before

    calls.update(dict.fromkeys(calls, 0))
    result = run(vision_resources, instance, key, filtered_frames={"threshold": 0.0, "rescore": True}, detections={})
    assert calls["image_tower"] == 5 and calls["embedder"] == 0 and calls["detector"] == 0  # same passed frames
    assert meta(result, "frame_embeddings")["reused"] == 5


def test_a_second_keyword_with_the_same_frames_reuses_every_output(vision_resources, instance, calls):
    first = seed_frames(vision_resources, "glass door", PICTURES)
    run(vision_resources, instance, first)
    second = seed_frames(vision_resources, "door", {**PICTURES, "new": encode(scene(42))})
    calls.update(dict.fromkeys(calls, 0))
    result = run(vision_resources, instance, second, filtered_frames={"threshold": 0.0, "include_keyword": False,
                                                                       "classes": ["glass door"]})  # fmt: skip
    # the prompt "a photo of glass door." was scored for the first keyword: only the new frame needs a model
    assert calls == {"image_tower": 1, "text_tower": 1, "embedder": 1, "detector": 1}
    assert meta(result, "filtered_frames")["scores_reused"] == 5
    assert meta(result, "frame_embeddings")["reused"] == 5
    assert meta(result, "detections")["reused"] == 5
    columns = "frame_id, label, score, x0, y0, x1, y1"
    mine = [row for row in rows(vision_resources, "detections", second, columns) if row["frame_id"] != "new"]
    assert mine == rows(vision_resources, "detections", first, columns)
    shards = {row["blob_key"] for row in rows(vision_resources, "frame_embeddings", second, "blob_key")}
    assert all(shard.startswith("embeddings/shared.work/") for shard in shards)
    keys = {  # the keyword is part of no key: one work key per table for both keywords
        table: {row["work_key"] for row in query_dicts(vision_resources, f"SELECT DISTINCT work_key FROM {table}")}
        for table in ("frame_scores", "frame_embeddings", "detected_frames", "filter_features")
    }
    assert all(len(found) == 1 for found in keys.values()), keys


def test_a_new_prompt_runs_only_the_text_tower(vision_resources, instance, calls):
    key = seed_frames(vision_resources, "glass door", PICTURES)
    materialize_partition(vision_resources, instance, key, [filtered_frames], filtered_frames={"threshold": 0.0})
    calls.update(dict.fromkeys(calls, 0))
    result, _ = materialize_partition(vision_resources, instance, key, [filtered_frames],
                                      filtered_frames={"threshold": 0.0, "classes": ["handle"]})  # fmt: skip
    filtered = meta(result, "filtered_frames")
    assert (filtered["scored_now"], filtered["scored_from_features"], filtered["scores_reused"]) == (0, 5, 0)
    assert calls["image_tower"] == 0 and calls["text_tower"] == 2  # prompts encoded; no image runs again
    scores = rows(vision_resources, "frame_scores", key, "frame_id, prompt")
    assert len(scores) == 10  # the keyword's and the class's prompt for each frame


def test_a_frame_whose_file_failed_is_tried_again(vision_resources, instance, calls):
    key = seed_frames(vision_resources, "glass door", {**PICTURES, "broken": b"<html>not yet</html>"})
    first = run(vision_resources, instance, key)
    assert meta(first, "filtered_frames")["failed"] == 1
    seed_frames(vision_resources, "glass door", {**PICTURES, "broken": encode(scene(77))})
    calls.update(dict.fromkeys(calls, 0))
    result = run(vision_resources, instance, key)
    assert (calls["image_tower"], calls["embedder"], calls["detector"]) == (1, 1, 1)
    assert meta(result, "filtered_frames")["failed"] == 0


def test_the_work_key_names_model_and_precision_not_the_device():
    cpu = TextImageFilter(backend="siglip", model_id="/models/siglip", device="cpu")
    auto = TextImageFilter(backend="siglip", model_id="/models/siglip", device="auto", half_precision=False)
    assert work_key(**model_settings(cpu)) == work_key(**model_settings(auto))
    other = TextImageFilter(backend="siglip", model_id="/models/siglip-2", device="cpu")
    assert work_key(**model_settings(other)) != work_key(**model_settings(cpu))
    half = dict(model_settings(cpu), precision="float16")
    assert work_key(**half) != work_key(**model_settings(cpu))
    assert work_key(a=1, b=[1, 2]) == work_key(b=[1, 2], a=1) != work_key(a=1, b=[2, 1])


def test_two_keywords_keeping_the_same_features_at_once_keep_one_row_each(vision_resources):
    """Two runs that computed one frame's image features at the same moment: one row per content is kept."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from mining_assets.vision.filtered import store_features

    shas = [f"{i:064x}" for i in range(6)]
    features = np.eye(6, 8, dtype=np.float32)
    warehouse, store = vision_resources["warehouse"], vision_resources["blob_store"]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: store_features(warehouse, store, "k" * 16, "m", shas, features), range(4)))
    rows = query_dicts(vision_resources, "SELECT frame_sha256, count(*) AS n FROM filter_features GROUP BY ALL")
    assert sorted(row["frame_sha256"] for row in rows) == shas and {row["n"] for row in rows} == {1}
