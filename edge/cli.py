"""`roomrec-edge`: the room box's command line.

- ``roomrec-edge --config FILE``: the edge service (under systemd); with
  ``--validate-config``, only check the file: every error with its key path.
- ``roomrec-edge sample-config``: a configuration with every key, type and default.
- ``roomrec-edge panel-test --config FILE``: check the button and LED wiring.
- ``roomrec-edge run [--camera URL ...] [--storage DIR]``: record the room's cameras
  until stopped (Ctrl-C or SIGTERM). With no camera given, two synthetic test cameras.
- ``roomrec-edge probe URL``: a camera's streams, codecs, keyframe interval and clock.
- ``roomrec-edge record URL... --out DIR --seconds N``: N seconds from each camera,
  counted from its first kept frame, with the same recorder and file format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge import __version__, systemd
from edge.clock import NS, WallClock
from edge.config import ConfigError, EdgeConfig
from edge.config import load as load_config
from edge.errors import EdgeError
from edge.gpio import make_factory
from edge.paneltest import panel_test
from edge.recorder.camera import CameraSettings
from edge.recorder.manifest import Manifest
from edge.recorder.room import RoomRecorder, RoomSettings
from edge.recorder.sources import Source, SourceTimeouts, make_source
from edge.redact import RedactingFilter, Redactor, secrets_of_urls
from edge.sampleconfig import render as render_sample
from edge.service import EdgeService

log = logging.getLogger("roomrec.edge")
DEFAULT_CAMERAS = ("front=test:front", "back=test:back")


def setup_logging(redactor: Redactor, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _named(urls: Sequence[str]) -> dict[str, str]:
    """Cameras as NAME=URL, or URL alone (named cam1, cam2, ...)."""
    cams: dict[str, str] = {}
    for i, arg in enumerate(urls, 1):
        name, sep, url = arg.partition("=")
        if not sep or "://" in name or ":" in name:
            name, url = f"cam{i}", arg
        if not name.replace("-", "").replace("_", "").isalnum():
            raise EdgeError(f"camera name {name!r}: use letters, digits, - and _")
        if name in cams:
            raise EdgeError(f"camera name {name!r} given twice")
        cams[name] = url
    return cams


def _sources(cams: dict[str, str], redactor: Redactor,
             timeouts: SourceTimeouts | None = None) -> dict[str, Source]:
    return {n: make_source(u, timeouts, redactor) for n, u in cams.items()}


def summarize(m: Manifest) -> str:
    lines = [f"recording {m.recording_id}: {m.state}"
             + (f" ({m.stop_reason})" if m.stop_reason else "")]
    for cam in m.cameras.values():
        frames = sum(s.frames or 0 for s in cam.segments)
        dur = sum(s.duration_s or 0 for s in cam.segments)
        lines.append(f"  {cam.name}: {len(cam.segments)} file(s), {frames} frames, {dur:.1f} s, "
                     f"{len(cam.gaps)} gap(s), {cam.end_reason or cam.state}")
    return "\n".join(lines)


async def _until_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def cmd_record(args: argparse.Namespace, redactor: Redactor) -> int:
    cams = _named(args.urls)
    out: Path = args.out
    room = RoomRecorder(_sources(cams, redactor), out.parent if out.parent != out else out,
                        WallClock(), RoomSettings(reserve_bytes=args.reserve_mb * 1024 * 1024))
    stop = asyncio.Event()
    await _until_signal(stop)
    await room.open()
    try:
        await room.start_recording(directory=out, stop_after_s=args.seconds)
        print(f"recording {len(cams)} camera(s) into {out} for {args.seconds:g} s", flush=True)
        ended = asyncio.ensure_future(room.wait_ended())
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({ended, stopped}, timeout=args.seconds + args.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ended in done:
            manifest = ended.result()
        else:
            reason = "interrupted" if stopped in done else "timeout"
            ended.cancel()
            manifest = await room.stop_recording(reason)
        stopped.cancel()
    finally:
        await room.close()
    print(summarize(manifest), flush=True)
    short = [c.name for c in manifest.cameras.values()
             if sum(s.duration_s or 0 for s in c.segments) < args.seconds * 0.9]
    return 1 if short or manifest.state != "stopped" else 0


async def cmd_run(args: argparse.Namespace, redactor: Redactor) -> int:
    cams = _named(args.camera or DEFAULT_CAMERAS)
    room = RoomRecorder(_sources(cams, redactor), args.storage, WallClock(),
                        RoomSettings(reserve_bytes=args.reserve_mb * 1024 * 1024,
                                     camera=CameraSettings(segment_s=args.segment_seconds)))
    stop = asyncio.Event()
    await _until_signal(stop)
    await room.open()
    try:
        m = await room.start_recording()
        print(f"recording {', '.join(cams)} into {args.storage / m.recording_id}; "
              "Ctrl-C stops", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.status_seconds)
            except TimeoutError:
                states = ", ".join(f"{n}: {s}" for n, s in room.camera_states().items())
                rate = room.bytes_per_s() * 8 / 1e6
                print(f"{time.strftime('%H:%M:%S')} {states}; {rate:.2f} Mbit/s", flush=True)
            if room.recording is None:
                break
        manifest = await room.stop_recording("stopped") if room.recording else m
    finally:
        await room.close()
    print(summarize(manifest), flush=True)
    return 0


def cmd_probe(args: argparse.Namespace, redactor: Redactor) -> int:
    source = make_source(args.url, SourceTimeouts(open_s=args.timeout), redactor)
    source.open()
    try:
        print(f"camera {source.description}")
        for i, s in enumerate(source.streams):
            if s.kind == "video":
                print(f"  stream {i}: video {s.codec} {s.profile or ''} {s.width}x{s.height}"
                      f" {s.fps or '?'} fps{' (encoded here)' if s.encoded_here else ''}")
            else:
                print(f"  stream {i}: audio {s.codec} {s.sample_rate} Hz {s.channels} ch")
        keys: list[int] = []
        size = 0
        rtcp = False
        first = last = None
        deadline = time.monotonic() + args.seconds
        for sp in source.packets():
            first = first or sp.arrival_ns
            last = sp.arrival_ns
            size += sp.size
            rtcp = rtcp or sp.ref_wall_ns is not None
            if sp.key and sp.dts is not None:
                keys.append(int(sp.dts * source.streams[0].time_base * NS))
            if time.monotonic() > deadline:
                break
        span = ((last or 0) - (first or 0)) / NS
        if len(keys) >= 2:
            gops = [(b - a) / NS for a, b in itertools.pairwise(keys)]
            print(f"  keyframe interval: {sum(gops) / len(gops):.2f} s")
        else:
            print(f"  keyframe interval: more than {span:.1f} s (fewer than 2 keyframes seen)")
        if span > 0:
            print(f"  bitrate: {size * 8 / span / 1e6:.2f} Mbit/s")
        print("  clock: " + ("RTCP sender reports (capture times from the camera)" if rtcp
                             else "no RTCP sender reports seen (arrival times will be used)"))
    finally:
        source.close()
    return 0


async def cmd_service(config: EdgeConfig, redactor: Redactor) -> int:
    service = EdgeService(config, make_factory(config.gpio.backend), redactor=redactor)
    stop = asyncio.Event()
    await _until_signal(stop)
    await service.start()
    systemd.notify("READY=1")
    print(f"roomrec-edge {__version__}: room {config.room.id} ({config.room.name}), "
          f"API on port {service.port}", flush=True)
    ping = systemd.watchdog_interval_s()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ping or 3600)
            if ping:
                systemd.notify("WATCHDOG=1")  # the event loop is alive
    finally:
        systemd.notify("STOPPING=1")
        await service.stop()
    return 0


async def cmd_panel_test(config: EdgeConfig, seconds: float) -> int:
    g = config.gpio
    return await panel_test(make_factory(g.backend), g.button_pin, g.led_pin, g.tally_pin,
                            seconds, sys.stdout, debounce_ms=g.debounce_ms)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roomrec-edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"roomrec-edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--config", type=Path, help="the service's configuration (TOML)")
    p.add_argument("--validate-config", action="store_true",
                   help="check the configuration, print every error, and exit")
    sub = p.add_subparsers(dest="command")

    sub.add_parser("sample-config", help="print a configuration with every key")
    panel = sub.add_parser("panel-test", help="check the button and LED wiring")
    panel.add_argument("--seconds", type=float, default=30.0)

    run = sub.add_parser("run", help="record the cameras until stopped")
    run.add_argument("--camera", action="append", metavar="[NAME=]URL",
                     help="a camera (repeat for more); default: two synthetic test cameras")
    run.add_argument("--storage", type=Path, default=Path("recordings"))
    run.add_argument("--reserve-mb", type=int, default=512)
    run.add_argument("--segment-seconds", type=float, default=60.0)
    run.add_argument("--status-seconds", type=float, default=10.0)

    probe = sub.add_parser("probe", help="show a camera's streams")
    probe.add_argument("url")
    probe.add_argument("--seconds", type=float, default=3.0, help="how long to watch")
    probe.add_argument("--timeout", type=float, default=10.0)

    rec = sub.add_parser("record", help="record N seconds from cameras, without the service")
    rec.add_argument("urls", nargs="+", metavar="[NAME=]URL")
    rec.add_argument("--out", type=Path, required=True, help="the recording's folder")
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--timeout", type=float, default=60.0,
                     help="extra seconds to wait for cameras that are late or offline")
    rec.add_argument("--reserve-mb", type=int, default=64)
    return p


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one exit per command
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sample-config":
        print(render_sample(), end="")
        return 0
    if args.command in (None, "panel-test"):
        if args.config is None:
            parser.error("--config FILE is needed to run the service or the panel test")
        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(f"roomrec-edge: {args.config}: {e}", file=sys.stderr)
            return 2
        if args.validate_config:
            print(f"{args.config}: valid; room {config.room.id}, "
                  f"{len(config.cameras)} camera(s)")
            return 0
        redactor = Redactor(config.secrets())
        setup_logging(redactor, args.verbose)
        try:
            if args.command == "panel-test":
                return asyncio.run(cmd_panel_test(config, args.seconds))
            return asyncio.run(cmd_service(config, redactor))
        except KeyboardInterrupt:
            return 130
    urls = list(getattr(args, "urls", None) or []) + list(getattr(args, "camera", None) or [])
    if getattr(args, "url", None):
        urls.append(args.url)
    redactor = Redactor(secrets_of_urls(u.partition("=")[2] if "=" in u.split("://")[0]
                                        else u for u in urls))
    setup_logging(redactor, args.verbose)
    try:
        if args.command == "probe":
            return cmd_probe(args, redactor)
        if args.command == "record":
            return asyncio.run(cmd_record(args, redactor))
        return asyncio.run(cmd_run(args, redactor))
    except EdgeError as e:
        print(f"roomrec-edge: {redactor.redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
