"""The coordinator's REST API under /api/v1, with its OpenAPI document and live events.

Login gives a session cookie (HttpOnly, SameSite=Lax, Secure unless turned off for a
plain-HTTP LAN); API clients may send the same token as `Authorization: Bearer`.
Logging out never stops a recording.

Recorded media is served through the coordinator: a session's segment files stream from
the rooms chunk by chunk, with Range requests passed on, so a browser can play them
(`<video src>`, authenticated by the cookie) and seek in them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ValidationError

from coordinator import db as store
from coordinator import media, naming
from coordinator import models as m
from coordinator import users as accounts
from coordinator.edges import EdgeError, EdgeRefused
from coordinator.gather import FileRow, Progress
from coordinator.service import Actor, Coordinator, Refusal
from coordinator.storage import StorageError
from coordinator.web import STATIC, page_routes
from edge import contract as c
from edge.api import Route, error_response, openapi
from edge.eventhub import stream

log = logging.getLogger(__name__)

P = c.API_PREFIX
COOKIE = "roomrec_session"
UNNAMED: Final = "Unnamed session"
SNAPSHOT_TIMEOUT_S: Final = 8.0  # a room waits up to 5 s for a fresh keyframe
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ACTOR = web.RequestKey("actor", Actor)
REFUSAL_STATUS = {"forbidden": 403, "unknown": 404, "name": 422, "invalid": 422,
                  "empty": 422}


def ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status,
                        content_type="application/json")


async def read(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.read() or b"{}")
    except ValidationError as e:
        detail = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
                           for err in e.errors())
        raise web.HTTPUnprocessableEntity(
            text=c.ErrorBody(error="invalid_body", detail=detail).model_dump_json(),
            content_type="application/json") from None


def user_out(u: store.User) -> m.UserOut:
    return m.UserOut(id=u.id, username=u.username, display_name=u.display_name,
                     role=u.role.value, active=u.active)


def me_out(u: store.User) -> m.MeOut:
    return m.MeOut(**user_out(u).model_dump(),
                   permissions=[p.value for p in accounts.Permission if accounts.may(u.role, p)])


def attachment(filename: str) -> str:
    """A Content-Disposition for saving as `filename`, with an ASCII fallback."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """The one range `header` asks for, as (first, last) within `size` bytes; None for
    the whole file (no header, or one we do not serve partly: several ranges); False if
    it cannot be satisfied."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, _, last_s = header[6:].strip().partition("-")
    try:
        if not first_s:  # the last N bytes
            n = int(last_s)
            return (max(0, size - n), size - 1) if n > 0 and size else False
        first = int(first_s)
        last = min(int(last_s), size - 1) if last_s else size - 1
    except ValueError:
        return None
    return (first, last) if first <= last and first < size else False


def from_room(e: EdgeRefused) -> Exception:
    """What a room's refusal means to our client: its 404 and 409 are ours too."""
    if e.status == 404:
        return store.NotFound(e.detail)
    if e.status == 409:
        return Refusal("not_ready", e.detail)
    return e


def _list_id(request: web.Request) -> int:
    try:
        return int(request.match_info["list_id"])
    except ValueError:
        raise store.NotFound(f"no codes list {request.match_info['list_id']!r}") from None


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get(COOKIE)


