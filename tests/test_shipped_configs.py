from pathlib import Path

import pytest

from msr_ray.cli import DEMO_CONFIG
from msr_ray.config import load_config

ROOT = Path(__file__).resolve().parents[1]


SHIPPED = [
    DEMO_CONFIG,
    *sorted((ROOT / "jobs" / "configs").glob("*.yaml")),
    *sorted((ROOT / "bench" / "configs").glob("*.yaml")),
]


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert config.run_dir and config.train.epochs >= 1


def test_demo_sizes_are_the_documented_ones():
    config = load_config(DEMO_CONFIG)
    s = config.prepare.synthetic
    readme = " ".join((ROOT / "README.md").read_text().split())
    documented = (
        f"({s.num_users} users, {s.num_items} items, {s.min_history}–{s.max_history} interactions"
    )
    assert documented in readme
    assert config.mllm.name == config.llm.name == "embedded"
