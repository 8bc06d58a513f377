"""The architecture, enforced: each layer imports only the layers below it.

Layers, lowest first (a module may import its own layer and every layer below):

0. foundations: ``config``, ``data``, ``models``
1. ``run`` (the registry, pipeline, provenance, run directory, cluster, shared tables, and
   what the method reads from a run) and ``method`` (the paper's method on plain values:
   it never opens a run); neither imports the other
2. ``evaluation``
3. ``training``
4. ``stages``, ``serving`` (neither imports the other) and ``export``
5. entry points: ``cli``, ``__main__`` and ``bench/``

Stages are never imported: the pipeline runs them by name from the registry.
"""

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "msr_ray"
LAYERS = {
    "config": 0, "data": 0, "models": 0, "msr_ray": 0,
    "run": 1, "method": 1,
    "evaluation": 2,
    "training": 3,
    "stages": 4, "serving": 4, "export": 4,
    "cli": 5, "__main__": 5, "bench": 5,
}  # fmt: skip
SIBLINGS_APART = [{"method", "run"}, {"method", "evaluation"}, {"stages", "serving"}]
RAY_FREE = ["data", "models", "method", "evaluation"]
RAY_FREE_SERVING = ["api.py", "catalog.py", "keys.py", "profiles.py", "requests.py", "retrieval.py"]


def _part(path: Path) -> str:
    """The layer a source file belongs to: its top-level package or module under msr_ray/."""
    if path.is_relative_to(ROOT / "bench"):
        return "bench"
    top = path.relative_to(PACKAGE).parts[0]
    return "msr_ray" if top == "__init__.py" else top.removesuffix(".py")


def _imported_parts(source: str) -> set[str]:
    """Every msr_ray part a source imports, at module level or inside a function."""
    parts = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [f"msr_ray.{a.name}" for a in node.names]
                if node.module == "msr_ray"
                else [node.module]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        parts |= {
            n.split(".")[1] if "." in n else "msr_ray"
            for n in names
            if n.split(".")[0] == "msr_ray"
        }
    return parts


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "bench").glob("*.py"))


def test_every_part_has_a_layer():
    assert {_part(p) for p in _sources()} == set(LAYERS)


def _offences(mine: str, source: str) -> list[str]:
    """The parts ``source`` (a file of part ``mine``) may not import but does."""
    return sorted(
        other
        for other in _imported_parts(source) - {mine}
        if LAYERS[other] > LAYERS[mine] or {mine, other} in SIBLINGS_APART or other == "stages"
    )


def test_each_layer_imports_only_the_layers_below_it():
    offenders = [
        f"{path.relative_to(ROOT)} imports msr_ray.{other}"
        for path in _sources()
        for other in _offences(_part(path), path.read_text())
    ]
    assert len(_sources()) > 60 and offenders == []


def test_the_layer_check_catches_an_upward_import():
    assert _offences("run", "from msr_ray.method.recommender import Recommender") == ["method"]
    assert _offences("method", "from msr_ray.run.rundir import RunDir") == ["run"]
    assert _offences("method", "def f():\n    from msr_ray import evaluation\n") == ["evaluation"]
    assert _offences("bench", "import msr_ray.stages.users") == ["stages"]
    assert _offences("training", "from msr_ray.method import recommender") == []


def test_only_the_pipeline_runs_stages_by_name():
    """Stage modules are named as strings only in the registry (the pipeline imports them
    from there); shared code lives in modules named for what it is, never in a stage."""
    by_name = re.compile(r"[\"']msr_ray\.stages\.\w+[\"']")
    offenders = [
        str(p.relative_to(ROOT))
        for p in _sources()
        if by_name.search(p.read_text()) and p != PACKAGE / "run" / "registry.py"
    ]
    assert offenders == []


def test_ray_free_layers_do_not_import_ray():
    files = [p for part in RAY_FREE for p in sorted((PACKAGE / part).rglob("*.py"))]
    files += [PACKAGE / "serving" / name for name in RAY_FREE_SERVING]
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in files
        if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M)
    ]
    assert len(files) > 40 and offenders == []


def test_the_readme_table_of_where_things_live_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = {
        path.rstrip("/")
        for row in table.splitlines()
        if row.startswith("| `")
        for path in re.findall(r"`([^`]+)`", row.split("|")[1])
    }
    missing = sorted(p for p in named if not (ROOT / p).exists())
    modules = {
        f"msr_ray/{p.name}"
        for p in PACKAGE.iterdir()
        if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or p.is_dir())
    }
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    tracked = {f.split("/")[0] for f in files if not f.startswith(".")} - {"README.md", "msr_ray"}
    unlisted = sorted((modules | tracked) - named)
    assert missing == [] and unlisted == []
