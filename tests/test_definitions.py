import dagster as dg

from mining_assets.definitions import blob_store_resource, defs
from mining_assets.partitions import keyword_partitions
from resources.blob_store import LocalBlobStore, S3BlobStore

EXPECTED_EDGES = {
    "media_registry": set(),
    "media": {"media_registry"},
    "video_frames": {"media"},
    "frames": {"media", "video_frames"},
    "filtered_frames": {"frames"},
    "frame_embeddings": {"filtered_frames"},
    "unique_frames": {"frame_embeddings"},
    "detections": {"unique_frames"},
    "coco_annotations": {"detections"},
    "detection_visualizations": {"detections"},
    "quality_scores": {"frames"},
    "poses": {"quality_scores"},
    "pose_datasets": {"poses"},
    "mongo_export": {"pose_datasets"},
    "descriptions": {"frames"},
    "categories": {"frames", "descriptions"},
    "unique_categories": {"categories"},
    "category_reports": {"descriptions", "categories"},
    "lake_maintenance": set(),
    "blob_gc": set(),
}


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)


def test_graph_has_the_video_and_vision_paths():
    graph = defs.resolve_asset_graph()
    edges = {
        key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert edges == EXPECTED_EDGES


def test_every_per_keyword_asset_shares_the_keyword_partitions():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        # the whole lake and store, not one keyword; the comparison of datasets
        if key.to_user_string() in ("lake_maintenance", "blob_gc", "category_reports"):
            assert graph.get(key).partitions_def is None
            continue
        assert graph.get(key).partitions_def == keyword_partitions, key


def test_only_the_model_stages_are_in_pools():
    pools = {assets_def.key.to_user_string(): assets_def.op.pool for assets_def in defs.assets}
    assert {asset: pool for asset, pool in pools.items() if pool} == {
        "filtered_frames": "vision_models", "frame_embeddings": "vision_models", "detections": "vision_models",
        "quality_scores": "pose_models", "poses": "pose_models", "categories": "vision_models",
    }  # fmt: skip


def test_each_job_has_the_executor_its_shape_needs():
    executors = {job.name: job.executor_def.name for job in (defs.resolve_job_def(j.name) for j in defs.jobs)}
    assert executors.pop("curation_pipeline") == "multiprocess"  # its vision and pose branches run side by side
    for name in ("video_pipeline", "photo_pipeline", "upload_pipeline"):  # in-process unless a run asks otherwise
        assert executors.pop(name) == "in_process_unless_asked"
    assert set(executors.values()) == {"in_process"}, executors  # one chain each: no process start per step
    graph = defs.resolve_asset_graph()
    curation = {k.to_user_string() for k in defs.resolve_job_def("curation_pipeline").asset_layer.selected_asset_keys}
    # the two branches share nothing but the frames catalog: neither waits for the other
    for asset in ("filtered_frames", "quality_scores"):
        assert {p.to_user_string() for p in graph.get(dg.AssetKey(asset)).parent_keys} == {"frames"}
    assert {"filtered_frames", "detections", "quality_scores", "pose_datasets"} <= curation


def test_tables_show_their_name_and_columns_before_any_run():
    from mining_assets.warehouse import tables

    owners = {}
    for assets_def in defs.assets:
        for key, metadata in assets_def.metadata_by_key.items():
            if "dagster/table_name" in metadata:
                owners[metadata["dagster/table_name"]] = key.to_user_string()
                columns = [column.name for column in metadata["dagster/column_schema"].columns]
                table = metadata["dagster/table_name"].rsplit(".", 1)[1]
                assert columns == list(tables()[table]["columns"]), table
    assert {table.removeprefix("lake.main."): asset for table, asset in owners.items()} == {
        "registry": "media_registry", "media": "media", "video_frames": "video_frames", "frames": "frames",
        "filtered_frames": "filtered_frames",
        "frame_embeddings": "frame_embeddings", "unique_frames": "unique_frames", "detections": "detections",
        "quality_scores": "quality_scores", "poses": "poses", "pose_datasets": "pose_datasets",
        "frame_descriptions": "descriptions", "frame_categories": "categories",
        "unique_categories": "unique_categories", "category_report_files": "category_reports",
    }  # fmt: skip


def test_jobs_sensors_and_resources_are_registered():
    assert {job.name for job in defs.jobs} == {
        "video_pipeline",
        "photo_pipeline",
        "upload_pipeline",
        "vision_pipeline",
        "pose_pipeline",
        "curation_pipeline",
        "labeling_pipeline",
        "dataset_pipeline",
        "category_reports_job",
        "mongo_export_job",
        "add_keywords",
        "configure_keyword",
        "add_dataset",
        "add_preset_keywords",
        "lake_maintenance_job",
        "blob_gc_job",
    }
    assert [schedule.name for schedule in defs.schedules] == ["lake_maintenance_schedule", "blob_gc_schedule"]
    assert [sensor.name for sensor in defs.sensors] == ["keyword_file_sensor", "s3_uploads_sensor", "automation_sensor"]
    assert set(defs.resources) == {
        "blob_store", "warehouse", "youtube", "text_filter", "embedder", "detector", "pexels", "unsplash", "pixabay",
        "uploads", "pose_estimator", "mongo", "gemini",
    }  # fmt: skip


def test_model_backends_follow_the_environment(monkeypatch):
    from mining_assets.definitions import model_resources

    defaults = model_resources()
    assert defaults["text_filter"].resolved_model_id() == "google/siglip2-so400m-patch14-384"
    assert defaults["embedder"].resolved_model_id() == "facebook/dinov2-base"
    assert defaults["detector"].resolved_model_id() == "IDEA-Research/grounding-dino-base"
    monkeypatch.setenv("MINING_DETECTOR_BACKEND", "owlv2")
    monkeypatch.setenv("MINING_EMBEDDER_MODEL", "/models/dinov2")
    monkeypatch.setenv("MINING_MODEL_DEVICE", "cpu")
    monkeypatch.setenv("MINING_FILTER_BATCH_SIZE", "64")
    chosen = model_resources()
    assert chosen["detector"].resolved_model_id() == "google/owlv2-base-patch16-ensemble"
    assert chosen["embedder"].resolved_model_id() == "/models/dinov2"
    assert chosen["text_filter"].resolved_device() == "cpu"
    assert chosen["text_filter"].batch_size == 64 and chosen["detector"].batch_size == 4


def test_every_asset_explains_itself():
    for assets_def in defs.assets:
        for spec in assets_def.specs:
            assert spec.description and len(spec.description) > 20, spec.key


def test_blob_store_follows_the_environment(monkeypatch):
    assert isinstance(blob_store_resource(), LocalBlobStore)
    monkeypatch.setenv("MINING_S3_BUCKET", "datasets")
    store = blob_store_resource()
    assert isinstance(store, S3BlobStore)


def test_workspace_file_loads_the_same_code_location(tmp_path):
    """What `dagster dev -w workspace.yaml` and `mining dev` (-m) load must be one location, or runs are orphaned."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(repo / "workspace.yaml")],
        cwd=repo,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location mining_assets.definitions" in result.stdout + result.stderr


def test_loading_the_definitions_loads_no_model_library():
    """The UI and every run load the code location; model, HDF5, MongoDB, Gemini and plotting libraries wait until
    they are used."""
    import subprocess
    import sys

    heavy = "{'torch', 'transformers', 'mediapipe', 'cv2', 'h5py', 'pymongo', 'google.genai', 'matplotlib'}"
    code = f"import sys, mining_assets.definitions; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


SOURCE_JOBS = ("video_pipeline", "photo_pipeline", "upload_pipeline")


def upstream_outside(job_name: str) -> set[str]:
    """What the UI's launch dialog checks: the parents of a job's assets that the job does not materialize (each
    one never materialized gives "upstream assets ... have not been materialized yet")."""
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(job_name)
    selected = {key for key in job.asset_layer.selected_asset_keys}
    return {parent.to_user_string() for key in selected for parent in graph.get(key).parent_keys} - {
        key.to_user_string() for key in selected
    }


def test_no_source_job_depends_on_an_asset_it_never_materializes():
    for name in SOURCE_JOBS:
        assert upstream_outside(name) == set(), name


def test_downstream_jobs_start_from_what_the_source_jobs_materialize():
    sourced = {key.to_user_string() for key in defs.resolve_job_def("upload_pipeline").asset_layer.selected_asset_keys}
    assert upstream_outside("vision_pipeline") == {"frames"} and "frames" in sourced
    assert upstream_outside("pose_pipeline") == {"frames"}
    assert upstream_outside("curation_pipeline") == {"frames"}
    assert upstream_outside("mongo_export_job") == {"pose_datasets"}
    pose_job = defs.resolve_job_def("pose_pipeline")
    assert "mongo_export" not in {key.to_user_string() for key in pose_job.asset_layer.selected_asset_keys}
    assert (
        "MONGODB_URI" in pose_job.description and "MONGODB_URI" in defs.resolve_job_def("mongo_export_job").description
    )


def test_every_table_is_written_only_by_the_module_beside_its_ddl():
    """One writer per table: every write statement on a table is in the module whose .sql file declares it (the
    import and the migration, which move whole lakes, excepted)."""
    import re
    from pathlib import Path

    from mining_assets.warehouse import tables

    repo = Path(__file__).resolve().parents[1]
    owners = {name: spec["owner"].removesuffix(".sql") for name, spec in tables().items()}
    owners["api_budgets"] = "resources/budgets"
    write = re.compile(r"(?:INSERT INTO|DELETE FROM|UPDATE|MERGE INTO)\s+(\w+)|"
                       r"(?:replace_partition_rows|insert_rows)\(\s*\w+,\s*\"(\w+)\"|"
                       r"replace_stage_rows\(\s*\w+,\s*\w+,\s*\"(\w+)\"")  # fmt: skip
    found: dict[str, set[str]] = {}
    for path in [*repo.glob("mining_assets/**/*.py"), *repo.glob("resources/*.py"), *repo.glob("sensors/*.py")]:
        module = path.relative_to(repo).with_suffix("").as_posix().removeprefix("mining_assets/")
        if module in ("lake_import", "migrate"):
            continue
        for match in write.finditer(path.read_text(encoding="utf-8")):
            table = next(group for group in match.groups() if group)
            if table in owners:
                found.setdefault(table, set()).add(module)
    wrong = {table: writers for table, writers in found.items() if writers != {owners[table]}}
    assert not wrong, wrong
    assert {"registry", "media", "keyword_media", "video_frames", "video_samples", "keyword_samples", "frames",
            "keywords"} <= set(found)  # fmt: skip


def test_each_source_job_runs_green_on_the_embedded_defaults_with_nothing_configured(tmp_path):
    """`make dev` with nothing set: no network, no API keys, no upload bucket. Each source job succeeds on a new
    keyword, recording what its sources could not answer."""
    import importlib

    import mining_assets.definitions as definitions

    fresh = importlib.reload(definitions).defs  # resources read the test's environment (data under tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("keyword", ["glass-door"])
        for name in SOURCE_JOBS:
            result = fresh.resolve_job_def(name).execute_in_process(
                instance=instance, partition_key="glass-door", raise_on_error=False
            )
            assert result.success, (name, [e.message for e in result.all_events if e.is_failure])
    errors = fresh.resources["warehouse"].query_dicts("SELECT stage, item, reason FROM ingest_errors ORDER BY ALL")
    assert {e["item"] for e in errors} >= {"youtube search", "pexels", "unsplash", "pixabay"}
    assert all("API_KEY" in e["reason"] or "ACCESS_KEY" in e["reason"] for e in errors if e["item"] != "youtube search")


def test_each_source_job_asks_its_own_sources_whatever_run_config_a_launch_gives():
    from mining_assets.sources.media_registry import MediaRegistryConfig, resolved

    partial = MediaRegistryConfig(local_dir="/photos")  # a Launchpad config that names no source
    asked = {name: resolved(partial, defs.resolve_job_def(name).tags) for name in SOURCE_JOBS}
    assert {name: (a.youtube_search, a.uploads, a.stock_sources) for name, a in asked.items()} == {
        "video_pipeline": (True, False, []),
        "photo_pipeline": (False, False, ["pexels", "unsplash", "pixabay"]),
        "upload_pipeline": (False, True, []),
    }
    assert all(a.local_dir == "/photos" for a in asked.values())
    everything = resolved(MediaRegistryConfig(), {})  # the asset materialized on its own asks every source
    assert (everything.youtube_search, everything.uploads, len(everything.stock_sources)) == (True, True, 3)
    explicit = resolved(MediaRegistryConfig(youtube_search=True), defs.resolve_job_def("photo_pipeline").tags)
    assert explicit.youtube_search is True
