"""The manifest of a recording: what every camera wrote, when, and what is missing.

One JSON file per recording, replaced atomically (temporary file, fsync, rename, fsync
of the folder), so a crash leaves either the old or the new manifest, never a torn one.
Times are UTC; durations come from media timestamps and the monotonic clock. No camera
URL in here carries credentials.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.recorder.segment import fsync_dir
from edge.recorder.sources import StreamInfo

MANIFEST_NAME = "manifest.json"
FORMAT = "roomrec.manifest/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamParams(_Model):
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

    @classmethod
    def of(cls, s: StreamInfo) -> StreamParams:
        return cls(kind=s.kind, codec=s.codec, time_base=str(s.time_base), profile=s.profile,
                   width=s.width, height=s.height, fps=s.fps, pix_fmt=s.pix_fmt,
                   sample_rate=s.sample_rate, channels=s.channels, encoded_here=s.encoded_here)


class Segment(_Model):
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


class Gap(_Model):
    start_utc: datetime
    end_utc: datetime | None = None
    reason: str


class CameraRecord(_Model):
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


class ClockStep(_Model):
    at_utc: datetime
    step_s: float


class Manifest(_Model):
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


def segment_id(recording_id: str, file: str) -> str:
    """The opaque id of a segment: no path a client sends is ever opened."""
    digest = hashlib.sha256(f"{recording_id}/{file}".encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def write_atomic(path: Path, data: str) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data.encode())
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def load(path: Path) -> Manifest:
    return Manifest.model_validate_json(path.read_bytes())
