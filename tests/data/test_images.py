import io

import pytest
from PIL import Image

from msr_ray.data import images
from msr_ray.data.images import ImageError, item_image, load_image, make_grid


def _png(size, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def test_load_converts_and_bounds():
    img = load_image(_png((400, 200), "L"), max_side=100)
    assert img.mode == "RGB" and img.size == (100, 50)


def test_missing_corrupt_truncated_and_bomb(tmp_path, monkeypatch):
    with pytest.raises(ImageError) as err:
        load_image(str(tmp_path / "nope.jpg"))
    assert err.value.reason == "missing_image" and "nope.jpg" in str(err.value)
    with pytest.raises(ImageError) as err:
        load_image(b"\x89PNG but not really")
    assert err.value.reason == "corrupt_image"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="JPEG")
    with pytest.raises(ImageError) as err:
        load_image(buf.getvalue()[:300])
    assert err.value.reason == "truncated_image"
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError) as err:
        load_image(_png((20, 20)))
    assert err.value.reason == "image_too_large"


def test_grid_merges_several_images():
    tiles = [Image.new("RGB", (50, 50), c) for c in ("red", "green", "blue")]
    grid = make_grid(tiles, max_side=100)
    assert grid.size == (100, 100)
    assert grid.getpixel((25, 25)) == (255, 0, 0)
    assert grid.getpixel((75, 25))[1] > 100
    assert grid.getpixel((25, 75)) == (0, 0, 255)
    assert grid.getpixel((75, 75)) == (255, 255, 255)
    assert item_image([], [_png((10, 10)), _png((10, 10))], 64).size == (64, 32)
    with pytest.raises(ImageError, match="no image"):
        item_image([], [])
