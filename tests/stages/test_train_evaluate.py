import json

import numpy as np
import pytest

from msr_ray.config import with_overrides
from msr_ray.method.recommender import Recommender
from msr_ray.run.method_inputs import adapter_dir, candidate_rows
from msr_ray.run.pipeline import run_stage
from msr_ray.run.registry import TRAIN_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.stages.evaluate import CandidateScorer
from tests.conftest import write_easy_task


def _logs(run: RunDir, epoch: int) -> list[dict]:
    rows = []
    for rank in (0, 1):
        text = run.read_text("train_logs", f"epoch-{epoch:03d}-rank-{rank}.jsonl")
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


def test_training_recovers_from_injected_failure_and_learns(trained):
    config, run, summary = trained
    assert summary["final"]["epoch"] == 2 and summary["num_workers"] == 2
    assert run.exists("_train_failure_injected_1")
    # Epoch 1 ran in the second attempt, which started from the epoch-0 checkpoint.
    assert {r["resumed_at_epoch"] for r in _logs(run, 1)} == {1}
    first, last = _logs(run, 0), _logs(run, 2)
    mean = lambda rows: sum(r["loss"] for r in rows) / len(rows)  # noqa: E731
    assert mean(last) < mean(first) - 0.5
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in last)
    assert run_stage("train", config)["skipped"] is True
    # The sealed adapter is all that is kept: the trainer's checkpoints are gone.
    assert run.exists(TRAIN_OUTPUT) and not run.exists("_parts", TRAIN_OUTPUT)