def build(co: Coordinator) -> tuple[web.Application, list[Route]]:  # noqa: PLR0915 - the route table
    actors: dict[int, Actor] = {}

    def actor_of(request: web.Request) -> Actor:
        return request[ACTOR]

    def need(request: web.Request, allowed: bool, what: str) -> Actor:
        a = actor_of(request)
        if not allowed:
            raise Refusal("forbidden", f"a {a.role.value.capitalize()} may not {what}")
        return a

    def room_name(room_id: str) -> str:
        loc = co.locations.known.get(room_id)
        return loc.display_name if loc is not None else room_id

    async def session_out(s: store.Session,
                          progress: Progress | None = None) -> m.SessionOut:
        if progress is None:
            progress = (await co.gatherer.store.progress([s.id]))[s.id]
        starter = await co.db.get_user(s.started_by) if s.started_by else None
        pure = co.state.sessions.get(s.id)
        proposal = None
        if s.name_default and s.name_number:
            proposal = f"{s.name_default} {s.name_number}"
        duration = None
        if s.stopped_utc is not None and not co.session_running(s):
            duration = max(0.0, (s.stopped_utc - s.start_at_utc).total_seconds())
        return m.SessionOut(
            id=s.id, group_id=s.group_id, kind=s.kind, name=s.name, proposal=proposal,
            name_display=s.name or proposal or UNNAMED,
            started_by=starter.username if starter else (pure.started_by if pure else None),
            started_by_display=starter.display_name if starter else None,
            start_at_utc=s.start_at_utc, state=s.state, partial_reason=s.partial_reason,
            stopped_utc=s.stopped_utc, spread_s=s.spread_s, codes_list_id=s.codes_list_id,
            locations=[m.SessionLocationOut(room_id=sl.room_id, state=sl.state,
                                            recording_id=sl.recording_id,
                                            first_frames=dict(sl.first_frames),
                                            failure=sl.failure) for sl in s.locations],
            duration_s=duration, room_names={sl.room_id: room_name(sl.room_id)
                                             for sl in s.locations},
            gathering=progress.state, gathered_bytes=progress.gathered_bytes,  # type: ignore[arg-type]
            total_bytes=progress.total_bytes)

    def location_out(room_id: str) -> m.LocationOut:
        loc = co.locations.known[room_id]
        st = loc.status
        active = co.state.active_session_at(room_id)
        pure = co.state.locations.get(room_id)
        recording_by = active.started_by if active else (
            st.recording.started_by if st and st.recording else None)
        return m.LocationOut(
            room_id=room_id, name=loc.display_name,
            status=co.location_status(loc),  # type: ignore[arg-type]  # one of LocationState
            online=loc.online, flagged=loc.flagged, recording_by=recording_by,
            session_id=active.id if active else None,
            locked_by=pure.locked_by if pure else None,
            cameras_online=sum(1 for cam in st.cameras if cam.state == "online") if st else 0,
            cameras=len(st.cameras) if st else 0,
            runway_minutes=st.disk.runway_minutes if st else None,
            clock=st.clock if st else None, host=loc.host, port=loc.port,
            camera_list=[m.CameraOut(name=cam.name, state=cam.state)
                         for cam in (st.cameras if st else [])])

    # --- handlers ---

    async def health(_: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "coordinator": co.config.coordinator.id})

    async def login(request: web.Request) -> web.StreamResponse:
        body = await read(request, m.LoginRequest)
        try:
            token, user = await accounts.login(co.db, body.username, body.password,
                                               datetime.now(UTC))
        except accounts.LoginFailed as e:
            return error_response(401, "login_failed", str(e))
        resp = ok(m.LoginResponse(user=user_out(user), token=token))
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Lax",
                        secure=co.config.api.secure_cookies, path="/")
        return resp

    async def logout(request: web.Request) -> web.StreamResponse:
        token = _token(request)
        if token:
            await accounts.logout(co.db, token)
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def me(request: web.Request) -> web.StreamResponse:
        user = await co.db.get_user(actor_of(request).user_id)
        assert user is not None
        return ok(me_out(user))

    async def list_users(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_users(actor_of(request).role), "manage users")
        return ok(m.UserList(users=[user_out(u) for u in await co.db.list_users()]))

    async def create_user(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_users(actor_of(request).role), "manage users")
        body = await read(request, m.NewUser)
        user = await accounts.create_user(co.db, body.username, body.display_name,
                                          store.Role(body.role), body.password,
                                          datetime.now(UTC))
        return ok(user_out(user), 201)

    async def change_user(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_users(actor_of(request).role), "manage users")
        body = await read(request, m.UserChange)
        uid = int(request.match_info["user_id"])
        if body.password is not None:
            await accounts.set_password(co.db, uid, body.password)
        kwargs: dict[str, Any] = {}
        if body.display_name is not None:
            kwargs["display_name"] = body.display_name
        if body.role is not None:
            kwargs["role"] = store.Role(body.role)
        if body.active is not None:
            kwargs["active"] = body.active
        user = await co.db.update_user(uid, **kwargs) if kwargs else await co.db.get_user(uid)
        if user is None:
            raise store.NotFound(f"no user {uid}")
        return ok(user_out(user))

    async def locations(request: web.Request) -> web.StreamResponse:
        sort = request.query.get("sort", "name")
        if sort not in ("name", "status"):
            return error_response(422, "invalid_query", "sort is 'name' or 'status'")
        out = [location_out(rid) for rid in co.locations.known]
        order = {"recording": 0, "locked": 1, "error": 2, "idle": 3, "offline": 4}
        if sort == "status":
            out.sort(key=lambda x: (order[x.status], x.name.casefold()))
        else:
            out.sort(key=lambda x: x.name.casefold())
        return ok(m.LocationList(locations=out))

    async def discovered(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_locations(actor_of(request).role), "pair rooms")
        return ok(m.DiscoveredList(rooms=[
            m.DiscoveredOut(room_id=d.room_id, name=d.name, host=d.host, port=d.port,
                            version=d.version, state=d.state)
            for d in co.locations.discovered.values()]))

    async def pair(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_locations(actor_of(request).role), "pair rooms")
        body = await read(request, m.PairLocation)
        if body.room_id is not None:
            d = co.locations.discovered.get(body.room_id)
            known = co.locations.known.get(body.room_id)
            if d is not None:
                host, port, api = d.host, d.port, d.api
            elif known is not None:
                host, port, api = known.host, known.port, known.api
            else:
                raise Refusal("unknown", f"room {body.room_id} has not been seen")
            loc = await co.locations.pair(host, port, body.code, api, expect_room=body.room_id)
        elif body.host and body.port:
            loc = await co.locations.pair(body.host, body.port, body.code)
        else:
            return error_response(422, "invalid_body", "give room_id, or host and port")
        return ok(location_out(loc.room_id), 201)

    async def lock(request: web.Request) -> web.StreamResponse:
        await co.lock(actor_of(request), request.match_info["room_id"])
        return ok(location_out(request.match_info["room_id"]))

    async def unlock(request: web.Request) -> web.StreamResponse:
        await co.unlock(actor_of(request), request.match_info["room_id"])
        return ok(location_out(request.match_info["room_id"]))

    async def rename_location(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_locations(actor_of(request).role),
             "rename locations")
        body = await read(request, m.LocationChange)
        loc = await co.rename_location(request.match_info["room_id"], body.name)
        return ok(location_out(loc.room_id))

    async def snapshot(request: web.Request) -> web.StreamResponse:
        room_id, camera = request.match_info["room_id"], request.match_info["camera"]
        client = co.room_client(room_id, SNAPSHOT_TIMEOUT_S)
        st = co.locations.known[room_id].status
        if st is not None and camera not in {cam.name for cam in st.cameras}:
            raise store.NotFound(f"{room_name(room_id)} has no camera {camera!r}")
        try:
            jpeg = await client.snapshot(camera)
        except EdgeRefused as e:
            if e.status == 404:
                raise store.NotFound(e.detail) from None
            raise
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store"})

    async def start(request: web.Request) -> web.StreamResponse:
        body = await read(request, m.StartSessions)
        started = await co.start_sessions(actor_of(request), body.room_ids, body.kind,
                                          body.codes_list_id)
        return ok(m.SessionList(sessions=[await session_out(s) for s in started]), 201)

    async def stop(request: web.Request) -> web.StreamResponse:
        body = await read(request, m.StopSession)
        stopped = await co.stop_group(actor_of(request), request.match_info["session_id"],
                                      body.name)
        return ok(m.SessionList(sessions=[await session_out(s) for s in stopped]))

    async def list_sessions(request: web.Request) -> web.StreamResponse:
        rows = await co.db.list_sessions(limit=int(request.query.get("limit", "500")))
        progress = await co.gatherer.store.progress([s.id for s in rows])
        return ok(m.SessionList(sessions=[await session_out(s, progress[s.id]) for s in rows]))

    async def get_session(request: web.Request) -> web.StreamResponse:
        return ok(await session_out(await co.visible_session(request.match_info["session_id"])))

    async def rename_session(request: web.Request) -> web.StreamResponse:
        body = await read(request, m.SessionChange)
        s = await co.rename_session(actor_of(request), request.match_info["session_id"],
                                    body.name)
        return ok(await session_out(s))

    async def delete_session(request: web.Request) -> web.StreamResponse:
        await co.delete_session(actor_of(request), request.match_info["session_id"])
        return web.Response(status=204)

    async def session_media(request: web.Request) -> web.StreamResponse:
        s = await co.visible_session(request.match_info["session_id"])
        manifests = await co.recording_manifests(s)
        cameras: dict[str, list[str]] = {}
        for sl in s.locations:
            loc = co.locations.known.get(sl.room_id)
            st = loc.status if loc is not None else None
            cameras[sl.room_id] = sorted(sl.first_frames) or (
                [cam.name for cam in st.cameras] if st is not None else [])
        return ok(media.session_media(s, manifests, {sl.room_id: room_name(sl.room_id)
                                                     for sl in s.locations}, cameras,
                                      await co.gatherer.store.files(s.id)))

    async def segment(request: web.Request) -> web.StreamResponse:
        sid, room_id = request.match_info["session_id"], request.match_info["room_id"]
        segment_id = request.match_info["segment_id"]
        s = await co.visible_session(sid)
        sl = next((x for x in s.locations if x.room_id == room_id), None)
        if sl is None or sl.recording_id is None:
            raise store.NotFound(f"session {sid} recorded nothing at {room_id}")
        stored = await co.gatherer.store.file(room_id, segment_id)
        if stored is not None and stored.session_id == sid and stored.key \
                and stored.verified_utc:
            return await from_storage(request, s, stored)  # the verified central copy
        client = co.room_client(room_id)
        try:
            found = media.find_segment(await client.manifest(sl.recording_id), segment_id)
            if found is None:
                raise store.NotFound(f"segment {segment_id} is not one of session {sid}'s "
                                     f"at {room_name(room_id)}")
            camera, seg = found
            async with client.segment(segment_id, request.headers.get("Range"),
                                      request.headers.get("If-Range")) as up:
                if up.status == 416:
                    refused = error_response(416, "range_not_satisfiable",
                                             "the range asked for is outside the file")
                    if "Content-Range" in up.headers:
                        refused.headers["Content-Range"] = up.headers["Content-Range"]
                    return refused
                resp = web.StreamResponse(status=up.status, headers={
                    **up.headers, "Content-Type": "video/mp4", "Cache-Control": "no-store"})
                if request.query.get("download") == "1":
                    resp.headers["Content-Disposition"] = attachment(media.download_name(
                        s, room_name(room_id), camera, seg.index))
                await resp.prepare(request)
                try:
                    async for chunk in up.chunks:
                        await resp.write(chunk)
                except ConnectionResetError:
                    return resp  # the browser went away (it seeks by asking again)
                except EdgeError as e:
                    # Mid-file: too late for an error status. Cut the connection, so the
                    # client sees a short file, never a complete-looking wrong one.
                    log.warning("segment %s from %s broke off: %s", segment_id, room_id, e)
                    if request.transport is not None:
                        request.transport.close()
                    return resp
                await resp.write_eof()
                return resp
        except EdgeRefused as e:
            raise from_room(e) from None

    async def from_storage(request: web.Request, s: store.Session,
                           row: FileRow) -> web.StreamResponse:
        assert row.key is not None and row.verified_utc is not None
        etag = f'"{row.sha256}"'
        modified = datetime.fromisoformat(row.verified_utc).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")
        wanted = byte_range(request.headers.get("Range"), row.size)
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, modified):
            wanted = None  # the client's copy is another file: the whole of this one
        if wanted is False:
            refused = error_response(416, "range_not_satisfiable",
                                     "the range asked for is outside the file")
            refused.headers["Content-Range"] = f"bytes */{row.size}"
            return refused
        first, last = wanted if isinstance(wanted, tuple) else (0, row.size - 1)
        headers = {"Content-Type": "video/mp4", "Cache-Control": "no-store",
                   "Accept-Ranges": "bytes", "X-Content-SHA256": row.sha256,
                   "ETag": etag, "Last-Modified": modified,
                   "Content-Length": str(max(0, last - first + 1))}
        if isinstance(wanted, tuple):
            headers["Content-Range"] = f"bytes {first}-{last}/{row.size}"
        if request.query.get("download") == "1":
            headers["Content-Disposition"] = attachment(media.download_name(
                s, room_name(row.room_id), row.camera, row.index))
        resp = web.StreamResponse(status=206 if isinstance(wanted, tuple) else 200,
                                  headers=headers)
        await resp.prepare(request)
        at = first
        try:
            while at <= last:
                block = await co.storage.read_range(row.key, at, min(1 << 20, last - at + 1))
                if not block:
                    raise StorageError(f"{row.key} ended at byte {at} of {row.size}")
                await resp.write(block)
                at += len(block)
        except ConnectionResetError:
            return resp  # the browser went away (it seeks by asking again)
        except StorageError as e:
            log.warning("stored file %s broke off: %s", row.key, e)
            if request.transport is not None:
                request.transport.close()  # a short file, never a wrong one
            return resp
        await resp.write_eof()
        return resp

    async def score(request: web.Request) -> web.StreamResponse:
        body = await read(request, m.ScoreRequest)
        await co.score(actor_of(request), request.match_info["session_id"], body.key,
                       body.text)
        return web.json_response({"ok": True}, status=201)

    async def remark(request: web.Request) -> web.StreamResponse:
        body = await read(request, m.RemarkRequest)
        await co.remark(actor_of(request), request.match_info["session_id"], body.text)
        return web.json_response({"ok": True}, status=201)

    async def choose_codes(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_record(actor_of(request).role), "choose codes lists")
        body = await read(request, m.ChooseCodesList)
        await co.visible_session(request.match_info["session_id"])
        s = await co.db.set_session_codes_list(request.match_info["session_id"],
                                               body.codes_list_id)
        return ok(await session_out(s))

    async def export(request: web.Request) -> web.StreamResponse:
        sid = request.match_info["session_id"]
        fmt = request.match_info["fmt"]
        await co.visible_session(sid)
        rows = await co.db.export_annotations(sid)
        if fmt == "csv":
            return web.Response(text=store.annotations_csv(rows), content_type="text/csv",
                                headers={"Content-Disposition":
                                         f'attachment; filename="{sid}-annotations.csv"'})
        return web.Response(text=store.annotations_json(rows), content_type="application/json")

    def codes_out(cl: store.CodesList) -> m.CodesListOut:
        return m.CodesListOut(id=cl.id, name=cl.name, codes=[
            m.CodeIn(key=x.key, label=x.label, color=x.color) for x in cl.codes])

    async def codes_lists(_: web.Request) -> web.StreamResponse:
        return ok(m.CodesLists(lists=[codes_out(x) for x in await co.db.list_codes_lists()]))

    async def new_codes_list(request: web.Request) -> web.StreamResponse:
        a = need(request, accounts.may_manage_locations(actor_of(request).role),
                 "edit codes lists")
        body = await read(request, m.NewCodesList)
        cl = await co.db.create_codes_list(body.name, a.user_id, [
            store.Code(x.key, x.label, x.color) for x in body.codes])
        return ok(codes_out(cl), 201)

    async def replace_codes_list(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_locations(actor_of(request).role),
             "edit codes lists")
        body = await read(request, m.NewCodesList)
        cl = await co.db.replace_codes_list(_list_id(request), body.name, [
            store.Code(x.key, x.label, x.color) for x in body.codes])
        co.publish("codes_list", list_id=cl.id)
        return ok(codes_out(cl))

    async def delete_codes_list(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_locations(actor_of(request).role),
             "edit codes lists")
        list_id = _list_id(request)
        await co.db.delete_codes_list(list_id)
        co.publish("codes_list", list_id=list_id, deleted=True)
        return web.Response(status=204)

    def naming_out() -> m.NamingSettingsBody:
        return m.NamingSettingsBody(default_name=co.naming.default_name,
                                    edit_before_save=co.naming.edit_before_save)

    async def get_naming(_: web.Request) -> web.StreamResponse:
        return ok(naming_out())

    async def put_naming(request: web.Request) -> web.StreamResponse:
        need(request, accounts.may_manage_locations(actor_of(request).role),
             "change the naming settings")
        body = await read(request, m.NamingSettingsBody)
        try:
            settings = naming.NamingSettings(body.default_name, body.edit_before_save)
        except naming.NamingError as e:
            raise Refusal("name", str(e)) from None
        await co.set_naming(settings)
        return ok(naming_out())

    async def events(request: web.Request) -> web.StreamResponse:
        return await stream(request, co.events)

    routes = [
        Route("GET", f"{P}/health", health, "Liveness", public=True),
        Route("POST", f"{P}/login", login, "Log in: sets the session cookie",
              request=m.LoginRequest, response=m.LoginResponse, public=True),
        Route("POST", f"{P}/logout", logout, "Log out (recordings go on)"),
        Route("GET", f"{P}/me", me, "Who is logged in, and what they may do",
              response=m.MeOut),
        Route("GET", f"{P}/users", list_users, "Users (Administrator, Technician)",
              response=m.UserList),
        Route("POST", f"{P}/users", create_user, "Add a user", request=m.NewUser,
              response=m.UserOut, status=201),
        Route("PATCH", f"{P}/users/{{user_id}}", change_user, "Change a user",
              request=m.UserChange, response=m.UserOut),
        Route("GET", f"{P}/locations", locations, "Locations with their status; "
              "?sort=name|status", response=m.LocationList),
        Route("GET", f"{P}/locations/discovered", discovered, "Rooms found over mDNS, not "
              "paired yet", response=m.DiscoveredList),
        Route("POST", f"{P}/locations/pair", pair, "Pair a discovered room, or one by "
              "address", request=m.PairLocation, response=m.LocationOut, status=201),
        Route("POST", f"{P}/locations/{{room_id}}/lock", lock, "Open a location to record "
              "it: others can view, not record it", response=m.LocationOut),
        Route("POST", f"{P}/locations/{{room_id}}/unlock", unlock, "Close it again",
              response=m.LocationOut),
        Route("PATCH", f"{P}/locations/{{room_id}}", rename_location, "Name a location on "
              "the coordinator (Administrator, Technician)", request=m.LocationChange,
              response=m.LocationOut),
        Route("GET", f"{P}/locations/{{room_id}}/cameras/{{camera}}/snapshot", snapshot,
              "A camera's latest keyframe, from its room", media_type="image/jpeg"),
        Route("POST", f"{P}/sessions", start, "Start single, separate or composite sessions",
              request=m.StartSessions, response=m.SessionList, status=201),
        Route("GET", f"{P}/sessions", list_sessions, "Sessions, newest first",
              response=m.SessionList),
        Route("GET", f"{P}/sessions/{{session_id}}", get_session, "One session",
              response=m.SessionOut),
        Route("PATCH", f"{P}/sessions/{{session_id}}", rename_session, "Rename a session "
              "that has stopped (its starter, a Technician or an Administrator)",
              request=m.SessionChange, response=m.SessionOut),
        Route("DELETE", f"{P}/sessions/{{session_id}}", delete_session, "Delete a session "
              "that has stopped (Technician, Administrator); its recordings are kept",
              status=204),
        Route("GET", f"{P}/sessions/{{session_id}}/media", session_media, "What the session "
              "recorded: a track per camera, its segments and gaps",
              response=m.SessionMedia),
        Route("GET", f"{P}/sessions/{{session_id}}/segments/{{room_id}}/{{segment_id}}",
              segment, "A segment file from its room (Range supported; ?download=1 to save "
              "it)", media_type="video/mp4"),
        Route("POST", f"{P}/sessions/{{session_id}}/stop", stop, "Stop the session and its "
              "group (the starter or a Technician), naming it", request=m.StopSession,
              response=m.SessionList),
        Route("POST", f"{P}/sessions/{{session_id}}/scores", score, "Score a code",
              request=m.ScoreRequest, status=201),
        Route("POST", f"{P}/sessions/{{session_id}}/remarks", remark, "A remark",
              request=m.RemarkRequest, status=201),
        Route("PUT", f"{P}/sessions/{{session_id}}/codes-list", choose_codes,
              "Choose the codes list (until the first score)", request=m.ChooseCodesList,
              response=m.SessionOut),
        Route("GET", f"{P}/sessions/{{session_id}}/annotations.{{fmt:csv|json}}", export,
              "Export scores and remarks", media_type="text/csv"),
        Route("GET", f"{P}/codes-lists", codes_lists, "Codes lists", response=m.CodesLists),
        Route("POST", f"{P}/codes-lists", new_codes_list, "A new codes list",
              request=m.NewCodesList, response=m.CodesListOut, status=201),
        Route("PUT", f"{P}/codes-lists/{{list_id}}", replace_codes_list, "Replace a codes "
              "list's name and codes", request=m.NewCodesList, response=m.CodesListOut),
        Route("DELETE", f"{P}/codes-lists/{{list_id}}", delete_codes_list, "Delete a codes "
              "list no session uses", status=204),
        Route("GET", f"{P}/settings/naming", get_naming, "How sessions are named",
              response=m.NamingSettingsBody),
        Route("PUT", f"{P}/settings/naming", put_naming, "Change how sessions are named "
              "(from the next session on)", request=m.NamingSettingsBody,
              response=m.NamingSettingsBody),
        Route("GET", f"{P}/events", events, "Live events (server-sent events)",
              media_type="text/event-stream"),
    ]

    async def openapi_doc(_: web.Request) -> web.StreamResponse:
        return web.json_response(doc)

    routes.append(Route("GET", f"{P}/openapi.json", openapi_doc, "This document", public=True))
    doc = openapi(routes, "roomrec coordinator", {
        "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE},
        "bearer": {"type": "http", "scheme": "bearer"}})
    public = {(r.method, r.path) for r in routes if r.public}

    @web.middleware
    async def guard(request: web.Request,  # noqa: PLR0911 - one status per error kind
                    handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        key = (request.method, resource.canonical if resource else "")
        try:
            if request.path.startswith(P) and key not in public:  # pages check their own
                token = _token(request)
                user = await accounts.user_for_token(co.db, token, datetime.now(UTC)) \
                    if token else None
                if user is None:
                    return error_response(401, "unauthorized", "log in first")
                actor = actors.get(user.id)
                if actor is None or actor.role != user.role:
                    actor = actors[user.id] = Actor(user.id, user.username, user.role)
                request[ACTOR] = actor
            return await handler(request)
        except Refusal as e:
            return error_response(REFUSAL_STATUS.get(e.code, 409), e.code, e.reason)
        except store.NotFound as e:
            return error_response(404, "not_found", str(e))
        except store.Invalid as e:
            return error_response(422, "invalid", str(e))
        except store.Conflict as e:
            return error_response(409, "conflict", str(e))
        except accounts.LoginFailed as e:
            return error_response(401, "login_failed", str(e))
        except EdgeError as e:
            return error_response(502, "room_error", str(e))

    app = web.Application(client_max_size=co.config.api.max_body_kb * 1024,
                          middlewares=[guard])
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
    for path, handler in page_routes(co.db, COOKIE):
        app.router.add_get(path, handler)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app, routes
