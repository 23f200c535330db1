"""Pictures of a person for the pose stages, and a catalog seeded with photos and video frames at once."""

import hashlib
import io
import socket

import pandas as pd
from PIL import Image

from mining_assets.partitions import keyword_slug
from mining_assets.vision.common import partition_prefix
from mining_assets.warehouse import replace_partition_rows


def closed_port() -> int:
    """A loopback port that was just bound and released: nothing listens there, connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def on_canvas(photo: Image.Image, dx: int, size: tuple[int, int] = (640, 480), height: int = 440) -> Image.Image:
    """The photo scaled (aspect kept) to ``height`` on a grey canvas, ``dx`` px from the left: a person who moves
    right as ``dx`` grows."""
    width = round(photo.width * height / photo.height)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(photo.resize((width, height), Image.BILINEAR), (dx, (size[1] - height) // 2))
    return canvas


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def seed_catalog(
    resources: dict, keyword: str, photos: dict[str, bytes], videos: dict[str, list[tuple[str, float, bytes]]]
) -> str:
    """Put photos (one media item each) and video frames (``media_id -> [(frame_id, timestamp_s, bytes)]``, in any
    order) into a keyword's frames catalog, as the sources would; returns the partition key."""
    partition_key = keyword_slug(keyword)
    store = resources["blob_store"]
    items = [(frame_id, frame_id, "photo", None, data) for frame_id, data in photos.items()]
    items += [
        (frame_id, media_id, "video", t, data) for media_id, frames in videos.items() for frame_id, t, data in frames
    ]
    rows = []
    for frame_id, media_id, media_type, timestamp, data in items:
        key = f"{partition_prefix('frames', partition_key)}/{media_id}/{frame_id}.jpg"
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except Exception:
            width = height = 0
        rows.append({
            "keyword": keyword, "frame_id": frame_id, "media_id": media_id, "source": "test",
            "media_type": media_type, "timestamp_s": timestamp,
            "frame_index": None if timestamp is None else round(timestamp * 30),
            "width": width, "height": height, "blob_key": key, "uri": store.put_bytes(key, data),
            "sha256": hashlib.sha256(data).hexdigest(), "source_url": f"http://media.test/{media_id}",
        })  # fmt: skip
    keywords = pd.DataFrame([{"partition_key": partition_key, "keyword": keyword}])
    frames = pd.DataFrame(rows).assign(partition_key=partition_key)
    for attempt in resources["warehouse"].retrying():
        with attempt as conn:
            replace_partition_rows(conn, "keywords", partition_key, keywords)
            replace_partition_rows(conn, "frames", partition_key, frames)
    return partition_key
