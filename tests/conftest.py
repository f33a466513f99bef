"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.camera import RtspCamera

# -- RTSP test cameras ------------------------------------------------------------------


@pytest.fixture(scope="session")
def clip_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory for clips made by tests.support.camera.make_clip, kept between sessions
    in pytest's cache (.pytest_cache) when the cache is enabled."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("roomrec-clips"))
    return tmp_path_factory.mktemp("clips")


@pytest.fixture
def rtsp_camera() -> Iterator[Callable[..., RtspCamera]]:
    """Factory of started RTSP test cameras: rtsp_camera(width=640, audio=True, ...)
    takes RtspCamera's arguments. Every camera made is stopped at teardown."""
    cameras: list[RtspCamera] = []

    def make(**kwargs: Any) -> RtspCamera:
        cam = RtspCamera(**kwargs)
        cameras.append(cam)
        return cam.start()

    yield make
    for cam in cameras:
        cam.stop()
