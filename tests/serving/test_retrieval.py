"""The two-stage recommend's first stage in the ingress: kept retrievers, the popularity
fallback, and a retriever the run did not keep."""

import numpy as np
import pyarrow as pa
import pytest

from msr_ray.config import load_config
from msr_ray.data.histories import train_histories
from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.evaluation.baselines.retrieval import Retriever
from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.serving.catalog import ServingCatalog
from msr_ray.serving.requests import RequestError
from msr_ray.serving.retrieval import ServedRetrieval
from tests.evaluation.test_baselines import _cyclic_run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The cyclic run with SASRec kept (briefly trained), its catalogue as serving reads
    it, and the config the baselines were trained with."""
    run_dir = tmp_path_factory.mktemp("retrieval")
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
    run_baseline(config, run, "sasrec")
    return run, config, _catalog(run)


def _catalog(run, drop: str | None = None) -> ServingCatalog:
    items = run.read_table("dataset", "items.parquet")
    items = items.filter(pa.compute.not_equal(items["item_id"], drop or ""))
    histories = train_histories(run.read_table("dataset", "sequences.parquet"))
    return ServingCatalog(items, pa.table({"user_id": list(histories)}), histories=histories)


def test_a_kept_sequence_model_proposes_its_top_n_without_the_history(served):
    run, config, catalog = served
    retrieval = ServedRetrieval(run, config.baselines, catalog)
    history = catalog.item_history("u0", ["i29"])  # the batch history, then an online item
    proposal = retrieval.propose("sasrec", history, 5)
    assert proposal.retriever == "sasrec" and not proposal.fallback
    assert proposal.items == Retriever.from_run(run, "sasrec").top_n(history, 5)
    scores = [score for _, score in proposal.items]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert not {item for item, _ in proposal.items} & set(history)

    fewer = ServedRetrieval(run, config.baselines, _catalog(run, drop=proposal.items[0][0]))
    again = fewer.propose("sasrec", history, 5)  # never an item the catalogue lacks
    assert [item for item, _ in again.items] == [item for item, _ in proposal.items[1:]] + [
        item for item, _ in Retriever.from_run(run, "sasrec").top_n(history, 6)[5:]
    ]


def test_a_history_unknown_to_the_model_falls_back_to_popularity(served):
    run, config, catalog = served
    assert np.ptp(Retriever.from_run(run, "sasrec").catalogue_scores([[]])) == 0  # the defect
    retrieval = ServedRetrieval(run, config.baselines, catalog)
    empty = retrieval.propose("sasrec", [], 4)
    assert empty.retriever == "popularity (fallback: empty history)" and empty.fallback
    assert empty.items == retrieval.fallback.top_n([], 4)
    unknown = retrieval.propose("sasrec", ["posted-since"], 4)
    assert unknown.retriever == "popularity (fallback: no history item known to sasrec)"
    assert unknown.items == empty.items


def test_a_retriever_the_run_did_not_keep_is_a_503_that_names_it(served):
    run, config, catalog = served
    retrieval = ServedRetrieval(run, config.baselines, catalog)
    retrieval.preload("popularity")  # logged, not raised: requests with candidates still serve
    with pytest.raises(RequestError, match="baselines/popularity/") as info:
        retrieval.propose("popularity", ["i0"], 3)
    assert (info.value.status, info.value.reason) == (503, "no_retriever")
    assert "msr-ray baseline --model pop`" in str(info.value)

    run_baseline(config, run, "pop")  # kept meanwhile: the next request finds it
    proposal = retrieval.propose("popularity", ["i0"], 3)
    assert proposal.retriever == "popularity" and len(proposal.items) == 3
    kept = KeptBaseline.read(run, "popularity")
    assert retrieval.fallback.baseline.counts == kept.counts  # the fallback's counts are its
