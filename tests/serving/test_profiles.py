"""Online profile updates (ProfileStore, no Ray): durable, exactly once, equal to a
recomputation of `summarize-users` over the extended history."""

import pytest

from msr_ray.run.registry import USER_SUMMARIES_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.serving.profiles import ProfileStore, user_key
from msr_ray.serving.requests import RequestError
from msr_ray.stages.users import UserShard, persisted
from tests.stages.conftest import tiny_config, write_dataset

ITEMS = {f"i{n}": f"A clip about topic {n % 4}." for n in range(12)}
HISTORY = [f"i{n}" for n in range(11)]


def summarized(run_dir, histories):
    """A run whose user_summaries were made by the summarize-users shard code."""
    config = tiny_config(run_dir)
    run = RunDir(str(run_dir))
    write_dataset(run, histories, ITEMS)
    shard = UserShard(0, 1, config, "k")
    while shard.advance_round()["pending"]:
        pass
    with run.stage_output(USER_SUMMARIES_OUTPUT) as out:
        out.write_table(persisted(run, "k"), "summaries.parquet")
    return config, run, shard


def test_events_equal_offline_recomputation_survive_a_restart_and_apply_once(tmp_path):
    config, run, _ = summarized(tmp_path / "served", {"u": HISTORY[:7], "v": HISTORY[:4]})
    store = ProfileStore(run, config)
    assert store.latest("u")["step"] == 7 and store.latest("u")["online_items"] == []

    first = store.append("u", ("i7", "i8"), "e1")
    assert first["step"] == 9 and first["duplicate"] is False and first["events"] == 1
    second = store.append("u", ("i9", "i10"), None)
    assert second["step"] == 11 and len(second["event_id"]) == 32
    again = store.append("u", ("i7", "i8"), "e1")  # a retried post: not applied twice
    assert again["duplicate"] is True and again["step"] == 11 and again["events"] == 2
    with pytest.raises(RequestError, match="'e1' was already accepted") as conflict:
        store.append("u", ("i9",), "e1")  # the same event_id with other items
    assert conflict.value.status == 409 and conflict.value.reason == "event_conflict"
    assert store.latest("u")["events"] == 2 and store.latest("u")["step"] == 11

    restarted = ProfileStore(RunDir(run.root), config)  # a new replica: only the run dir
    after = restarted.latest("u")
    assert after == {k: second[k] for k in after}
    assert after["online_items"] == ["i7", "i8", "i9", "i10"]
    assert restarted.latest("v")["step"] == 4  # other users untouched

    _, _, offline = summarized(tmp_path / "offline", {"u": HISTORY, "v": HISTORY[:4]})
    state = offline.users["u"]
    assert after["summary"] == state.summaries[11]
    assert sorted(state.summaries) == [3, 6, 9, 11]

    with pytest.raises(RequestError, match="unknown item") as unknown:
        restarted.append("u", ("nope",), None)
    assert unknown.value.status == 404
    with pytest.raises(RequestError, match="no preference summary"):
        restarted.append("stranger", ("i1",), None)
    assert restarted.latest("u")["events"] == 2  # refused events leave no trace


def test_an_event_persisted_before_a_crash_is_summarized_on_restart(tmp_path):
    config, run, _ = summarized(tmp_path / "served", {"u": HISTORY[:7]})
    # A replica that died after writing the event and before writing its summary.
    event = {"user_id": "u", "event_id": "e1", "items": ["i7"], "seq": 0, "received_at": 0}
    run.write_json(event, "profiles", "events", user_key("u"), "00000000.json")
    store = ProfileStore(run, config)
    assert not store.is_current("u")
    latest = store.latest("u")
    assert latest["step"] == 8 and latest["online_items"] == ["i7"]
    assert run.list_files("profiles", "summaries", store.base, user_key("u")) == ["00000008.json"]
    assert store.is_current("u")


def test_ugly_ids_a_dataset_keeps_append_and_survive_a_restart(tmp_path):
    users = {"a b?c#d%2F&+'\"<x>": HISTORY[:4], "ünï ☃ 🎬": HISTORY[:4], "é": HISTORY[:4]}
    config, run, _ = summarized(tmp_path / "served", users)
    store = ProfileStore(run, config)
    for user in users:
        answer = store.append(user, ("i7", "i8"), "e1")
        assert answer["user_id"] == user and answer["step"] == 6 and answer["events"] == 1
    restarted = ProfileStore(RunDir(run.root), config)
    assert all(restarted.latest(u)["online_items"] == ["i7", "i8"] for u in users)
