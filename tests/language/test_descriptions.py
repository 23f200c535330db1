"""descriptions through Dagster against the local Gemini server: each image described once, appended as replies
arrive, bad replies recorded with their reason, the spend cap obeyed, and a visible skip without a key."""

import json

import pytest
from conftest import KEY
from gemini_support import malformed, ok, rate_limited, refused, server_error, truncated
from harness import checks_by_asset, materialize_partition, meta, query_dicts

from mining_assets.language import descriptions as descriptions_module
from mining_assets.language.descriptions import descriptions
from resources.gemini import GeminiResource

pytestmark = pytest.mark.slow


def described(resources, partition_key: str) -> list[dict]:
    return query_dicts(
        resources,
        "SELECT f.frame_id, d.content, d.objects, d.model, d.via FROM frame_descriptions f "
        "JOIN descriptions d USING (frame_sha256, work_key) WHERE f.partition_key = ? ORDER BY f.frame_id",
        partition_key,
    )


def errors_of(resources, partition_key: str) -> dict[str, str]:
    rows = query_dicts(resources, "SELECT item, reason FROM descriptions_errors WHERE partition_key = ?", partition_key)
    return {row["item"]: row["reason"] for row in rows}


def description(content: str) -> dict:
    return {"content": content, "setting": "a studio", "people": "", "objects": ["door"], "style": "photograph"}


def test_each_image_is_described_once_with_tokens_and_cost(instance, gemini_resources, gemini_server, seeded):
    key = seeded("glass door", 3)
    result, checks = materialize_partition(gemini_resources, instance, key, [descriptions])
    m = meta(result, "descriptions")
    assert m["described_now"] == 3 and m["described"] == 3 and m["failed"] == 0 and checks["described"]
    assert len(gemini_server.requests) == 3
    # the default reply counts 100 prompt and 20 output tokens: 3 x (100 x 0.10 + 20 x 0.40) / 1e6 on flash-lite
    assert (m["prompt_tokens"], m["output_tokens"]) == (300, 60)
    assert m["cost_usd"] == pytest.approx(3 * 18e-6)
    assert m["usage"]["by_model"]["gemini-2.5-flash-lite"]["requests"] == 3
    rows = described(gemini_resources, key)
    assert [row["frame_id"] for row in rows] == ["p0", "p1", "p2"] and {row["via"] for row in rows} == {"sync"}
    body = gemini_server.requests[0]["body"]
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert set(body["generationConfig"]["responseSchema"]["properties"]) == {
        "content", "setting", "people", "objects", "style"
    }  # fmt: skip
    assert len(gemini_server.images(gemini_server.requests[0])) == 1

    again, _ = materialize_partition(gemini_resources, instance, key, [descriptions])
    assert meta(again, "descriptions")["described_now"] == 0 and meta(again, "descriptions")["reused"] == 3
    assert len(gemini_server.requests) == 3  # nothing sent again
    other = seeded("front door", 4)  # the same 3 images and one new
    third, _ = materialize_partition(gemini_resources, instance, other, [descriptions])
    assert meta(third, "descriptions")["described_now"] == 1 and len(gemini_server.requests) == 4
    assert len(described(gemini_resources, other)) == 4
    assert query_dicts(gemini_resources, "SELECT count(*) AS n FROM descriptions")[0]["n"] == 4


def test_bad_replies_are_recorded_never_stored_and_asked_again(instance, gemini_resources, gemini_server, seeded):
    key = seeded("glass door", 6)
    gemini_server.queue(
        ok(description("a red door")),
        malformed("Sure! Here is the description."),
        truncated('{"content": "a door in a wall, with'),
        refused(),
        rate_limited(0.01), ok(description("a blue door")),  # a 429 with its RetryInfo, then the reply
        *[server_error(500)] * 5,  # max_retries 4: five attempts, then the service failed for this image
    )  # fmt: skip
    result, checks = materialize_partition(gemini_resources, instance, key, [descriptions])
    m = meta(result, "descriptions")
    assert m["described_now"] == 2 and m["failed"] == 4 and not checks["described"]
    reasons = errors_of(gemini_resources, key)
    assert sorted(reasons) == ["p1", "p2", "p3", "p5"]
    assert reasons["p1"].startswith("malformed") and reasons["p2"].startswith("truncated")
    assert reasons["p3"].startswith("refused") and "500" in reasons["p5"]
    assert [row["content"] for row in described(gemini_resources, key)] == ["a red door", "a blue door"]
    assert len(gemini_server.requests) == 11
    assert KEY not in json.dumps(m["problems"]) + json.dumps(m["usage"])

    again, checks = materialize_partition(gemini_resources, instance, key, [descriptions])
    assert meta(again, "descriptions")["described_now"] == 4 and checks["described"]
    assert len(gemini_server.requests) == 15 and errors_of(gemini_resources, key) == {}


