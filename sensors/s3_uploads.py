"""s3_uploads_sensor: new photos and videos in the upload bucket (one folder per keyword) become keyword partitions,
each with an upload_pipeline run that brings exactly the new objects."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime

import dagster as dg

from mining_assets.jobs import upload_pipeline
from mining_assets.partitions import keyword_partitions, keyword_slug, normalize_keyword
from resources.uploads import UploadBucket, UploadedObject


@dataclasses.dataclass(frozen=True)
class UploadCursor:
    """The newest LastModified seen, and the keys seen at exactly that time.

    S3 reports LastModified to the second, so an object written in the same second as the newest one seen lists
    with the same time: a cursor on time alone would skip it (``>``) or run the others twice (``>=``).
    """

    newest: datetime | None = None
    keys_at_newest: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> UploadCursor:
        if not text:
            return cls()
        data = json.loads(text)
        newest = datetime.fromisoformat(data["newest"]) if data.get("newest") else None
        return cls(newest, frozenset(data.get("keys_at_newest", [])))

    def dumps(self) -> str:
        newest = self.newest.isoformat() if self.newest else None
        return json.dumps({"newest": newest, "keys_at_newest": sorted(self.keys_at_newest)})

    def is_new(self, obj: UploadedObject) -> bool:
        if self.newest is None or obj.last_modified > self.newest:
            return True
        return obj.last_modified == self.newest and obj.key not in self.keys_at_newest

    def advance(self, objects: Iterable[UploadedObject]) -> UploadCursor:
        """The cursor after these objects were handled (requested or skipped)."""
        objects = list(objects)
        times = [obj.last_modified for obj in objects] + ([self.newest] if self.newest else [])
        if not times:
            return self
        newest = max(times)
        keys = {obj.key for obj in objects if obj.last_modified == newest}
        if newest == self.newest:
            keys |= self.keys_at_newest
        return UploadCursor(newest, frozenset(keys))


def group_by_keyword(
    uploads: UploadBucket, objects: Iterable[UploadedObject], log=None
) -> dict[str, tuple[str, list[UploadedObject]]]:
    """partition key -> (keyword, objects) for each object in a keyword folder.

    Objects directly under the prefix (no folder) and folder markers are skipped; a folder that can't be a
    keyword (empty, control characters, too long) is logged and skipped.
    """
    groups: dict[str, tuple[str, list[UploadedObject]]] = {}
    for obj in objects:
        folder = uploads.keyword_folder(obj.key)
        if folder is None:
            continue
        try:
            keyword = normalize_keyword(folder)
        except ValueError as error:
            if log is not None:
                log.warning(f"upload folder {folder!r} refused ({error}); skipped {obj.key!r}")
            continue
        groups.setdefault(keyword_slug(keyword), (keyword, []))[1].append(obj)
    return groups


def upload_run_key(bucket: str, objects: Iterable[UploadedObject]) -> str:
    """A run key made of the objects themselves (bucket, key, ETag): the same objects never run twice."""
    identity = json.dumps(sorted([bucket, obj.key, obj.etag] for obj in objects))  # ASCII: any key serializes
    return "s3-uploads-" + hashlib.sha256(identity.encode("ascii")).hexdigest()[:32]


def upload_run_config(keys: list[str], keyword: str) -> dict:
    """The run brings these objects, and the keyword text for the warehouse (the sensor does not write it)."""
    return {"ops": {"media_registry": {"config": {"s3_keys": keys, "keyword": keyword}}}}


@dg.sensor(job=upload_pipeline, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def s3_uploads_sensor(context: dg.SensorEvaluationContext, uploads: UploadBucket):
    """Watches s3://<bucket>/<prefix>/<keyword>/ for new photos and videos: one run per keyword and tick."""
    if not uploads.configured:
        return dg.SkipReason("no upload bucket configured (set MINING_UPLOADS_BUCKET)")
    cursor = UploadCursor.parse(context.cursor)
    new = [obj for obj in uploads.list_objects(since=cursor.newest) if cursor.is_new(obj)]
    if not new:
        return dg.SkipReason("no new uploads")
    groups = group_by_keyword(uploads, new, context.log)
    existing = set(context.instance.get_dynamic_partitions(keyword_partitions.name))
    added = [key for key in groups if key not in existing]
    requests = [
        dg.RunRequest(
            partition_key=key,
            run_key=upload_run_key(uploads.bucket, objects),
            run_config=upload_run_config([o.key for o in objects], keyword),
        )
        for key, (keyword, objects) in groups.items()
    ]
    for key, (_, objects) in groups.items():
        context.log.info(f"partition {key}: {len(objects)} new upload(s)")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[keyword_partitions.build_add_request(added)] if added else [],
        cursor=cursor.advance(new).dumps(),
        skip_reason=None if requests else f"{len(new)} new object(s), none in a keyword folder",
    )
