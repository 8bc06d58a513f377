"""Kept baselines and the retriever over the whole catalogue."""

import pytest

from msr_ray.config import load_config
from msr_ray.evaluation.baselines.data import sequence_data
from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.evaluation.baselines.retrieval import Retriever
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


def _hand_set(counts: dict[str, int]) -> Retriever:
    """A retriever scoring item i with counts[i] whatever the history."""
    kept = KeptBaseline("popularity", list(counts), {}, counts=list(counts.values()))
    return Retriever(kept, "hand")


def test_top_n_is_the_best_scored_items_without_the_history():
    retriever = _hand_set({"a": 5, "b": 9, "c": 1, "d": 9, "e": 3, "f": 0})
    assert retriever.top_n([], 3) == [("b", 9.0), ("d", 9.0), ("a", 5.0)]  # ties: catalogue order
    assert retriever.top_n(["b", "new"], 3) == [("d", 9.0), ("a", 5.0), ("e", 3.0)]
    assert retriever.unknown_items == 1  # "new" was skipped and counted
    assert retriever.top_n(["b"], 3, exclude={"a", "gone"}) == [
        ("d", 9.0),
        ("e", 3.0),
        ("c", 1.0),
    ]
    assert retriever.top_n(["a", "b", "c", "d"], 5) == [("e", 3.0), ("f", 0.0)]
    histories = [["b", "new"], [], ["a", "b", "c", "d"]]
    assert retriever.top_n_batch(histories, 2) == [retriever.top_n(h, 2) for h in histories]
    assert retriever.unknown_items == 3