def test_training_is_tracked_in_one_mlflow_run_across_the_restart(trained, monkeypatch):
    config, run, summary = trained
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    assert summary["tracking_uri"] == f"file://{run.root}/tracking"
    client = MlflowClient(summary["tracking_uri"])
    experiment = client.get_experiment_by_name("msr-ray")
    (tracked,) = client.search_runs([experiment.experiment_id])  # the restart continued it
    run_id = tracked.info.run_id
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["train.lora_r"] == "16"
    assert tracked.data.params["mllm.name"] == config.mllm.name
    steps = summary["train_rows"] // (config.train.num_workers * config.train.micro_batch_size)
    losses = client.get_metric_history(run_id, "loss")
    assert {m.step for m in losses} == set(range(3 * steps))  # every step of 3 epochs
    aucs = client.get_metric_history(run_id, "valid_auc")
    assert sorted(m.step for m in aucs) == [steps, 2 * steps, 3 * steps]
    assert aucs[-1].value == pytest.approx(summary["final"]["valid_auc"])
    adapter = {a.path for a in client.list_artifacts(run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= adapter


def test_a_killed_worker_ends_where_an_uninterrupted_run_ends(trained, tmp_path):
    """The drill's worker process is SIGKILLed at epoch 1; compare with no failure at all."""
    config, run, summary = trained
    clean = with_overrides(
        config, [f"run_dir={tmp_path}", "train.fail_once_at_epoch=null", "train.max_failures=0"]
    )
    write_easy_task(RunDir(clean.run_dir))
    uninterrupted = run_stage("train", clean)
    assert not (tmp_path / "_train_failure_injected_1").exists()
    for key in ("epoch", "samples"):
        assert summary["final"][key] == uninterrupted["final"][key]
    assert summary["final"]["train_loss"] == pytest.approx(
        uninterrupted["final"]["train_loss"], abs=0.1
    )
    assert summary["final"]["valid_auc"] == pytest.approx(
        uninterrupted["final"]["valid_auc"], abs=0.1
    )


def test_every_validation_row_is_scored_once_across_the_workers(trained):
    """The validation rows are split over both workers and their scores all-gathered: the
    epoch's AUC covers every row once and equals one process scoring them all."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from msr_ray.evaluation.metrics import per_group

    config, run, summary = trained
    assert summary["final"]["valid_rows"] == summary["valid_rows"] == 4 * 6
    valid = candidate_rows(run, config, ("valid",))
    groups = sorted(set(valid["group"].to_pylist()))[:4]
    valid = valid.filter(pc.is_in(valid["group"], value_set=pa.array(groups)))
    scores = Recommender.load(config, adapter_dir(run)).score(valid.to_pylist())
    table = pa.table({"group": valid["group"], "label": valid["label"], "score": scores})
    expected = float(per_group(table, [1])["auc"].mean())
    assert summary["final"]["valid_auc"] == pytest.approx(expected, abs=1e-6)


def test_group_slices_keep_groups_whole_and_gathered_auc_ignores_the_split():
    import pyarrow as pa

    from msr_ray.run.blocks import group_slices
    from msr_ray.training.recipe import gathered_auc

    groups = [f"g{n // 3}" for n in range(15)]  # 5 groups of 3 rows
    labels = [1 if n % 3 == 0 else 0 for n in range(15)]
    scores = [0.9, 0.1, 0.2, 0.1, 0.5, 0.3, 0.6, 0.7, 0.2, 0.4, 0.4, 0.9, 0.8, 0.1, 0.1]
    table = pa.table({"group": groups, "label": pa.array(labels, pa.int8()), "score": scores})
    blocks = group_slices(table, "group", 2)  # 5 groups, 2 a block
    assert [b.num_rows for b in blocks] == [6, 6, 3]
    assert pa.concat_tables(blocks).equals(table)
    assert all(
        len({*b["group"].to_pylist()} & {*c["group"].to_pylist()}) == 0
        for b in blocks
        for c in blocks
        if b is not c
    )
    whole = gathered_auc([table.to_pydict()])
    split = gathered_auc(
        [
            table.slice(0, 4).to_pydict(),
            {"group": [], "label": [], "score": []},
            table.slice(4).to_pydict(),
        ]
    )
    assert whole == split == (pytest.approx((1 + 0 + 0.5 + 0.25 + 1) / 5), 15)
    assert gathered_auc([{"group": [], "label": [], "score": []}]) == (None, 0)


def test_adapter_is_standard_peft_and_evaluate_beats_chance(trained):
    config, run, _ = trained
    from peft import PeftConfig

    adapter = adapter_dir(run)
    assert PeftConfig.from_pretrained(adapter).r == 16
    summary = run_stage("evaluate", config)
    test = summary["metrics"]["test"]
    assert test["groups"] == 8 and test["auc"]["mean"] > 0.8
    scores = run.read_table("scores", "mllm-msr").to_pylist()
    assert {r["split"] for r in scores} == {"valid", "test"}
    metrics_file = run.read_json("eval", "metrics.json")
    assert metrics_file["mllm-msr"]["test"]["auc"] == test["auc"]
    # The adapter loaded with PEFT, merged, reproduces the stage's scores.
    scorer = CandidateScorer(config, adapter)
    rows = candidate_rows(run, config, ("test",)).slice(0, 6)
    again = scorer(rows).to_pylist()
    by_key = {(r["group"], r["item_id"]): r["score"] for r in scores}
    for row in again:
        assert row["score"] == pytest.approx(by_key[(row["group"], row["item_id"])], abs=1e-5)


def _ranks(values: list[float]) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def test_bf16_scores_rank_like_fp32_scores(trained):
    config, run, _ = trained
    rows = candidate_rows(run, config, ("valid", "test")).to_pylist()
    scores = {
        dtype: Recommender.load(
            with_overrides(config, [f"mllm.dtype={dtype}"]), adapter_dir(run)
        ).score(rows)
        for dtype in ("float32", "bfloat16")
    }
    spearman = np.corrcoef(_ranks(scores["float32"]), _ranks(scores["bfloat16"]))[0, 1]
    assert spearman >= 0.95, spearman
    assert max(abs(a - b) for a, b in zip(*scores.values(), strict=True)) < 0.1


def test_training_order_keeps_rows_sharing_a_prefix_together():
    import pyarrow as pa

    from msr_ray.training.row_order import prefix_unit_order

    users = [f"u{n % 5}" for n in range(40)]
    steps = [3 + 3 * (n % 2) for n in range(40)]
    groups = [f"train:{users[n]}:{steps[n]}:{n % 4 < 2}" for n in range(40)]
    table = pa.table({"user_id": users, "step": steps, "group": groups})
    order = prefix_unit_order(table, seed=1)
    assert sorted(order.tolist()) == list(range(40))
    keys = [(users[n], steps[n]) for n in order]
    runs = [k for n, k in enumerate(keys) if n == 0 or k != keys[n - 1]]
    assert len(runs) == len(set(keys)) == 10  # each unit is one contiguous run
    in_order = [groups[n] for n in order]
    group_runs = [g for n, g in enumerate(in_order) if n == 0 or g != in_order[n - 1]]
    assert len(group_runs) == len(set(groups)) == 20  # and each training group too
    assert order.tolist() == prefix_unit_order(table, seed=1).tolist()
    assert order.tolist() != prefix_unit_order(table, seed=2).tolist()


def test_deepspeed_is_kept_from_compiling_its_inference_comm_kernel():

    from deepspeed.comm.torch import build_shm_op

    from msr_ray.training.recipe import skip_inference_comm_kernel

    skip_inference_comm_kernel()
    assert build_shm_op() is None  # nothing compiled, nothing loaded


def test_the_workers_adamw_is_fused_on_cpu_and_steps_as_the_multi_tensor_one():
    import torch

    from msr_ray.config import TrainConfig
    from msr_ray.training.recipe import adamw

    cfg = TrainConfig(learning_rate=1e-2, weight_decay=0.1)
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [torch.randn_like(t) for t in start]
    finals = []
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = adamw(params, cfg, torch.device("cpu"))
        if not fused:
            optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, foreach=True)
        assert optimizer.defaults["fused"] is (True if fused else None)
        for _ in range(3):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        finals.append(params)
    for a, b, s in zip(*finals, start, strict=True):
        assert not torch.equal(a, s)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
