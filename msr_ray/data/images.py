"""Item images: open safely, verify, convert to RGB, bound the size, merge several into a grid."""

from __future__ import annotations

import io
import math
import os
import stat

from PIL import Image, UnidentifiedImageError

# Larger images are refused as possible decompression bombs (about 8k x 8k).
MAX_PIXELS = 64_000_000
# Image files larger than this are refused before they are read.
MAX_IMAGE_BYTES = 32 * 1024 * 1024
# The only formats an image may be in; anything else is refused undecoded.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


class ImageError(ValueError):
    """An image that cannot be used: missing, corrupt, truncated or too large."""

    def __init__(self, source: str, reason: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source, self.reason = source, reason


def _open_bytes(data: bytes, source: str, max_side: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    source,
                    "image_too_large",
                    f"{width}x{height} pixels exceeds the {MAX_PIXELS} limit (decompression bomb?)",
                )
            probe.verify()
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            img.load()
            rgb = img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(source, "image_too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageError(
            source, "corrupt_image", f"not an image in one of {', '.join(IMAGE_FORMATS)}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
        raise ImageError(source, reason, f"cannot decode image: {exc}") from None
    rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


def load_image(source: str | bytes, max_side: int = 336) -> Image.Image:
    """Decode one image (a path or encoded bytes) into RGB with its longer side <= max_side.

    A path must name a regular file (not a FIFO, device or folder) of at most
    ``MAX_IMAGE_BYTES``; both are checked before anything is read.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) > MAX_IMAGE_BYTES:
            raise ImageError("<image bytes>", "image_too_large", f"{len(source)} bytes")
        return _open_bytes(bytes(source), "<image bytes>", max_side)
    try:
        info = os.stat(source)
    except OSError:
        raise ImageError(source, "missing_image", "image file does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(source, "not_a_file", "not a regular file")
    if info.st_size > MAX_IMAGE_BYTES:
        raise ImageError(
            source, "image_too_large", f"{info.st_size} bytes exceeds {MAX_IMAGE_BYTES}"
        )
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ImageError(source, "missing_image", f"cannot read image file: {exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(source, "image_too_large", f"more than {MAX_IMAGE_BYTES} bytes")
    return _open_bytes(data, source, max_side)


def contained_path(value: str, root: str) -> str:
    """The real path of ``value`` (relative to ``root`` or absolute), which must lie inside
    ``root`` once symlinks are resolved; ImageError ``image_outside_dataset`` otherwise."""
    text = value.strip()
    if "://" in text or "\x00" in text:
        raise ImageError(text, "image_outside_dataset", "not a path inside the dataset folder")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, text))
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise ImageError(
            text, "image_outside_dataset", f"resolves outside the dataset folder {real_root}"
        )
    return real


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
