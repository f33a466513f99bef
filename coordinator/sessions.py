"""Sessions across rooms: a pure state machine with its permission rules.

No I/O, no clock, no randomness: times and ids are passed in. Every operation takes a
`State` and returns `(new_state, outcome)`; the outcome is either what happened (and,
for start and stop, which locations to command) or a `Refused` with a machine `code` and
a `reason` for a person. A refused operation returns the state unchanged.

Who may do what (the roles are coordinator.db's; what each may do is the table in
coordinator.users: `may_record`, `may_force_stop`):

- Technicians, Administrators and Trainers may record; a Trainee may only view, so a
  Trainee can neither open (lock), start nor stop anything.
- A session is stopped by the user who started it or by a Technician (a force-stop,
  flagged `forced` in the outcome); anyone else is refused, told who started it.
- A location opened (locked) by a user can be viewed by others but recorded only by that
  user. Opening is not needed to record an unlocked location, and starting does not
  open it. A Technician may close (unlock) a location someone else opened.
- Nothing here knows about logins: logging out never stops a recording.
  `release_locks` closes what a user opened, if the caller wants that at logout.

What is recorded:

- `single`: one location. Locations started one after another ("manually") are
  independent single sessions, each stopped on its own.
- `separate`: two or more locations started together, one session each, in one group.
- `composite`: two or more locations in one session holding every camera of each.

For one location, use `single`: `separate` and `composite` refuse fewer than two, so a
mistaken selection is said rather than silently recorded as something else.

A group is what is started and stopped together: a single or composite session is a
group of one; stopping any session of a separate group stops the whole group. A single
or composite session's id is its group's id; the sessions of a separate group are
"<group id>-1", "<group id>-2", ... in the order the locations were given.

A location can start only if it is known, online, not flagged (its identity does not
match: it is never commanded), not recording in another session, and not opened by
someone else. A location whose clock is not synchronised is refused, or accepted with a
warning when the caller allows it. All locations start at `now + lead_s`, the
synchronized start time sent to every box.

Each location of a session is a `Run`: starting -> recording -> stopping -> stopped, or
failed. The session's state follows from its runs (`Session.state`): starting until
every location started, recording, partial when some location failed or stopped on its
own while others still record, stopping once a stop was asked until every box confirmed,
then stopped (or failed if no location ever recorded). A location is busy while its run
is starting, recording or stopping: it is in at most one such run at a time.

A location that goes offline while recording keeps recording on its box: the session
stays as it was and a note is added. A recording started with the room's button is
`adopt`ed as a single session owned by the room's button user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from coordinator.db import Role
from coordinator.users import may_force_stop, may_record

__all__ = [  # Role is coordinator.db's, exported here too so callers can name it
    "ACTIVE_RUN_STATES", "RECORDING_ROLES", "Adopted", "Code", "Group", "Kind", "Location",
    "Ok", "Refused", "Role", "Run", "RunState", "Session", "SessionCommand", "SessionState",
    "Started", "State", "Stopping", "adopt", "discard_finished", "location_failed",
    "location_offline", "location_online", "location_renamed", "location_started",
    "location_stopped", "lock", "release_locks", "start", "stop", "unlock",
]

_T = TypeVar("_T")


RECORDING_ROLES = frozenset(role for role in Role if may_record(role))
"""Technicians, Administrators and Trainers (coordinator.users holds the table)."""


class Kind(StrEnum):
    SINGLE = "single"
    SEPARATE = "separate"
    COMPOSITE = "composite"


class RunState(StrEnum):
    STARTING = "starting"
    RECORDING = "recording"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE_RUN_STATES = frozenset({RunState.STARTING, RunState.RECORDING, RunState.STOPPING})


class SessionState(StrEnum):
    STARTING = "starting"
    RECORDING = "recording"
    PARTIAL = "partial"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Code(StrEnum):
    """Why an operation was refused."""

    FORBIDDEN = "forbidden"  # the user's role, or not the starter
    EMPTY = "empty"          # no location selected
    INVALID = "invalid"      # wrong number of locations for the kind, or one given twice
    UNKNOWN = "unknown"      # no such location or session, or the location is not in it
    OFFLINE = "offline"
    FLAGGED = "flagged"      # the box's identity does not match: never commanded
    BUSY = "busy"            # the location records in another session
    LOCKED = "locked"        # the location is opened by another user
    CLOCK = "clock"          # the location's clock is not synchronised
    FINISHED = "finished"    # the session has stopped already
    STALE = "stale"          # a box's report that does not fit the session any more


def _frozen(mapping: Mapping[str, _T]) -> Mapping[str, _T]:
    return MappingProxyType(dict(mapping))


# --- the domain -----------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A room as the coordinator sees it. `locked_by`: the user who opened it."""

    id: str
    name: str = ""
    online: bool = False
    flagged: bool = False
    clock_synchronised: bool = False
    locked_by: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class Run:
    """One location's part in a session. `first_frames`: per camera, the wall-clock time
    (seconds since the epoch) of its first frame. `reason`: why it failed, or why it
    stopped without being asked."""

    location_id: str
    state: RunState = RunState.STARTING
    recording_id: str | None = None
    first_frames: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None
    disk_full: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_frames", _frozen(self.first_frames))

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_RUN_STATES


