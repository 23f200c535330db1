import json

import pandas as pd
import pytest
from PIL import Image

from mining_assets.vision.coco import build_coco, coco_problems, draw_detections

IMAGES = pd.DataFrame(
    {
        "frame_id": ["b", "a"],
        "width": [64, 32],
        "height": [48, 32],
        "uri": ["file:///b.jpg", "file:///a.jpg"],
        "media_id": ["m1", "m2"],
        "source_url": ["http://x/1", None],
        "timestamp_s": [1.5, None],
    }
)
BOXES = pd.DataFrame(
    {
        "frame_id": ["b", "b", "a"],
        "label": ["door", "handle", "door"],
        "score": [0.9, 0.4, 0.7],
        "x0": [1.0, 10.0, 0.0],
        "y0": [2.0, 10.0, 0.0],
        "x1": [30.0, 20.0, 32.0],
        "y1": [40.0, 12.0, 32.0],
    }
)


def test_coco_loads_in_pycocotools(tmp_path):
    pycocotools = pytest.importorskip("pycocotools.coco", reason="pycocotools is not installed")
    coco = build_coco(IMAGES, BOXES, ["door"], "test")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    loaded = pycocotools.COCO(str(path))
    assert sorted(loaded.getImgIds()) == [1, 2]
    assert [c["name"] for c in loaded.loadCats(loaded.getCatIds())] == ["door", "handle"]
    image_b = next(i for i in coco["images"] if i["frame_id"] == "b")
    anns = loaded.loadAnns(loaded.getAnnIds(imgIds=[image_b["id"]]))
    assert [a["bbox"] for a in anns] == [[1.0, 2.0, 29.0, 38.0], [10.0, 10.0, 10.0, 2.0]]
    assert image_b["source_url"] == "http://x/1" and image_b["width"] == 64
    assert coco_problems(coco) == {"missing_image_ids": 0, "missing_category_ids": 0, "boxes_outside": 0}


def test_coco_without_detections_is_valid():
    coco = build_coco(IMAGES, BOXES.iloc[:0], ["door"], "test")
    assert len(coco["images"]) == 2 and coco["annotations"] == []
    assert coco["categories"] == [{"id": 1, "name": "door", "supercategory": "object"}]


def test_coco_problems_finds_dangling_ids_and_outside_boxes():
    coco = build_coco(IMAGES, BOXES, ["door"], "test")
    coco["annotations"][0]["image_id"] = 99
    coco["annotations"][1]["category_id"] = 99
    coco["annotations"][2]["bbox"] = [0, 0, 500, 5]
    assert coco_problems(coco) == {"missing_image_ids": 1, "missing_category_ids": 1, "boxes_outside": 1}


def test_draw_detections_marks_the_box():
    import io

    image = Image.new("RGB", (64, 48), (0, 0, 0))
    data = draw_detections(image, BOXES[BOXES["frame_id"] == "b"])
    drawn = Image.open(io.BytesIO(data))
    assert drawn.size == (64, 48)
    assert max(drawn.getpixel((1, 30))) > 100  # on the left edge of the first box
    assert max(drawn.getpixel((50, 45))) < 30  # outside every box
