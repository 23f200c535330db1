"""Jobs: each source path of a keyword up to the frames catalog, the vision and pose paths, the export, and adding
keywords from the UI's Launchpad.

The three source jobs run the same assets (media_registry -> media -> video_frames -> frames), where every source
meets; they differ in which sources the registry asks (their `mining/sources` tag), so no job depends on an asset
it never materializes.

Executors, per job:
- in-process: the source jobs, vision_pipeline, pose_pipeline, the export and the keyword and maintenance jobs. Each
  is one chain of steps (the stages fan work out to threads themselves), so a process per step would only add its
  start (2-4 s) to every step. A source job's run may ask for a process per step (run config
  ``execution: {config: {multiprocess: true}}``), as a deployment that isolates its steps would.
- multiprocess: curation_pipeline, whose vision and pose branches run side by side once the frames are catalogued;
  the model pools (mining_assets/pools.py, limits in dagster.yaml) keep each kind of model to its limit. Its step
  processes, and those of a source job run that asks for them, fork from a server that imported the code location
  once (``forkserver``): a step starts in about a second instead of 2-4 s.
Assets materialized from the asset graph use the Definitions' default (multiprocess).
"""

import json
import os
from typing import Any

import dagster as dg
from pydantic import Field

from mining_assets.keyword_settings import SettingsError, configure, resolve_partition_key, settings_value
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.partitions import keyword_partitions
from mining_assets.sources.media_registry import SOURCES_TAG
from resources.warehouse import Warehouse

SOURCE_ASSETS = ["media_registry", "media", "video_frames", "frames"]
VISION_ASSETS = ["filtered_frames", "frame_embeddings", "unique_frames", "detections", "coco_annotations",
                 "detection_visualizations"]  # fmt: skip
POSE_ASSETS = ["quality_scores", "poses", "pose_datasets"]
LABEL_ASSETS = ["descriptions", "categories", "unique_categories"]
# the sources each job's registry asks, unless its run config says otherwise (media_registry reads the run's tag,
# which every run of the job carries: launched from the UI, a backfill, a sensor or the CLI)
VIDEO_SOURCES = "youtube"
PHOTO_SOURCES = "stock"
UPLOAD_SOURCES = "uploads"


def model_job_tags() -> dict[str, str]:
    """On Kubernetes (dagster-k8s's K8sRunLauncher), a run of a model job asks for MINING_K8S_GPUS_PER_RUN GPUs
    (default 0: none), so the scheduler places it on a GPU node; elsewhere the tag is ignored."""
    gpus = int(os.environ.get("MINING_K8S_GPUS_PER_RUN", "0") or 0)
    if gpus <= 0:
        return {}
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {"dagster-k8s/config": json.dumps({"container_config": {"resources": resources}})}


# a step's process forks from a server that has imported the code location once (Dagster's default, spawn, imports
# it again in every step: 2-4 s a step); the import loads no model library and opens no connection
FORKSERVER = {"forkserver": {"preload_modules": ["mining_assets.definitions"]}}


# in-process unless a run's config asks for the multiprocess executor (Dagster's multi_or_in_process_executor
# defaults the other way round, and a job's default run config is not applied to a run launched with config of its own)
def _source_executor_config(config: dict) -> dict:
    if not config["multiprocess"]:
        return {"in_process": {}}
    return {"multiprocess": {"max_concurrent": config["max_concurrent"], "start_method": FORKSERVER}}


source_executor = dg.multi_or_in_process_executor.configured(
    _source_executor_config,
    config_schema={
        "multiprocess": dg.Field(bool, default_value=False, description="A process per step."),
        "max_concurrent": dg.Field(int, default_value=0, description="Steps at once (0: one per CPU)."),
    },
    name="in_process_unless_asked",
)


