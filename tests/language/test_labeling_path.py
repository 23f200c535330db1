"""The labeling path end to end through the shipped jobs: two datasets on S3 (moto), REAL photos and GEN images,
each a partition of its own, fetched from their name lists, described and categorized by Gemini (the local
server) or, with no key, by SigLIP, and compared in category_reports."""

import base64
import csv
import io
import re

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource
from gemini_support import ok
from harness import meta, query_dicts
from PIL import Image, ImageDraw

from mining_assets.definitions import defs as shipped
from mining_assets.partitions import dataset_key
from resources.uploads import UploadBucket

pytestmark = pytest.mark.slow
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
SCRIPT = "<script>alert(1)</script>"


def picture(color: tuple[int, int, int], seed: int, fmt: str) -> bytes:
    """A picture of one main color (red for the photos, blue for the generated ones), distinct for each seed."""
    image = Image.new("RGB", (160, 120), color)
    ImageDraw.Draw(image).rectangle([seed * 9, 10, seed * 9 + 20, 40], fill=(250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def bucket(s3_endpoint) -> UploadBucket:
    """datasets/real/: 4 JPEG photos (one in a sub-folder), listed with one name that doesn't exist; datasets/gen/:
    3 PNG images that the list names .jpg."""
    name = "labels-" + s3_endpoint.rsplit(":", 1)[1]
    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    client.create_bucket(Bucket=name)
    for i, key in enumerate(["real/r0.jpg", "real/r1.jpg", "real/r2.jpg", "real/more/r3.jpg"]):
        client.put_object(Bucket=name, Key=f"datasets/{key}", Body=picture((200, 30, 30), i, "JPEG"))
    for i in range(3):
        client.put_object(Bucket=name, Key=f"datasets/gen/g{i}.png", Body=picture((30, 30, 200), i, "PNG"))
    client.put_object(Bucket=name, Key="lists/real.csv", Body=b"image_name\nr0.jpg\nr1.jpg\nr2.jpg\nr3.jpg\nr9.jpg\n")
    client.put_object(Bucket=name, Key="lists/gen.csv", Body=b"file_name\ng0.jpg\ng1.jpg\ng2.jpg\n")
    return UploadBucket(bucket=name, prefix="uploads", s3=S3Resource(endpoint_url=s3_endpoint, **CREDENTIALS))


def color_reader(server) -> None:
    """Descriptions say what color the image is (one of them with a script in it); categories follow the color:
    red photos are street, blue images are art."""

    def answer(request):
        schema = request["body"]["generationConfig"]["responseSchema"]
        if "content" in schema["properties"]:
            red, _, blue = server.images(request)[0].convert("RGB").resize((1, 1)).getpixel((0, 0))
            content = "a red photo" if red > blue else f"a blue render {SCRIPT}"
            return ok({"content": content, "setting": "", "people": "", "objects": [], "style": ""},
                      prompt_tokens=1290, output_tokens=60)  # fmt: skip
        text = request["body"]["contents"][0]["parts"][0]["text"]
        chosen = "street" if "a red photo" in text else "art"
        return ok({"primary": chosen, "categories": [chosen]}, prompt_tokens=400, output_tokens=12)

    server.respond(answer)


def run_path(instance, resources) -> tuple[dict, dict]:
    """add_dataset twice, dataset_pipeline for each dataset, then category_reports_job; the pipelines' results."""
    # the shipped graph and jobs, with the test's resources over the shipped ones
    defs = dg.Definitions(assets=shipped.assets, jobs=shipped.jobs, resources={**shipped.resources, **resources})
    lists = {"real": ("REAL", "lists/real.csv"), "gen": ("GEN", "lists/gen.csv")}
    results = {}
    for name, (label, key) in lists.items():
        config = {"name": name, "label": label, "list_location": f"s3://{resources['uploads'].bucket}/{key}",
                  "s3_prefix": f"datasets/{name}/"}  # fmt: skip
        added = defs.resolve_job_def("add_dataset").execute_in_process(
            run_config={"ops": {"record_dataset": {"config": config}}}, instance=instance
        )
        assert added.success
        pipeline = defs.resolve_job_def("dataset_pipeline").execute_in_process(
            partition_key=dataset_key(name), instance=instance
        )
        assert pipeline.success
        results[name] = pipeline
    report = defs.resolve_job_def("category_reports_job").execute_in_process(instance=instance)
    assert report.success
    return results, meta(report, "category_reports")


def report_csv(resources, name: str) -> list[dict]:
    rows = query_dicts(resources, "SELECT blob_key FROM category_report_files WHERE kind = 'labels'")
    key = next(row["blob_key"] for row in rows if f"dataset--{name}" in row["blob_key"])
    return list(csv.DictReader(io.StringIO(resources["blob_store"].get_bytes(key).decode("utf-8"))))


def inline_pngs(metadata: dict) -> dict[str, Image.Image]:
    found = {}
    for name, value in metadata.items():
        if name.startswith("plot_"):
            match = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", value)
            assert match, name
            found[name] = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    return found


def test_real_and_gen_datasets_with_a_gemini_key(instance, gemini_resources, gemini_server, bucket):
    color_reader(gemini_server)
    resources = {**gemini_resources, "uploads": bucket}
    results, report = run_path(instance, resources)

    registry = meta(results["real"], "media_registry")
    assert registry["dataset_analysis"]["listed"] == 5 and registry["dataset_analysis"]["found"] == 4
    assert registry["dataset_analysis"]["missing"] == 1
    described = {name: meta(result, "descriptions") for name, result in results.items()}
    assert {name: m["described_now"] for name, m in described.items()} == {"real": 4, "gen": 3}
    assert described["real"]["prompt_tokens"] == 4 * 1290 and described["real"]["output_tokens"] == 4 * 60
    # flash-lite: 0.10 $ per million input tokens, 0.40 per million output tokens
    assert described["real"]["cost_usd"] == pytest.approx(4 * (1290 * 0.10 + 60 * 0.40) / 1e6)
    categorized = {name: meta(result, "categories") for name, result in results.items()}
    assert {name: m["method"] for name, m in categorized.items()} == {"real": "gemini", "gen": "gemini"}
    assert categorized["real"]["by_primary_category"] == {"street": 4}
    assert categorized["gen"]["by_primary_category"] == {"art": 3}
    assert categorized["gen"]["cost_usd"] == pytest.approx(3 * (400 * 0.10 + 12 * 0.40) / 1e6)

    assert sorted(report["partitions"]) == sorted([dataset_key("real"), dataset_key("gen")])
    assert set(inline_pngs(report)) == {"plot_side_by_side", "plot_shares", "plot_dataset--real", "plot_dataset--gen"}
    assert all("<script" not in str(value) for value in report.values())
    rows = report_csv(resources, "gen")
    assert sorted(row["image_name"] for row in rows) == ["g0.jpg", "g1.jpg", "g2.jpg"]  # the names as listed
    assert {row["description"] for row in rows} == {f"a blue render {SCRIPT}"}  # the data, as the model said it
    assert {row["categories"] for row in rows} == {"art"}
    assert sorted(row["image_name"] for row in report_csv(resources, "real")) == ["r0.jpg", "r1.jpg", "r2.jpg",
                                                                                  "r3.jpg"]  # fmt: skip

    sent = len(gemini_server.requests)
    again, _ = run_path(instance, resources)  # nothing new: nothing is fetched or sent again
    assert len(gemini_server.requests) == sent
    assert meta(again["real"], "media")["fetched_now"] == 0


def test_real_and_gen_datasets_with_no_external_service(instance, keyless_resources, bucket):
    resources = {**keyless_resources, "uploads": bucket}
    results, report = run_path(instance, resources)
    for name, count in (("real", 4), ("gen", 3)):
        assert meta(results[name], "descriptions")["skipped"] == "no Gemini API key: set GEMINI_API_KEY"
        categorized = meta(results[name], "categories")
        assert categorized["method"] == "siglip" and categorized["categorized"] == count
    assert set(inline_pngs(report)) == {"plot_side_by_side", "plot_shares", "plot_dataset--real", "plot_dataset--gen"}
    rows = report_csv(resources, "real")
    assert len(rows) == 4 and all(row["categories"] and row["description"] == "" for row in rows)
