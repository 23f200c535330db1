"""``mining datasets add`` and ``list`` through the command line, on a moto upload bucket."""

import uuid

import boto3
from click.testing import CliRunner

from mining_assets import cli

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def run(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def test_datasets_add_records_the_dataset_and_its_partition_and_list_shows_it(s3_endpoint, monkeypatch, tmp_path):
    import dagster as dg

    bucket = f"uploads-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS).create_bucket(Bucket=bucket)
    for name, value in {"MINING_UPLOADS_BUCKET": bucket, "MINING_S3_ENDPOINT_URL": s3_endpoint,
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    listed = tmp_path / "real.csv"
    listed.write_text("image_name\na.jpg\n", encoding="utf-8")

    added = run("datasets", "add", "real photos", "--label", "real", "--list", str(listed), "--prefix", "data/real")
    assert added.exit_code == 0, added.output
    assert added.output.strip() == "added dataset--real-photos  REAL  real photos"
    again = run("datasets", "add", "real photos", "--label", "gen", "--list", str(listed), "--prefix", "data/real")
    assert again.output.strip() == "updated dataset--real-photos  GEN  real photos"
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("keyword") == ["dataset--real-photos"]
    shown = run("datasets", "list")
    assert shown.exit_code == 0 and "dataset--real-photos" in shown.output and "GEN" in shown.output

    refused = run("datasets", "add", "x", "--label", "REAL", "--list", str(listed), "--prefix", "../up")
    assert refused.exit_code == 1 and "'..'" in refused.output and "refused" in refused.output


def test_datasets_list_when_there_are_none():
    run("keywords", "add", "glass door")  # a lake exists, with no dataset
    shown = run("datasets", "list")
    assert shown.exit_code == 0 and shown.output.startswith("no datasets yet")
