"""Pictures for the vision stages and a keyword whose frames are seeded straight into the catalog, as a photo
source would put them."""

import hashlib
import io

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mining_assets.partitions import keyword_slug
from mining_assets.vision.common import partition_prefix
from mining_assets.warehouse import replace_partition_rows

FRAME_COLUMNS = ["keyword", "frame_id", "media_id", "source", "media_type", "width", "height", "blob_key", "uri",
                 "sha256", "source_url"]  # fmt: skip


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
