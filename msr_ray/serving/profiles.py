"""Online profile updates: durable interaction events and the summaries they lead to (no Ray).

``POST /users/{id}/events`` lands here. An event is written to the run directory before
anything else happens, then the user's summary is advanced with the same recurrent step
as `summarize-users` (``msr_ray.method.preferences``), and each new (user, step) row is written
before the caller hears "accepted". Layout, under the served run directory::

    profiles/events/<user key>/<seq>.json                 # one file per accepted event
    profiles/summaries/<user_summaries version>/<user key>/<step>.json

Summaries are keyed by the batch ``user_summaries`` version they continue, so a rebuilt
batch stage never mixes with summaries written on top of the old one; the events (the
interactions themselves) outlive it and are summarized again. A store is driven by one
writer at a time (the ``ProfileUpdater`` deployment has one replica and serializes calls).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from msr_ray.config import PipelineConfig
from msr_ray.data.histories import summaries_by_user, summary_start, train_histories
from msr_ray.method.preferences import PreferenceSummarizer, UserState, apply
from msr_ray.models.prompts import HistoryItem
from msr_ray.run.method_inputs import history_catalog
from msr_ray.run.registry import DATASET_OUTPUT, PROFILES_OUTPUT, USER_SUMMARIES_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.serving.requests import RequestError, unknown_items, unknown_user


def user_key(user_id: str) -> str:
    """A file-name-safe key for any user id (ids may hold '/', '..', or be very long)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:32]


@dataclass
class Profile:
    """One user's batch history and summaries plus the accepted online events."""

    state: UserState
    batch_items: int
    events: list[dict[str, Any]] = field(default_factory=list)


class ProfileStore:
    """Profiles of one served run: batch state from the run, online events on top."""

    def __init__(self, run: RunDir, config: PipelineConfig):
        """Read the run's histories, batch summaries and catalog (the LLM loads on first use)."""
        run.require(DATASET_OUTPUT)
        run.require(USER_SUMMARIES_OUTPUT)
        self.run, self.config = run, config
        self.base = run.completion(USER_SUMMARIES_OUTPUT)["version"]
        items = run.read_table(DATASET_OUTPUT, "items.parquet", columns=["item_id"])
        self.item_ids = set(items["item_id"].to_pylist())
        self.histories = train_histories(run.read_table(DATASET_OUTPUT, "sequences.parquet"))
        self.batch_summaries = summaries_by_user(run.read_table(USER_SUMMARIES_OUTPUT))
        self.profiles: dict[str, Profile] = {}
        self.posted: dict[str, HistoryItem] = {}
        self._summarizer: PreferenceSummarizer | None = None

    @property
    def summarizer(self) -> PreferenceSummarizer:
        if self._summarizer is None:
            catalog = {**history_catalog(self.run), **self.posted}
            self._summarizer = PreferenceSummarizer(self.config, catalog)
        return self._summarizer

    def add_item(self, item_id: str, line: HistoryItem) -> None:
        """Take in an item posted online (``serving/items.py``): events may name it, and
        its ``line`` shows it in history prompts."""
        self.item_ids.add(item_id)
        self.posted[item_id] = line
        if self._summarizer is not None:
            self._summarizer.catalog[item_id] = line

    def _load(self, user_id: str) -> Profile:
        """The user's profile from the run: batch rows, then every persisted event and step."""
        if user_id not in self.batch_summaries:
            raise unknown_user(user_id)
        key = user_key(user_id)
        history = list(self.histories.get(user_id, []))
        first = summary_start(len(history), self.config.users.history_window)
        profile = Profile(
            UserState(history, dict(self.batch_summaries[user_id]), first),
            batch_items=len(history),
        )
        for name in self.run.list_files(PROFILES_OUTPUT, "events", key):
            event = self.run.read_json(PROFILES_OUTPUT, "events", key, name)
            profile.events.append(event)
            history.extend(event["items"])
        for name in self.run.list_files(PROFILES_OUTPUT, "summaries", self.base, key):
            row = self.run.read_json(PROFILES_OUTPUT, "summaries", self.base, key, name)
            profile.state.summaries[row["step"]] = row["summary"]
        return profile

    def profile(self, user_id: str) -> Profile:
        """The user's up-to-date profile: steps left pending by a crash are summarized now."""
        profile = self.profiles.get(user_id)
        if profile is None:
            profile = self.profiles[user_id] = self._load(user_id)
        self._catch_up(user_id, profile)
        return profile

    def is_current(self, user_id: str) -> bool:
        """True when the user's profile is loaded and nothing online waits for a summary."""
        profile = self.profiles.get(user_id)
        return profile is not None and self._done(profile)

    def _catch_up(self, user_id: str, profile: Profile) -> None:
        """Summarize every ready step, writing each row before it counts."""
        while not self._done(profile):
            steps = self.summarizer.ready_steps(profile.state)
            if not steps:
                raise RuntimeError(f"user {user_id!r}: no summarizable step, history unchanged")
            rows = self.summarizer.summarize([(user_id, profile.state, s) for s in steps])
            for row in rows:
                row["continues_version"] = self.base
                name = f"{row['step']:08d}.json"
                self.run.write_json(
                    row, PROFILES_OUTPUT, "summaries", self.base, user_key(user_id), name
                )
            apply({user_id: profile.state}, rows)

    @staticmethod
    def _done(profile: Profile) -> bool:
        """The batch state as it is, or the online history's last step summarized."""
        return not profile.events or len(profile.state.history) in profile.state.summaries

    def append(self, user_id: str, items: tuple[str, ...], event_id: str | None) -> dict[str, Any]:
        """Append an event (durably, exactly once per ``event_id``) and advance the summary.

        A repeated ``event_id`` with the same items is answered as a duplicate; with other
        items it is a 409 ``event_conflict`` that changes nothing."""
        profile = self.profile(user_id)
        earlier = [e for e in profile.events if event_id is not None and e["event_id"] == event_id]
        if earlier and earlier[0]["items"] != list(items):
            raise RequestError(
                f"event_id {event_id!r} was already accepted for user {user_id!r} with other "
                f"items ({len(earlier[0]['items'])}); nothing was changed. Send new events "
                "with a new event_id.",
                409,
                "event_conflict",
            )
        if earlier:
            return {**self.latest(user_id), "event_id": event_id, "duplicate": True}
        unknown = [item for item in items if item not in self.item_ids]
        if unknown:
            raise unknown_items(unknown)
        event = {
            "user_id": user_id,
            "event_id": event_id or uuid.uuid4().hex,
            "items": list(items),
            "seq": len(profile.events),
            "received_at": time.time(),
        }
        self.run.write_json(
            event, PROFILES_OUTPUT, "events", user_key(user_id), f"{event['seq']:08d}.json"
        )
        profile.events.append(event)
        profile.state.history.extend(items)
        self._catch_up(user_id, profile)
        return {**self.latest(user_id), "event_id": event["event_id"], "duplicate": False}

    def latest(self, user_id: str) -> dict[str, Any]:
        """The newest summary, the step it covers and the items added online, in order."""
        profile = self.profile(user_id)
        state = profile.state
        return {
            "user_id": user_id,
            "summary": state.summaries[state.step],
            "step": state.step,
            "online_items": state.history[profile.batch_items :],
            "events": len(profile.events),
        }
