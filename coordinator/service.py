"""The coordinator: rooms, users, sessions started together and stopped by the rules.

The session rules live in the pure `coordinator.sessions` state machine; this module
carries its decisions out: commands the rooms through `EdgeClient`, persists every
change in SQLite before acknowledging it, follows what the rooms report (heartbeats),
adopts recordings started with a room's button, and after a restart reconciles its
view with every room.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from coordinator import naming, sessions
from coordinator import users as accounts
from coordinator.config import CoordinatorConfig
from coordinator.db import Database, NewSession, Role, annotations_json
from coordinator.db import Session as StoredSession
from coordinator.edges import EdgeClient, EdgeError, EdgeRefused
from coordinator.gather import Gatherer, GatherSettings
from coordinator.locations import Location, Locations
from coordinator.storage import Storage, open_storage
from edge import contract as c
from edge.eventhub import EventHub

log = logging.getLogger(__name__)
MANIFEST_POLL_S = 0.25
RTCP_WAIT_S = 3.0  # how long first-frame times may wait for a camera's RTCP re-timing
ACTIVE_STATES = ("starting", "recording", "partial", "stopping")  # a stored session's
NAMING_SETTING = "naming"  # the settings key of the naming settings set through the API


class Refusal(Exception):
    """An operation the rules refuse: a code (forbidden, offline, busy, ...) and why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Actor:
    user_id: int
    username: str
    role: Role


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class Coordinator:
    def __init__(self, config: CoordinatorConfig, db: Database, http: aiohttp.ClientSession,
                 *, clock: Callable[[], float] = time.time,
                 storage: Storage | None = None) -> None:
        """`storage`: central storage; by default the one the configuration names."""
        self.config = config
        self.db = db
        self._http = http
        self._clock = clock
        self._owns_storage = storage is None
        self.storage = storage if storage is not None else open_storage(
            config.storage, config.database.path.parent)
        g = config.gather
        self.gatherer = Gatherer(
            db, self.storage, self.room_client, self._room_display_name, self.describe_session,
            GatherSettings(per_room=g.per_room, poll_s=g.poll_s,
                           max_bytes_per_s=g.max_mbps * 125_000 if g.max_mbps else None),
            publish=self.publish)
        d = config.discovery
        self.locations = Locations(
            http, config.coordinator.id, self._persist_location, d.heartbeat_s,
            d.offline_after_s, d.interfaces, d.enabled, on_change=self._location_changed)
        self.state = sessions.State()
        self.naming = naming.NamingSettings(config.sessions.default_name,
                                            config.sessions.edit_before_save)
        self._group_naming: dict[str, naming.GroupNaming] = {}
        self.events = EventHub(config.coordinator.id)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one session operation at a time
        self.first_admin_password: str | None = None
        self._reachable: dict[str, bool] = {}  # room id: online and not flagged, last seen

    # --- lifecycle ---

    async def start(self) -> None:
        await self._load_naming()
        fa = self.config.first_admin
        password = fa.password.get_secret_value() if fa.password else secrets.token_urlsafe(12)
        if await accounts.ensure_first_admin(self.db, fa.username, password):
            if fa.password is None:
                self.first_admin_password = password
            log.info("created the first Administrator, %r", fa.username)
        stored = []
        for row in await self.db.list_locations():
            secret = await self.db.get_location_secret(row.room_id)
            stored.append(Location(row.room_id, row.name, row.host, row.port, row.api_path,
                                   row.version, secret, row.flagged_reason,
                                   given_name=row.given_name))
        await self._restore_sessions()
        await self.locations.start(stored)
        async with asyncio.timeout(10):
            await self.locations.refresh_all()  # reconcile: the rooms' true state
        for loc in self.locations.known.values():
            self._location_changed(loc)
        await self.gatherer.start()

    async def close(self) -> None:
        await self.gatherer.close()
        await self.locations.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._owns_storage:
            await self.storage.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restore_sessions(self) -> None:
        active = await self.db.list_sessions(states=ACTIVE_STATES)
        restored = []
        groups: dict[str, list[str]] = {}
        for s in active:
            starter = await self.db.get_user(s.started_by) if s.started_by else None
            runs = tuple(sessions.Run(
                sl.room_id, sessions.RunState(sl.state) if sl.state in
                {r.value for r in sessions.RunState} else sessions.RunState.RECORDING,
                sl.recording_id, {k: v.timestamp() for k, v in sl.first_frames.items()},
                sl.failure) for sl in s.locations)
            gid = s.group_id or s.id
            restored.append(sessions.Session(
                s.id, gid, sessions.Kind(s.kind), starter.username if starter else "?",
                runs, s.created_utc.timestamp(), s.start_at_utc.timestamp(),
                by_button=starter is None))
            groups.setdefault(gid, []).append(s.id)
            self._group_naming[gid] = naming.GroupNaming(
                s.name_default, s.name_number, self.naming.edit_before_save) \
                if s.name_default else naming.GroupNaming(editable=True)
        by_id = {s.id: s for s in restored}
        self.state = sessions.State(
            locations=self.state.locations, sessions=by_id,
            groups={g: sessions.Group(g, by_id[ids[0]].kind, by_id[ids[0]].started_by,
                                      tuple(ids))
                    for g, ids in groups.items()})

    # --- locations ---

    async def _persist_location(self, loc: Location) -> None:
        if await self.db.get_location(loc.room_id) is None:
            await self.db.add_location(loc.room_id, name=loc.name, host=loc.host,
                                       port=loc.port, api_path=loc.api, version=loc.version)
        await self.db.update_location(loc.room_id, name=loc.name, host=loc.host,
                                      port=loc.port, api_path=loc.api, version=loc.version,
                                      flagged_reason=loc.flagged,
                                      last_seen_utc=_utc(self._clock()))
        await self.db.set_location_secret(loc.room_id, loc.secret)

    def _location_changed(self, loc: Location) -> None:
        st = loc.status
        synced = st is not None and st.clock == "synchronised"
        back = loc.online and not loc.flagged and not self._reachable.get(loc.room_id, False)
        self._reachable[loc.room_id] = loc.online and not loc.flagged
        if back:
            self.gatherer.room_back(loc.room_id)
        if loc.online or loc.flagged:
            # A flagged room is refused as flagged (never commanded), whatever answers.
            self.state, _ = sessions.location_online(self.state, loc.room_id,
                                                     clock_synchronised=synced,
                                                     flagged=bool(loc.flagged),
                                                     name=loc.display_name)
        else:
            if loc.room_id not in self.state.locations:
                self.state, _ = sessions.location_online(self.state, loc.room_id,
                                                         clock_synchronised=synced,
                                                         name=loc.display_name)
            self.state, _ = sessions.location_offline(self.state, loc.room_id)
        self.publish("location", room_id=loc.room_id, status=self.location_status(loc))
        if loc.online and not loc.flagged and st is not None:
            self._spawn(self._follow(loc, st), f"follow-{loc.room_id}")

    async def _follow(self, loc: Location, st: c.Status) -> None:
        """What a room reports that the coordinator did not ask for: a recording started
        with its button (adopted), or a recording that ended on the room (button, disk)."""
        async with self._lock:
            active = self.state.active_session_at(loc.room_id)
            rec = st.recording
            if rec is not None and active is None and rec.started_by_button:
                await self._adopt(loc, rec)
            elif active is not None and rec is None:
                run = active.run(loc.room_id)
                if run is not None and run.state is sessions.RunState.RECORDING \
                        and run.recording_id is not None:
                    disk_full = await self._ended_disk_full(loc, run.recording_id)
                    await self._stopped(active.id, loc.room_id, disk_full,
                                        "stopped on the room")

    async def _ended_disk_full(self, loc: Location, recording_id: str) -> bool:
        try:
            m = await self.locations.client(loc).manifest(recording_id)
        except EdgeError:
            return False
        return m.state == "disk_full"

    async def _adopt(self, loc: Location, rec: c.CurrentRecording) -> None:
        sid = f"b-{secrets.token_hex(6)}"
        button_user = rec.started_by or "room button"
        self.state, outcome = sessions.adopt(self.state, loc.room_id, rec.recording_id,
                                             button_user, rec.requested_start_utc.timestamp(),
                                             session_id=sid)
        if isinstance(outcome, sessions.Refused):
            log.warning("cannot adopt %s on %s: %s", rec.recording_id, loc.room_id,
                        outcome.reason)
            return
        grp = await self._name_group(sid)
        now = _utc(self._clock())
        await self.db.create_sessions([NewSession(
            id=sid, kind="single", started_by=None, start_at_utc=rec.requested_start_utc,
            created_utc=now, room_ids=(loc.room_id,), state="recording",
            location_state="recording", group_id=sid, name_default=grp.default_name,
            name_number=grp.number)])
        await self.db.update_session_location(sid, loc.room_id,
                                              recording_id=rec.recording_id)
        self.publish("session", session_id=sid, state="recording", adopted=True)
        log.info("adopted %s on %s (started with the room's button)", rec.recording_id,
                 loc.room_id)

    async def rename_location(self, room_id: str, name: str) -> Location:
        """Name the location on the coordinator: this name wins over the room's own, and
        survives heartbeats, announcements and restarts."""
        loc = self.locations.known.get(room_id)
        if loc is None:
            raise Refusal("unknown", f"there is no location {room_id!r}")
        name = name.strip()
        await self.db.update_location(room_id, given_name=name)
        loc.given_name = name
        self.state, _ = sessions.location_renamed(self.state, room_id, name)
        self.publish("location", room_id=room_id, name=name, status=self.location_status(loc))
        return loc

    def room_client(self, room_id: str, timeout_s: float = 5.0) -> EdgeClient:
        """A client of a location that may be called now. Refusal `unknown` for a room
        not known, `offline` for one offline or flagged (a flagged room is never
        commanded)."""
        loc = self.locations.known.get(room_id)
        if loc is None:
            raise Refusal("unknown", f"there is no location {room_id!r}")
        if loc.flagged:
            raise Refusal("offline", f"{loc.display_name} is not called until it is paired "
                                     f"again: {loc.flagged}")
        if not loc.online:
            raise Refusal("offline", f"{loc.display_name} is offline")
        return self.locations.client(loc, timeout_s)

    async def recording_manifests(self, session: StoredSession) -> dict[str, c.Manifest | str]:
        """Per room of the session, its recording's manifest, or why there is none now."""
        async def one(room_id: str, recording_id: str | None,
                      failure: str | None) -> c.Manifest | str:
            if recording_id is None:
                return failure or "nothing was recorded there"
            try:
                return await self.room_client(room_id).manifest(recording_id)
            except Refusal as e:
                return e.reason
            except EdgeError as e:
                return f"the room's manifest cannot be read: {e}"

        found = await asyncio.gather(*(one(sl.room_id, sl.recording_id, sl.failure)
                                       for sl in session.locations))
        return {sl.room_id: m for sl, m in zip(session.locations, found, strict=True)}

    def location_status(self, loc: Location) -> str:
        if loc.flagged:
            return "error"  # never commanded: an administrator must pair it again
        if not loc.online:
            return "offline"
        if loc.status is not None and loc.status.state == "error":
            return "error"
        if self.state.recording(loc.room_id) or (loc.status is not None
                                                 and loc.status.recording is not None):
            return "recording"
        pure = self.state.locations.get(loc.room_id)
        if pure is not None and pure.locked_by is not None:
            return "locked"
        return "idle"

    # --- sessions ---

    async def _name_group(self, group_id: str) -> naming.GroupNaming:
        if self.naming.default_name is None:
            grp = naming.GroupNaming(editable=True)
        else:
            number = await self.db.reserve_name_number(self.naming.default_name)
            grp = naming.GroupNaming(self.naming.default_name, number,
                                     self.naming.edit_before_save)
        self._group_naming[group_id] = grp
        return grp

    async def lock(self, actor: Actor, room_id: str) -> None:
        self.state, out = sessions.lock(self.state, actor.username,
                                        sessions.Role(actor.role.value), room_id)
        _raise(out)
        self.publish("location", room_id=room_id, status="locked", by=actor.username)

    async def unlock(self, actor: Actor, room_id: str) -> None:
        self.state, out = sessions.unlock(self.state, actor.username,
                                          sessions.Role(actor.role.value), room_id)
        _raise(out)
        self.publish("location", room_id=room_id, status="idle")

    async def start_sessions(self, actor: Actor, room_ids: list[str], kind: str,
                             codes_list_id: int | None = None) -> list[StoredSession]:
        """Start `kind` sessions of these rooms at a synchronized time a little ahead."""
        async with self._lock:
            gid = secrets.token_hex(6)
            now = self._clock()
            self.state, out = sessions.start(
                self.state, actor.username, sessions.Role(actor.role.value), room_ids,
                sessions.Kind(kind), group_id=gid, now=now,
                lead_s=self.config.sessions.start_lead_s,
                allow_unsynced=self.config.sessions.allow_unsynced_clock)
            started = _raise(out)
            assert isinstance(started, sessions.Started)
            grp = await self._name_group(gid)
            await self.db.create_sessions([NewSession(
                id=cmd.session_id, kind=kind, started_by=actor.user_id,  # type: ignore[arg-type]
                start_at_utc=_utc(started.start_at), created_utc=_utc(now),
                room_ids=cmd.location_ids, group_id=gid, name_default=grp.default_name,
                name_number=grp.number, codes_list_id=codes_list_id)
                for cmd in started.commands])
            calls = [self._start_one(actor, cmd.session_id, rid, started.start_at,
                                     grp.proposal)
                     for cmd in started.commands for rid in cmd.location_ids]
            await asyncio.gather(*calls)
        for w in started.warnings:
            log.warning("session %s: %s", gid, w)
        self.publish("group_started", group_id=gid, kind=kind, by=actor.username,
                     warnings=list(started.warnings))
        stored = [await self.db.get_session(cmd.session_id) for cmd in started.commands]
        return [s for s in stored if s is not None]

    async def _start_one(self, actor: Actor, session_id: str, room_id: str, start_at: float,
                         proposal: str | None) -> None:
        loc = self.locations.known[room_id]
        req = c.StartRequest(session_id=session_id, name=proposal, started_by=actor.username,
                             start_at_utc=_utc(start_at))
        try:
            rec = await self.locations.client(loc).start(req)
        except EdgeError as e:
            reason = e.detail if isinstance(e, EdgeRefused) else "the room did not answer"
            self.state, _ = sessions.location_failed(self.state, session_id, room_id, reason)
            await self.db.update_session_location(session_id, room_id, state="failed",
                                                  failure=reason)
            await self._save_session_state(session_id)
            self.publish("session", session_id=session_id, room_id=room_id, failed=reason)
            return
        await self.db.update_session_location(session_id, room_id,
                                              recording_id=rec.recording_id)
        self._spawn(self._await_first_frames(session_id, room_id, rec.recording_id),
                    f"first-frames-{session_id}-{room_id}")

    async def _await_first_frames(self, session_id: str, room_id: str,
                                  recording_id: str) -> None:
        """The cameras' actual first-frame times, from the room's manifest."""
        loc = self.locations.known[room_id]
        frames: dict[str, float] = {}
        deadline = time.monotonic() + 15 + self.config.sessions.start_lead_s
        all_seen: float | None = None
        while time.monotonic() < deadline:
            try:
                m = await self.locations.client(loc).manifest(recording_id)
            except EdgeError:
                m = None
            if m is not None:
                frames = {name: cam.first_frame_utc.timestamp()
                          for name, cam in m.cameras.items() if cam.first_frame_utc}
                if len(frames) == len(m.cameras):
                    all_seen = all_seen or time.monotonic()
                    # An RTSP camera's first frame is re-timed by its first RTCP sender
                    # report, which comes within a few seconds; other cameras never are.
                    arrival = any(cam.segments and cam.segments[0].time_source == "arrival"
                                  for cam in m.cameras.values())
                    if not arrival or time.monotonic() - all_seen > RTCP_WAIT_S:
                        break
            await asyncio.sleep(MANIFEST_POLL_S)
        async with self._lock:
            self.state, _ = sessions.location_started(self.state, session_id, room_id, frames,
                                                      recording_id)
            await self.db.update_session_location(
                session_id, room_id, state="recording",
                first_frames={k: _utc(v) for k, v in frames.items()})
            await self._save_session_state(session_id)
        self.publish("session", session_id=session_id, room_id=room_id, state="recording")

    async def _save_session_state(self, session_id: str) -> None:
        s = self.state.sessions.get(session_id)
        if s is None:
            return
        reasons = "; ".join(s.reasons) or None
        await self.db.update_session(session_id, state=s.state.value, spread_s=s.spread_s,
                                     partial_reason=reasons)

    async def stop_group(self, actor: Actor, session_id: str,
                         name: str | None = None) -> list[StoredSession]:
        """Stop a session and every session of its group; `name`: the Save session step."""
        async with self._lock:
            session = self.state.sessions.get(session_id)
            if session is None:
                raise Refusal("unknown", f"no running session {session_id}")
            grp = self._group_naming.get(session.group_id, naming.GroupNaming(editable=True))
            # Who may stop comes first (a Trainee hears "may only view", not about the
            # name); the name is checked before anything stops. The state machine is
            # pure, so its answer is kept only once both are right.
            after, out = sessions.stop(self.state, actor.username,
                                       sessions.Role(actor.role.value), session_id,
                                       self._clock())
            stopping = _raise(out)
            try:
                naming.final_name(grp, name)
            except naming.NamingError as e:
                raise Refusal("name", str(e)) from None
            self.state = after
            assert isinstance(stopping, sessions.Stopping)
            technician = actor.role == Role.TECHNICIAN
            results = await asyncio.gather(*(
                self._stop_one(actor, cmd.session_id, rid, technician)
                for cmd in stopping.commands for rid in cmd.location_ids))
            for (sid, rid, disk_full) in results:
                await self._stopped(sid, rid, disk_full, None, save=False)
            for sid in {sid for sid, _, _ in results}:
                await self._save_session_state(sid)  # once per session, not per room
            group = self.state.groups[stopping.group_id]
            out_sessions = []
            for sid in group.session_ids:
                s = self.state.sessions[sid]
                final = naming.final_name(grp, name, s.disk_full)
                await self.db.update_session(sid, name=final, stopped_by=actor.user_id,
                                             stopped_utc=_utc(self._clock()),
                                             state=s.state.value)
                stored = await self.db.get_session(sid)
                if stored is not None:
                    out_sessions.append(stored)
        self.publish("group_stopped", group_id=stopping.group_id, by=actor.username)
        self.gatherer.wake()
        return out_sessions

    async def _stop_one(self, actor: Actor, session_id: str, room_id: str,
                        technician: bool) -> tuple[str, str, bool]:
        loc = self.locations.known.get(room_id)
        if loc is None:
            return session_id, room_id, False
        client = self.locations.client(loc)
        try:
            summary = await client.stop(c.StopRequest(stopped_by=actor.username,
                                                      technician=technician))
            return session_id, room_id, summary.state == "disk_full"
        except EdgeRefused as e:
            if e.error != "recording_conflict":  # 409: nothing runs there any more
                log.warning("room %s refused to stop: %s", room_id, e)
        except EdgeError as e:
            log.warning("room %s did not answer the stop: %s", room_id, e)
        return session_id, room_id, False

    async def _stopped(self, session_id: str, room_id: str, disk_full: bool,
                       reason: str | None, save: bool = True) -> None:
        self.state, _ = sessions.location_stopped(self.state, session_id, room_id, disk_full,
                                                  reason)
        await self.db.update_session_location(session_id, room_id, state="stopped")
        if save:
            await self._save_session_state(session_id)
        s = self.state.sessions.get(session_id)
        if s is not None and not s.active and reason is not None:
            # Ended on the room (button, disk full): named by the rules, no Save step.
            grp = self._group_naming.get(s.group_id, naming.GroupNaming(editable=True))
            if grp.proposal is not None:
                await self.db.update_session(session_id,
                                             name=naming.final_name(grp, None, s.disk_full),
                                             stopped_utc=_utc(self._clock()))
        self.publish("session", session_id=session_id, room_id=room_id, state="stopped")
        self.gatherer.wake()

    def session_running(self, session: StoredSession) -> bool:
        """Starting, recording or stopping somewhere."""
        pure = self.state.sessions.get(session.id)
        if pure is not None:
            return pure.active
        return session.state in ACTIVE_STATES

    async def visible_session(self, session_id: str) -> StoredSession:
        """The session, unless unknown or deleted (Refusal `unknown`)."""
        s = await self.db.get_session(session_id)
        if s is None or s.deleted_utc is not None:
            raise Refusal("unknown", f"no session {session_id}")
        return s

    async def rename_session(self, actor: Actor, session_id: str,
                             name: str) -> StoredSession:
        """Rename a session that no longer runs: its starter, a Technician or an
        Administrator may."""
        if not accounts.may_record(actor.role):
            raise Refusal("forbidden", "a Trainee may only view")
        s = await self.visible_session(session_id)
        if s.started_by != actor.user_id and actor.role not in (Role.TECHNICIAN,
                                                                 Role.ADMINISTRATOR):
            raise Refusal("forbidden", "only whoever started a session, a Technician or an "
                                       "Administrator may rename it")
        if self.session_running(s):
            raise Refusal("busy", f"session {session_id} is still running: stop it first")
        try:
            checked = naming.check_name(name)
        except naming.NamingError as e:
            raise Refusal("name", str(e)) from None
        renamed = await self.db.update_session(session_id, name=checked)
        self.publish("session", session_id=session_id, name=checked, by=actor.username)
        return renamed

    async def delete_session(self, actor: Actor, session_id: str) -> None:
        """Delete a session that no longer runs (hidden, kept in the store). Its
        recordings are not touched: none is deleted before its central copy is
        verified."""
        if not accounts.may_delete_sessions(actor.role):
            raise Refusal("forbidden", f"a {actor.role.value.capitalize()} may not delete "
                                       "sessions")
        s = await self.visible_session(session_id)
        if self.session_running(s):
            raise Refusal("busy", f"session {session_id} is still running: stop it first")
        await self.db.soft_delete_session(session_id, deleted_by=actor.user_id,
                                          deleted_utc=_utc(self._clock()))
        self.publish("session", session_id=session_id, deleted=True, by=actor.username)

    # --- naming settings ---

    async def _load_naming(self) -> None:
        """The naming settings stored through the API, if any; else the configuration's."""
        raw = await self.db.get_setting(NAMING_SETTING)
        if not isinstance(raw, dict):
            return
        default_name = raw.get("default_name")
        try:
            self.naming = naming.NamingSettings(
                default_name if isinstance(default_name, str) else None,
                raw.get("edit_before_save") is True)
        except naming.NamingError as e:
            log.warning("stored naming settings ignored: %s", e)

    async def set_naming(self, settings: naming.NamingSettings) -> None:
        """Store the naming settings and use them from the next session on (running
        sessions keep the naming they started with)."""
        await self.db.set_setting(NAMING_SETTING, {
            "default_name": settings.default_name,
            "edit_before_save": settings.edit_before_save})
        self.naming = settings
        self.publish("settings", naming=True)

    # --- gathering ---

    def _room_display_name(self, room_id: str) -> str:
        loc = self.locations.known.get(room_id)
        return loc.display_name if loc is not None else room_id

    async def describe_session(self, s: StoredSession) -> dict[str, Any]:
        """What central storage keeps beside a session's files (its `session.json`)."""
        async def who(user_id: int | None) -> dict[str, str] | None:
            u = await self.db.get_user(user_id) if user_id is not None else None
            return {"username": u.username, "display_name": u.display_name} if u else None

        def ts(when: datetime | None) -> str | None:
            return when.isoformat() if when is not None else None

        notes = await self.db.export_annotations(s.id)
        return {
            "format": "roomrec.session/1", "id": s.id, "group_id": s.group_id,
            "kind": s.kind, "name": s.name, "state": s.state,
            "partial_reason": s.partial_reason, "start_at_utc": ts(s.start_at_utc),
            "stopped_utc": ts(s.stopped_utc), "started_by": await who(s.started_by),
            "stopped_by": await who(s.stopped_by), "deleted_utc": ts(s.deleted_utc),
            "locations": [{"room_id": sl.room_id, "name": self._room_display_name(sl.room_id),
                           "recording_id": sl.recording_id, "state": sl.state,
                           "failure": sl.failure,
                           "first_frames": {k: ts(v) for k, v in sl.first_frames.items()}}
                          for sl in s.locations],
            "annotations": json.loads(annotations_json(notes)),
        }

    # --- annotations ---

    async def score(self, actor: Actor, session_id: str, key: str,
                    text: str | None = None) -> None:
        s = await self._session_for_annotation(actor, session_id)
        now = self._clock()
        await self.db.add_score(session_id, key=key, session_time_s=_session_time(s, now),
                                wall_utc=_utc(now), user_id=actor.user_id, text=text)
        self.publish("annotation", session_id=session_id, key=key, by=actor.username)

    async def remark(self, actor: Actor, session_id: str, text: str) -> None:
        s = await self._session_for_annotation(actor, session_id)
        now = self._clock()
        await self.db.add_remark(session_id, text=text, session_time_s=_session_time(s, now),
                                 wall_utc=_utc(now), user_id=actor.user_id)
        self.publish("annotation", session_id=session_id, remark=True, by=actor.username)

    async def _session_for_annotation(self, actor: Actor, session_id: str) -> StoredSession:
        if not accounts.may_record(actor.role):
            raise Refusal("forbidden", "a Trainee may only view")
        return await self.visible_session(session_id)

    # --- events ---

    def subscribe(self) -> asyncio.Queue[c.Event]:
        return self.events.subscribe()

    def publish(self, event_type: str, **data: object) -> None:
        self.events.publish(event_type, **data)


def _session_time(s: StoredSession, now: float) -> float:
    """Seconds into the session (0 for a score before its synchronized start)."""
    return round(max(0.0, now - s.start_at_utc.timestamp()), 3)


def _raise(out: object) -> object:
    if isinstance(out, sessions.Refused):
        raise Refusal(out.code.value, out.reason)
    return out


__all__ = ["Actor", "Coordinator", "Refusal"]
