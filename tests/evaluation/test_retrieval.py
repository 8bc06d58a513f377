"""Kept baselines: what `msr-ray baseline` learned, loaded back."""

import pytest

from msr_ray.config import load_config
from msr_ray.evaluation.baselines.data import sequence_data
from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.run.rundir import MissingStageOutput, RunDir
from msr_ray.run.tables import read_dataset
from tests.evaluation.test_baselines import _cyclic_run


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """The cyclic run with every baseline trained (briefly) and kept."""
    run_dir = tmp_path_factory.mktemp("kept")
    run = _cyclic_run(run_dir)
    config = load_config(
        None,
        [
            f"run_dir={run_dir}",
            "baselines.epochs=2",
            "baselines.hidden_size=16",
            "baselines.num_layers=1",
            "evaluate.bootstrap_samples=10",
        ],
    )
    for model in ("pop", "sasrec", "gru4rec"):
        run_baseline(config, run, model)
    return run


@pytest.mark.parametrize("name", ["popularity", "sasrec", "gru4rec"])
def test_a_kept_baseline_loads_back_with_the_scores_it_was_trained_to_give(kept_run, name):
    run = kept_run
    marker = run.completion(f"baselines/{name}")
    assert {"model.json", "metrics.json"} <= set(marker["files"]) and marker["fingerprint"]
    assert ("model.pt" in marker["files"]) is (name != "popularity")
    kept = KeptBaseline.read(run, name)
    assert kept.kind == name and kept.hyperparameters["hidden_size"] == 16
    items, sequences = read_dataset(run)
    assert kept.items == sorted(items["item_id"].to_pylist())
    data = sequence_data(items, sequences)
    rows = run.read_table("scores", name).to_pylist()
    prefixes = [data.prefix(r["user_id"], r["split"]) for r in rows]
    scores = kept.catalogue_scores(prefixes)
    again = [float(scores[n, data.vocab[r["item_id"]] - 1]) for n, r in enumerate(rows)]
    assert again == pytest.approx([r["score"] for r in rows], abs=1e-5)
    if name == "popularity":  # 10 train items in each of 90 sequences
        assert sum(kept.counts) == 900 and len(kept.counts) == 30


def test_a_baseline_kept_before_models_were_kept_says_how_to_train_it(tmp_path):
    run = RunDir(str(tmp_path))
    with run.stage_output("baselines/gru4rec") as out:
        out.write_bytes(b"{}", "metrics.json")
    with pytest.raises(MissingStageOutput, match="msr-ray baseline --model gru4rec"):
        KeptBaseline.read(run, "gru4rec")
    with pytest.raises(MissingStageOutput, match="msr-ray baseline --model pop`"):
        KeptBaseline.read(run, "popularity-sampled")
