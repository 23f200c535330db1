"""categories and unique_categories through Dagster: Gemini on the descriptions with every reply checked against
the list, SigLIP zero-shot without a key (reusing filtered_frames' image features), and the list's version kept."""

import itertools
import json

import dagster as dg
import pytest
from gemini_support import malformed, ok, refused
from harness import materialize_partition, meta, query_dicts

from mining_assets.language.categories import categories
from mining_assets.language.category_list import load_category_list
from mining_assets.language.descriptions import descriptions
from mining_assets.language.unique_categories import unique_categories
from mining_assets.vision.filtered import filtered_frames

pytestmark = pytest.mark.slow
LISTED = load_category_list().categories


def numbered_descriptions(server) -> None:
    """Each description request is answered with the content ``image <n>``, n counting from 0."""
    counter = itertools.count()

    def answer(request):
        schema = request["body"]["generationConfig"]["responseSchema"]
        if "content" in schema["properties"]:
            return ok({"content": f"image {next(counter)}", "setting": "", "people": "", "objects": [], "style": ""})
        return ok({"primary": "people", "categories": ["people"]})

    server.respond(answer)


def by_description(server, replies: dict[str, object]) -> None:
    """Category requests answered by the described content they hold (``image <n>``)."""

    def answer(request):
        text = request["body"]["contents"][0]["parts"][0]["text"]
        content = json.loads(text[text.index("{") :])["content"]
        reply = replies[content]
        return reply if not isinstance(reply, dict) else ok(reply)

    server.respond(answer)


def frame_categories(resources, partition_key: str) -> list[dict]:
    return query_dicts(
        resources,
        "SELECT frame_id, method, list_version, categories, primary_category, primary_score FROM frame_categories "
        "WHERE partition_key = ? ORDER BY frame_id",
        partition_key,
    )


def test_gemini_categories_are_checked_against_the_list(instance, gemini_resources, gemini_server, seeded):
    key = seeded("glass door", 5)
    numbered_descriptions(gemini_server)
    materialize_partition(gemini_resources, instance, key, [descriptions])
    contents = {row["content"] for row in query_dicts(gemini_resources, "SELECT content FROM descriptions")}
    assert contents == {f"image {n}" for n in range(5)}
    by_description(gemini_server, {
        "image 0": {"primary": "food", "categories": ["food", "robots", "People"]},  # robots: not on the list
        "image 1": {"primary": "robots", "categories": ["robots"]},  # a primary not on the list: invalid
        "image 2": malformed("I would say food."),
        "image 3": refused(),
        "image 4": {"primary": "nature", "categories": ["nature"]},
    })  # fmt: skip
    result, checks = materialize_partition(gemini_resources, instance, key, [categories, unique_categories])
    m = meta(result, "categories")
    assert m["method"] == "gemini" and m["categorized"] == 2 and m["failed"] == 3 and checks["every_frame_accounted"]
    assert m["dropped_categories"] == ["robots"] and m["sent"] == 5 and m["prompt_tokens"] == 500
    rows = {row["primary_category"]: row for row in frame_categories(gemini_resources, key)}
    assert sorted(rows) == ["food", "nature"] and list(rows["food"]["categories"]) == ["food", "people"]
    assert {row["list_version"] for row in rows.values()} == {load_category_list().version}
    reasons = sorted(r["reason"] for r in query_dicts(gemini_resources, "SELECT reason FROM categories_errors"))
    assert reasons[0].startswith("invalid reply: primary category 'robots' is not on the list")
    assert reasons[1].startswith("malformed") and reasons[2].startswith("refused")
    stored = query_dicts(gemini_resources, "SELECT dropped, reply FROM category_results WHERE 'food' = ANY(categories)")
    assert list(stored[0]["dropped"]) == ["robots"] and "robots" in stored[0]["reply"]
    request = gemini_server.requests[-1]["body"]
    assert request["generationConfig"]["responseSchema"]["properties"]["primary"]["enum"] == LISTED
    counts = {row["category"]: row for row in query_dicts(gemini_resources, "SELECT * FROM unique_categories")}
    assert {name: row["frames"] for name, row in counts.items()} == {"food": 1, "people": 1, "nature": 1}
    assert counts["food"]["primary_frames"] == 1 and counts["people"]["primary_frames"] == 0
    assert counts["food"]["share"] == pytest.approx(0.5)

    sent = len(gemini_server.requests)
    by_description(gemini_server, {f"image {n}": {"primary": "art", "categories": ["art"]} for n in range(5)})
    again, _ = materialize_partition(gemini_resources, instance, key, [categories])
    assert meta(again, "categories")["sent"] == 3 and len(gemini_server.requests) == sent + 3  # only the failed


