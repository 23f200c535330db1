"""keyword_file_sensor: a keyword list file on disk becomes keyword partitions, each with a run of the video path."""

import hashlib

import dagster as dg

from mining_assets.jobs import video_pipeline
from mining_assets.keywords import parse_keyword_list, register_keywords
from mining_assets.partitions import keyword_partitions
from resources.settings import keywords_file
from resources.warehouse import Warehouse


@dg.sensor(job=video_pipeline, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def keyword_file_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse):
    """Watches the keyword list file ($MINING_WATCHLIST, else ./keywords.txt): one keyword per line."""
    path = keywords_file()
    if not path.is_file():
        return dg.SkipReason(f"no keyword file at {path}")
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if context.cursor == digest:
        return dg.SkipReason("keyword file unchanged")
    texts = parse_keyword_list(content.decode("utf-8", errors="replace"))
    pairs, rejected = register_keywords(warehouse, texts)
    for text, reason in rejected:
        context.log.warning(f"keyword file line refused {text!r}: {reason}")
    existing = set(context.instance.get_dynamic_partitions(keyword_partitions.name))
    new = [key for key, _ in pairs if key not in existing]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"keyword-{key}") for key in new],
        dynamic_partitions_requests=[keyword_partitions.build_add_request(new)] if new else [],
        cursor=digest,
    )
