"""The manifest of a recording: what every camera wrote, when, and what is missing.

One JSON file per recording, replaced atomically (temporary file, fsync, rename, fsync
of the folder), so a crash leaves either the old or the new manifest, never a torn one.
Times are UTC; durations come from media timestamps and the monotonic clock. No camera
URL in here carries credentials.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from edge.contract import (
    CameraRecord,
    ClockStep,
    Gap,
    Manifest,
    Segment,
    StreamParams,
)
from edge.files import write_atomic
from edge.recorder.sources import StreamInfo

MANIFEST_NAME = "manifest.json"

__all__ = ["MANIFEST_NAME", "CameraRecord", "ClockStep", "Gap", "Manifest", "Segment",
           "StreamParams", "load", "segment_id", "stream_params", "write_atomic"]


def stream_params(s: StreamInfo) -> StreamParams:
    return StreamParams(kind=s.kind, codec=s.codec, time_base=str(s.time_base),
                        profile=s.profile, width=s.width, height=s.height, fps=s.fps,
                        pix_fmt=s.pix_fmt, sample_rate=s.sample_rate, channels=s.channels,
                        encoded_here=s.encoded_here)


def segment_id(recording_id: str, file: str) -> str:
    """The opaque id of a segment: no path a client sends is ever opened."""
    digest = hashlib.sha256(f"{recording_id}/{file}".encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def load(path: Path) -> Manifest:
    return Manifest.model_validate_json(path.read_bytes())
