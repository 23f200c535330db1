"""Pictures for the vision stages, a keyword whose frames are seeded straight into the catalog, as a photo source
would put them, and the source rows (registry, keyword_media, media) the later stages read provenance from."""

import hashlib
import io

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mining_assets.partitions import keyword_slug
from mining_assets.vision.common import partition_prefix
from mining_assets.warehouse import insert_rows, replace_partition_rows, tables

FRAME_COLUMNS = ["keyword", "frame_id", "media_id", "source", "media_type", "width", "height", "blob_key", "uri",
                 "sha256", "source_url"]  # fmt: skip


MEDIA_DEFAULTS = {"uri": "file:///media", "sha256": "0" * 64, "size_bytes": 1, "width": 640, "height": 480}


def seed_media(conn, partition_key: str, keyword: str, items: list[dict]) -> None:
    """Registry items of a keyword and the stored media each one is, as media_registry and media leave them: a
    ``registry`` and a ``keyword_media`` row per item (replaced by item) and the shared ``media`` row of each item
    that is no duplicate (replaced by media id).

    Each item: ``media_id``, ``media_type``, ``source``, ``blob_key``, ``url``, ``page_url`` and any other column of
    ``registry`` or ``media`` (``channel``, ``photographer``, ``license``, ``uri`` ...); ``item`` defaults to the
    media id, ``duplicate_of`` (the item of this keyword it repeats) to none.
    """
    registry_columns, media_columns = tables()["registry"]["columns"], tables()["media"]["columns"]
    registry, members, media = [], [], []
    for item in items:
        name = item.get("item", item["media_id"])
        registry.append({**{k: v for k, v in item.items() if k in registry_columns}, "item": name,
                         "partition_key": partition_key, "keyword": keyword})  # fmt: skip
        members.append({"partition_key": partition_key, "item": name, "media_id": item["media_id"],
                        "duplicate_of": item.get("duplicate_of")})  # fmt: skip
        if not item.get("duplicate_of"):
            media.append(MEDIA_DEFAULTS | {k: v for k, v in item.items() if k in media_columns})
    names = [row["item"] for row in registry]
    for table, rows in (("registry", registry), ("keyword_media", members)):
        conn.execute(f"DELETE FROM {table} WHERE partition_key = ? AND list_contains(?, item)", [partition_key, names])
        insert_rows(conn, table, pd.DataFrame(rows))
    conn.execute("DELETE FROM media WHERE list_contains(?, media_id)", [[row["media_id"] for row in media]])
    insert_rows(conn, "media", pd.DataFrame(media))


def scene(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A picture of a few colored shapes, different for each seed."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        box = [int(x0), int(y0), int(x0 + rng.integers(8, size[0] // 2)), int(y0 + rng.integers(8, size[1] // 2))]
        draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """A 96x64 JPEG whose EXIF orientation says to show it rotated by 90 degrees (so 64x96)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    scene(5, size=(96, 64)).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def seed_frames(resources: dict, keyword: str, frames: dict[str, bytes]) -> str:
    """Put photos into the frames catalog of a keyword, as a photo source would; returns the partition key."""
    partition_key = keyword_slug(keyword)
    store = resources["blob_store"]
    rows = []
    for i, (frame_id, data) in enumerate(frames.items()):
        key = f"{partition_prefix('photos', partition_key)}/{frame_id}.jpg"
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except Exception:
            width = height = 0
        rows.append(
            {"keyword": keyword, "frame_id": frame_id, "media_id": f"photo-{i}", "source": "test",
             "media_type": "photo",
             "width": width, "height": height, "blob_key": key, "uri": store.put_bytes(key, data),
             "sha256": hashlib.sha256(data).hexdigest(), "source_url": f"http://photos.test/{frame_id}"}
        )  # fmt: skip
    catalog = pd.DataFrame(rows, columns=FRAME_COLUMNS).assign(partition_key=partition_key)
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            conn.execute("DELETE FROM keywords WHERE partition_key = ?", [partition_key])
            conn.execute(
                "INSERT INTO keywords (partition_key, keyword, added_at) VALUES (?, ?, now()::TIMESTAMP)",
                [partition_key, keyword],
            )
            replace_partition_rows(conn, "frames", partition_key, catalog)
    return partition_key
