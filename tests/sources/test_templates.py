"""Source templates: ``{partition_key}`` in media_registry's local_dir and s3_prefixes, refused (as that source's
failure, the other sources going on) when a key added by hand in the UI would take the result outside the
template's fixed prefix."""

import io
import uuid

import boto3
import pytest
from dagster_aws.s3 import S3Resource
from harness import materialize_partition, meta, query_dicts

from mining_assets.keyword_settings import configure
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.sources.templates import TemplateError, fixed_prefix, resolve_template
from resources.uploads import UploadBucket

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
ONLY_UPLOADS = {"youtube_search": False, "uploads": True, "stock_sources": []}


@pytest.mark.parametrize(
    ("template", "key", "kind", "expected"),
    [
        ("/data/{partition_key}", "glass-door", "path", "/data/glass-door"),
        ("/data/{partition_key}", "a/b", "path", "/data/a/b"),
        ("/data/{partition_key}/photos", "a/./b", "path", "/data/a/b/photos"),
        ("/data/photos-{partition_key}", "x", "path", "/data/photos-x"),
        ("photos/{partition_key}", "x", "path", "photos/x"),
        ("{partition_key}", "glass-door", "path", "glass-door"),
        ("/photos", "../x", "path", "/photos"),  # nothing to substitute: as written
        ("/lit{{eral}}/{partition_key}", "x", "path", "/lit{eral}/x"),
        ("collections/{partition_key}/", "glass-door", "s3", "collections/glass-door/"),
        ("collections/{partition_key}/", "a/b", "s3", "collections/a/b/"),
        ("{partition_key}/", "glass-door", "s3", "glass-door/"),
    ],
)
def test_templates_resolve_inside_their_prefix(template, key, kind, expected):
    assert resolve_template(template, key, kind) == expected


@pytest.mark.parametrize(
    ("template", "key", "kind", "reason"),
    [
        ("/data/{partition_key}", "../x", "path", "gives '/data/../x', which is '/x': outside '/data/'"),
        ("/data/{partition_key}", "x/..", "path", "which is '/data': outside '/data/'"),
        ("/data/{partition_key}", "a/../../etc", "path", "which is '/etc': outside '/data/'"),
        ("/data/photos-{partition_key}", "x/../../y", "path", "outside '/data/photos-'"),
        ("photos/{partition_key}", "../../x", "path", "outside 'photos/'"),
        ("{partition_key}", "..", "path", "outside './'"),
        ("{partition_key}", "/etc", "path", "an absolute path from a relative template"),
        ("{partition_key}/photos", "~root", "path", "an absolute path from a relative template"),
        ("/data/{partition_key}", "", "path", "the partition key is empty"),
        ("/data/{partition_key}", "a\x00b", "path", "NUL byte"),
        ("/data/{keyword}", "x", "path", "unknown placeholder {keyword} (only {partition_key})"),
        ("/data/{partition_key!r}", "x", "path", "unknown placeholder {partition_key!r}"),
        ("/data/{partition_key", "x", "path", "expected '}' before end of string"),
        ("collections/{partition_key}/", "../x", "s3", "gives 'collections/../x/': a '..' segment"),
        ("collections/{partition_key}/", "a/../../b", "s3", "a '..' segment"),
        ("{partition_key}/", "/x", "s3", "a key starting with / from a relative template"),
        ("collections/{partition_key}/", "", "s3", "the partition key is empty"),
    ],
)
def test_templates_refuse_what_leaves_their_prefix(template, key, kind, reason):
    with pytest.raises(TemplateError) as refused:
        resolve_template(template, key, kind)
    assert reason in str(refused.value)
    assert template in str(refused.value), "the reason names the template"


def test_the_fixed_prefix_is_the_text_before_the_first_placeholder():
    assert fixed_prefix("/data/{partition_key}/x/{partition_key}") == "/data/"
    assert fixed_prefix("/plain") == "/plain"


def test_a_home_template_is_expanded_before_it_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_template("~/photos/{partition_key}", "x") == f"{tmp_path}/home/photos/x"
    with pytest.raises(TemplateError, match="outside"):
        resolve_template("~/photos/{partition_key}", "../../elsewhere")


# ---------------------------------------------------------------------- media_registry with templates
def jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((96, 64), 20 + seed).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def bucket(s3_endpoint) -> UploadBucket:
    """An upload bucket on moto with photos under per-keyword and shared prefixes outside the upload folders."""
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    client.create_bucket(Bucket=name)
    for number, key in enumerate(["collections/glass-door/a.jpg", "collections/glass-door/b.jpg", "common/c.jpg"]):
        client.put_object(Bucket=name, Key=key, Body=jpeg(number))
    return UploadBucket(bucket=name, prefix="uploads", s3=S3Resource(endpoint_url=s3_endpoint, **CREDENTIALS))