def test_html_in_a_description_is_escaped_in_the_metadata(instance, gemini_resources, gemini_server, seeded):
    key = seeded("glass door", 1)
    gemini_server.queue(ok(description("<script>alert(1)</script> a door")))
    result, _ = materialize_partition(gemini_resources, instance, key, [descriptions])
    sample = meta(result, "descriptions")["sample"]
    assert "<script" not in sample and "&lt;script&gt;" in sample
    assert described(gemini_resources, key)[0]["content"] == "<script>alert(1)</script> a door"  # stored as said


def test_the_spend_cap_stops_sending_and_the_next_run_goes_on(instance, gemini_resources, gemini_server, seeded):
    key = seeded("glass door", 5)
    gemini = GeminiResource(base_url=gemini_server.url, max_workers=1, max_spend_usd=4e-5)
    capped = {**gemini_resources, "gemini": gemini}
    result, _ = materialize_partition(capped, instance, key, [descriptions])
    m = meta(result, "descriptions")
    # 1.8e-5 a reply: after two, two more would pass 4e-5, so the third is never sent
    assert m["described_now"] == 2 and len(gemini_server.requests) == 2 and m["usage"]["cap_reached"]
    reasons = errors_of(capped, key)
    assert len(reasons) == 3 and all(r.startswith("not sent: spend cap") for r in reasons.values())
    again, _ = materialize_partition(gemini_resources, instance, key, [descriptions])
    assert meta(again, "descriptions")["described_now"] == 3 and len(gemini_server.requests) == 5


def test_a_run_that_dies_halfway_keeps_every_reply(instance, gemini_resources, gemini_server, seeded, monkeypatch):
    import dagster as dg

    key = seeded("glass door", 4)
    real, calls = descriptions_module.append_shared, []

    def dying(*args, **kwargs):  # the warehouse is lost for good after two replies were stored
        calls.append(1)
        if len(calls) >= 3:
            raise RuntimeError("the machine was lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(descriptions_module, "append_shared", dying)
    instance.add_dynamic_partitions("keyword", [key])
    failed = dg.materialize([descriptions], partition_key=key, resources=gemini_resources, instance=instance,
                            raise_on_error=False)  # fmt: skip
    assert not failed.success
    assert query_dicts(gemini_resources, "SELECT count(*) AS n FROM descriptions")[0]["n"] == 2

    monkeypatch.setattr(descriptions_module, "append_shared", real)
    before = len(gemini_server.requests)
    result, _ = materialize_partition(gemini_resources, instance, key, [descriptions])
    assert meta(result, "descriptions")["described_now"] == 2 and meta(result, "descriptions")["reused"] == 2
    assert len(gemini_server.requests) - before == 2  # the two stored before the crash are not sent again
    assert len(described(gemini_resources, key)) == 4


def test_without_a_key_the_stage_says_it_skipped(instance, keyless_resources, seeded):
    key = seeded("glass door", 2)
    result, _ = materialize_partition(keyless_resources, instance, key, [descriptions])
    m = meta(result, "descriptions")
    assert m["skipped"] == "no Gemini API key: set GEMINI_API_KEY" and m["frames"] == 2
    assert not checks_by_asset(result)[("descriptions", "described")]
    assert described(keyless_resources, key) == []


def test_a_key_in_another_variable_is_read_from_it(instance, gemini_resources, gemini_server, seeded, monkeypatch):
    import dagster as dg

    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("TEAM_GEMINI_KEY", KEY)
    gemini = GeminiResource(api_key=dg.EnvVar("TEAM_GEMINI_KEY"), base_url=gemini_server.url, max_workers=2)
    key = seeded("glass door", 2)
    result, _ = materialize_partition({**gemini_resources, "gemini": gemini}, instance, key, [descriptions])
    assert meta(result, "descriptions")["described_now"] == 2
    assert {request["headers"].get("x-goog-api-key") for request in gemini_server.requests} == {KEY}


def test_a_refused_key_fails_the_step_and_keeps_what_came_back(instance, gemini_resources, gemini_server, seeded):
    from gemini_support import api_error

    key = seeded("glass door", 3)
    instance.add_dynamic_partitions("keyword", [key])
    gemini_server.queue(ok(description("a red door")), *[api_error(403, "API key not valid.", "PERMISSION_DENIED")] * 9)
    import dagster as dg

    result = dg.materialize([descriptions], partition_key=key, resources=gemini_resources, instance=instance,
                            raise_on_error=False)  # fmt: skip
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "403" in str(failure.event_specific_data.error) and KEY not in str(failure.event_specific_data.error)
    assert [row["content"] for row in query_dicts(gemini_resources, "SELECT content FROM descriptions")] == [
        "a red door"
    ]
