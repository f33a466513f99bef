"""What a session recorded, for playing and downloading it through the coordinator.

Pure: built from the rooms' manifests (`edge.contract.Manifest`), fetched by the caller.
A session has one track per camera per location, in the session's location order, then
the manifest's camera order. Each track lists its segment files with the coordinator's
URL for each, and its gaps. The session's time origin is the earliest first frame of any
track; its duration runs from there to the latest end of any track.

Segments whose copy on central storage is verified are served from there; a room's
segment that is neither on the room any more nor verified centrally is left out. A
location whose room cannot be asked is shown from its verified central copies, if any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import groupby

from coordinator import models as m
from coordinator.db import Session
from coordinator.gather import FileRow
from coordinator.naming import safe_filename
from edge import contract as c

API = c.API_PREFIX
UNAVAILABLE_CAMERA = ""
"""The camera of the one track shown for a location whose cameras are not known."""


def segment_url(session_id: str, room_id: str, segment_id: str) -> str:
    return f"{API}/sessions/{session_id}/segments/{room_id}/{segment_id}"


def _segment(session_id: str, room_id: str, seg: c.Segment) -> m.MediaSegment:
    return m.MediaSegment(
        segment_id=seg.id, part=seg.index, first_frame_utc=seg.first_frame_utc,
        duration_s=seg.duration_s, size=seg.size or 0, complete=seg.complete,
        sha256=seg.sha256, url=segment_url(session_id, room_id, seg.id))


def _track(session_id: str, room_id: str, room_name: str, cam: c.CameraRecord,
           central: set[str]) -> m.Track:
    return m.Track(
        room_id=room_id, room_name=room_name, camera=cam.name, available=True,
        segments=[_segment(session_id, room_id, seg) for seg in cam.segments
                  if seg.deleted_utc is None or seg.id in central],
        gaps=[m.MediaGap(start_utc=g.start_utc, end_utc=g.end_utc) for g in cam.gaps])


def _central_tracks(session_id: str, room_id: str, room_name: str,
                    rows: Sequence[FileRow]) -> list[m.Track]:
    """A location's tracks from its verified central copies alone."""
    tracks = []
    ordered = sorted(rows, key=lambda r: (r.camera, r.index))
    for camera, cam_rows in groupby(ordered, key=lambda r: r.camera):
        tracks.append(m.Track(room_id=room_id, room_name=room_name, camera=camera,
                              available=True, segments=[m.MediaSegment(
                                  segment_id=r.segment_id, part=r.index,
                                  first_frame_utc=datetime.fromisoformat(r.first_frame_utc),
                                  duration_s=r.duration_s, size=r.size, complete=True,
                                  sha256=r.sha256,
                                  url=segment_url(session_id, room_id, r.segment_id))
                                  for r in cam_rows]))
    return tracks


def _end_s(track: m.Track) -> float | None:
    """When the track's last segment ends, in seconds since the epoch."""
    ends = [s.first_frame_utc.timestamp() + (s.duration_s or 0.0)
            for s in track.segments if s.first_frame_utc is not None]
    return max(ends) if ends else None


def session_media(session: Session, manifests: Mapping[str, c.Manifest | str],
                  room_names: Mapping[str, str],
                  cameras: Mapping[str, Sequence[str]],
                  central: Sequence[FileRow] = ()) -> m.SessionMedia:
    """The session's tracks. `manifests`: per room id, its recording's manifest or why it
    cannot be had; `room_names`: the locations' names now; `cameras`: per room id, the
    cameras to show as unavailable tracks when there is no manifest (one track with
    camera "" when none are known); `central`: the files gathered so far (those with a
    verified copy count)."""
    verified = [r for r in central if r.verified_utc is not None]
    tracks: list[m.Track] = []
    for sl in session.locations:
        name = room_names.get(sl.room_id, sl.room_id)
        found = manifests.get(sl.room_id, "not asked")
        here = [r for r in verified if r.room_id == sl.room_id]
        if isinstance(found, c.Manifest):
            ids = {r.segment_id for r in here}
            tracks += [_track(session.id, sl.room_id, name, cam, ids)
                       for cam in found.cameras.values()]
            continue
        if here:
            tracks += _central_tracks(session.id, sl.room_id, name, here)
            continue
        tracks += [m.Track(room_id=sl.room_id, room_name=name, camera=cam, available=False,
                           reason=found)
                   for cam in (cameras.get(sl.room_id) or [UNAVAILABLE_CAMERA])]
    firsts = [t.segments[0].first_frame_utc for t in tracks
              if t.segments and t.segments[0].first_frame_utc is not None]
    origin = min(firsts) if firsts else None
    ends = [e for e in map(_end_s, tracks) if e is not None]
    duration = max(0.0, max(ends) - origin.timestamp()) if origin is not None and ends \
        else 0.0
    return m.SessionMedia(session_id=session.id, name=session.name, origin_utc=origin,
                          duration_s=round(duration, 6), tracks=tracks)


def find_segment(manifest: c.Manifest, segment_id: str) -> tuple[str, c.Segment] | None:
    """The camera and the segment of this id in the recording, if it is one of its."""
    for cam in manifest.cameras.values():
        for seg in cam.segments:
            if seg.id == segment_id:
                return cam.name, seg
    return None


def download_name(session: Session, room_name: str, camera: str, part: int) -> str:
    """A file name for one segment, safe on every system: "<session name or id> - <room>
    - <camera> - part <n>.mp4"."""
    stem = f"{session.name or session.id} - {room_name} - {camera} - part {part}"
    return safe_filename(stem, max_bytes=200) + ".mp4"
