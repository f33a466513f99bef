"""The room box's HTTP API (aiohttp), versioned under /api/v1.

Every body is a pydantic model of `edge.contract`; the OpenAPI document is built from the
same route table that registers the handlers, so the two cannot drift apart. Domain
errors become a status and a JSON `ErrorBody`; nothing a client sends is used as a path.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ValidationError

from edge import __version__
from edge import contract as c
from edge.errors import DiskSpaceError, EdgeError, NoCameras, RecordingConflict
from edge.eventhub import EventHub, stream
from edge.pairing import Pairing, PairingRefused

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotFound(EdgeError):
    """No such recording, segment or camera."""


class Forbidden(EdgeError):
    """The caller may not do this (e.g. stop someone else's session)."""


class NotReady(EdgeError):
    """The thing exists but cannot be served now (a segment still being written)."""


STATUS_OF: list[tuple[type[Exception], int, str]] = [
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (PairingRefused, 403, "pairing_refused"),
    (RecordingConflict, 409, "recording_conflict"),
    (NoCameras, 409, "no_cameras"),
    (NotReady, 409, "not_ready"),
    (DiskSpaceError, 507, "disk_space"),
    (EdgeError, 400, "bad_request"),
]


class Backend(Protocol):
    """What the API needs from the service."""

    pairing: Pairing
    events: EventHub

    def status(self) -> c.Status: ...
    def health(self) -> c.Health: ...
    async def start_recording(self, req: c.StartRequest) -> c.CurrentRecording: ...
    async def stop_recording(self, req: c.StopRequest) -> c.RecordingSummary: ...
    def recordings(self) -> c.RecordingList: ...
    def manifest_json(self, recording_id: str) -> str: ...
    def segment_file(self, segment_id: str) -> tuple[str, str]: ...
    async def release(self, recording_id: str, req: c.ReleaseRequest) -> c.ReleaseResult: ...
    async def snapshot(self, camera: str) -> bytes: ...
    async def pair(self, req: c.PairRequest) -> c.PairResponse: ...


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    public: bool = False
    media_type: str = "application/json"
    status: int = 200


def error_response(status: int, code: str, detail: str) -> web.Response:
    return web.json_response(c.ErrorBody(error=code, detail=detail).model_dump(), status=status)


def ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status,
                        content_type="application/json")


