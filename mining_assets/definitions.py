"""The one Definitions object: assets, checks, resources, sensors and jobs of the mining platform."""

from __future__ import annotations

import os

import dagster as dg

from mining_assets.automation import apply_policies, automation_sensor
from mining_assets.blob_gc import blob_gc, blob_gc_job, blob_gc_schedule
from mining_assets.exports.mongo import mongo_export
from mining_assets.frames import frames
from mining_assets.jobs import (
    add_keywords,
    category_reports_job,
    configure_keyword,
    curation_pipeline,
    dataset_pipeline,
    labeling_pipeline,
    model_job_tags,
    mongo_export_job,
    photo_pipeline,
    pose_pipeline,
    upload_pipeline,
    video_pipeline,
    vision_pipeline,
)
from mining_assets.lake_maintenance import lake_maintenance, lake_maintenance_job, lake_maintenance_schedule
from mining_assets.language.categories import categories
from mining_assets.language.descriptions import descriptions
from mining_assets.language.unique_categories import unique_categories
from mining_assets.poses.datasets import pose_datasets
from mining_assets.poses.poses import poses
from mining_assets.poses.quality import quality_scores
from mining_assets.presets import add_preset_keywords
from mining_assets.reports.category_reports import category_reports
from mining_assets.sources.datasets import add_dataset
from mining_assets.sources.media import media
from mining_assets.sources.media_registry import media_registry
from mining_assets.video.frames import video_frames
from mining_assets.vision.annotations import coco_annotations
from mining_assets.vision.detections import detections
from mining_assets.vision.embeddings import frame_embeddings
from mining_assets.vision.filtered import filtered_frames
from mining_assets.vision.unique import unique_frames
from mining_assets.vision.visualizations import detection_visualizations
from resources.blob_store import BlobStore, LocalBlobStore, S3BlobStore
from resources.gemini import GeminiResource
from resources.models.detector import OpenVocabDetector
from resources.models.embedder import ImageEmbedder
from resources.models.pose import PoseEstimator
from resources.models.text_filter import TextImageFilter
from resources.mongo import MongoResource
from resources.settings import blob_root
from resources.stock_photos import PexelsSource, PixabayPhotoSource, UnsplashSource
from resources.uploads import UploadBucket
from resources.warehouse import warehouse_from_env
from resources.youtube import YouTubeResource
from sensors.keywords import keyword_file_sensor
from sensors.s3_uploads import s3_uploads_sensor


def s3_resource():
    """dagster-aws's S3Resource: endpoint from MINING_S3_ENDPOINT_URL (MinIO and the like), region from AWS_REGION,
    credentials from the standard AWS chain."""
    from dagster_aws.s3 import S3Resource

    return S3Resource(
        endpoint_url=os.environ.get("MINING_S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION") or None,
    )


def blob_store_resource() -> BlobStore:
    """S3 when MINING_S3_BUCKET is set (credentials from the standard AWS variables), else a local directory."""
    if not os.environ.get("MINING_S3_BUCKET"):
        return LocalBlobStore(root=blob_root())
    return S3BlobStore(
        bucket=dg.EnvVar("MINING_S3_BUCKET"), prefix=os.environ.get("MINING_S3_PREFIX", "mining"), s3=s3_resource()
    )


def uploads_resource() -> UploadBucket:
    """The upload bucket when MINING_UPLOADS_BUCKET is set, else none (local folders only)."""
    if not os.environ.get("MINING_UPLOADS_BUCKET"):
        return UploadBucket.unconfigured()
    return UploadBucket(
        bucket=dg.EnvVar("MINING_UPLOADS_BUCKET"),
        prefix=os.environ.get("MINING_UPLOADS_PREFIX", "uploads"),
        s3=s3_resource(),
    )


def pose_resource() -> PoseEstimator:
    """MediaPipe bundles from MINING_POSE_MODEL / MINING_HAND_MODEL (.task files); else the cache
    (MINING_MEDIAPIPE_CACHE, default ~/.cache/visual-mining/mediapipe), filled by a one-time download when online."""
    settings = {
        "pose_model_path": os.environ.get("MINING_POSE_MODEL"),
        "hand_model_path": os.environ.get("MINING_HAND_MODEL"),
        "pose_variant": os.environ.get("MINING_POSE_VARIANT"),  # full | lite | heavy
        "cache_dir": os.environ.get("MINING_MEDIAPIPE_CACHE"),
        "offline": os.environ.get("MINING_MEDIAPIPE_OFFLINE", "").lower() in ("1", "true", "yes", "on") or None,
    }
    return PoseEstimator(**{name: value for name, value in settings.items() if value})


