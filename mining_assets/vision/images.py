"""Decoding stored frames for the models: any mode to RGB, with a clear reason for every image that can't be used."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

MIN_SIDE = 32  # px: below this no model input is meaningful
MAX_PIXELS = 100_000_000  # a decompression bomb is refused before it is decoded
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp"}


class ImageError(ValueError):
    """A frame that can't be used; the message is the reason recorded for it."""


def photo_suffix(image_format: str | None) -> str:
    """The file suffix a stored photo gets from its Pillow format name (``.img`` for formats without one here)."""
    return _SUFFIXES.get(image_format or "", ".img")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any PIL mode: alpha composited on white, 16-bit and float scaled to 8 bits, CMYK converted."""
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(data: bytes, min_side: int = MIN_SIDE) -> Image.Image:
    """An RGB image from stored bytes (EXIF orientation applied), or ImageError with the reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"too large: {width}x{height} px ({width * height / 1e6:.0f} megapixels)")
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"too large: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageError("not an image: the data is in no image format Pillow reads") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"unreadable or truncated image: {error}") from error
    image = ImageOps.exif_transpose(image)
    if min(image.size) < min_side:
        raise ImageError(f"too small: {image.width}x{image.height} px (minimum {min_side} px per side)")
    return to_rgb(image)
