"""How fast the recommender learns: test AUC against training minutes, arms side by side.

    .venv/bin/python bench/learning.py --run-dir runs/demo \
        --arm pipeline= --arm oracle=summaries:oracle --minutes 6

Reads a finished synthetic run (``make demo``: dataset, item summaries, user summaries
and samples) and, for each arm (a name and comma-separated config overrides of the run's
config; ``summaries:oracle`` swaps every preference summary for one naming the user's
latent current genre at that step), fine-tunes a fresh adapter of the arm's recipe
(``train.trainable``) on the run's training rows in this process (no Ray, no DeepSpeed:
the same losses, optimizer, schedule and frozen-layer replay as the train stage) for
``--minutes`` of training, and scores ``--eval-users`` test lists after every
``--eval-every`` training minutes (``loss:decision`` trains the binary cross-entropy of
the Yes-vs-No margin alone). Prints each arm's curve (training minutes, epochs, test
AUC, mean loss of the last 20 steps) and a table of the arms' best and final AUC.
Scoring time does not count as training time. The oracle arm bounds what the
recommender can learn from summaries in that many minutes; the pipeline arm is what
``make demo`` trains on. ``--smoke`` trains for 3 seconds and scores 2 lists (the test
suite runs it on a tiny run).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from msr_ray.config import PipelineConfig, parse_config, with_overrides
from msr_ray.data.sampling import build_samples
from msr_ray.data.synthetic_signal import _World, auc
from msr_ray.method.recommender import Recommender
from msr_ray.models.frozen_layers import FrozenLayerCache
from msr_ray.models.loading import load_model
from msr_ray.models.lora import frozen_layers, lora_config
from msr_ray.models.prompts import PREFERENCE_PREFIX
from msr_ray.models.scoring import answer_margins, encode_prompts, score_shared
from msr_ray.run.method_inputs import candidate_rows
from msr_ray.run.rundir import RunDir
from msr_ray.run.tables import read_dataset
from msr_ray.training.losses import objective_loss
from msr_ray.training.recipe import adamw, linear_schedule
from msr_ray.training.row_order import prefix_unit_order


def oracle_summaries(config: PipelineConfig, rows: pa.Table) -> pa.Table:
    """``rows`` with each summary replaced by the user's latent genre at its step."""
    world = _World.of(config.prepare.synthetic)
    text = []
    for user, step in zip(rows["user_id"].to_pylist(), rows["step"].to_pylist(), strict=True):
        genre = world.users[user].genre_at(max(0, step - 1))
        text.append(f"{PREFERENCE_PREFIX} {genre} videos.")
    return rows.set_column(rows.schema.get_field_index("summary"), "summary", pa.array(text))


def test_lists(rows: pa.Table, users: int) -> pa.Table:
    """The first ``users`` test lists (by group name)."""
    groups = sorted(set(rows["group"].to_pylist()))[:users]
    return rows.filter(pc.is_in(rows["group"], value_set=pa.array(groups, pa.string())))


def mean_auc(recommender: Recommender, rows: pa.Table) -> float:
    """Mean per-list AUC of the recommender's scores."""
    recommender.loaded.model.eval()
    with torch.inference_mode():
        scores = recommender.score(rows.to_pylist())
    lists: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for g, y, s in zip(rows["group"].to_pylist(), rows["label"].to_pylist(), scores, strict=True):
        lists[g][0].append(s)
        lists[g][1].append(y)
    return float(np.mean([auc(s, y) for s, y in lists.values()]))


