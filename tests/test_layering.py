import re
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "msr_ray"
STAGE_IMPORT = re.compile(r"^\s*(from|import) msr_ray\.stages\b|\"msr_ray\.stages\.\w+\"", re.M)


def test_only_the_pipeline_runs_stages():
    """Stages are run by name from the registry; shared code lives in modules named for
    what it is (recommender, tables, preferences, blocks), never in a stage."""
    modules = [p for p in PACKAGE.rglob("*.py") if "stages" not in p.relative_to(PACKAGE).parts]
    offenders = sorted(
        str(p.relative_to(PACKAGE))
        for p in modules
        if STAGE_IMPORT.search(p.read_text()) and p.name not in ("pipeline.py", "registry.py")
    )
    assert len(modules) > 30 and offenders == []


def test_stages_import_nothing_from_each_other():
    stages = sorted((PACKAGE / "stages").glob("*.py"))
    offenders = [str(p.relative_to(PACKAGE)) for p in stages if STAGE_IMPORT.search(p.read_text())]
    assert len(stages) >= 6 and offenders == []


def test_models_and_data_are_free_of_ray():
    files = sorted((PACKAGE / "models").glob("*.py")) + sorted((PACKAGE / "data").rglob("*.py"))
    files += [PACKAGE / "preferences.py", PACKAGE / "serving" / "profiles.py"]
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in files
        if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M)
    ]
    assert offenders == []


def test_the_readme_table_of_where_things_live_matches_the_tree():
    root = PACKAGE.parent
    readme = (root / "README.md").read_text()
    table = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = {
        path.rstrip("/")
        for row in table.splitlines()
        if row.startswith("| `")
        for path in re.findall(r"`([^`]+)`", row.split("|")[1])
    }
    missing = sorted(p for p in named if not (root / p).exists())
    modules = {
        f"msr_ray/{p.name}"
        for p in PACKAGE.iterdir()
        if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or p.is_dir())
    }
    files = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    tracked = {f.split("/")[0] for f in files if not f.startswith(".")} - {"README.md", "msr_ray"}
    unlisted = sorted((modules | tracked) - named)
    assert missing == [] and unlisted == []
