import io

import numpy as np
import pytest
from PIL import Image

from mining_assets.vision.batches import prepared_batches
from mining_assets.vision.images import ImageError, decode_image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"empty file \(0 bytes\)"),
        (b"<html><body>not an image</body></html>", "not an image"),
        (encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "unreadable or truncated image"),
        (encode(Image.new("RGB", (8, 8))), "too small: 8x8 px"),
    ],
)
def test_unusable_images_raise_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data)


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr("mining_assets.vision.images.MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        decode_image(encode(Image.new("RGB", (64, 64))))


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (48, 40), 128),
        Image.new("RGBA", (48, 40), (255, 0, 0, 0)),
        Image.new("LA", (48, 40), (10, 255)),
        Image.new("P", (48, 40)),
        Image.new("CMYK", (48, 40), (0, 255, 0, 0)),
        Image.fromarray(np.full((40, 48), 65535, np.uint16)),
    ],
    ids=["gray", "rgba", "la", "palette", "cmyk", "16-bit"],
)
def test_any_mode_becomes_rgb(image):
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    decoded = decode_image(encode(image, fmt))
    assert decoded.mode == "RGB"
    assert decoded.size == (48, 40)


def test_alpha_is_composited_on_white_and_16_bit_scaled():
    transparent = decode_image(encode(Image.new("RGBA", (48, 40), (255, 0, 0, 0))))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)
    white16 = decode_image(encode(Image.fromarray(np.full((40, 48), 65535, np.uint16))))
    assert white16.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.new("RGB", (60, 40)), "JPEG", exif=exif.tobytes())
    assert decode_image(data).size == (40, 60)


def test_prepared_batches_keep_order_and_record_failures():
    items = list(range(10))

    def load(item):
        if item == 3:
            raise ImageError("too small: 8x8 px")
        if item == 7:
            raise FileNotFoundError("no blob")
        return Image.new("RGB", (32, 32), (item, 0, 0))

    batches = list(prepared_batches(items, load, lambda images: len(images), batch_size=4))
    assert [b.items for b in batches] == [[0, 1, 2], [4, 5, 6], [8, 9]]
    assert [b.inputs for b in batches] == [3, 3, 2]
    failed = [f for b in batches for f in b.failed]
    assert failed[0] == (3, "too small: 8x8 px")
    assert failed[1][0] == 7 and "no blob" in failed[1][1]
