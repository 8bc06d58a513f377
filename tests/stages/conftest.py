import pyarrow as pa
import pytest

from msr_ray.config import load_config
from msr_ray.data.images import encode_png
from msr_ray.data.schemas import ITEMS
from msr_ray.rundir import RunDir


def tiny_config(run_dir, *overrides):
    """A pipeline config on tiny models, sized for tests on 2 CPUs."""
    return load_config(
        None,
        [
            f"run_dir={run_dir}",
            "mllm.name=tiny",
            "llm.name=tiny",
            "mllm.max_new_tokens=6",
            "llm.max_new_tokens=6",
            "items.batch_size=4",
            "items.resources.num_cpus=0.5",
            "prepare.synthetic.num_users=12",
            "prepare.synthetic.num_items=16",
            *overrides,
        ],
    )


def write_items(run: RunDir, rows: list[dict]) -> None:
    """Write dataset/items.parquet directly (the items stage reads only that table)."""
    full = [{"text": "", "image_paths": [], "image_bytes": [], **r} for r in rows]
    with run.stage_output("dataset") as out:
        out.write_table(pa.Table.from_pylist(full, schema=ITEMS), "items.parquet")


@pytest.fixture
def png():
    from PIL import Image

    return encode_png(Image.new("RGB", (32, 32), (200, 30, 30)))