@pytest.fixture
def photo_folders(tmp_path):
    root = tmp_path / "photos"
    (root / "glass-door").mkdir(parents=True)
    (root / "glass-door" / "local.jpg").write_bytes(jpeg(9))
    return root


def registry_config(photo_folders) -> dict:
    return {**ONLY_UPLOADS, "local_dir": str(photo_folders / "{partition_key}"),
            "s3_prefixes": ["collections/{partition_key}/", "common/"]}  # fmt: skip


def test_templates_read_each_keywords_own_folder_and_prefix(resources, instance, bucket, photo_folders):
    resources = {**resources, "uploads": bucket}
    result, checks = materialize_partition(resources, instance, "glass-door", [media_registry, media],
                                           media_registry=registry_config(photo_folders))  # fmt: skip
    assert checks["sources_answered"] and checks["unique_key"]
    items = query_dicts(resources, "SELECT item, source FROM registry WHERE partition_key = 'glass-door' ORDER BY item")
    assert [(row["source"], row["item"].rsplit("/", 2)[-2:]) for row in items] == [
        ("local", ["glass-door", "local.jpg"]),
        ("s3", ["glass-door", "a.jpg"]),
        ("s3", ["glass-door", "b.jpg"]),
        ("s3", ["common", "c.jpg"]),
    ]
    stored = query_dicts(resources, "SELECT count(*) AS n FROM keyword_media WHERE partition_key = 'glass-door'")
    assert stored == [{"n": 4}], "media fetches the prefixes' objects like any upload"
    # upload_objects tells the uploads sensor which keyword-folder objects it brought: prefixes are not its
    assert query_dicts(resources, "SELECT * FROM upload_objects") == []
    assert meta(result, "media_registry")["by_source"] == {"local": 1, "s3": 3}


def test_a_key_added_by_hand_is_refused_by_each_template_and_the_other_sources_go_on(
    resources, instance, bucket, photo_folders
):
    resources = {**resources, "uploads": bucket}
    result, checks = materialize_partition(resources, instance, "../x", [media_registry],
                                           media_registry=registry_config(photo_folders))  # fmt: skip
    assert checks["sources_answered"] is False
    errors = query_dicts(resources, "SELECT item, reason FROM media_registry_errors WHERE partition_key = '../x'")
    local = str(photo_folders / "{partition_key}")
    assert sorted(e["item"] for e in errors) == [local, f"s3://{bucket.bucket}/collections/{{partition_key}}/"]
    reasons = {e["item"]: e["reason"] for e in errors}
    assert (
        f"gives '{photo_folders}/../x', which is '{photo_folders.parent}/x': outside '{photo_folders}/'"
        in (reasons[local])
    )
    assert (
        "s3_prefixes: template 'collections/{partition_key}/' gives 'collections/../x/': a '..' segment"
        in (reasons[f"s3://{bucket.bucket}/collections/{{partition_key}}/"])
    )
    items = query_dicts(resources, "SELECT item FROM registry WHERE partition_key = '../x'")
    assert [row["item"] for row in items] == [f"s3://{bucket.bucket}/common/c.jpg"], "the shared prefix goes on"
    problems = meta(result, "media_registry")["problems"]
    assert len(problems) == 2


def test_stored_templates_apply_to_every_keyword_and_a_named_run_lists_no_prefix(
    resources, instance, bucket, photo_folders
):
    resources = {**resources, "uploads": bucket}
    template = {"s3_prefixes": ["collections/{partition_key}/"]}
    configure(resources["warehouse"], "glass-door", "media_registry", template)
    configure(resources["warehouse"], "robot-arm", "media_registry", template)
    for key in ("glass-door", "robot-arm"):
        materialize_partition(resources, instance, key, [media_registry], media_registry=ONLY_UPLOADS)
    counts = query_dicts(resources, "SELECT partition_key, count(*) AS n FROM registry GROUP BY ALL ORDER BY ALL")
    assert counts == [{"partition_key": "glass-door", "n": 2}], "robot-arm's prefix holds nothing"
    named = {**ONLY_UPLOADS, "s3_keys": []}  # a run that names its objects brings only those
    result, _ = materialize_partition(resources, instance, "robot-arm", [media_registry], media_registry=named)
    assert meta(result, "media_registry")["settings_from"]["s3_prefixes"]["from"] == "keyword"
    assert query_dicts(resources, "SELECT count(*) AS n FROM registry WHERE partition_key = 'robot-arm'") == [{"n": 0}]
