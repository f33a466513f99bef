"""The wire contract between a room box and its clients (the coordinator, tools).

API bodies and the mDNS announcement. This module imports only pydantic and the standard
library, so the coordinator can depend on it without pulling in the recorder.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "v1"
API_PREFIX = f"/api/{API_VERSION}"

# mDNS (DNS-SD) announcement. The instance name is only a label: clients identify a room
# by TXT `id` and, once paired, by its secret; the address is only a hint.
SERVICE_TYPE = "_roomrec._tcp.local."
TXT_ID = "id"          # the room's stable id
TXT_NAME = "name"      # the location's display name
TXT_API = "api"        # the API's path prefix, e.g. /api/v1
TXT_VERSION = "ver"    # the edge software version
TXT_STATE = "state"    # RoomState below

RoomState = Literal["idle", "starting", "recording", "stopping", "error"]
CameraState = Literal["connecting", "online", "lost", "closed"]
ClockSync = Literal["synchronised", "unsynchronised", "unknown"]

ROOM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class Body(BaseModel):
    """Base of every API body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Body):
    error: str = Field(description="a short machine-readable code, e.g. recording_conflict")
    detail: str = Field(description="what went wrong, for a person")


class StreamStatus(Body):
    kind: Literal["video", "audio"]
    codec: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


class CameraStatus(Body):
    name: str
    state: CameraState
    streams: list[StreamStatus] = []
    bitrate_bps: float | None = Field(default=None, description="measured over ~10 s")
    reconnects: int = 0


class CurrentRecording(Body):
    recording_id: str
    session_id: str | None = None
    name: str | None = None
    started_by: str | None = None
    started_by_button: bool = False
    requested_start_utc: datetime
    elapsed_s: float


class DiskStatus(Body):
    free_bytes: int
    reserve_bytes: int
    runway_minutes: float | None = Field(
        default=None, description="minutes of recording left at the current bitrate")


class Status(Body):
    room_id: str
    name: str
    version: str
    state: RoomState
    cameras: list[CameraStatus]
    recording: CurrentRecording | None = None
    disk: DiskStatus
    clock: ClockSync
    unsafe_to_unplug: bool = Field(
        description="some recording is not yet verified on central storage")
    paired: bool


class StartRequest(Body):
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    started_by: str = Field(min_length=1, max_length=200)
    start_at_utc: datetime | None = Field(
        default=None, description="a synchronized start: begin at the keyframe at or before "
                                  "this wall-clock time (default: now)")


class StopRequest(Body):
    stopped_by: str = Field(min_length=1, max_length=200)
    technician: bool = Field(
        default=False, description="the stopper is a Technician, who may stop any session")


class RecordingSummary(Body):
    recording_id: str
    session_id: str | None = None
    name: str | None = None
    started_by: str | None = None
    state: str
    requested_start_utc: datetime
    stopped_utc: datetime | None = None
    segments: int
    bytes: int
    released_segments: int = 0


class RecordingList(Body):
    recordings: list[RecordingSummary]


class ReleaseRequest(Body):
    segment_ids: list[str] = Field(min_length=1, max_length=10000,
                                   description="segments whose central copy is verified")


class ReleaseResult(Body):
    released: list[str]
    unknown: list[str]


class PairRequest(Body):
    coordinator_id: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, max_length=200,
                             description="the one-time code from the box's config; without "
                                         "it, the room's button must be pressed in time")


class PairResponse(Body):
    room_id: str
    secret: str = Field(description="sent as `Authorization: Bearer <secret>` from now on")


class Health(Body):
    ok: bool
    room_id: str
    version: str


class Event(Body):
    """One line of the live event stream."""

    type: str
    at_utc: datetime
    room_id: str
    data: dict[str, object] = {}


# --- the manifest of a recording (GET /recordings/{id}) --------------------------------


class StreamParams(Body):
    kind: Literal["video", "audio"]
    codec: str
    time_base: str
    profile: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    encoded_here: bool = False


class Segment(Body):
    index: int
    id: str = Field(description="opaque id for downloading and releasing the file")
    part: int = Field(default=1, description="which run of the service wrote it")
    file: str = Field(description="path relative to the recording's folder")
    complete: bool = Field(description="closed and synced; false while written or if cut short")
    size: int | None = None
    sha256: str | None = None
    frames: int | None = None
    duration_s: float | None = None
    first_frame_utc: datetime
    time_source: Literal["rtcp", "arrival"] = Field(
        description="rtcp: the camera's RTCP sender report; arrival: when the box received it")
    recovered: bool = Field(default=False,
                            description="closed after a crash: cut to its last whole fragment")
    released_utc: datetime | None = Field(
        default=None, description="when the coordinator confirmed its verified central copy")
    deleted_utc: datetime | None = Field(
        default=None, description="when the box deleted its copy (only after release)")


class Gap(Body):
    start_utc: datetime
    end_utc: datetime | None = None
    reason: str


class CameraRecord(Body):
    name: str
    source: str = Field(description="the camera's address, without credentials")
    state: Literal["waiting", "recording", "ended"] = "waiting"
    end_reason: str | None = None
    first_frame_utc: datetime | None = None
    start_offset_s: float | None = Field(
        default=None, description="the requested start time's offset into the first file")
    streams: list[StreamParams] = []
    segments: list[Segment] = []
    gaps: list[Gap] = []


class ClockStep(Body):
    at_utc: datetime
    step_s: float


class Manifest(Body):
    format: Literal["roomrec.manifest/1"] = "roomrec.manifest/1"
    recording_id: str
    room_id: str | None = None
    session_id: str | None = None
    name: str | None = None
    started_by: str | None = None
    started_by_button: bool = False
    state: Literal["recording", "stopped", "disk_full"] = "recording"
    stop_reason: str | None = None
    software: str
    requested_start_utc: datetime
    created_utc: datetime
    stopped_utc: datetime | None = None
    parts: int = Field(default=1, description="1 + how often the service resumed it")
    suspended_utc: datetime | None = Field(
        default=None, description="the service stopped mid-recording; it resumes when it "
                                  "comes back soon enough")
    clock_steps: list[ClockStep] = []
    cameras: dict[str, CameraRecord] = {}