@dataclass(frozen=True)
class Session:
    """One session. Times are wall-clock seconds since the epoch: `created_at` when it
    was asked for, `start_at` the synchronized start."""

    id: str
    group_id: str
    kind: Kind
    started_by: str
    runs: tuple[Run, ...]
    created_at: float
    start_at: float
    by_button: bool = False
    stop_requested_by: str | None = None
    stop_requested_at: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def location_ids(self) -> tuple[str, ...]:
        return tuple(r.location_id for r in self.runs)

    def run(self, location_id: str) -> Run | None:
        return next((r for r in self.runs if r.location_id == location_id), None)

    @property
    def state(self) -> SessionState:
        states = [r.state for r in self.runs]
        if not any(s in ACTIVE_RUN_STATES for s in states):
            if all(s is RunState.FAILED for s in states):
                return SessionState.FAILED
            return SessionState.STOPPED
        if self.stop_requested_by is not None:
            return SessionState.STOPPING
        if any(s in (RunState.FAILED, RunState.STOPPED) for s in states):
            return SessionState.PARTIAL
        if RunState.STARTING in states:
            return SessionState.STARTING
        return SessionState.RECORDING

    @property
    def active(self) -> bool:
        return any(r.active for r in self.runs)

    @property
    def disk_full(self) -> bool:
        """Some location stopped because its disk was full: the name says so."""
        return any(r.disk_full for r in self.runs)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why locations failed or stopped on their own, "<location id>: <reason>"."""
        return tuple(f"{r.location_id}: {r.reason}" for r in self.runs if r.reason)

    @property
    def first_frames(self) -> Mapping[tuple[str, str], float]:
        """The first frame's wall-clock time per (location id, camera)."""
        return MappingProxyType({(r.location_id, cam): t for r in self.runs
                                 for cam, t in r.first_frames.items()})

    @property
    def spread_s(self) -> float | None:
        """How far apart the cameras' first frames are (latest minus earliest), in
        seconds; None before any camera reported one."""
        times = list(self.first_frames.values())
        return max(times) - min(times) if times else None


@dataclass(frozen=True)
class Group:
    """What is started and stopped together."""

    id: str
    kind: Kind
    started_by: str
    session_ids: tuple[str, ...]


