"""The session state machine (coordinator.sessions): an example for each rule, then a
stateful property test driving random sequences of every operation by random users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coordinator.db import Role
from coordinator.sessions import (
    ACTIVE_RUN_STATES,
    RECORDING_ROLES,
    Adopted,
    Code,
    Kind,
    Location,
    Ok,
    Refused,
    RunState,
    SessionCommand,
    SessionState,
    Started,
    State,
    Stopping,
    adopt,
    discard_finished,
    location_failed,
    location_offline,
    location_online,
    location_started,
    location_stopped,
    lock,
    release_locks,
    start,
    stop,
    unlock,
)

T, A, TR, TE = Role.TECHNICIAN, Role.ADMINISTRATOR, Role.TRAINER, Role.TRAINEE
NOW = 1_700_000_000.0


def rooms(*ids: str, **changes: Any) -> State:
    """Known, online, synchronised locations, with `changes` applied to each."""
    return State.of(replace(Location(i, name=f"Room {i}", online=True,
                                     clock_synchronised=True), **changes) for i in ids)


def started(state: State, user: str, ids: Sequence[str], kind: Kind = Kind.SINGLE,
            role: Role = TR, group_id: str = "g1",
            allow_unsynced: bool = False) -> tuple[State, Started]:
    new, out = start(state, user, role, ids, kind, group_id=group_id, now=NOW, lead_s=2.0,
                     allow_unsynced=allow_unsynced)
    assert isinstance(out, Started), out
    return new, out


def refused(outcome: object, code: Code) -> Refused:
    assert isinstance(outcome, Refused), outcome
    assert outcome.code is code, outcome
    assert outcome.reason.strip()
    return outcome


def all_started(state: State, session_id: str) -> State:
    for lid in state.sessions[session_id].location_ids:
        state, out = location_started(state, session_id, lid, {"front": NOW + 2.0})
        assert isinstance(out, Ok)
    return state


def all_stopped(state: State, session_id: str, disk_full: bool = False) -> State:
    for lid in state.sessions[session_id].location_ids:
        state, out = location_stopped(state, session_id, lid, disk_full=disk_full)
        assert isinstance(out, Ok)
    return state


# --- who may record -------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(RECORDING_ROLES))
def test_technicians_administrators_and_trainers_may_record(role: Role) -> None:
    state, _ = started(rooms("a"), "alice", ["a"], role=role)
    assert state.sessions["g1"].state is SessionState.STARTING


def test_a_trainee_may_only_view() -> None:
    state = rooms("a")
    _, out = start(state, "tom", TE, ["a"], Kind.SINGLE, group_id="g1", now=NOW, lead_s=2)
    assert "Trainee" in refused(out, Code.FORBIDDEN).reason
    _, out2 = lock(state, "tom", TE, "a")
    refused(out2, Code.FORBIDDEN)


# --- what can be started --------------------------------------------------------------


@pytest.mark.parametrize(("kind", "ids", "code"), [
    (Kind.SINGLE, [], Code.EMPTY),
    (Kind.SINGLE, ["a", "b"], Code.INVALID),
    (Kind.SEPARATE, ["a"], Code.INVALID),
    (Kind.COMPOSITE, ["a"], Code.INVALID),
    (Kind.COMPOSITE, ["a", "a"], Code.INVALID),
    (Kind.SINGLE, ["nowhere"], Code.UNKNOWN),
])
def test_the_selection_must_fit_the_kind(kind: Kind, ids: list[str], code: Code) -> None:
    state = rooms("a", "b")
    new, out = start(state, "alice", TR, ids, kind, group_id="g1", now=NOW, lead_s=2)
    refused(out, code)
    assert new is state


@pytest.mark.parametrize(("change", "code", "words"), [
    ({"online": False}, Code.OFFLINE, "offline"),
    ({"flagged": True}, Code.FLAGGED, "does not match"),
    ({"locked_by": "bob"}, Code.LOCKED, "opened by bob"),
    ({"clock_synchronised": False}, Code.CLOCK, "clock"),
])
def test_a_location_that_cannot_record_is_refused(change: dict[str, object], code: Code,
                                                  words: str) -> None:
    state = rooms("a", **change)
    new, out = start(state, "alice", TR, ["a"], Kind.SINGLE, group_id="g1", now=NOW,
                     lead_s=2)
    assert words in refused(out, code).reason
    assert new is state


def test_a_location_opened_by_the_starter_records() -> None:
    started(rooms("a", locked_by="alice"), "alice", ["a"])


def test_a_recording_location_is_busy() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a"])
    _, out = start(state, "bob", T, ["b", "a"], Kind.COMPOSITE, group_id="g2", now=NOW,
                   lead_s=2)
    reason = refused(out, Code.BUSY).reason
    assert "session g1 started by alice" in reason


def test_every_location_that_cannot_start_is_named() -> None:
    state = rooms("a", "b", "c")
    state, _ = location_offline(state, "b")
    state, _ = lock(state, "bob", TR, "c")
    _, out = start(state, "alice", TR, ["a", "b", "c"], Kind.SEPARATE, group_id="g1",
                   now=NOW, lead_s=2)
    reason = refused(out, Code.OFFLINE).reason
    assert "Room b is offline" in reason and "Room c is opened by bob" in reason


def test_an_unsynchronised_clock_may_be_allowed_with_a_warning() -> None:
    state = rooms("a", "b")
    state, _ = location_online(state, "b", clock_synchronised=False)
    state, out = started(state, "alice", ["a", "b"], Kind.COMPOSITE, allow_unsynced=True)
    assert len(out.warnings) == 1 and "Room b" in out.warnings[0]


# --- starting -------------------------------------------------------------------------


def test_a_single_session_starts_at_the_synchronized_time() -> None:
    state, out = started(rooms("a"), "alice", ["a"])
    assert out == Started("g1", NOW + 2.0, (SessionCommand("g1", ("a",)),))
    session = state.sessions["g1"]
    assert (session.kind, session.started_by, session.created_at, session.start_at) == (
        Kind.SINGLE, "alice", NOW, NOW + 2.0)
    assert state.recording("a")


def test_separate_sessions_are_one_group_with_a_session_per_location() -> None:
    state, out = started(rooms("a", "b", "c"), "alice", ["c", "a"], Kind.SEPARATE)
    assert out.commands == (SessionCommand("g1-1", ("c",)), SessionCommand("g1-2", ("a",)))
    assert state.groups["g1"].session_ids == ("g1-1", "g1-2")
    assert {s.group_id for s in state.sessions.values()} == {"g1"}


def test_a_composite_session_holds_every_location() -> None:
    state, out = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    assert out.commands == (SessionCommand("g1", ("a", "b")),)
    assert state.sessions["g1"].location_ids == ("a", "b")


def test_it_records_once_every_location_started_and_measures_the_spread() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    state, _ = location_started(state, "g1", "a", {"front": 10.0, "back": 10.02},
                                recording_id="r-a")
    assert state.sessions["g1"].state is SessionState.STARTING
    state, _ = location_started(state, "g1", "b", {"front": 10.05})
    session = state.sessions["g1"]
    assert session.state is SessionState.RECORDING
    assert session.first_frames == {("a", "front"): 10.0, ("a", "back"): 10.02,
                                    ("b", "front"): 10.05}
    assert session.spread_s == pytest.approx(0.05)
    assert session.run("a").recording_id == "r-a"  # type: ignore[union-attr]  # it exists


def test_a_failed_location_makes_the_session_partial_then_failed() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    state, _ = location_started(state, "g1", "a", {"front": 10.0})
    state, _ = location_failed(state, "g1", "b", "camera back unreachable")
    session = state.sessions["g1"]
    assert session.state is SessionState.PARTIAL
    assert session.reasons == ("b: camera back unreachable",)
    assert state.recording("a") and not state.recording("b")
    state, _ = location_failed(state, "g1", "a", "disk error")
    assert state.sessions["g1"].state is SessionState.FAILED


def test_manually_started_locations_are_independent_sessions() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a"], group_id="m1")
    state, _ = started(state, "alice", ["b"], group_id="m2")
    state = all_started(all_started(state, "m1"), "m2")
    state, out = stop(state, "alice", TR, "m1", NOW + 60)
    assert isinstance(out, Stopping) and out.commands == (SessionCommand("m1", ("a",)),)
    assert state.sessions["m2"].state is SessionState.RECORDING


# --- stopping -------------------------------------------------------------------------


def test_the_starter_stops_a_session() -> None:
    state, _ = started(rooms("a"), "alice", ["a"])
    state = all_started(state, "g1")
    state, out = stop(state, "alice", TR, "g1", NOW + 60)
    assert out == Stopping("g1", (SessionCommand("g1", ("a",)),), forced=False)
    session = state.sessions["g1"]
    assert session.state is SessionState.STOPPING
    assert (session.stop_requested_by, session.stop_requested_at) == ("alice", NOW + 60)
    state = all_stopped(state, "g1")
    assert state.sessions["g1"].state is SessionState.STOPPED
    assert not state.recording("a")


@pytest.mark.parametrize("role", [A, TR])
def test_only_the_starter_or_a_technician_may_stop(role: Role) -> None:
    state, _ = started(rooms("a"), "alice", ["a"])
    new, out = stop(state, "bob", role, "g1", NOW + 60)
    assert "started by alice" in refused(out, Code.FORBIDDEN).reason
    assert new is state


def test_a_technician_force_stops_anyones_session() -> None:
    state, _ = started(rooms("a"), "alice", ["a"])
    state, out = stop(state, "tess", T, "g1", NOW + 60)
    assert isinstance(out, Stopping) and out.forced
    assert state.sessions["g1"].stop_requested_by == "tess"


def test_a_trainee_never_stops() -> None:
    state, _ = started(rooms("a"), "tom", ["a"])  # say tom was a trainer then
    _, out = stop(state, "tom", TE, "g1", NOW + 60)
    refused(out, Code.FORBIDDEN)


def test_stopping_one_session_of_a_separate_group_stops_them_all() -> None:
    state, _ = started(rooms("a", "b", "c"), "alice", ["a", "b", "c"], Kind.SEPARATE)
    for sid in ("g1-1", "g1-2", "g1-3"):
        state = all_started(state, sid)
    state, out = stop(state, "alice", TR, "g1-2", NOW + 60)
    assert isinstance(out, Stopping)
    assert out.commands == (SessionCommand("g1-1", ("a",)), SessionCommand("g1-2", ("b",)),
                            SessionCommand("g1-3", ("c",)))
    assert {s.state for s in state.sessions.values()} == {SessionState.STOPPING}


def test_a_stop_while_starting_stops_the_starting_locations() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    state, _ = location_started(state, "g1", "a", {"front": 10.0})
    state, out = stop(state, "alice", TR, "g1", NOW + 1)
    assert isinstance(out, Stopping) and out.commands == (SessionCommand("g1", ("a", "b")),)
    state, _ = location_started(state, "g1", "b", {"front": 10.1})  # the start came late
    assert state.sessions["g1"].run("b").state is RunState.STOPPING  # type: ignore[union-attr]
    assert state.sessions["g1"].spread_s == pytest.approx(0.1)


def test_asking_again_recommands_what_has_not_stopped() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    state = all_started(state, "g1")
    state, _ = stop(state, "alice", TR, "g1", NOW + 60)
    state, _ = location_stopped(state, "g1", "a")
    state, out = stop(state, "alice", TR, "g1", NOW + 70)
    assert isinstance(out, Stopping) and out.commands == (SessionCommand("g1", ("b",)),)
    assert state.sessions["g1"].stop_requested_at == NOW + 60
    state, _ = location_stopped(state, "g1", "b")
    _, again = stop(state, "alice", TR, "g1", NOW + 80)
    refused(again, Code.FINISHED)


def test_a_flagged_location_is_not_commanded_to_stop() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    state, _ = location_online(state, "b", clock_synchronised=True, flagged=True)
    state, out = stop(state, "alice", TR, "g1", NOW + 60)
    assert isinstance(out, Stopping) and out.commands == (SessionCommand("g1", ("a",)),)
    assert "Room b is flagged" in out.warnings[0]


def test_a_full_disk_stops_one_location_and_shows_in_the_session() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a", "b"], Kind.COMPOSITE)
    state = all_started(state, "g1")
    state, _ = location_stopped(state, "g1", "a", disk_full=True)
    session = state.sessions["g1"]
    assert session.state is SessionState.PARTIAL and session.disk_full
    assert session.reasons == ("a: disk full",)
    assert state.recording("b") and not state.recording("a")
    state, _ = stop(state, "alice", TR, "g1", NOW + 60)
    state, _ = location_stopped(state, "g1", "b")
    assert state.sessions["g1"].state is SessionState.STOPPED
    assert state.sessions["g1"].disk_full


def test_reports_that_do_not_fit_are_stale_or_unknown() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a"])
    state = all_stopped(state, "g1")
    for new, out in [location_started(state, "g1", "a", {}),
                     location_failed(state, "g1", "a", "late"),
                     location_stopped(state, "g1", "a")]:
        refused(out, Code.STALE)
        assert new is state
    refused(location_started(state, "g1", "b", {})[1], Code.UNKNOWN)
    refused(location_started(state, "nope", "a", {})[1], Code.UNKNOWN)
    refused(stop(state, "alice", TR, "nope", NOW)[1], Code.UNKNOWN)


# --- locations going away -------------------------------------------------------------


def test_a_recording_location_that_goes_offline_keeps_recording() -> None:
    state, _ = started(rooms("a"), "alice", ["a"])
    state = all_started(state, "g1")
    state, out = location_offline(state, "a")
    assert isinstance(out, Ok) and "keeps recording" in out.message
    session = state.sessions["g1"]
    assert session.state is SessionState.RECORDING and state.recording("a")
    assert session.notes == ("Room a went offline; its box keeps recording",)
    state, out = location_online(state, "a", clock_synchronised=True)
    assert state.sessions["g1"].notes[-1] == "Room a is back online"
    state, out2 = stop(state, "alice", TR, "g1", NOW + 60)
    assert isinstance(out2, Stopping)


def test_an_unknown_location_comes_online() -> None:
    state, _ = location_online(State(), "new", clock_synchronised=False, name="Room 3")
    assert state.locations["new"] == Location("new", "Room 3", online=True)
    refused(location_offline(State(), "nowhere")[1], Code.UNKNOWN)


# --- locks ----------------------------------------------------------------------------


def test_a_location_opened_by_someone_is_recorded_only_by_them() -> None:
    state, out = lock(rooms("a"), "bob", TR, "a")
    assert isinstance(out, Ok) and state.locations["a"].locked_by == "bob"
    assert lock(state, "bob", TR, "a")[0].locations["a"].locked_by == "bob"
    refused(lock(state, "alice", T, "a")[1], Code.LOCKED)
    refused(start(state, "alice", T, ["a"], Kind.SINGLE, group_id="g1", now=NOW,
                  lead_s=2)[1], Code.LOCKED)
    refused(unlock(state, "alice", A, "a")[1], Code.LOCKED)
    unlocked, out = unlock(state, "tess", T, "a")
    assert isinstance(out, Ok) and unlocked.locations["a"].locked_by is None
    assert unlock(state, "bob", TR, "a")[0].locations["a"].locked_by is None


def test_logging_out_never_stops_a_recording() -> None:
    state, _ = lock(rooms("a", "b"), "alice", TR, "a")
    state, _ = started(state, "alice", ["a"])
    state = all_started(state, "g1")
    state = release_locks(state, "alice")
    assert state.locations["a"].locked_by is None
    assert state.sessions["g1"].state is SessionState.RECORDING
    # logging in again, she stops it
    assert isinstance(stop(state, "alice", TR, "g1", NOW + 60)[1], Stopping)


# --- the room's button ----------------------------------------------------------------


def test_a_button_recording_is_adopted_as_a_single_session() -> None:
    state, out = adopt(rooms("a", locked_by="bob"), "a", "20240101T120000Z-abc123",
                       "Room a button", NOW)
    assert out == Adopted("a:20240101T120000Z-abc123")
    session = state.sessions[out.session_id]
    assert (session.kind, session.started_by, session.by_button, session.state) == (
        Kind.SINGLE, "Room a button", True, SessionState.RECORDING)
    refused(adopt(state, "a", "20240101T120000Z-abc123", "Room a button", NOW)[1], Code.BUSY)
    refused(stop(state, "bob", TR, out.session_id, NOW + 60)[1], Code.FORBIDDEN)
    assert isinstance(stop(state, "Room a button", TR, out.session_id, NOW + 60)[1],
                      Stopping)
    assert isinstance(stop(state, "tess", T, out.session_id, NOW + 60)[1], Stopping)


def test_a_button_recording_is_adopted_once_and_not_from_a_flagged_box() -> None:
    state, _ = adopt(rooms("a"), "a", "r1", "button", NOW)
    state = all_stopped(state, "a:r1")
    refused(adopt(state, "a", "r1", "button", NOW)[1], Code.STALE)
    refused(adopt(rooms("a", flagged=True), "a", "r1", "button", NOW)[1], Code.FLAGGED)
    refused(adopt(rooms("a"), "b", "r1", "button", NOW)[1], Code.UNKNOWN)


# --- bookkeeping ----------------------------------------------------------------------


def test_finished_groups_are_discarded() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a"], group_id="done")
    state, _ = started(state, "alice", ["b"], group_id="running")
    state = discard_finished(all_stopped(state, "done"))
    assert set(state.groups) == set(state.sessions) == {"running"}


def test_caller_bugs_raise() -> None:
    state, _ = started(rooms("a", "b"), "alice", ["a"])
    with pytest.raises(ValueError, match="in use"):
        start(state, "alice", TR, ["b"], Kind.SINGLE, group_id="g1", now=NOW, lead_s=2)
    with pytest.raises(ValueError, match="negative"):
        start(state, "alice", TR, ["b"], Kind.SINGLE, group_id="g2", now=NOW, lead_s=-1)
    with pytest.raises(ValueError, match="reason"):
        Refused(Code.BUSY, " ")


# --- random sequences -----------------------------------------------------------------

USERS = ("alice", "bob", "carol", "r1 button")
LOCATIONS = ("r1", "r2", "r3", "r4")
_RANK = {RunState.STARTING: 0, RunState.RECORDING: 1, RunState.STOPPING: 2,
         RunState.STOPPED: 3, RunState.FAILED: 3}

users = st.sampled_from(USERS)
roles = st.sampled_from(list(Role))
locations = st.sampled_from(LOCATIONS)
picks = st.integers(min_value=0, max_value=1_000)


class Sessions(RuleBasedStateMachine):
    """Random operations by random users with random roles; after each, the rules that
    must hold for that operation, and invariants over the whole state."""

    def __init__(self) -> None:
        super().__init__()
        self.state = State()
        self.groups = 0
        self.adoptions = 0

    @initialize(user=users, kind=st.sampled_from(list(Kind)))
    def rooms_come_online_and_one_group_records(self, user: str, kind: Kind) -> None:
        for lid in LOCATIONS:
            self.state, _ = location_online(self.state, lid, clock_synchronised=True)
        ids = ["r1"] if kind is Kind.SINGLE else ["r1", "r2"]
        self.state, out = start(self.state, user, TR, ids, kind, group_id="g0", now=0.0,
                                lead_s=2.0)
        assert isinstance(out, Started)

    def apply(self, result: tuple[State, object]) -> object:
        """Takes the new state, checking what every operation promises."""
        new, outcome = result
        if isinstance(outcome, Refused):
            assert outcome.reason.strip()
            assert new is self.state, "a refusal changes nothing"
        before = self.state
        for sid, old in before.sessions.items():
            now = new.sessions.get(sid)
            if now is None:
                continue
            assert now.location_ids == old.location_ids
            for r_old, r_new in zip(old.runs, now.runs, strict=True):
                assert _RANK[r_new.state] >= _RANK[r_old.state], "runs only move on"
                if _RANK[r_old.state] == 3:
                    assert r_new == r_old, "an ended run stays as it ended"
        self.state = new
        return outcome

    def pick_session(self, i: int) -> str:
        """Mostly an active session, sometimes any, rarely one that does not exist."""
        if not i % 10:
            return "no-such-session"
        active = sorted(sid for sid, s in self.state.sessions.items() if s.active)
        ids = active if active and i % 4 else sorted(self.state.sessions)
        return ids[i % len(ids)] if ids else "no-such-session"

    # -- locations

    @rule(lid=locations, clock=st.sampled_from([True, True, False]),
          flagged=st.sampled_from([False, False, False, True]))
    def online(self, lid: str, clock: bool, flagged: bool) -> None:
        self.apply(location_online(self.state, lid, clock_synchronised=clock, flagged=flagged))

    @rule(lid=locations)
    def offline(self, lid: str) -> None:
        was_recording = self.state.active_session_at(lid)
        self.apply(location_offline(self.state, lid))
        now_recording = self.state.active_session_at(lid)
        if was_recording is not None:
            assert now_recording is not None and now_recording.id == was_recording.id
            assert now_recording.state is was_recording.state

    @rule(user=users, role=roles, lid=locations)
    def lock(self, user: str, role: Role, lid: str) -> None:
        holder = self.state.locations[lid].locked_by
        out = self.apply(lock(self.state, user, role, lid))
        if role is TE:
            assert isinstance(out, Refused) and out.code is Code.FORBIDDEN
        elif holder not in (None, user):
            assert isinstance(out, Refused) and out.code is Code.LOCKED
        else:
            assert self.state.locations[lid].locked_by == user

    @rule(user=users, role=roles, lid=locations)
    def unlock(self, user: str, role: Role, lid: str) -> None:
        holder = self.state.locations[lid].locked_by
        out = self.apply(unlock(self.state, user, role, lid))
        if isinstance(out, Ok):
            assert holder in (None, user) or role is T
            assert self.state.locations[lid].locked_by is None

    @rule(user=users)
    def log_out(self, user: str) -> None:
        before = self.state
        self.state = release_locks(self.state, user)
        assert all(loc.locked_by != user for loc in self.state.locations.values())
        assert self.state.sessions == before.sessions

    # -- start and stop

    @rule(user=users, role=roles, kind=st.sampled_from(list(Kind)), fit=st.booleans(),
          ids=st.lists(locations, min_size=1, max_size=3, unique=True) | st.lists(locations),
          allow=st.booleans(), now=st.floats(0, 1e9), lead=st.floats(0, 10))
    def start(self, user: str, role: Role, kind: Kind, fit: bool, ids: list[str],
              allow: bool, now: float, lead: float) -> None:
        if fit and len(ids) == 1:
            kind = Kind.SINGLE
        elif fit and kind is Kind.SINGLE:
            kind = Kind.SEPARATE
        before = self.state
        self.groups += 1
        gid = f"g{self.groups}"
        out = self.apply(start(self.state, user, role, ids, kind, group_id=gid, now=now,
                               lead_s=lead, allow_unsynced=allow))
        if role is TE:
            assert isinstance(out, Refused) and out.code is Code.FORBIDDEN
        if not isinstance(out, Started):
            return
        assert role in RECORDING_ROLES and ids
        for lid in ids:
            loc = before.locations[lid]
            assert loc.online and not loc.flagged
            assert loc.locked_by in (None, user)
            assert not before.recording(lid)
            assert loc.clock_synchronised or allow
        commanded = [lid for c in out.commands for lid in c.location_ids]
        assert sorted(commanded) == sorted(ids)
        assert all(self.state.sessions[c.session_id].start_at == now + lead
                   for c in out.commands)
        assert len(out.commands) == (len(ids) if kind is Kind.SEPARATE else 1)

    @rule(user=users, role=roles, i=picks, now=st.floats(0, 1e9))
    def stop(self, user: str, role: Role, i: int, now: float) -> None:
        sid = self.pick_session(i)
        before = self.state
        out = self.apply(stop(self.state, user, role, sid, now))
        if role is TE:
            assert isinstance(out, Refused)
        if not isinstance(out, Stopping):
            return
        group = self.state.groups[out.group_id]
        assert group.id == self.state.sessions[sid].group_id
        assert user == group.started_by or role is T
        assert out.forced == (user != group.started_by)
        for s in self.state.group_sessions(group.id):
            if before.sessions[s.id].active:
                assert s.stop_requested_by is not None
                assert s.state is SessionState.STOPPING, "the whole group is stopping"
            else:
                assert s == before.sessions[s.id], "an ended session stays as it ended"
        commanded = {(c.session_id, lid) for c in out.commands for lid in c.location_ids}
        assert commanded == {(s.id, r.location_id) for s in self.state.group_sessions(group.id)
                             for r in s.runs if r.active
                             and not self.state.locations[r.location_id].flagged}

    @rule(lid=locations, press=st.integers(0, 3))
    def button(self, lid: str, press: int) -> None:
        if press:  # a button recording is rarer than the rest
            return
        self.adoptions += 1
        was = self.state.locations[lid]
        busy = self.state.recording(lid)
        out = self.apply(adopt(self.state, lid, f"rec{self.adoptions}", f"{lid} button", 0.0))
        if isinstance(out, Adopted):
            assert not busy and not was.flagged

    # -- what the boxes report

    def pick_run(self, i: int, j: int) -> tuple[str, str]:
        """Mostly a location still running in a session, sometimes any pair."""
        running = sorted((s.id, r.location_id) for s in self.state.sessions.values()
                         for r in s.runs if r.active)
        if running and j % 4:
            return running[i % len(running)]
        sid = self.pick_session(i)
        session = self.state.sessions.get(sid)
        if session is None or not j % 7:
            return sid, LOCATIONS[j % len(LOCATIONS)]
        return sid, session.location_ids[j % len(session.location_ids)]

    @rule(i=picks, j=picks, t0=st.floats(0, 1e9),
          offsets=st.lists(st.floats(0, 0.5), min_size=1, max_size=3))
    def box_started(self, i: int, j: int, t0: float, offsets: list[float]) -> None:
        sid, lid = self.pick_run(i, j)
        frames = {f"cam{k}": t0 + o for k, o in enumerate(offsets)}
        self.apply(location_started(self.state, sid, lid, frames))

    @rule(i=picks, j=picks, reason=st.sampled_from(["", "camera lost", "no space"]))
    def box_failed(self, i: int, j: int, reason: str) -> None:
        sid, lid = self.pick_run(i, j)
        self.apply(location_failed(self.state, sid, lid, reason))

    @rule(i=picks, j=picks, disk_full=st.booleans())
    def box_stopped(self, i: int, j: int, disk_full: bool) -> None:
        sid, lid = self.pick_run(i, j)
        out = self.apply(location_stopped(self.state, sid, lid, disk_full=disk_full))
        if isinstance(out, Ok) and disk_full:
            assert self.state.sessions[sid].disk_full

    @rule()
    def tidy(self) -> None:
        self.state = discard_finished(self.state)
        assert all(any(s.active for s in self.state.group_sessions(gid))
                   for gid in self.state.groups)

    # -- always

    @invariant()
    def a_location_is_in_at_most_one_active_session(self) -> None:
        for lid in LOCATIONS:
            active = [s.id for s in self.state.sessions.values()
                      if any(r.location_id == lid and r.state in ACTIVE_RUN_STATES
                             for r in s.runs)]
            assert len(active) <= 1, (lid, active)

    @invariant()
    def groups_and_sessions_agree(self) -> None:
        in_groups = [sid for g in self.state.groups.values() for sid in g.session_ids]
        assert sorted(in_groups) == sorted(self.state.sessions)
        for g in self.state.groups.values():
            for s in self.state.group_sessions(g.id):
                assert (s.group_id, s.kind, s.started_by) == (g.id, g.kind, g.started_by)

    @invariant()
    def a_stop_covers_the_whole_group(self) -> None:
        for g in self.state.groups.values():
            members = self.state.group_sessions(g.id)
            if any(s.stop_requested_by is not None for s in members):
                assert all(r.state not in (RunState.STARTING, RunState.RECORDING)
                           for s in members for r in s.runs)

    @invariant()
    def states_follow_the_runs(self) -> None:
        for s in self.state.sessions.values():
            runs = {r.state for r in s.runs}
            if s.state is SessionState.RECORDING:
                assert runs == {RunState.RECORDING}
            if s.state in (SessionState.STOPPED, SessionState.FAILED):
                assert not s.active
            if s.spread_s is not None:
                assert s.spread_s >= 0


Sessions.TestCase.settings = settings(max_examples=300, stateful_step_count=40,
                                      deadline=None)
test_random_sequences = Sessions.TestCase