async def body(request: web.Request, model: type[c.Body]) -> Any:
    try:
        raw = await request.read()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise web.HTTPUnprocessableEntity(
            text=c.ErrorBody(error="invalid_body", detail="; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
                for err in e.errors())).model_dump_json(),
            content_type="application/json") from None


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def build(backend: Backend, max_body: int) -> tuple[web.Application, list[Route]]:
    """The application and its route table."""
    P = c.API_PREFIX

    async def health(_: web.Request) -> web.StreamResponse:
        return ok(backend.health())

    async def status(_: web.Request) -> web.StreamResponse:
        return ok(backend.status())

    async def start(request: web.Request) -> web.StreamResponse:
        return ok(await backend.start_recording(await body(request, c.StartRequest)), 201)

    async def stop(request: web.Request) -> web.StreamResponse:
        return ok(await backend.stop_recording(await body(request, c.StopRequest)))

    async def recordings(_: web.Request) -> web.StreamResponse:
        return ok(backend.recordings())

    async def manifest(request: web.Request) -> web.StreamResponse:
        text = backend.manifest_json(request.match_info["recording_id"])
        return web.Response(text=text, content_type="application/json")

    async def segment(request: web.Request) -> web.StreamResponse:
        path, sha256 = backend.segment_file(request.match_info["segment_id"])
        digest = base64.b64encode(bytes.fromhex(sha256)).decode()
        return web.FileResponse(path, headers={
            "Content-Type": "video/mp4", "Repr-Digest": f"sha-256=:{digest}:",
            "X-Content-SHA256": sha256, "Cache-Control": "no-store"})

    async def release(request: web.Request) -> web.StreamResponse:
        req = await body(request, c.ReleaseRequest)
        return ok(await backend.release(request.match_info["recording_id"], req))

    async def snapshot(request: web.Request) -> web.StreamResponse:
        jpeg = await backend.snapshot(request.match_info["camera"])
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store"})

    async def pair(request: web.Request) -> web.StreamResponse:
        return ok(await backend.pair(await body(request, c.PairRequest)))

    async def events(request: web.Request) -> web.StreamResponse:
        return await stream(request, backend.events)

    routes = [
        Route("GET", f"{P}/health", health, "Liveness; open to all", response=c.Health,
              public=True),
        Route("GET", f"{P}/status", status, "The room: cameras, recording, disk, clock",
              response=c.Status),
        Route("POST", f"{P}/recording", start, "Start recording every camera (409 if one "
              "runs)", request=c.StartRequest, response=c.CurrentRecording, status=201),
        Route("POST", f"{P}/recording/stop", stop, "Stop the running recording (403 unless "
              "the starter or a Technician)", request=c.StopRequest,
              response=c.RecordingSummary),
        Route("GET", f"{P}/recordings", recordings, "Every recording on the box",
              response=c.RecordingList),
        Route("GET", f"{P}/recordings/{{recording_id}}", manifest, "One recording's manifest"),
        Route("POST", f"{P}/recordings/{{recording_id}}/release", release,
              "Segments whose verified central copy exists; the box may delete them after "
              "its retention", request=c.ReleaseRequest, response=c.ReleaseResult),
        Route("GET", f"{P}/segments/{{segment_id}}", segment, "Download a segment file "
              "(Range supported; sha256 in Repr-Digest and X-Content-SHA256)",
              media_type="video/mp4"),
        Route("GET", f"{P}/cameras/{{camera}}/snapshot", snapshot, "A JPEG from the latest "
              "keyframe, from the recorder's own connection", media_type="image/jpeg"),
        Route("GET", f"{P}/events", events, "Live events (server-sent events)",
              response=c.Event, media_type="text/event-stream"),
        Route("POST", f"{P}/pair", pair, "Pair a coordinator: needs the enrollment code "
              "or a press of the room's button", request=c.PairRequest,
              response=c.PairResponse, public=True),
    ]
    async def openapi_doc(_: web.Request) -> web.StreamResponse:
        return web.json_response(doc)

    routes.append(Route("GET", f"{P}/openapi.json", openapi_doc, "This document", public=True))
    doc = openapi(routes)
    public = {(r.method, r.path) for r in routes if r.public}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        key = (request.method, route.resource.canonical if route.resource else "")
        try:
            if key not in public and not backend.pairing.check(_bearer(request)):
                return error_response(401, "unauthorized",
                                      "pair with this room first, then send "
                                      "'Authorization: Bearer <secret>'")
            return await handler(request)
        except web.HTTPException as e:
            if e.content_type == "application/json" or e.status < 400:
                raise
            return error_response(e.status, e.reason.lower().replace(" ", "_"),
                                  e.text or e.reason)
        except EdgeError as e:
            for kind, code, name in STATUS_OF:
                if isinstance(e, kind):
                    return error_response(code, name, str(e))
            raise

    app = web.Application(client_max_size=max_body, middlewares=[guard])
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
    return app, routes


def _schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        defs[name] = sub
    defs[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi(routes: list[Route], title: str = "roomrec edge",
            security: dict[str, Any] | None = None) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    error = {"content": {"application/json": {"schema": _schema(c.ErrorBody, defs)}}}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "responses": {}}
        params = [p.strip("{}") for p in r.path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True,
                                 "schema": {"type": "string"}} for p in params]
        if r.request is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _schema(r.request, defs)}}}
        content: dict[str, Any] = {}
        if r.response is not None:
            content[r.media_type] = {"schema": _schema(r.response, defs)}
        else:
            content[r.media_type] = {}
        op["responses"][str(r.status)] = {"description": "OK", "content": content}
        for code in ("400", "404", "409", "413", "422"):
            op["responses"][code] = {"description": "error", **error}
        if not r.public:
            op["security"] = [{"bearer": []}]
            op["responses"]["401"] = {"description": "not paired or no secret", **error}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {"schemas": defs, "securitySchemes": security or {
            "bearer": {"type": "http", "scheme": "bearer"}}},
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)

