"""Each output folder of a run directory has one spelling in the code: its ``*_OUTPUT``
constant in ``msr_ray/run/registry.py``. A RunDir or provenance call that names a folder
by a string literal (``run.read_table("dataset", ...)``, ``run.require("samples")``,
``provenance.state("baselines", ...)``), an f-string path under one
(``f"scores/{name}"``) or a derived alias (``STAGES_BY_COMMAND["train"].output``) fails
here. Split names (``"train"`` as a split, a dataset shard, a dict key) are not folders
and are not looked at.
"""

import ast
from pathlib import Path

from msr_ray.run import registry

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "msr_ray"

# RunDir methods and provenance functions, by the position of the argument that names an
# output folder (or a provenance name, which is the folder's name).
FOLDER_ARGUMENT = {
    **dict.fromkeys(
        (
            # RunDir
            "read_table",
            "require",
            "is_complete",
            "completion",
            "output_path",
            "stage_output",
            "read_json",
            "read_text",
            "read_bytes",
            "list_dirs",
            "list_files",
            "exists",
            "copy_dir",
            "path",
            "uri_of",
            "ray_storage",
            "read_parts",
            "drop_parts",
            # msr_ray.run.provenance
            "state",
            "check_upstream",
            "build_context",
            "fingerprint",
            "upstream_of",
            "code_versions",
            "summarized_users",
        ),
        0,
    ),
    # RunDir writers: the data first, then the path.
    **dict.fromkeys(("write_json", "write_text", "write_bytes", "append_part"), 1),
}


def _literal_folder(node: ast.expr) -> str | None:
    """The output folder a string literal names (``"eval"``, ``"scores/mllm-msr"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        folder = node.value.split("/", 1)[0]
        return folder if folder in registry.OUTPUT_FOLDERS else None
    return None


def _f_string_folder(node: ast.expr) -> str | None:
    """The output folder an f-string path starts under (``f"baselines/{name}"``)."""
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if isinstance(head, ast.Constant) and "/" in head.value:
            return _literal_folder(head)
    return None


def _derived_output(node: ast.expr) -> bool:
    """``STAGES_BY_COMMAND[...].output``: a second spelling of a folder's name."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "output"
        and isinstance(node.value, ast.Subscript)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "STAGES_BY_COMMAND"
    )


def literal_folders(source: str) -> list[str]:
    """``line: what`` for every place in ``source`` that spells an output folder's name
    itself: a RunDir or provenance call naming it by a string literal, an f-string path
    under it (``f"baselines/{name}"``, anywhere), or ``STAGES_BY_COMMAND[...].output``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if _derived_output(node):
            found.append(f"{node.lineno}: STAGES_BY_COMMAND[...].output")
        elif (folder := _f_string_folder(node)) is not None:
            found.append(f"{node.lineno}: f-string under {folder}/")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            position = FOLDER_ARGUMENT.get(name)
            if position is None or len(node.args) <= position:
                continue
            if (folder := _literal_folder(node.args[position])) is not None:
                found.append(f"{node.lineno}: {name}({folder!r}, ...)")
    return found


def offenders(package: Path) -> list[str]:
    """Every literal spelling of an output folder in the modules under ``package``."""
    return [
        f"{path.relative_to(package.parent)}:{where}"
        for path in sorted(package.rglob("*.py"))
        for where in literal_folders(path.read_text())
    ]


def test_no_output_folder_is_named_by_a_literal():
    assert offenders(PACKAGE) == []


def test_the_check_catches_a_literal_folder():
    caught = [
        'run.read_table("dataset", "items.parquet")',
        'run.require("samples")',
        'run.is_complete("eval")',
        'run.completion("user_summaries")["version"]',
        'run.output_path("item_summaries")',
        'run.read_json("baselines", name, "metrics.json")',
        'run.read_table("scores", model)',
        'run.list_dirs("baselines")',
        'run.exists("train")',
        'run.stage_output(f"scores/{name}", fingerprint=f)',
        'run.is_complete("scores/mllm-msr")',
        'run.write_json(row, "profiles", "events", key)',
        'run.list_files("online_items", "items")',
        'run.stage_output("report")',
        'provenance.state("baselines", config, run, folder)',
        'provenance.check_upstream("baselines", config, run)',
        'build_context("eval", config, run)',
        'folder = f"baselines/{name}"',
        'STAGE = STAGES_BY_COMMAND["train"].output',
    ]
    for source in caught:
        assert len(literal_folders(source)) == 1, source
    passed = [
        "run.read_table(DATASET_OUTPUT, 'items.parquet')",
        'run.stage_output(f"{SCORES_OUTPUT}/{name}")',
        'ray.train.get_dataset_shard("train")',
        'candidate_rows(run, config, ("train",))',
        'pc.equal(table["split"], "train")',
        'run.exists("train_logs")',
        'out.write_bytes(data, "img/eval.png")',
        'sections.append("dataset")',
        'f"no complete {name}/ in {run.root}"',
        "STAGES_BY_COMMAND[command].status_counts",
    ]
    for source in passed:
        assert literal_folders(source) == [], source


def test_the_registry_names_every_stage_output_once():
    assert len(set(registry.OUTPUT_FOLDERS)) == len(registry.OUTPUT_FOLDERS)
    assert {s.output for s in registry.STAGES} <= set(registry.OUTPUT_FOLDERS)
    constants = {
        value
        for key, value in vars(registry).items()
        if key.endswith("_OUTPUT") and isinstance(value, str)
    }
    assert constants == set(registry.OUTPUT_FOLDERS)


def test_the_registry_imports_nothing_from_the_project():
    tree = ast.parse((PACKAGE / "run" / "registry.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported == {"__future__", "dataclasses"}
