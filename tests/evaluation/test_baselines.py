import numpy as np
import pyarrow as pa

from msr_ray.config import SamplesConfig, load_config
from msr_ray.data.sampling import build_samples
from msr_ray.data.schemas import ITEMS, SEQUENCES
from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.run.rundir import RunDir

NUM_ITEMS = 30


def _cyclic_run(run_dir) -> RunDir:
    """Every user walks the items in a fixed cycle from a random start: pure sequence signal,
    uniform popularity."""
    rng = np.random.default_rng(0)
    items = [
        {"item_id": f"i{n}", "title": f"T{n}", "text": "", "image_paths": [], "image_bytes": []}
        for n in range(NUM_ITEMS)
    ]
    rows = []
    for u in range(90):
        start = int(rng.integers(NUM_ITEMS))
        for pos in range(12):
            split = "test" if pos == 11 else "valid" if pos == 10 else "train"
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{(start + pos) % NUM_ITEMS}",
                    "timestamp": pos,
                    "position": pos,
                    "split": split,
                }
            )
    run = RunDir(str(run_dir))
    sequences = pa.Table.from_pylist(rows, schema=SEQUENCES)
    with run.stage_output("dataset") as out:
        out.write_table(pa.Table.from_pylist(items, schema=ITEMS), "items.parquet")
        out.write_table(sequences, "sequences.parquet")
    samples, _ = build_samples(
        sequences, None, [i["item_id"] for i in items], SamplesConfig(eval_negatives=15)
    )
    with run.stage_output("samples") as out:
        out.write_table(samples)
    return run


def test_sequence_models_beat_popularity_on_candidates_of_the_samples(tmp_path):
    run = _cyclic_run(tmp_path)
    config = load_config(
        None,
        [
            f"run_dir={tmp_path}",
            "baselines.epochs=80",
            "baselines.learning_rate=0.005",
            "baselines.hidden_size=32",
            "evaluate.bootstrap_samples=50",
        ],
    )
    results = {m: run_baseline(config, run, m) for m in ("pop", "sasrec", "gru4rec")}
    hr = {m: r["metrics"]["test"]["hr@1"]["mean"] for m, r in results.items()}
    assert hr["pop"] < 0.3
    assert hr["sasrec"] > 0.8 and hr["gru4rec"] > 0.8, hr
    assert results["sasrec"]["epoch_losses"][-1] < results["sasrec"]["epoch_losses"][0]
    for name in ("sasrec", "gru4rec"):
        values = run.read_table("scores", name)["score"].to_numpy()
        assert np.isfinite(values).all() and values.std() > 0
    samples = run.read_table("samples")
    expected = sorted(
        (r["group"], r["item_id"]) for r in samples.to_pylist() if r["split"] != "train"
    )
    for name in ("popularity", "sasrec", "gru4rec"):
        scores = run.read_table("scores", name).to_pylist()
        assert sorted((r["group"], r["item_id"]) for r in scores) == expected
        assert run.read_json("baselines", name, "metrics.json")[name]["test"]["groups"] == 90


def test_a_baseline_is_the_same_whatever_ran_before_it_in_the_process(tmp_path):
    """The demo trains SASRec after other work in one process: its scores must not
    depend on what drew from torch's global generator before."""
    import torch

    run = _cyclic_run(tmp_path)
    config = load_config(
        None, [f"run_dir={tmp_path}", "baselines.epochs=2", "evaluate.bootstrap_samples=10"]
    )
    scores = []
    for draws in (0, 1000):
        torch.rand(draws)  # other work in the process
        run_baseline(config, run, "sasrec")
        scores.append(run.read_table("scores", "sasrec")["score"].to_pylist())
    assert scores[0] == scores[1]