def answer_states(recommender: Recommender, rows: pa.Table, layers: list[int]) -> torch.Tensor:
    """(rows, layers, hidden) hidden states at the answer position of every row's prompt,
    as the frozen model computes them (the outputs of the given decoder layers, 1-based),
    read off the scorer's own shared-prefix pass, one candidate list at a time."""
    loaded = recommender.loaded
    decoder = loaded.model.get_decoder()
    kept: list[list[torch.Tensor]] = [[] for _ in layers]

    def keeper(k: int):
        def keep(module, inputs, output):
            kept[k].append((output[0] if isinstance(output, tuple) else output)[:, -1].float())

        return keep

    handles = [decoder.layers[n - 1].register_forward_hook(keeper(k)) for k, n in enumerate(layers)]
    by_group: dict[str, list[int]] = defaultdict(list)
    for n, group in enumerate(rows["group"].to_pylist()):
        by_group[group].append(n)
    states = torch.zeros(rows.num_rows, len(layers), decoder.config.hidden_size)
    try:
        for members in by_group.values():
            prompts = recommender.prompts(rows.take(pa.array(members)).to_pylist())
            with torch.inference_mode():
                score_shared(loaded, prompts)  # its last pass reads the candidates' tokens
            for k in range(len(layers)):
                states[members, k] = kept[k][-1]
    finally:
        for handle in handles:
            handle.remove()
    return states


