"""Bodies of the coordinator's API (pydantic); every request body forbids unknown keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RoleName = Literal["technician", "administrator", "trainer", "trainee"]
LocationState = Literal["idle", "recording", "locked", "offline", "error"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Body):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class UserOut(Body):
    id: int
    username: str
    display_name: str
    role: RoleName
    active: bool


class MeOut(UserOut):
    permissions: list[str] = Field(description="what the user's role may do (values of "
                                               "coordinator.users.Permission)")


class LoginResponse(Body):
    user: UserOut
    token: str = Field(description="also set as the session cookie; or send it as Bearer")


class NewUser(Body):
    username: str = Field(min_length=1, max_length=64)
    display_name: str = Field(min_length=1, max_length=200)
    role: RoleName
    password: str = Field(min_length=8, max_length=1000)


class UserChange(Body):
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    role: RoleName | None = None
    active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1000)


class UserList(Body):
    users: list[UserOut]


class CameraOut(Body):
    name: str
    state: str


class LocationOut(Body):
    room_id: str
    name: str
    status: LocationState
    online: bool
    flagged: str | None = None
    recording_by: str | None = None
    session_id: str | None = None
    locked_by: str | None = None
    cameras_online: int = 0
    cameras: int = 0
    runway_minutes: float | None = None
    clock: str | None = None
    host: str
    port: int
    camera_list: list[CameraOut] = Field(default=[], description="the cameras as the room "
                                                                 "last reported them")


class LocationChange(Body):
    name: str = Field(min_length=1, max_length=100,
                      description="the location's name on the coordinator; it wins over "
                                  "the room's own name")


class LocationList(Body):
    locations: list[LocationOut]


class DiscoveredOut(Body):
    room_id: str
    name: str
    host: str
    port: int
    version: str
    state: str


class DiscoveredList(Body):
    rooms: list[DiscoveredOut]


class PairLocation(Body):
    room_id: str | None = Field(default=None, description="a discovered room")
    host: str | None = Field(default=None, description="or a room's address (other subnets)")
    port: int | None = Field(default=None, ge=1, le=65535)
    code: str | None = Field(default=None, max_length=200,
                             description="the room's enrollment code; without it, someone "
                                         "presses the room's button")


class StartSessions(Body):
    room_ids: list[str] = Field(min_length=1, max_length=500)
    kind: Literal["single", "separate", "composite"] = "single"
    codes_list_id: int | None = None


class StopSession(Body):
    name: str | None = Field(default=None, max_length=200,
                             description="the Save session step: the session's name")


class SessionLocationOut(Body):
    room_id: str
    state: str
    recording_id: str | None = None
    first_frames: dict[str, datetime] = {}
    failure: str | None = None


class SessionOut(Body):
    id: str
    group_id: str | None
    kind: str
    name: str | None
    proposal: str | None = None
    name_display: str = Field(description="the name, else the proposal, else "
                                          "'Unnamed session'")
    started_by: str | None
    started_by_display: str | None = Field(default=None,
                                           description="the starter's display name")
    start_at_utc: datetime
    state: str
    partial_reason: str | None = None
    stopped_utc: datetime | None = None
    spread_s: float | None = None
    codes_list_id: int | None = None
    locations: list[SessionLocationOut]
    duration_s: float | None = Field(default=None, description="from the synchronized "
                                     "start to the stop; null while running")
    room_names: dict[str, str] = Field(default={}, description="room id: the location's "
                                       "name now")
    gathering: Literal["on_rooms", "gathering", "verified"] = Field(
        default="on_rooms", description="where the recording is: on the rooms only, being "
                                        "gathered, or verified on central storage")
    gathered_bytes: int | None = None
    total_bytes: int | None = None


class SessionList(Body):
    sessions: list[SessionOut]


class SessionChange(Body):
    name: str = Field(description="the session's new name, kept as typed (trimmed)")


class MediaSegment(Body):
    segment_id: str
    part: int = Field(description="the segment's number in its camera's recording, from 1")
    first_frame_utc: datetime | None = None
    duration_s: float | None = None
    size: int = Field(description="bytes; 0 while unknown")
    complete: bool
    sha256: str | None = None
    url: str = Field(description="the file through the coordinator (Range supported; "
                                 "?download=1 to save it)")


class MediaGap(Body):
    start_utc: datetime
    end_utc: datetime | None = None


class Track(Body):
    room_id: str
    room_name: str
    camera: str
    available: bool
    reason: str | None = Field(default=None, description="why the track is not available")
    segments: list[MediaSegment] = []
    gaps: list[MediaGap] = []


class SessionMedia(Body):
    session_id: str
    name: str | None
    origin_utc: datetime | None = Field(description="the earliest first frame of any track")
    duration_s: float = Field(description="from the origin to the latest end of a track")
    tracks: list[Track]


class NamingSettingsBody(Body):
    default_name: str | None = Field(description="sessions are named this plus a number; "
                                                 "null: each is named when it stops")
    edit_before_save: bool = Field(description="the proposed name may be changed when "
                                               "stopping")


class ScoreRequest(Body):
    key: str = Field(min_length=1, max_length=1)
    text: str | None = Field(default=None, max_length=2000)


class RemarkRequest(Body):
    text: str = Field(min_length=1, max_length=5000)


class CodeIn(Body):
    key: str = Field(min_length=1, max_length=1)
    label: str = Field(min_length=1, max_length=100)
    color: str = Field(default="#3366cc", pattern=r"^#[0-9a-f]{6}$")


class NewCodesList(Body):
    name: str = Field(min_length=1, max_length=100)
    codes: list[CodeIn] = Field(default=[], max_length=36)


class CodesListOut(Body):
    id: int
    name: str
    codes: list[CodeIn]


class CodesLists(Body):
    lists: list[CodesListOut]


class ChooseCodesList(Body):
    codes_list_id: int | None