@dataclass(frozen=True)
class State:
    locations: Mapping[str, Location] = field(default_factory=dict)
    groups: Mapping[str, Group] = field(default_factory=dict)
    sessions: Mapping[str, Session] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, loc in self.locations.items():
            if key != loc.id:
                raise ValueError(f"location {loc.id!r} is stored under {key!r}")
        object.__setattr__(self, "locations", _frozen(self.locations))
        object.__setattr__(self, "groups", _frozen(self.groups))
        object.__setattr__(self, "sessions", _frozen(self.sessions))

    @classmethod
    def of(cls, locations: Iterable[Location]) -> State:
        return cls(locations={loc.id: loc for loc in locations})

    def active_session_at(self, location_id: str) -> Session | None:
        """The session in which the location is starting, recording or stopping."""
        for s in self.sessions.values():
            run = s.run(location_id)
            if run is not None and run.active:
                return s
        return None

    def recording(self, location_id: str) -> bool:
        return self.active_session_at(location_id) is not None

    def group_sessions(self, group_id: str) -> tuple[Session, ...]:
        return tuple(self.sessions[sid] for sid in self.groups[group_id].session_ids)

    def _with(self, *, locations: Iterable[Location] = (),
              sessions: Iterable[Session] = (), groups: Iterable[Group] = ()) -> State:
        return State(locations={**self.locations, **{x.id: x for x in locations}},
                     groups={**self.groups, **{x.id: x for x in groups}},
                     sessions={**self.sessions, **{x.id: x for x in sessions}})


# --- outcomes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    code: Code
    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("a refusal needs a reason")


@dataclass(frozen=True)
class Ok:
    message: str = ""


@dataclass(frozen=True)
class SessionCommand:
    """Command these locations for this session."""

    session_id: str
    location_ids: tuple[str, ...]


