"""COCO detection files from warehouse rows, and boxes drawn on frames: pure functions, no Dagster."""

from __future__ import annotations

import colorsys
import hashlib
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from PIL import Image


def build_coco(images: pd.DataFrame, boxes: pd.DataFrame, labels: Sequence[str], description: str) -> dict[str, Any]:
    """A COCO object-detection dict.

    Args:
        images: one row per image: ``frame_id``, ``width``, ``height``, ``uri``, plus provenance columns
            (``media_id``, ``source_url``, ``timestamp_s``) copied onto each image.
        boxes: one row per box: ``frame_id``, ``label``, ``score``, ``x0``, ``y0``, ``x1``, ``y1`` (pixels).
        labels: category names in id order (ids from 1); labels only found in ``boxes`` are appended.
        description: the dataset's ``info.description``.
    """
    names = list(dict.fromkeys([*labels, *boxes["label"].tolist()])) if len(boxes) else list(dict.fromkeys(labels))
    category_ids = {name: i for i, name in enumerate(names, start=1)}
    images = images.sort_values("frame_id").reset_index(drop=True)
    image_ids = {frame_id: i for i, frame_id in enumerate(images["frame_id"], start=1)}
    extra = [c for c in ("media_id", "source_url", "timestamp_s") if c in images.columns]
    coco_images = [
        {
            "id": image_ids[row["frame_id"]],
            "file_name": row["uri"],
            "width": int(row["width"]),
            "height": int(row["height"]),
            "frame_id": row["frame_id"],
            **{c: (None if pd.isna(row[c]) else row[c]) for c in extra},
        }
        for row in images.to_dict("records")
    ]
    annotations = []
    for row in boxes.sort_values(["frame_id", "score"], ascending=[True, False]).to_dict("records"):
        if row["frame_id"] not in image_ids:
            continue
        width, height = float(row["x1"] - row["x0"]), float(row["y1"] - row["y0"])
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_ids[row["frame_id"]],
                "category_id": category_ids[row["label"]],
                "bbox": [round(float(row["x0"]), 2), round(float(row["y0"]), 2), round(width, 2), round(height, 2)],
                "area": round(width * height, 2),
                "iscrowd": 0,
                "score": round(float(row["score"]), 5),
            }
        )
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "object"} for name, i in category_ids.items()],
    }


def coco_problems(coco: dict[str, Any]) -> dict[str, int]:
    """Annotations whose image or category id does not exist, and boxes outside their image."""
    images = {image["id"]: image for image in coco["images"]}
    categories = {category["id"] for category in coco["categories"]}
    missing_image = missing_category = outside = 0
    for ann in coco["annotations"]:
        image = images.get(ann["image_id"])
        missing_image += image is None
        missing_category += ann["category_id"] not in categories
        x, y, w, h = ann["bbox"]
        if image is not None:
            outside += not (x >= 0 and y >= 0 and w > 0 and h > 0)
            outside += not (x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01)
    return {"missing_image_ids": missing_image, "missing_category_ids": missing_category, "boxes_outside": outside}


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated color per label."""
    hue = int(hashlib.sha256(label.encode()).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: Image.Image, boxes: pd.DataFrame, quality: int = 90) -> bytes:
    """The image as JPEG with each box outlined and captioned ``label score``."""
    from PIL import ImageDraw, ImageFont

    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(1, round(min(canvas.size) / 200))
    for row in boxes.to_dict("records"):
        color = label_color(row["label"])
        box = [row["x0"], row["y0"], row["x1"], row["y1"]]
        draw.rectangle(box, outline=color, width=width)
        caption = f"{row['label']} {row['score']:.2f}"
        left, top, right, bottom = draw.textbbox((row["x0"], row["y0"]), caption, font=font)
        y = row["y0"] - (bottom - top) - 2 if row["y0"] - (bottom - top) - 2 >= 0 else row["y0"]
        draw.rectangle([left, y, right + 2, y + (bottom - top) + 2], fill=color)
        draw.text((row["x0"] + 1, y), caption, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
