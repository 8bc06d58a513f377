import pyarrow as pa
import pytest

from msr_ray.config import load_config
from msr_ray.data.images import encode_png
from msr_ray.data.schemas import ITEMS
from msr_ray.run.rundir import RunDir

# Tiny models, sized for tests on 2 CPUs (also given to `msr-ray` as --set options).
TINY_SETTINGS = [
    "mllm.name=tiny",
    "llm.name=tiny",
    "mllm.max_new_tokens=6",
    "llm.max_new_tokens=6",
    "items.batch_size=4",
    "items.resources.num_cpus=0.5",
    "prepare.synthetic.num_users=12",
    "prepare.synthetic.num_items=16",
]


def tiny_config(run_dir, *overrides):
    """A pipeline config on tiny models, sized for tests on 2 CPUs."""
    return load_config(None, [f"run_dir={run_dir}", *TINY_SETTINGS, *overrides])


def write_items(run: RunDir, rows: list[dict]) -> None:
    """Write dataset/items.parquet directly (the items stage reads only that table)."""
    full = [{"text": "", "image_paths": [], "image_bytes": [], **r} for r in rows]
    with run.stage_output("dataset") as out:
        out.write_table(pa.Table.from_pylist(full, schema=ITEMS), "items.parquet")


@pytest.fixture
def png():
    from PIL import Image

    return encode_png(Image.new("RGB", (32, 32), (200, 30, 30)))


def write_dataset(run: RunDir, histories: dict[str, list[str]], items: dict[str, str]) -> None:
    """A dataset whose train histories are ``histories`` (+ a valid and a test item each),
    and complete item summaries for ``items`` (item_id -> summary)."""
    import pyarrow as pa

    from msr_ray.data.schemas import ITEM_SUMMARIES, SEQUENCES

    item_rows = [
        {"item_id": i, "title": f"Title {i}", "text": "", "image_paths": [], "image_bytes": []}
        for i in items
    ]
    seq = []
    for user, history in histories.items():
        full = [*history, "held-valid", "held-test"]
        splits = ["train"] * len(history) + ["valid", "test"]
        for pos, (item, split) in enumerate(zip(full, splits, strict=True)):
            seq.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "timestamp": pos,
                    "position": pos,
                    "split": split,
                }
            )
    with run.stage_output("dataset") as out:
        out.write_table(pa.Table.from_pylist(item_rows, schema=ITEMS), "items.parquet")
        out.write_table(pa.Table.from_pylist(seq, schema=SEQUENCES), "sequences.parquet")
    summaries = [
        {
            "item_id": i,
            "summary": s,
            "error": None,
            "model": "t",
            "prompt_version": "v",
            "prompt_tokens": 0,
            "generated_tokens": 0,
        }
        for i, s in items.items()
    ]
    with run.stage_output("item_summaries") as out:
        out.write_table(pa.Table.from_pylist(summaries, schema=ITEM_SUMMARIES))