def model_resources() -> dict:
    """The model roles with their default backends; MINING_<ROLE>_BACKEND / _MODEL / _BATCH_SIZE and
    MINING_MODEL_DEVICE choose others (a model may be a Hugging Face id or a local directory)."""
    device = os.environ.get("MINING_MODEL_DEVICE", "auto")

    def settings(role: str) -> dict:
        chosen = {
            "backend": os.environ.get(f"MINING_{role}_BACKEND"),
            "model_id": os.environ.get(f"MINING_{role}_MODEL"),
            "batch_size": os.environ.get(f"MINING_{role}_BATCH_SIZE"),
        }
        return {"device": device, **{name: value for name, value in chosen.items() if value}}

    return {
        "text_filter": TextImageFilter(**settings("FILTER")),
        "embedder": ImageEmbedder(**settings("EMBEDDER")),
        "detector": OpenVocabDetector(**settings("DETECTOR")),
    }


def gemini_resource(warehouse) -> GeminiResource:
    """Gemini with the key from GEMINI_API_KEY (read only when a request is made: without it the descriptions are
    skipped and categories use SigLIP); MINING_GEMINI_BASE_URL points the client at another endpoint, and
    MINING_GEMINI_MAX_SPEND_USD sets the spend cap per run (0: none)."""
    settings = {
        "base_url": os.environ.get("MINING_GEMINI_BASE_URL"),
        "description_model": os.environ.get("MINING_GEMINI_DESCRIPTION_MODEL"),
        "category_model": os.environ.get("MINING_GEMINI_CATEGORY_MODEL"),
        "max_spend_usd": os.environ.get("MINING_GEMINI_MAX_SPEND_USD"),
        "requests_per_minute": os.environ.get("MINING_GEMINI_REQUESTS_PER_MINUTE"),
    }
    return GeminiResource(warehouse=warehouse, **{name: value for name, value in settings.items() if value})


def resources() -> dict:
    warehouse = warehouse_from_env()
    return {
        "blob_store": blob_store_resource(),
        "warehouse": warehouse,
        # the request budgets of the external APIs live in the warehouse: one budget per API for all runs
        "youtube": YouTubeResource(warehouse=warehouse),
        "uploads": uploads_resource(),
        # keys are read from PEXELS_API_KEY, UNSPLASH_ACCESS_KEY, PIXABAY_API_KEY when a search runs
        "pexels": PexelsSource(warehouse=warehouse),
        "unsplash": UnsplashSource(warehouse=warehouse),
        "pixabay": PixabayPhotoSource(warehouse=warehouse),
        "pose_estimator": pose_resource(),
        # the URI is read from MONGODB_URI only when mongo_export runs, and never shown
        "mongo": MongoResource(),
        # the request budget of Gemini is the warehouse's `gemini` row, shared by every run
        "gemini": gemini_resource(warehouse),
        **model_resources(),
    }


defs = dg.Definitions(
    # automation conditions and freshness policies as the environment sets them (mining_assets/automation.py)
    assets=apply_policies(
        [
            media_registry,
            media,
            video_frames,
            frames,
            filtered_frames,
            frame_embeddings,
            unique_frames,
            detections,
            coco_annotations,
            detection_visualizations,
            quality_scores,
            poses,
            pose_datasets,
            descriptions,
            categories,
            unique_categories,
            category_reports,
            mongo_export,
            lake_maintenance,
            blob_gc,
        ]
    ),
    jobs=[
        video_pipeline,
        photo_pipeline,
        upload_pipeline,
        vision_pipeline,
        pose_pipeline,
        curation_pipeline,
        labeling_pipeline,
        dataset_pipeline,
        category_reports_job,
        mongo_export_job,
        add_keywords,
        configure_keyword,
        add_dataset,
        add_preset_keywords,
        lake_maintenance_job,
        blob_gc_job,
    ],
    schedules=[lake_maintenance_schedule, blob_gc_schedule],
    sensors=[keyword_file_sensor, s3_uploads_sensor, automation_sensor(run_tags=model_job_tags())],
    resources=resources(),
)
