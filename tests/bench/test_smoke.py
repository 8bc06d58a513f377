"""Every benchmark runs in its smoke mode (tiny models, a few seconds of work), so a rename
can not break one unseen. `quality.py`, `users.py` and `gpu_check.py` have files of their
own; the benches that read a finished run get a copy of the tiny pipeline's. They run in
this process (the session's Ray, no second start-up)."""

import re

from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.run.method_inputs import trained_config
from msr_ray.run.rundir import RunDir
from tests.conftest import shared_dataset

RATIO = r"ratio[^\n]*: \d+\.\d\dx"


def test_generation_bench(bench):
    out = bench("generation", "--smoke")
    assert "tiny LLM, prompts=3 max_new_tokens=4" in out
    assert re.search(RATIO + r" \(identical outputs: 3/3\)", out), out


def test_scoring_bench(bench):
    out = bench("scoring", "--smoke")
    assert "tiny MLLM, users=2 candidates/user=3" in out
    assert re.search(r"shared-cached +6 candidates in", out), out
    assert re.search(r"identical rankings \d/2", out), out


def test_items_bench(bench):
    out = bench("items", "--smoke", f"--dataset={shared_dataset('movielens-1m')}")
    assert "tiny MLLM, items=4 max_new_tokens=4 batch_size=2" in out
    assert re.search(RATIO, out), out


def test_train_bench(bench):
    out = bench("train", "--smoke", "--compare=frozen-cache", "--epochs=2")
    share = r"samples/s in the last epoch's loop, \d+% of the measured matmul rate \(24 rows"
    assert re.search(r"no replay +\d+\.\d\d " + share, out), out
    assert re.search(r"replay +\d+\.\d\d " + share, out), out
    assert re.search(r"one thread \d+ GFLOP/s fp32", out), out
    assert re.search(RATIO, out), out


def test_demo_signal_bench(bench, finished_run):
    out = bench("demo_signal", f"--run-dir={finished_run}")
    assert re.search(r"^users_naming_current +\d\.\d{3}$", out, re.M), out


def test_summaries_bench(bench, finished_run):
    out = bench("summaries", f"--run-dir={finished_run}", "--variant=short=llm.max_new_tokens=3")
    assert re.search(r"^12 users, block size \d+$", out, re.M), out
    assert re.search(r"^short +current \d\.\d\d +only wrong", out, re.M), out


def test_learning_bench(bench, finished_run):
    out = bench("learning", f"--run-dir={finished_run}", "--smoke", "--arm=oracle=summaries:oracle")
    assert "oracle: summaries:oracle" in out and "0.0 min  epoch 0.00  test AUC" in out
    probe = r"linear probe of the frozen model \(test AUC\): layer 1 \d\.\d{3}  layer 2 \d\.\d{3}"
    assert re.search(probe, out), out
    assert re.search(r"^oracle +\d\.\d{3} +\d\.\d{3} +\d\.\d$", out, re.M), out


def test_serving_bench(bench, finished_run):
    run = RunDir(finished_run)
    run_baseline(trained_config(run), run, "pop")  # the two-stage request's retriever
    out = bench("serving", f"--run-dir={finished_run}", "--smoke", "--retriever=popularity")
    assert re.search(r"1 replica, batching on,  2 clients: p50 .*\(2 requests, 0 failed\)", out)
    two_stage = r"1 clients, two-stage \(popularity top 20 of \d+ items \+ rerank\): p50 .*"
    assert re.search(two_stage + r"\(1 requests, 0 failed\)", out), out
    assert re.search(r"kill drill \(2 replicas, 2 clients\): \d+ requests, 0 failed", out), out
