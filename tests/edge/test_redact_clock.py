import logging
from urllib.parse import quote, quote_plus

import pytest

from edge import clockcode
from edge.clock import WallClock
from edge.redact import RedactingFilter, Redactor, secrets_of_urls, strip_userinfo

SECRET = "s3cr#t p@ss/word"


def test_strip_userinfo() -> None:
    assert strip_userinfo("rtsp://admin:pw@10.0.0.5:554/s1") == "rtsp://10.0.0.5:554/s1"
    assert strip_userinfo("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"


def test_redacts_raw_and_encoded_forms() -> None:
    r = Redactor([SECRET])
    for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET)):
        text = f"error opening x with {form} in it"
        assert form not in r.redact(text)
    url = f"rtsp://admin:{quote(SECRET, safe='')}@cam/x"
    assert "admin" not in r.redact(f"cannot open '{url}'")
    assert secrets_of_urls([url]) == [SECRET]


def test_logging_filter_redacts_messages_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redact")
    caplog.handler.addFilter(RedactingFilter(Redactor([SECRET])))
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        logger.exception("opening %s failed", f"rtsp://u:{SECRET}@h/")
    assert SECRET not in caplog.text
    assert "***" in caplog.text


def test_wall_clock_step_is_detected_and_durations_hold() -> None:
    wall = [1_000_000_000_000]
    mono = [5_000_000_000]
    clock = WallClock(wall_ns=lambda: wall[0], mono_ns=lambda: mono[0])
    t0 = clock.now_ns()
    mono[0] += 1_000_000_000
    wall[0] += 1_000_000_000
    assert clock.check() is None
    assert clock.now_ns() - t0 == 1_000_000_000
    wall[0] += 3_600_000_000_000  # the system clock jumps an hour
    assert clock.check() == 3_600_000_000_000
    assert clock.now_ns() == wall[0]


def test_clock_code_round_trip_and_damage() -> None:
    w, h = 320, 240
    plane = bytearray(b"\x80" * w * h)
    clockcode.paint(plane, w, h, 1_764_000_000_123)
    assert clockcode.read(plane, w, h) == 1_764_000_000_123
    plane[5 * w + 4] = 255 - plane[5 * w + 4]
    plane[5 * w + 3] = 255 - plane[5 * w + 3]
    plane[4 * w + 4] = 255 - plane[4 * w + 4]
    plane[4 * w + 3] = 255 - plane[4 * w + 3]
    assert clockcode.read(plane, w, h) is None  # a flipped block fails the check
    assert clockcode.read(bytearray(w * h), w, h) is None
