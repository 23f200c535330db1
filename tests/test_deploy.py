"""The Kubernetes deployment files: nothing here can run a cluster, so the values are checked against what the code
reads and what the instance files say."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
CODE = [*ROOT.glob("mining_assets/**/*.py"), *ROOT.glob("resources/**/*.py"), *ROOT.glob("sensors/*.py")]
# variables read by libraries rather than by the project's own code
READ_BY_LIBRARIES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_HUB_OFFLINE"}


def code_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in CODE)


def values() -> dict:
    return yaml.safe_load(VALUES.read_text(encoding="utf-8"))


def test_the_values_parse_and_load_this_projects_code_location():
    chart = values()
    (deployment,) = chart["dagster-user-deployments"]["deployments"]
    module = re.search(r'module_name = "([\w.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    assert chart["runLauncher"]["type"] == "K8sRunLauncher"  # a pod per run


def test_every_variable_the_values_set_or_name_is_read_by_the_code():
    chart = values()
    (deployment,) = chart["dagster-user-deployments"]["deployments"]
    text = code_text()
    named = set(deployment["env"])
    # the secret's keys are named in its comment: each must be read too
    comment = VALUES.read_text(encoding="utf-8").split("envSecrets:", 1)[1].split("resources:", 1)[0]
    named |= set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", comment))
    unread = sorted(name for name in named if f'"{name}"' not in text and name not in READ_BY_LIBRARIES)
    assert not unread, unread
    assert "MINING_LAKE_PASSWORD" in named and "MINING_LAKE_PASSWORD" not in deployment["env"]  # a secret


def test_the_values_keep_the_instance_files_limits():
    chart = values()
    production = yaml.safe_load((ROOT / "deploy" / "dagster.production.yaml").read_text())
    assert chart["concurrency"]["runs"]["tagConcurrencyLimits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert production["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    daemon = chart["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"]
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] is False
    assert chart["concurrency"]["pools"]["defaultLimit"] >= 1
    coordinator = daemon["runCoordinator"]["config"]["customRunCoordinator"]
    assert (coordinator["module"], coordinator["class"]) == ("dagster.core.run_coordinator", "QueuedRunCoordinator")
    assert coordinator["config"] == production["run_coordinator"]["config"]


def test_model_jobs_ask_kubernetes_for_gpus_only_when_told(monkeypatch):
    from mining_assets.jobs import model_job_tags

    monkeypatch.delenv("MINING_K8S_GPUS_PER_RUN", raising=False)
    assert model_job_tags() == {}
    monkeypatch.setenv("MINING_K8S_GPUS_PER_RUN", "2")
    config = json.loads(model_job_tags()["dagster-k8s/config"])
    assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_the_image_installs_what_the_values_need():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "dagster-k8s" in dockerfile and ".[postgres]" in dockerfile
    copied = set(re.findall(r"^COPY (\S+)", dockerfile, re.M))
    assert {"mining_assets", "resources", "sensors"} <= copied
