"""Jobs: each source path of a keyword up to the frames catalog, the vision and pose paths, the export, and adding
keywords from the UI's Launchpad.

The three source jobs run the same assets (media_registry -> media -> video_frames -> frames), where every source
meets; they differ in which sources the registry asks (their `mining/sources` tag), so no job depends on an asset
it never materializes.
"""

import dagster as dg

from mining_assets.keywords import add_keyword_partitions, register_keywords
from mining_assets.sources.media_registry import SOURCES_TAG
from resources.warehouse import Warehouse

SOURCE_ASSETS = ["media_registry", "media", "video_frames", "frames"]
VISION_ASSETS = ["filtered_frames", "frame_embeddings", "unique_frames", "detections", "coco_annotations",
                 "detection_visualizations"]  # fmt: skip
POSE_ASSETS = ["quality_scores", "poses", "pose_datasets"]
# the sources each job's registry asks, unless its run config says otherwise (media_registry reads the run's tag,
# which every run of the job carries: launched from the UI, a backfill, a sensor or the CLI)
VIDEO_SOURCES = "youtube"
PHOTO_SOURCES = "stock"
UPLOAD_SOURCES = "uploads"


def source_job(name: str, sources: str, description: str):
    """A job of the source assets whose registry asks only some sources."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*SOURCE_ASSETS),
        tags={SOURCES_TAG: sources},
        description=description,
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
)

pose_pipeline = dg.define_asset_job(
    "pose_pipeline",
    selection=dg.AssetSelection.assets(*POSE_ASSETS),
    description="Score frames for pose training, extract body and hand keypoints, and write the HDF5 datasets. "
    "The MongoDB export is the job mongo_export_job: it needs a MongoDB (MONGODB_URI), which the embedded defaults "
    "do not have.",
)

mongo_export_job = dg.define_asset_job(
    "mongo_export_job",
    selection=dg.AssetSelection.assets("mongo_export"),
    description="Export a keyword's pose datasets to MongoDB. Not part of pose_pipeline: it needs MONGODB_URI set to "
    "a MongoDB, and the embedded defaults have none.",
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
