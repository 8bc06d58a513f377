import os
import signal
import threading
import time

import psutil
import pyarrow as pa

from msr_ray.config import ItemsConfig
from msr_ray.data.schemas import ITEMS
from msr_ray.method.item_summaries import plan_item
from msr_ray.models import prompts
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from tests.stages.conftest import tiny_config, write_items


def _summaries(run_dir):
    return RunDir(str(run_dir)).read_table("item_summaries").sort_by("item_id")


def test_every_item_summarized_and_resume_equals_clean_run(tmp_path, ray_session):
    clean = tiny_config(tmp_path / "clean", "items.max_actors=2", "items.min_actors=2")
    run_stage("prepare", clean)
    first = run_stage("summarize-items", clean)
    assert first["complete"] and first["summarized_now"] == first["items"] > 0
    table = _summaries(tmp_path / "clean")
    items = RunDir(str(tmp_path / "clean")).read_table("dataset", "items.parquet")
    assert sorted(table["item_id"].to_pylist()) == sorted(items["item_id"].to_pylist())
    # A random tiny model may emit only special tokens; every item was still generated for.
    assert all(n > 0 for n in table["generated_tokens"].to_pylist())
    assert table["error"].null_count == table.num_rows
    assert set(table["prompt_version"].to_pylist()) == {prompts.PROMPT_VERSION}
    assert run_stage("summarize-items", clean)["skipped"] is True

    interrupted = tiny_config(tmp_path / "resumed", "items.max_items=5")
    run_stage("prepare", interrupted)
    partial = run_stage("summarize-items", interrupted)
    assert partial["complete"] is False and partial["summarized_now"] == 5
    assert not RunDir(str(tmp_path / "resumed")).is_complete("item_summaries")
    resumed = run_stage("summarize-items", tiny_config(tmp_path / "resumed"))
    assert resumed["skipped_already_done"] == 5
    assert resumed["summarized_now"] == first["items"] - 5 and resumed["complete"]
    assert _summaries(tmp_path / "resumed").equals(table)


def test_bad_images_are_recorded_with_fallback(tmp_path, ray_session, png):
    rows = [
        {"item_id": "good", "title": "Good", "image_bytes": [png]},
        {"item_id": "missing", "title": "Missing", "image_paths": [str(tmp_path / "no.jpg")]},
        {"item_id": "corrupt", "title": "Corrupt", "image_bytes": [b"junk"]},
        {"item_id": "noimage", "title": "No image"},
    ]
    for on_error, run_dir in (("text-only", "fallback"), ("skip", "skip")):
        config = tiny_config(tmp_path / run_dir, f"items.on_error={on_error}")
        write_items(RunDir(config.run_dir), rows)
        summary = run_stage("summarize-items", config)
        fallbacks = 3 if on_error == "text-only" else 0
        assert summary["outcomes_now"] == {
            "summary": 1,
            "fallback": fallbacks,
            "error": 3 - fallbacks,
        }
        assert summary["failed_now"] == 3 - fallbacks  # a fallback did get a summary
        assert summary["failures_by_reason"] == {
            "missing_image": 1,
            "corrupt_image": 1,
            "no_image": 1,
        }
        table = {r["item_id"]: r for r in _summaries(config.run_dir).to_pylist()}
        assert table["good"]["error"] is None and table["good"]["generated_tokens"] > 0
        assert table["missing"]["error"].startswith("missing_image")
        assert table["corrupt"]["error"].startswith("corrupt_image")
        has_text = on_error == "text-only"
        for item in ("missing", "corrupt", "noimage"):
            assert (table[item]["generated_tokens"] > 0) == has_text


def test_each_mode_builds_its_prompt(png):
    row = {
        "item_id": "x",
        "title": "Heat",
        "text": "A heist.",
        "image_paths": [],
        "image_bytes": [png, png],
    }

    def plan(mode, on_error="text-only", r=row):
        return plan_item(r, mode, on_error, "movie", 64)

    image = plan("image")
    assert image.request.messages == prompts.item_image_prompt("movie")
    assert image.request.images[0].size == (64, 32)  # two images merged into one grid
    fused = plan("fused")
    assert fused.request.messages == prompts.item_fused_prompt("movie", "Heat", "A heist.")
    text = plan("text")
    assert text.request.messages == prompts.item_text_prompt("movie", "Heat", "A heist.")
    assert text.request.images == [] and text.error is None
    broken = {**row, "image_bytes": [b"junk"]}
    assert plan("fused", r=broken).request.messages == text.request.messages
    assert plan("fused", "skip", broken).request is None
    empty = plan("text", r={**row, "title": "", "text": ""})
    assert empty.request is None and empty.error.startswith("empty_text")
    assert ItemsConfig().mode == "fused"


def test_a_failing_request_marks_its_row_not_the_batch(monkeypatch):
    from msr_ray.config import ModelSpec
    from msr_ray.method import item_summaries
    from msr_ray.method.item_summaries import ItemSummarizer

    real = item_summaries.generate

    def fragile(loaded, requests, spec):
        if any("BOOM" in str(r.messages) for r in requests):
            raise RuntimeError("the processor refused one prompt")
        return real(loaded, requests, spec)

    monkeypatch.setattr(item_summaries, "generate", fragile)
    summarizer = ItemSummarizer(
        ModelSpec(name="tiny", max_new_tokens=4), ItemsConfig(mode="text"), "video", 64
    )
    batch = pa.Table.from_pylist(
        [
            {"item_id": i, "title": t, "text": "", "image_paths": [], "image_bytes": []}
            for i, t in (("a", "Fine"), ("b", "BOOM"), ("c", "Also fine"))
        ],
        schema=ITEMS,
    )
    out = {r["item_id"]: r for r in summarizer(batch).to_pylist()}
    assert out["b"]["error"].startswith("generation_failed: RuntimeError")
    assert out["a"]["error"] is None and out["a"]["generated_tokens"] > 0
    assert out["c"]["error"] is None and out["c"]["generated_tokens"] > 0


def _kill_item_actor_once(run: RunDir, stop: threading.Event) -> list[int]:
    """SIGKILL the ItemSummarizer actor process once the first batch is committed."""
    killed: list[int] = []
    while not stop.is_set() and not killed:
        if run.exists("_parts", "item_summaries"):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "ItemSummarizer" in " ".join(proc.info["cmdline"] or []):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    break
        time.sleep(0.05)
    return killed


def test_a_killed_item_actor_is_replaced_and_the_table_matches(tmp_path, ray_session):
    settings = [
        "items.batch_size=2",
        "items.min_actors=1",
        "items.max_actors=1",
        "mllm.max_new_tokens=24",
    ]
    clean = tiny_config(tmp_path / "clean", *settings)
    run_stage("prepare", clean)
    run_stage("summarize-items", clean)
    drill = tiny_config(tmp_path / "drill", *settings)
    run_stage("prepare", drill)
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.extend(_kill_item_actor_once(RunDir(drill.run_dir), stop))
    )
    killer.start()
    try:
        summary = run_stage("summarize-items", drill)
    finally:
        stop.set()
        killer.join()
    assert killed, "the actor was never killed (the stage finished first)"
    assert summary["complete"] and summary["summarized_now"] == summary["items"]
    assert summary["pools_lost"] == len(killed) == 1  # a fresh pool took the rest
    assert _summaries(tmp_path / "drill").equals(_summaries(tmp_path / "clean"))
