"""Jobs: the whole video path for a keyword, and adding keywords from the UI's Launchpad."""

import dagster as dg

from mining_assets.frames import frames
from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.video.downloads import raw_videos
from mining_assets.video.frames import video_frames
from mining_assets.video.registry import video_registry
from resources.warehouse import Warehouse

VISION_ASSETS = ["filtered_frames", "frame_embeddings", "unique_frames", "detections", "coco_annotations",
                 "detection_visualizations"]  # fmt: skip

video_pipeline = dg.define_asset_job(
    "video_pipeline",
    selection=dg.AssetSelection.assets(video_registry, raw_videos, video_frames, frames),
    description="Search, download and sample the videos of one keyword, up to the frames catalog.",
)

photo_pipeline = dg.define_asset_job(
    "photo_pipeline",
    selection=dg.AssetSelection.assets("stock_images", "frames"),
    description="Search and store the stock photos of one keyword, up to the frames catalog.",
)

upload_pipeline = dg.define_asset_job(
    "upload_pipeline",
    selection=dg.AssetSelection.assets("media_uploads", "video_frames", "frames"),
    description="Store the photos and videos uploaded for one keyword (S3 or a local folder), up to the frames.",
)

vision_pipeline = dg.define_asset_job(
    "vision_pipeline",
    selection=dg.AssetSelection.assets(*VISION_ASSETS),
    description="Filter, embed, de-duplicate and detect on the frames of one keyword, up to COCO and drawings.",
)

pose_pipeline = dg.define_asset_job(
    "pose_pipeline",
    selection=dg.AssetSelection.assets("quality_scores", "poses", "pose_datasets", "mongo_export"),
    description="Score frames for pose training, extract body and hand keypoints, write HDF5 and export to MongoDB.",
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


@dg.job(description="Add keyword partitions. Launchpad config: ops.register_keyword_partitions.config.keywords")
def add_keywords() -> None:
    register_keyword_partitions()
