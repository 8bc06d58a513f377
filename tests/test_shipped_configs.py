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


def _matrix_rows() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Model families", 1)[1].split("\n#", 1)[0]
    return [
        row.split("|")[1:-1] for row in table.splitlines() if row.startswith("| ") and "`" in row
    ]


@pytest.mark.parametrize("path", sorted((ROOT / "jobs" / "configs").glob("*.yaml")), ids=str)
def test_every_job_config_names_a_tested_family_of_the_readme_matrix(path):
    from msr_ray.models.families import TESTED_LLMS, TESTED_MLLMS

    config = load_config(path)
    for spec, role, tested in (
        (config.mllm, "MLLM", TESTED_MLLMS),
        (config.llm, "LLM", TESTED_LLMS),
    ):
        checkpoint = f"`{Path(spec.name).name}`"
        (row,) = [r for r in _matrix_rows() if checkpoint in r[3]]
        assert row[1].strip() == role and row[2].strip().startswith("yes"), row
        assert f"`{path.relative_to(ROOT)}`" in row[3]
        assert any(f"`{family}`" in row[0] for family in tested), row