def test_an_edited_list_categorizes_again_an_unchanged_one_does_not(
    instance, gemini_resources, gemini_server, seeded, tmp_path
):
    key = seeded("glass door", 2)
    numbered_descriptions(gemini_server)
    materialize_partition(gemini_resources, instance, key, [descriptions, categories])
    sent = len(gemini_server.requests)
    materialize_partition(gemini_resources, instance, key, [categories])
    assert len(gemini_server.requests) == sent
    edited = tmp_path / "mine.csv"
    edited.write_text("category,description\npeople,persons\nplaces,anywhere\n", encoding="utf-8")
    result, _ = materialize_partition(gemini_resources, instance, key, [categories],
                                      categories={"category_list": str(edited)})  # fmt: skip
    m = meta(result, "categories")
    assert m["sent"] == 2 and m["category_list"] == "mine.csv" and m["list_version"] != load_category_list().version
    assert {row["list_version"] for row in frame_categories(gemini_resources, key)} == {m["list_version"]}
    lists = query_dicts(gemini_resources, "SELECT DISTINCT list_version FROM category_lists")
    assert len(lists) == 2


def test_a_broken_list_fails_the_step_with_its_reason(instance, gemini_resources, seeded, tmp_path):
    key = seeded("glass door", 1)
    broken = tmp_path / "broken.csv"
    broken.write_text("category\npeople\nPeople\n", encoding="utf-8")
    instance.add_dynamic_partitions("keyword", [key])
    result = dg.materialize([categories], partition_key=key, resources=gemini_resources, instance=instance,
                            run_config={"ops": {"categories": {"config": {"category_list": str(broken)}}}},
                            raise_on_error=False)  # fmt: skip
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "'People' is listed twice" in str(failure.event_specific_data.error.message)


def test_without_a_key_siglip_categorizes_zero_shot_with_scores_kept(instance, keyless_resources, seeded):
    key = seeded("glass door", 4)
    result, checks = materialize_partition(keyless_resources, instance, key,
                                           [descriptions, categories, unique_categories])  # fmt: skip
    assert meta(result, "descriptions")["skipped"]
    m = meta(result, "categories")
    assert m["method"] == "siglip" and m["categorized"] == 4 and m["failed"] == 0 and "cost_usd" not in m
    assert checks["every_frame_accounted"]
    rows = frame_categories(keyless_resources, key)
    assert all(row["method"] == "siglip" and row["primary_category"] in LISTED for row in rows)
    scores = query_dicts(keyless_resources, "SELECT scores, categories FROM category_results")
    assert all(len(row["scores"]) == len(LISTED) for row in scores)
    assert all(row["primary_score"] is not None for row in rows)
    best = [LISTED[max(range(len(LISTED)), key=lambda i: row["scores"][i])] for row in scores]
    assert sorted(best) == sorted(row["categories"][0] for row in scores)
    seen = query_dicts(keyless_resources, "SELECT sum(primary_frames) AS n FROM unique_categories")
    assert seen[0]["n"] == 4

    again, _ = materialize_partition(keyless_resources, instance, key, [categories])
    assert meta(again, "categories")["categorized_now"] == 0


def test_siglip_reuses_the_image_features_filtered_frames_kept(instance, keyless_resources, seeded):
    key = seeded("glass door", 3)
    materialize_partition(keyless_resources, instance, key, [filtered_frames])
    result, _ = materialize_partition(keyless_resources, instance, key, [categories])
    assert meta(result, "categories")["scored_from_features"] == 3


def test_an_unreadable_image_is_recorded_and_the_rest_go_on(instance, keyless_resources, vision_resources):
    from vision_support import encode, scene, seed_frames

    key = seed_frames(vision_resources, "glass door", {"good": encode(scene(1, (90, 60))), "fake": b"not an image"})
    result, checks = materialize_partition(keyless_resources, instance, key, [categories])
    m = meta(result, "categories")
    assert m["categorized"] == 1 and m["failed"] == 1 and checks["every_frame_accounted"]
    reason = query_dicts(keyless_resources, "SELECT item, reason FROM categories_errors")
    assert reason[0]["item"] == "fake" and reason[0]["reason"]


def test_a_keyword_setting_chooses_the_method_and_run_config_wins(instance, gemini_resources, gemini_server, seeded):
    from mining_assets.keyword_settings import configure

    key = seeded("glass door", 2)
    configure(gemini_resources["warehouse"], key, "categories", {"method": "siglip", "threshold": 0.9})
    result, _ = materialize_partition(gemini_resources, instance, key, [categories])
    m = meta(result, "categories")
    assert m["method"] == "siglip" and m["settings_from"]["method"]["from"] == "keyword" and not gemini_server.requests
    numbered_descriptions(gemini_server)
    materialize_partition(gemini_resources, instance, key, [descriptions])
    result, _ = materialize_partition(gemini_resources, instance, key, [categories], categories={"method": "gemini"})
    assert meta(result, "categories")["method"] == "gemini" and meta(result, "categories")["sent"] == 2
