"""Item images: open safely, verify, convert to RGB, bound the size, merge several into a grid."""

from __future__ import annotations

import io
import math
import os

from PIL import Image, UnidentifiedImageError

# Larger images are refused as possible decompression bombs (about 8k x 8k).
MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image that cannot be used: missing, corrupt, truncated or too large."""

    def __init__(self, source: str, reason: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source, self.reason = source, reason


def _open_bytes(data: bytes, source: str, max_side: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    source,
                    "image_too_large",
                    f"{width}x{height} pixels exceeds the {MAX_PIXELS} limit (decompression bomb?)",
                )
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(source, "image_too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageError(source, "corrupt_image", "not a recognisable image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
        raise ImageError(source, reason, f"cannot decode image: {exc}") from None
    rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


def load_image(source: str | bytes, max_side: int = 336) -> Image.Image:
    """Decode one image (a path or encoded bytes) into RGB with its longer side <= max_side."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _open_bytes(bytes(source), "<image bytes>", max_side)
    if not os.path.exists(source):
        raise ImageError(source, "missing_image", "image file does not exist")
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ImageError(source, "missing_image", f"cannot read image file: {exc}") from None
    return _open_bytes(data, source, max_side)


def make_grid(images: list[Image.Image], max_side: int = 336) -> Image.Image:
    """Merge several images into one near-square grid (white background), bounded by max_side."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if len(images) == 1:
        return images[0]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell = max_side // cols
    grid = Image.new("RGB", (cols * cell, rows * cell), "white")
    for index, img in enumerate(images):
        tile = img.copy()
        tile.thumbnail((cell, cell), Image.Resampling.BICUBIC)
        x = (index % cols) * cell + (cell - tile.width) // 2
        y = (index // cols) * cell + (cell - tile.height) // 2
        grid.paste(tile, (x, y))
    return grid


def item_image(
    image_paths: list[str], image_bytes: list[bytes], max_side: int = 336
) -> Image.Image:
    """The one image an item is summarized from: its only image, or a grid of all of them.

    Raises ImageError for the first image that cannot be used, and ``missing_image``
    when the item has no image at all.
    """
    sources: list[str | bytes] = [*image_paths, *image_bytes]
    if not sources:
        raise ImageError("<item>", "no_image", "item has no image")
    return make_grid([load_image(s, max_side) for s in sources], max_side)


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of an image (used for inline images in Parquet tables)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
