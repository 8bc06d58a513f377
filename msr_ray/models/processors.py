"""A model folder's processor, with an images-only fallback for processors whose video
part needs torchvision.

msr-ray never feeds videos. The Qwen-VL processors carry a video processor that imports
torchvision, whose published wheel is built for CUDA torch and does not import beside a
CPU torch, so ``AutoProcessor`` raises ``ImportError`` there. The fallback builds the
same processor class from the folder's image processor, tokenizer and chat template,
without the video processor: images are processed exactly as by the full processor.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from msr_ray.models.families import model_type

log = logging.getLogger(__name__)

# model_type -> the transformers processor class whose only torchvision part is video.
IMAGES_ONLY = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
VIDEO_CONFIG = "video_preprocessor_config.json"


def load_processor(folder: Path, **options: Any):
    """``AutoProcessor`` of ``folder``; for an ``IMAGES_ONLY`` family whose video
    processor cannot import or has no config there, the same processor without it
    (logged)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, **options)
    except (ImportError, OSError) as error:  # OSError: a folder without a video config
        family = model_type(folder)
        if family not in IMAGES_ONLY:
            raise
        log.warning(
            "%s: its processor's video part does not load (%s); loading it for images only",
            folder,
            error,
        )
        return images_only_processor(folder, family, **options)


def images_only_processor(folder: Path, family: str, **options: Any):
    """The ``IMAGES_ONLY[family]`` processor of ``folder`` with no video processor.

    The subclass keeps its base's name, so a saved folder names the real processor class
    and loads with the full processor wherever torchvision imports.
    """
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    base = getattr(transformers, IMAGES_ONLY[family])

    @classmethod
    def get_attributes(cls) -> list[str]:
        return [name for name in base.get_attributes() if name != "video_processor"]

    images_only = type(base.__name__, (base,), {"get_attributes": get_attributes})
    tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    return images_only(
        image_processor=AutoImageProcessor.from_pretrained(folder, **options),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def save_processor(processor, source: Path, out: str | Path) -> None:
    """Save ``processor`` into ``out``, and the video-processor config of the folder it
    came from (``source``) where the processor did not write one (it was loaded for
    images only), so ``out`` loads with the full processor where torchvision imports."""
    processor.save_pretrained(out)
    video, saved = Path(source) / VIDEO_CONFIG, Path(out) / VIDEO_CONFIG
    if video.is_file() and not saved.exists():
        shutil.copyfile(video, saved)