def source_job(name: str, sources: str, description: str):
    """A job of the source assets whose registry asks only some sources."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*SOURCE_ASSETS),
        tags={SOURCES_TAG: sources},
        description=description,
        executor_def=source_executor,
    )


video_pipeline = source_job(
    "video_pipeline", VIDEO_SOURCES, "Search YouTube (and any URLs given) for one keyword, download and sample the "
    "videos, up to the frames catalog."
)  # fmt: skip
photo_pipeline = source_job(
    "photo_pipeline", PHOTO_SOURCES, "Search the stock-photo APIs (Pexels, Unsplash, Pixabay) for one keyword and "
    "store the photos, up to the frames catalog."
)  # fmt: skip
upload_pipeline = source_job(
    "upload_pipeline", UPLOAD_SOURCES, "Store the photos and videos uploaded for one keyword (its folders of the "
    "upload bucket, or a local folder) and sample the videos, up to the frames catalog."
)  # fmt: skip

vision_pipeline = dg.define_asset_job(
    "vision_pipeline",
    selection=dg.AssetSelection.assets(*VISION_ASSETS),
    description="Filter, embed, de-duplicate and detect on the frames of one keyword, up to COCO and drawings.",
    tags=model_job_tags(),
    executor_def=dg.in_process_executor,
)

pose_pipeline = dg.define_asset_job(
    "pose_pipeline",
    selection=dg.AssetSelection.assets(*POSE_ASSETS),
    description="Score frames for pose training, extract body and hand keypoints, and write the HDF5 datasets. "
    "The MongoDB export is the job mongo_export_job: it needs a MongoDB (MONGODB_URI), which the embedded defaults "
    "do not have.",
    tags=model_job_tags(),
    executor_def=dg.in_process_executor,
)

curation_pipeline = dg.define_asset_job(
    "curation_pipeline",
    selection=dg.AssetSelection.assets(*VISION_ASSETS, *POSE_ASSETS),
    description="The vision and pose paths of one keyword side by side (one process per step), from its frames "
    "catalog: COCO, drawings and the HDF5 pose datasets.",
    tags=model_job_tags(),
    executor_def=dg.multiprocess_executor.configured({"start_method": FORKSERVER}),
)

labeling_pipeline = dg.define_asset_job(
    "labeling_pipeline",
    selection=dg.AssetSelection.assets(*LABEL_ASSETS),
    description="Describe one keyword's (or dataset's) frames with Gemini and sort them into the category list; "
    "without GEMINI_API_KEY the descriptions are skipped and SigLIP sorts the images zero-shot.",
    tags=model_job_tags(),
    executor_def=dg.in_process_executor,
)

dataset_pipeline = dg.define_asset_job(
    "dataset_pipeline",
    selection=dg.AssetSelection.assets(*SOURCE_ASSETS, *LABEL_ASSETS),
    tags={SOURCES_TAG: UPLOAD_SOURCES, **model_job_tags()},
    description="One dataset partition (dataset--<name>, added with add_dataset) from its list of file names: "
    "the analysis of the list against the bucket, the images fetched, described and categorized.",
    executor_def=dg.in_process_executor,
)

category_reports_job = dg.define_asset_job(
    "category_reports_job",
    selection=dg.AssetSelection.assets("category_reports"),
    description="Plot and compare the categories of the datasets (REAL and GEN by default) and write their CSVs.",
    executor_def=dg.in_process_executor,
)

mongo_export_job = dg.define_asset_job(
    "mongo_export_job",
    selection=dg.AssetSelection.assets("mongo_export"),
    description="Export a keyword's pose datasets to MongoDB. Not part of pose_pipeline: it needs MONGODB_URI set to "
    "a MongoDB, and the embedded defaults have none.",
    executor_def=dg.in_process_executor,
)


class AddKeywordsConfig(dg.Config):
    keywords: list[str]


@dg.op
def register_keyword_partitions(
    context: dg.OpExecutionContext, config: AddKeywordsConfig, warehouse: Warehouse
) -> None:
    """Add a keyword partition for each keyword and keep its exact text."""
    pairs, rejected = register_keywords(warehouse, config.keywords)
    new = add_keyword_partitions(context.instance, [key for key, _ in pairs])
    for key, keyword in pairs:
        context.log.info(f"{'added' if key in new else 'known'}: {keyword!r} -> partition {key}")
    for text, reason in rejected:
        context.log.error(f"refused {text!r}: {reason}")
    if rejected and not pairs:
        raise dg.Failure(f"no keyword added: {len(rejected)} refused", metadata={"refused": len(rejected)})


@dg.job(
    description="Add keyword partitions. Launchpad config: ops.register_keyword_partitions.config.keywords",
    executor_def=dg.in_process_executor,
)
def add_keywords() -> None:
    register_keyword_partitions()


class ConfigureKeywordConfig(dg.Config):
    partition_key: str = Field(description="The keyword's partition key, or its text.")
    asset: str = Field(description="The stage: media_registry, video_frames, filtered_frames, detections ...")
    settings: Any = Field(default={}, description="{field: value}, or its JSON text; merged into what is stored.")
    replace: bool = Field(default=False, description="Store exactly these settings, dropping the others.")
    unset: list[str] = Field(default=[], description="Fields to drop from what is stored.")


@dg.op(out=dg.Out(dg.Nothing))
def configure_keyword_settings(
    context: dg.OpExecutionContext, config: ConfigureKeywordConfig, warehouse: Warehouse
) -> dg.Output:
    """Validate a keyword's settings of one stage against the stage's config and store them."""
    partitions = context.instance.get_dynamic_partitions(keyword_partitions.name)
    key = resolve_partition_key(config.partition_key, partitions)
    if key is None:
        raise dg.Failure(f"no keyword partition {config.partition_key!r}: add the keyword first (add_keywords)")
    try:
        stored = configure(warehouse, key, config.asset, settings_value(config.settings), config.replace,
                           config.unset)  # fmt: skip
    except SettingsError as error:
        raise dg.Failure(f"settings of {key} refused: {error}", allow_retries=False) from error
    context.log.info(f"{key}: {config.asset} settings stored: {json.dumps(stored) if stored else 'none (defaults)'}")
    return dg.Output(
        None,
        metadata={"partition_key": key, "asset": config.asset, "settings": dg.MetadataValue.json(stored)},
    )


@dg.job(
    description="Store a keyword's own settings of one stage, used by every later run of that stage for the keyword "
    "over the stage's defaults (a run's config still wins for that run). Launchpad config: "
    "ops.configure_keyword_settings.config: {partition_key, asset, settings: {field: value}, replace, unset}",
    executor_def=dg.in_process_executor,
)
def configure_keyword() -> None:
    configure_keyword_settings()
