import time
import warnings

import pytest
import yaml

from msr_ray.config import (
    ConfigError,
    PipelineConfig,
    dump_config,
    load_config,
    parse_config,
    with_overrides,
)


def test_defaults_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["users.block_size=4", "prepare.synthetic.num_users=7"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    again = load_config(path)
    assert again == config
    assert again.users.block_size == 4
    assert again.prepare.synthetic.num_users == 7


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "users": {"block_size": 2, "num_shards": 3},
                "train": {"lora_target_modules": ["q_proj"]},
            }
        )
    )
    config = load_config(
        path, ["users.block_size=5", "train.resources.num_gpus=1", "mllm.name=tiny"]
    )
    assert config.users.block_size == 5
    assert config.users.num_shards == 3
    assert config.train.use_gpu is True
    assert config.train.lora_target_modules == ["q_proj"]
    assert config.mllm.name == "tiny"


def test_old_keys_still_work_for_one_release_with_a_deprecation_warning(tmp_path):
    from msr_ray.config import DeprecatedKey, dump_config

    path = tmp_path / "old.yaml"
    path.write_text("train: {use_gpu: true, resources: {num_cpus: 4}}\nevaluate: {num_actors: 3}\n")
    with pytest.warns(DeprecatedKey) as caught:
        config = load_config(path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "'evaluate.num_actors' is deprecated" in messages[0]
    assert "min_actors: 3, max_actors: 3" in messages[0]
    assert "'train.use_gpu' is deprecated" in messages[1]
    assert (config.evaluate.min_actors, config.evaluate.max_actors) == (3, 3)
    assert config.train.resources.num_gpus == 1 and config.train.resources.num_cpus == 4
    assert config.train.use_gpu
    # The run records the new keys only, so it loads again without a warning.
    dumped = dump_config(config)
    assert "use_gpu" not in dumped and "num_actors" not in dumped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_config(dumped, "<dumped>") == config
    off = load_config(None, ["train.use_gpu=false", "train.resources.num_gpus=2"])
    assert off.train.resources.num_gpus == 0 and not off.train.use_gpu


def test_last_releases_demo_config_loads_with_one_warning_per_renamed_key(tmp_path):
    """The evaluate line of the demo config shipped before the recommender section."""
    from msr_ray.config import DeprecatedKey

    path = tmp_path / "old-demo.yaml"
    path.write_text(
        "evaluate: {splits: [test], batch_size: 8, num_actors: 2, bootstrap_samples: 1000}\n"
    )
    with pytest.warns(DeprecatedKey) as caught:
        config = load_config(path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and "'evaluate.batch_size' is deprecated" in messages[0]
    assert "recommender.batch_size: 8" in messages[0]
    assert config.recommender.batch_size == 8 and config.evaluate.max_actors == 2
    with pytest.warns(DeprecatedKey):
        both = load_config(None, ["evaluate.batch_size=8", "recommender.batch_size=16"])
    assert both.recommender.batch_size == 16  # the new key, when given, wins


def test_actor_pool_bounds_are_checked():
    with pytest.raises(ConfigError, match="min_actors must be <= max_actors"):
        load_config(None, ["evaluate.min_actors=3", "evaluate.max_actors=2"])


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("users:\n  blok_size: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "users.blok_size" in str(err.value)
    assert str(path) in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  num_workers: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "train.num_workers" in str(err.value)
    assert str(path) in str(err.value)


def test_override_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["users.block_size"])
    with pytest.raises(ConfigError, match="users.nope"):
        load_config(None, ["users.nope=1"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, ["run_dir=a", "run_dir.x=1"])
    with pytest.raises(ConfigError, match="key 'run_dir'"):
        load_config(None, ["run_dir.x=1"])


def test_constraints_are_checked():
    with pytest.raises(ConfigError, match="users.block_size"):
        load_config(None, ["users.block_size=0"])
    with pytest.raises(ConfigError, match="min_history"):
        load_config(None, ["prepare.synthetic.min_history=20", "prepare.synthetic.max_history=5"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_pipeline_config_is_complete():
    sections = set(PipelineConfig.model_fields)
    assert {"prepare", "items", "users", "samples", "train", "evaluate"} <= sections


def test_with_overrides_copies_and_validates():
    base = load_config(None, ["users.block_size=4", "train.epochs=2"])
    changed = with_overrides(base, ["users.mode=direct", "run_dir=elsewhere"])
    assert (changed.users.mode, changed.users.block_size, changed.train.epochs) == ("direct", 4, 2)
    assert changed.run_dir == "elsewhere" and base.users.mode == "recurrent"
    with pytest.raises(ConfigError, match="users.block_size"):
        with_overrides(base, ["users.block_size=0"])


def test_zero_stage_3_is_refused_with_the_reason():
    for stage in (0, 1, 2):
        assert (
            with_overrides(PipelineConfig(), [f"train.zero_stage={stage}"]).train.zero_stage
            == stage
        )
    with pytest.raises(ConfigError, match="zero_stage 3 is not supported: it partitions"):
        with_overrides(PipelineConfig(), ["train.zero_stage=3"])


def test_listwise_training_needs_whole_groups_per_micro_batch():
    ok = load_config(None, ["train.objective=listwise", "train.micro_batch_size=6"])
    assert ok.train.objective == "listwise"  # groups of 2 (1 negative per target)
    with pytest.raises(ConfigError, match="not a multiple of samples.train_negatives"):
        load_config(
            None,
            ["train.objective=listwise", "train.micro_batch_size=4", "samples.train_negatives=2"],
        )
    assert load_config(None, ["train.micro_batch_size=5"]).train.objective == "pointwise"


ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)]
    + ["prepare: {text_columns: *a9}"]
)


def test_a_yaml_alias_bomb_is_refused_at_once_with_a_short_error(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 700
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases \(\*a0\) are not allowed.*line 2") as err:
        load_config(path)
    assert time.perf_counter() - started < 2
    assert len(str(err.value)) < 500
    with pytest.raises(ConfigError, match="aliases"):
        load_config(None, ["prepare.text_columns=[*x]"])


def test_a_huge_bad_value_is_cut_short_in_the_error(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("users: {block_size: [" + ", ".join(["123456789"] * 20000) + "]}")
    with pytest.raises(ConfigError, match=r"users.block_size.*characters\)") as err:
        load_config(path)
    assert len(str(err.value)) < 500


@pytest.mark.parametrize(
    "override",
    [
        "train.learning_rate=.inf",
        "train.learning_rate=.nan",
        "train.max_grad_norm=-.inf",
        "items.batch_size=true",
        "train.epochs=false",
        "train.learning_rate=true",
        "train.fail_once_at_epoch=true",
    ],
)
def test_non_finite_numbers_and_booleans_for_numbers_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_booleans_stay_valid_where_a_switch_is_meant():
    config = load_config(None, ["train.prefix_gradient=false", "items.batch_size=3"])
    assert config.train.prefix_gradient is False and config.items.batch_size == 3
