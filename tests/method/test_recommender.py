import pytest
import torch

from msr_ray.config import ModelSpec, PipelineConfig, RecommenderConfig
from msr_ray.method.recommender import Recommender
from msr_ray.models import loading
from msr_ray.models.scoring import score_full
from tests.conftest import BLUE, RED


def _rows():
    rows = []
    for n in range(7):  # two users' candidates, interleaved, one without an image
        rows.append(
            {
                "summary": "Likes red clips." if n % 2 else "Prefers long blue documentaries.",
                "title": f"Clip {n}",
                "image_paths": [],
                "image_bytes": [] if n == 3 else [RED if n % 3 else BLUE],
                "description": f"A clip about topic {n}.",
            }
        )
    return rows


@pytest.mark.parametrize("description", [False, True])
def test_score_groups_by_user_and_equals_whole_prompt_scores(tiny_mllm, description):
    config = PipelineConfig(
        domain="video",
        recommender=RecommenderConfig(
            batch_size=2, candidate_description=description, candidate_image="on"
        ),
    )
    recommender = Recommender(tiny_mllm, config)
    rows = _rows()
    prompts = recommender.prompts(rows)
    assert ("topic 1" in prompts[1].suffix) is description
    assert [bool(p.images) for p in prompts] == [n != 3 for n in range(7)]
    assert len({p.prefix for p in prompts}) == 2
    assert recommender.score(rows) == pytest.approx(score_full(tiny_mllm, prompts), abs=1e-5)


def test_candidate_images_are_left_out_for_the_built_in_models_unless_asked(tiny_mllm):
    from msr_ray.method.recommender import shows_candidate_image, with_image_setting_resolved

    auto = Recommender(tiny_mllm, PipelineConfig(domain="video")).prompts(_rows())
    assert not any(p.images for p in auto) and "<image>" not in "".join(p.suffix for p in auto)
    assert shows_candidate_image(PipelineConfig(mllm=ModelSpec(name="/models/llava-1.6")))
    assert not shows_candidate_image(
        PipelineConfig(recommender=RecommenderConfig(candidate_image="off"))
    )
    resolved = with_image_setting_resolved(PipelineConfig())  # the embedded MLLM
    assert resolved.recommender.candidate_image == "off"
    # What the train stage saves reads the same under another model path (an export).
    moved = resolved.model_copy(update={"mllm": ModelSpec(name="/exported")})
    assert not shows_candidate_image(moved)


def test_description_words_cut_the_shown_item_summary(tiny_mllm):
    settings = {"candidate_description": True, "description_words": 3}
    config = PipelineConfig(domain="video", recommender=RecommenderConfig(**settings))
    prompts = Recommender(tiny_mllm, config).prompts(_rows())
    assert "Its description: A clip about ..." in prompts[1].suffix
    assert "topic" not in prompts[1].suffix


def prompts_text(config: PipelineConfig, row: dict) -> str:
    from msr_ray.models import prompts

    messages = prompts.recommend_prompt(
        config.domain, row["summary"], row["title"], None, "shared-prefix", row["recent"]
    )
    return " ".join(part["text"] for part in messages[0]["content"] if part["type"] == "text")


def _rates(fp32: float, bf16: float):
    return lambda cache_dir=None: {"fp32_gflops": fp32, "bf16_gflops": bf16}


def test_auto_dtype_is_bf16_only_where_the_cpu_computes_it_faster(monkeypatch):
    spec, cpu = ModelSpec(), torch.device("cpu")
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(loading, "cpu_matmul_rates", _rates(80.0, 185.0))  # an AVX-512 EPYC
    assert loading.resolve_dtype(spec, cpu) == torch.bfloat16
    # A Xeon with AVX-512 BF16 measured here: bf16 slower than fp32, so auto stays fp32.
    monkeypatch.setattr(loading, "cpu_matmul_rates", _rates(115.0, 74.0))
    assert loading.resolve_dtype(spec, cpu) == torch.float32
    monkeypatch.setattr(loading, "cpu_matmul_rates", _rates(100.0, 110.0))  # under 1.2x
    assert loading.resolve_dtype(spec, cpu) == torch.float32
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(loading, "cpu_matmul_rates", _rates(80.0, 185.0))
    assert loading.resolve_dtype(spec, cpu) == torch.float32
    assert loading.resolve_dtype(ModelSpec(dtype="bfloat16"), cpu) == torch.bfloat16


def test_cpu_matmul_rates_are_measured_once_and_shared_through_the_cache(monkeypatch, tmp_path):
    measured = []

    def measure():
        measured.append(1)
        return {"cpu": "x", "torch": "y", "fp32_gflops": 100.0 + len(measured),
                "bf16_gflops": 50.0}  # fmt: skip

    monkeypatch.setattr(loading, "measure_cpu_matmul", measure)
    first = loading.cpu_matmul_rates(str(tmp_path))
    again = loading.cpu_matmul_rates(str(tmp_path))
    assert measured == [1]
    assert first == again and first["fp32_gflops"] == 101.0


def test_cpu_matmul_measurement_gives_positive_rates_for_both_dtypes():
    rates = loading.measure_cpu_matmul()
    assert rates["fp32_gflops"] > 0 and rates["bf16_gflops"] > 0
    assert rates["torch"] == torch.__version__


def test_native_bf16_detection_agrees_with_the_cpu_flags():
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    assert loading.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_candidate_rows_join_titles_images_and_item_summaries(tmp_path):
    import pyarrow as pa

    from msr_ray.data.schemas import SAMPLES
    from msr_ray.run.method_inputs import candidate_rows
    from msr_ray.run.rundir import RunDir
    from tests.stages.conftest import write_dataset

    run = RunDir(str(tmp_path))
    write_dataset(run, {"u": ["a", "b"]}, {"a": "About a.", "b": "About b.", "c": "About c."})
    rows = [
        {
            "split": split,
            "user_id": "u",
            "item_id": item,
            "label": label,
            "group": f"{split}:u",
            "step": 2,
            "summary": "Likes a.",
            "position": 1 if split == "train" else 2,
        }
        for split, item, label in (("train", "b", 1), ("train", "c", 0), ("test", "c", 1))
    ]
    with run.stage_output("samples") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=SAMPLES))
    plain = candidate_rows(run, PipelineConfig(), ("train",)).to_pylist()
    assert [(r["item_id"], r["title"]) for r in plain] == [("b", "Title b"), ("c", "Title c")]
    assert "description" not in plain[0]
    config = PipelineConfig(recommender=RecommenderConfig(candidate_description=True))
    described = candidate_rows(run, config, ("train", "test")).to_pylist()
    assert [(r["item_id"], r["description"]) for r in described] == [
        ("b", "About b."),
        ("c", "About c."),
        ("c", "About c."),
    ]
    # The items before each target, with their summaries' first words.
    config = PipelineConfig(recommender=RecommenderConfig(recent_items=3, recent_words=1))
    recent = candidate_rows(run, config, ("train", "test")).to_pylist()
    assert [r["recent"] for r in recent] == [
        ["'Title a': About"],
        ["'Title a': About"],
        ["'Title a': About", "'Title b': About"],
    ]
    assert "most recent items, oldest first: 1. 'Title a': About; 2. 'Title b': About." in (
        prompts_text(config, recent[2])
    )