@dataclass(frozen=True)
class Started:
    group_id: str
    start_at: float
    commands: tuple[SessionCommand, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stopping:
    """`forced`: a Technician stops someone else's session. `warnings`: e.g. flagged
    locations left out of the commands."""

    group_id: str
    commands: tuple[SessionCommand, ...]
    forced: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adopted:
    session_id: str


# --- locations ------------------------------------------------------------------------


def location_online(state: State, location_id: str, *, clock_synchronised: bool,
                    flagged: bool = False, name: str | None = None) -> tuple[State, Ok]:
    """A location is seen (or seen again) with its clock and identity status; an unknown
    one is added. Its lock is kept."""
    old = state.locations.get(location_id) or Location(location_id)
    loc = replace(old, online=True, clock_synchronised=clock_synchronised, flagged=flagged,
                  name=old.name if name is None else name)
    session = state.active_session_at(location_id)
    if session is not None and not old.online:
        note = f"{loc.label} is back online"
        return (state._with(locations=[loc], sessions=[_noted(session, note)]),
                Ok(note))
    return state._with(locations=[loc]), Ok()


def location_offline(state: State, location_id: str) -> tuple[State, Ok | Refused]:
    """A location is lost. A box records on its own, so a recording there goes on; the
    session stays as it was, with a note."""
    old = state.locations.get(location_id)
    if old is None:
        return state, _unknown_location(location_id)
    loc = replace(old, online=False)
    session = state.active_session_at(location_id)
    if session is not None and old.online:
        note = f"{loc.label} went offline; its box keeps recording"
        return (state._with(locations=[loc], sessions=[_noted(session, note)]),
                Ok(note))
    return state._with(locations=[loc]), Ok()


def location_renamed(state: State, location_id: str, name: str) -> tuple[State, Ok | Refused]:
    """A location got a new name; nothing else about it changes."""
    old = state.locations.get(location_id)
    if old is None:
        return state, _unknown_location(location_id)
    return state._with(locations=[replace(old, name=name)]), Ok()


def lock(state: State, user: str, role: Role, location_id: str) -> tuple[State, Ok | Refused]:
    """`user` opens a location to record it: others can view but not record it."""
    loc = state.locations.get(location_id)
    if loc is None:
        return state, _unknown_location(location_id)
    if role not in RECORDING_ROLES:
        return state, Refused(Code.FORBIDDEN, f"a {role.capitalize()} may only view "
                                              f"{loc.label}, not open it for recording")
    if loc.locked_by not in (None, user):
        return state, Refused(Code.LOCKED, f"{loc.label} is opened by {loc.locked_by}")
    return state._with(locations=[replace(loc, locked_by=user)]), Ok()


def unlock(state: State, user: str, role: Role,
           location_id: str) -> tuple[State, Ok | Refused]:
    """Closes a location: its opener, or a Technician for anyone's. Closing a location
    nobody opened is fine."""
    loc = state.locations.get(location_id)
    if loc is None:
        return state, _unknown_location(location_id)
    if loc.locked_by not in (None, user) and not may_force_stop(role):
        return state, Refused(Code.LOCKED, f"{loc.label} is opened by {loc.locked_by}; "
                                           f"only they or a Technician can close it")
    return state._with(locations=[replace(loc, locked_by=None)]), Ok()


def release_locks(state: State, user: str) -> State:
    """Closes every location `user` opened. Their recordings go on."""
    return state._with(locations=[replace(loc, locked_by=None)
                                  for loc in state.locations.values()
                                  if loc.locked_by == user])


# --- start ----------------------------------------------------------------------------


def start(state: State, user: str, role: Role, location_ids: Sequence[str], kind: Kind, *,
          group_id: str, now: float, lead_s: float,
          allow_unsynced: bool = False) -> tuple[State, Started | Refused]:
    """`user` records `location_ids` as `kind`, all from `now + lead_s`.

    `group_id` names the new group (see the module's docstring for its sessions' ids);
    reusing an id is a ValueError, a bug of the caller. When several locations cannot
    start, the code is the first one's and the reason names every one."""
    if lead_s < 0:
        raise ValueError(f"lead_s must not be negative: {lead_s}")
    ids = tuple(location_ids)
    warnings: list[str] = []
    refused = (_check_selection(role, ids, kind)
               or _check_locations(state, user, ids, allow_unsynced, warnings))
    if refused is not None:
        return state, refused

    parts: list[tuple[str, tuple[str, ...]]]
    if kind is Kind.SEPARATE:
        parts = [(f"{group_id}-{i}", (lid,)) for i, lid in enumerate(ids, 1)]
    else:
        parts = [(group_id, ids)]
    taken = [sid for sid, _ in parts if sid in state.sessions]
    if group_id in state.groups or taken:
        raise ValueError(f"group id {group_id!r} is in use")
    start_at = now + lead_s
    sessions = [Session(id=sid, group_id=group_id, kind=kind, started_by=user,
                        runs=tuple(Run(lid) for lid in lids), created_at=now,
                        start_at=start_at)
                for sid, lids in parts]
    group = Group(group_id, kind, user, tuple(s.id for s in sessions))
    return (state._with(sessions=sessions, groups=[group]),
            Started(group_id, start_at,
                    tuple(SessionCommand(s.id, s.location_ids) for s in sessions),
                    tuple(warnings)))


def _check_selection(role: Role, ids: tuple[str, ...], kind: Kind) -> Refused | None:
    if role not in RECORDING_ROLES:
        return Refused(Code.FORBIDDEN, f"a {role.capitalize()} may only view, not record")
    if not ids:
        return Refused(Code.EMPTY, "select a location to record")
    if len(set(ids)) != len(ids):
        return Refused(Code.INVALID, "a location is selected more than once")
    if kind is Kind.SINGLE and len(ids) != 1:
        return Refused(Code.INVALID, f"a single session records one location, not "
                                     f"{len(ids)}; choose separate or composite")
    if kind is not Kind.SINGLE and len(ids) < 2:
        return Refused(Code.INVALID, f"a {kind} session needs at least two locations; "
                                     f"record one location as a single session")
    return None


def _check_locations(state: State, user: str, ids: tuple[str, ...], allow_unsynced: bool,
                     warnings: list[str]) -> Refused | None:
    """A refusal naming every location that cannot start, with the first one's code;
    clock warnings go to `warnings`."""
    problems: list[tuple[Code, str]] = []
    for lid in ids:
        problem = _cannot_start(state, user, lid)
        if problem is not None:
            problems.append(problem)
            continue
        loc = state.locations[lid]
        if not loc.clock_synchronised:
            if allow_unsynced:
                warnings.append(f"the clock of {loc.label} is not synchronised: its video "
                                f"may be out of step with other recordings")
            else:
                problems.append((Code.CLOCK, f"the clock of {loc.label} is not "
                                             f"synchronised"))
    if problems:
        return Refused(problems[0][0], "cannot record: " + "; ".join(p[1] for p in problems))
    return None


def _cannot_start(state: State, user: str, location_id: str) -> tuple[Code, str] | None:
    loc = state.locations.get(location_id)
    if loc is None:
        return Code.UNKNOWN, f"there is no location {location_id!r}"
    if not loc.online:
        return Code.OFFLINE, f"{loc.label} is offline"
    if loc.flagged:
        return Code.FLAGGED, (f"{loc.label} does not match the box it was paired with; a "
                              f"Technician must check it")
    busy = state.active_session_at(location_id)
    if busy is not None:
        return Code.BUSY, (f"{loc.label} is recording in session {busy.id} started by "
                           f"{busy.started_by}")
    if loc.locked_by not in (None, user):
        return Code.LOCKED, f"{loc.label} is opened by {loc.locked_by}"
    return None


# --- stop -----------------------------------------------------------------------------


def stop(state: State, user: str, role: Role, session_id: str,
         now: float) -> tuple[State, Stopping | Refused]:
    """`user` stops a session, and with it every session of its group.

    Locations still starting are stopped too. Asking again while a group is stopping
    lists the locations that have not confirmed yet, to command them again. Flagged
    locations are left out of the commands, with a warning."""
    session = state.sessions.get(session_id)
    if session is None:
        return state, Refused(Code.UNKNOWN, f"there is no session {session_id!r}")
    if role not in RECORDING_ROLES:
        return state, Refused(Code.FORBIDDEN, f"a {role.capitalize()} may only view, not "
                                              f"stop a recording")
    group = state.groups[session.group_id]
    forced = user != group.started_by
    if forced and not may_force_stop(role):
        return state, Refused(Code.FORBIDDEN, f"session {session_id} was started by "
                                              f"{group.started_by}; only they or a "
                                              f"Technician can stop it")
    members = state.group_sessions(group.id)
    if not any(s.active for s in members):
        return state, Refused(Code.FINISHED, f"session {session_id} has stopped already")

    changed: list[Session] = []
    commands: list[SessionCommand] = []
    warnings: list[str] = []
    for s in members:
        if not s.active:
            continue
        runs = tuple(replace(r, state=RunState.STOPPING) if r.active else r for r in s.runs)
        first_ask = s.stop_requested_by is None
        changed.append(replace(s, runs=runs,
                               stop_requested_by=user if first_ask else s.stop_requested_by,
                               stop_requested_at=now if first_ask else s.stop_requested_at))
        targets = []
        for r in runs:
            if not r.active:
                continue
            loc = state.locations.get(r.location_id)
            if loc is not None and loc.flagged:
                warnings.append(f"{loc.label} is flagged and was not commanded; a "
                                f"Technician must check it")
            else:
                targets.append(r.location_id)
        if targets:
            commands.append(SessionCommand(s.id, tuple(targets)))
    return (state._with(sessions=changed),
            Stopping(group.id, tuple(commands), forced, tuple(warnings)))


# --- what the boxes report ------------------------------------------------------------


def location_started(state: State, session_id: str, location_id: str,
                     first_frames: Mapping[str, float],
                     recording_id: str | None = None) -> tuple[State, Ok | Refused]:
    """A location's box started: `first_frames` per camera. A location that was asked
    to stop meanwhile stays stopping. A report after the location ended is stale."""
    found = _find_run(state, session_id, location_id)
    if isinstance(found, Refused):
        return state, found
    session, run = found
    if not run.active:
        return state, _stale(session, run, "started")
    frames = run.first_frames or first_frames
    new_run = replace(run, first_frames=frames, recording_id=recording_id or run.recording_id)
    if run.state is RunState.STARTING:
        new_run = replace(new_run, state=RunState.RECORDING)
    return state._with(sessions=[_with_run(session, new_run)]), Ok()


def location_failed(state: State, session_id: str, location_id: str,
                    reason: str) -> tuple[State, Ok | Refused]:
    """A location's box could not record (or stopped recording on an error). The
    session goes on with the other locations: partial, or failed if none is left."""
    found = _find_run(state, session_id, location_id)
    if isinstance(found, Refused):
        return state, found
    session, run = found
    if not run.active:
        return state, _stale(session, run, "failed")
    new_run = replace(run, state=RunState.FAILED, reason=reason.strip() or "failed")
    return state._with(sessions=[_with_run(session, new_run)]), Ok()


def location_stopped(state: State, session_id: str, location_id: str, disk_full: bool = False,
                     reason: str | None = None) -> tuple[State, Ok | Refused]:
    """A location's box stopped recording. When nobody asked (a full disk, the room's
    button), the others go on and the reason is kept: `reason`, or "disk full"."""
    found = _find_run(state, session_id, location_id)
    if isinstance(found, Refused):
        return state, found
    session, run = found
    if not run.active:
        return state, _stale(session, run, "stopped")
    why = run.reason
    if run.state is not RunState.STOPPING:
        why = "disk full" if disk_full else (reason or "stopped by its box")
    elif disk_full:
        why = "disk full"
    new_run = replace(run, state=RunState.STOPPED, disk_full=disk_full, reason=why)
    return state._with(sessions=[_with_run(session, new_run)]), Ok()


def adopt(state: State, location_id: str, recording_id: str, button_user: str,
          started_at: float, session_id: str | None = None) -> tuple[State, Adopted | Refused]:
    """A recording started with the room's button becomes a single session (and group)
    owned by the room's button user; its id is `session_id`, by default
    "<location id>:<recording id>". It is taken even if the location is opened by
    someone or offline (it records already), but not from a flagged box, nor while the
    location records in another session."""
    sid = session_id or f"{location_id}:{recording_id}"
    loc = state.locations.get(location_id)
    if loc is None:
        return state, _unknown_location(location_id)
    if loc.flagged:
        return state, Refused(Code.FLAGGED, f"{loc.label} does not match the box it was "
                                            f"paired with; its recording is not taken")
    busy = state.active_session_at(location_id)
    if busy is not None:
        return state, Refused(Code.BUSY, f"{loc.label} is recording in session {busy.id}")
    if sid in state.sessions or sid in state.groups:
        return state, Refused(Code.STALE, f"recording {recording_id} of {loc.label} was "
                                          f"taken already as session {sid}")
    session = Session(id=sid, group_id=sid, kind=Kind.SINGLE, started_by=button_user,
                      runs=(Run(location_id, RunState.RECORDING, recording_id),),
                      created_at=started_at, start_at=started_at, by_button=True)
    group = Group(sid, Kind.SINGLE, button_user, (sid,))
    return state._with(sessions=[session], groups=[group]), Adopted(sid)


def discard_finished(state: State) -> State:
    """The state without groups whose sessions have all ended (stopped or failed), once
    the caller has saved them."""
    done = {g.id for g in state.groups.values()
            if not any(state.sessions[sid].active for sid in g.session_ids)}
    return State(locations=state.locations,
                 groups={k: g for k, g in state.groups.items() if k not in done},
                 sessions={k: s for k, s in state.sessions.items() if s.group_id not in done})


# --- helpers --------------------------------------------------------------------------


def _unknown_location(location_id: str) -> Refused:
    return Refused(Code.UNKNOWN, f"there is no location {location_id!r}")


def _find_run(state: State, session_id: str, location_id: str) -> tuple[Session, Run] | Refused:
    session = state.sessions.get(session_id)
    if session is None:
        return Refused(Code.UNKNOWN, f"there is no session {session_id!r}")
    run = session.run(location_id)
    if run is None:
        return Refused(Code.UNKNOWN, f"location {location_id!r} is not part of session "
                                     f"{session_id}")
    return session, run


def _stale(session: Session, run: Run, what: str) -> Refused:
    return Refused(Code.STALE, f"location {run.location_id} reported it {what}, but its "
                               f"part of session {session.id} is {run.state} already")


def _with_run(session: Session, run: Run) -> Session:
    return replace(session, runs=tuple(run if r.location_id == run.location_id else r
                                       for r in session.runs))


def _noted(session: Session, note: str) -> Session:
    return replace(session, notes=(*session.notes, note))