def fit_logistic(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of an L2-regularised logistic regression of ``y`` on ``x``."""
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        loss = loss + 1e-2 * weight.square().sum() / len(y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def probe_aucs(
    config: PipelineConfig, train: pa.Table, test: pa.Table, layers: list[int]
) -> dict[int, float]:
    """Test AUC of a logistic regression on the frozen model's answer-position state at
    each layer, fitted on the training rows: what a linear readout of the untrained
    model reaches, before any fine-tuning."""
    recommender = Recommender(load_model(config.mllm, "mllm"), config)
    x_train = answer_states(recommender, train, layers)
    x_test = answer_states(recommender, test, layers)
    y = torch.tensor(train["label"].to_pylist(), dtype=torch.float32)
    result = {}
    for k, layer in enumerate(layers):
        mean, std = x_train[:, k].mean(0), x_train[:, k].std(0) + 1e-6
        weight, bias = fit_logistic((x_train[:, k] - mean) / std, y)
        scores = (((x_test[:, k] - mean) / std) @ weight + bias).tolist()
        lists: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for g, label, score in zip(
            test["group"].to_pylist(), test["label"].to_pylist(), scores, strict=True
        ):
            lists[g][0].append(score)
            lists[g][1].append(label)
        result[layer] = float(np.mean([auc(s, t) for s, t in lists.values()]))
    return result


def decision_loss(model, loaded, prompts, answers, prefix_gradient: bool, frozen) -> torch.Tensor:
    """Binary cross-entropy of the Yes-vs-No margin alone (the pointwise loss without the
    answer's fixed tokens, which take two thirds of its weight)."""
    encoded = encode_prompts(loaded, prompts)
    margins = answer_margins(model, loaded, encoded, prefix_gradient, frozen)
    labels = torch.tensor([float(a) for a in answers], device=margins.device)
    return torch.nn.functional.binary_cross_entropy_with_logits(margins, labels)


def arm_samples(config: PipelineConfig, base: PipelineConfig, run: RunDir) -> pa.Table | None:
    """The samples an arm's ``samples.*`` settings build from the run's summaries (None
    when they are the run's own, ``base``'s)."""
    if config.samples == base.samples:
        return None
    items, sequences = read_dataset(run)
    table, _ = build_samples(
        sequences, run.read_table("user_summaries"), items["item_id"].to_pylist(), config.samples
    )
    return table


def run_arm(
    config: PipelineConfig,
    base: PipelineConfig,
    run: RunDir,
    oracle: bool,
    decision_only: bool,
    args,
) -> list[tuple]:
    """Train one arm; the curve as (training minutes, epochs, test AUC, last loss)."""
    from peft import get_peft_model

    cfg = config.train
    torch.manual_seed(cfg.seed)
    train = candidate_rows(run, config, ("train",), arm_samples(config, base, run))
    test = test_lists(candidate_rows(run, config, ("test",)), args.eval_users)
    if oracle:
        train, test = oracle_summaries(config, train), oracle_summaries(config, test)
    if args.probe_layers:
        probes = probe_aucs(config, train, test, args.probe_layers)
        cells = "  ".join(f"layer {layer} {value:.3f}" for layer, value in probes.items())
        print(f"  linear probe of the frozen model (test AUC): {cells}", flush=True)
    loaded = load_model(config.mllm, "mllm")
    model = get_peft_model(loaded.model, lora_config(cfg, loaded.model))
    loaded.model = model
    frozen_count = frozen_layers(cfg, model)
    frozen = (
        FrozenLayerCache.for_model(model, frozen_count)
        if frozen_count and cfg.cache_frozen_layers
        else None
    )
    recommender = Recommender(loaded, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(trainable, cfg, loaded.device)
    steps_per_epoch = train.num_rows // cfg.micro_batch_size
    scheduler = linear_schedule(optimizer, cfg, steps_per_epoch * cfg.epochs)
    curve = [(0.0, 0.0, mean_auc(recommender, test), float("nan"))]
    print(f"  0.0 min  epoch 0.00  test AUC {curve[-1][2]:.3f}", flush=True)
    trained, next_eval, losses = 0.0, args.eval_every * 60, []
    for epoch in range(cfg.epochs):
        order = prefix_unit_order(train, cfg.seed + epoch)
        rows = train.take(pa.array(order)).to_pylist()
        for step in range(steps_per_epoch):
            batch = rows[step * cfg.micro_batch_size : (step + 1) * cfg.micro_batch_size]
            started = time.perf_counter()
            model.train()
            prompts, answers = recommender.prompts(batch), [bool(r["label"]) for r in batch]
            if decision_only:
                loss = decision_loss(model, loaded, prompts, answers, cfg.prefix_gradient, frozen)
            else:
                loss, _ = objective_loss(
                    cfg.objective, model, loaded, prompts, answers, [r["group"] for r in batch],
                    cfg.max_length, cfg.prefix_gradient, frozen,
                )  # fmt: skip
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            trained += time.perf_counter() - started
            losses.append(loss.item())
            last = epoch == cfg.epochs - 1 and step == steps_per_epoch - 1
            if trained >= next_eval or last:
                next_eval += args.eval_every * 60
                point = (
                    trained / 60,
                    epoch + (step + 1) / steps_per_epoch,
                    mean_auc(recommender, test),
                    float(np.mean(losses[-20:])),
                )
                curve.append(point)
                print(
                    f"  {point[0]:.1f} min  epoch {point[1]:.2f}  test AUC {point[2]:.3f}  "
                    f"loss {point[3]:.3f}",
                    flush=True,
                )
            if trained >= args.minutes * 60:
                return curve
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--arm", action="append", default=[], help="NAME=k=v,k=v")
    parser.add_argument("--minutes", type=float, default=6.0, help="training minutes per arm")
    parser.add_argument("--eval-every", type=float, default=1.0, help="training minutes")
    parser.add_argument("--eval-users", type=int, default=25, help="test lists scored")
    parser.add_argument(
        "--probe-layers",
        default="12,18",
        help="comma-separated decoder layers (1-based) whose frozen answer-position state a "
        "logistic regression reads, per arm, before training ('' for none)",
    )
    parser.add_argument("--smoke", action="store_true", help="3 training seconds, 2 lists")
    args = parser.parse_args()
    args.probe_layers = [int(n) for n in args.probe_layers.split(",") if n]
    if args.smoke:
        args.minutes, args.eval_every, args.eval_users = 0.05, 0.025, 2
        args.probe_layers = [1, 2]  # the tiny MLLM's
    torch.set_num_threads(2)
    run = RunDir(args.run_dir)
    base = parse_config(run.read_text("config.yaml"), run.path("config.yaml"))
    results = {}
    for arm in args.arm or ["pipeline="]:
        name, _, overrides = arm.partition("=")
        settings = [o for o in overrides.split(",") if o]
        oracle, decision = "summaries:oracle" in settings, "loss:decision" in settings
        plain = [o for o in settings if o not in ("summaries:oracle", "loss:decision")]
        config = with_overrides(base, plain)
        print(f"{name}: {' '.join(settings) or 'the run config'}", flush=True)
        results[name] = run_arm(config, base, run, oracle, decision, args)
    print("\narm            best AUC  final AUC  minutes")
    for name, curve in results.items():
        print(
            f"{name:14s} {max(p[2] for p in curve):.3f}     {curve[-1][2]:.3f}      "
            f"{curve[-1][0]:.1f}"
        )


if __name__ == "__main__":
    main()
