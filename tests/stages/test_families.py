"""Every stage on the model families users bring: a tiny random checkpoint of each, saved
as a local folder and named by path, runs the whole pipeline, serving and the export."""

import pytest
from ray import serve
from transformers import AutoModelForImageTextToText

from msr_ray.export import export_model
from msr_ray.method.export import SETTINGS_FILE
from msr_ray.models.families import model_type
from msr_ray.models.processors import load_processor
from msr_ray.run.pipeline import run_pipeline
from msr_ray.run.rundir import RunDir
from tests.models.families import LLM_FAMILIES, MLLM_FAMILIES
from tests.serving.test_app import _app
from tests.stages.conftest import tiny_config

SETTINGS = [
    "samples.eval_negatives=3",
    "users.num_shards=1",
    "train.num_workers=1",
    "train.micro_batch_size=4",
    "train.resources.num_cpus=0.5",
    "evaluate.max_actors=1",
    "evaluate.bootstrap_samples=20",
]
# Each MLLM family with one of the LLM families as the user summarizer (LLaVA-1.5 is the
# embedded and tiny models every other test runs; Qwen2-VL differs from Qwen2.5-VL only in
# its vision tower, tested in tests/models/test_families.py).
PAIRS = [("llava-next", "llama3"), ("idefics3", "qwen2"), ("qwen2.5-vl", "mistral")]


@pytest.mark.parametrize(("mllm", "llm"), PAIRS)
def test_every_stage_and_the_export_run_on_the_family(mllm, llm, tmp_path, ray_session):
    mllm_dir = MLLM_FAMILIES[mllm](tmp_path / mllm)
    llm_dir = LLM_FAMILIES[llm](tmp_path / llm)
    config = tiny_config(
        tmp_path / "run", f"mllm.name={mllm_dir}", f"llm.name={llm_dir}", *SETTINGS
    )
    summaries = {s["stage"]: s for s in run_pipeline(config)}
    run = RunDir(str(tmp_path / "run"))
    items = summaries["summarize-items"]
    assert items["complete"] and items["failed_now"] == 0 and items["model"] == str(mllm_dir)
    assert summaries["summarize-users"]["users_failed"] == {}
    metrics = run.read_json("eval", "metrics.json")["mllm-msr"]["test"]
    assert metrics["groups"] == summaries["build-samples"]["groups_by_split"]["test"] > 0
    assert 0.0 <= metrics["auc"]["mean"] <= 1.0
    scores = run.read_table("scores", "mllm-msr").to_pylist()
    group = scores[0]["group"]
    user = next(r["user_id"] for r in scores if r["group"] == group)
    expected = {r["item_id"]: r["score"] for r in scores if r["group"] == group}
    handle = serve.run(_app(run), name="recommender", route_prefix="/")
    try:
        answer = handle.recommend.remote({"user_id": user, "candidates": list(expected)})
        ranking = answer.result()["ranking"]
    finally:
        serve.shutdown()
    assert {r["item_id"]: r["score"] for r in ranking} == pytest.approx(expected, abs=1e-4)
    exported = export_model(run, str(tmp_path / "export"))
    assert (tmp_path / "export" / SETTINGS_FILE).exists() and exported["path"]
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "export")
    load_processor(tmp_path / "export")  # AutoProcessor, images-only without torchvision
    video_config = mllm_dir / "video_preprocessor_config.json"  # the Qwen-VL families'
    assert video_config.exists() == (tmp_path / "export" / video_config.name).exists()
    assert model.config.model_type == model_type(mllm_dir) and model_type(mllm_dir) is not None
