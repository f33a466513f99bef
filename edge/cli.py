"""`roomrec-edge`: the room box's command line.

- ``roomrec-edge --config FILE``: the edge service (under systemd); with
  ``--validate-config``, only check the file: every error with its key path.
- ``roomrec-edge sample-config``: a configuration with every key, type and default.
- ``roomrec-edge panel-test --config FILE``: check the button and LED wiring.
- ``roomrec-edge firstboot``: apply the boot partition's roomrec.toml (at boot, by systemd).
- ``roomrec-edge image-settings IMAGE --room-name NAME ...``: write a box's first-boot
  settings into a flashable image or onto a flashed card, without mounting it.
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
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge import __version__, systemd
from edge.clock import NS, WallClock
from edge.config import ConfigError, EdgeConfig, parse_as
from edge.config import load as load_config
from edge.errors import EdgeError
from edge.firstboot import (
    SETTINGS_NAME,
    FirstBootSettings,
    parse_settings,
    render_settings,
    settings_dict,
)
from edge.firstboot import Paths as FirstBootPaths
from edge.firstboot import apply as apply_firstboot
from edge.gpio import make_factory
from edge.imagefile import read_file, write_file
from edge.paneltest import panel_test
from edge.recorder.camera import CameraSettings
from edge.recorder.manifest import Manifest
from edge.recorder.room import RoomRecorder, RoomSettings
from edge.recorder.sources import Source, SourceTimeouts, make_source
from edge.redact import RedactingFilter, Redactor, secrets_of_urls
from edge.sampleconfig import render as render_sample
from edge.service import EdgeService
from edge.tomlwrite import dumps

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
    fb = sub.add_parser("firstboot", help="apply the boot partition's roomrec.toml")
    defaults = FirstBootPaths()
    fb.add_argument("--settings", type=Path, default=defaults.settings)
    fb.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                    help=f"the edge configuration to update (default {defaults.config})")
    fb.add_argument("--chrony-sources", type=Path, default=defaults.chrony_sources)
    fb.add_argument("--hostname-file", type=Path, default=defaults.hostname)
    fb.add_argument("--hosts-file", type=Path, default=defaults.hosts)
    fb.add_argument("--machine-id-file", type=Path, default=defaults.machine_id)
    fb.add_argument("--authorized-keys-file", type=Path, default=defaults.authorized_keys)
    fb.add_argument("--no-sethostname", action="store_true",
                    help="write /etc/hostname only, do not rename the running system")

    img = sub.add_parser("image-settings", help="write a box's first-boot settings into an "
                                                "image or onto a flashed card")
    img.add_argument("image", type=Path, help="the .img file, or the card's device")
    img.add_argument("--room-name", help="the location's display name (required unless "
                                         "--from or --show)")
    img.add_argument("--room-id", help="the room's stable id (default: made at first boot)")
    img.add_argument("--coordinator", help="the coordinator's host name or address "
                                           "(the room's time source)")
    code = img.add_mutually_exclusive_group()
    code.add_argument("--code", help="the enrollment code the coordinator pairs with")
    code.add_argument("--generate-code", action="store_true",
                      help="make a random enrollment code and print it")
    img.add_argument("--hostname", help="the box's host name (default: roomrec-<room id>)")
    img.add_argument("--ssh-key", action="append", type=Path, metavar="FILE.pub",
                     help="a public key that may log in as root over SSH, e.g. for Ansible "
                          "(repeat for more)")
    img.add_argument("--from", dest="from_file", type=Path,
                     help="a roomrec.toml to write as it is (validated first)")
    img.add_argument("--show", action="store_true",
                     help="print the settings in the image, secrets hidden, and exit")
    panel = sub.add_parser("panel-test", help="check the button and LED wiring")
    panel.add_argument("--seconds", type=float, default=30.0)
    panel.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                       help="the service's configuration (TOML)")

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


def cmd_firstboot(args: argparse.Namespace, config_path: Path) -> int:
    paths = FirstBootPaths(settings=args.settings, config=config_path,
                           chrony_sources=args.chrony_sources, hostname=args.hostname_file,
                           hosts=args.hosts_file, machine_id=args.machine_id_file,
                           authorized_keys=args.authorized_keys_file)
    try:
        outcome = apply_firstboot(paths, None if args.no_sethostname else socket.sethostname)
    except ConfigError as e:
        print(f"roomrec-edge firstboot: {args.settings} not applied: {e}", file=sys.stderr)
        return 1
    print(f"roomrec-edge firstboot: {outcome}", flush=True)
    return 0


def cmd_image_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        if args.show:
            found = read_file(args.image, SETTINGS_NAME)
            if found is None:
                print(f"{args.image}: no {SETTINGS_NAME} on its boot partition")
                return 1
            shown = parse_settings(found.decode())
            print(dumps(settings_dict(shown, with_secrets=False)), end="")
            if shown.enrollment_code is not None:
                print("# enrollment code: set (hidden)")
            return 0
        if args.from_file is not None:
            settings = parse_settings(args.from_file.read_text())
        else:
            if not args.room_name:
                parser.error("image-settings needs --room-name (or --from FILE)")
            generated = secrets.token_hex(4) if args.generate_code else None
            keys = ([k.read_text().strip() for k in args.ssh_key] if args.ssh_key else None)
            fields = {"room_name": args.room_name, "room_id": args.room_id,
                      "coordinator": args.coordinator, "hostname": args.hostname,
                      "enrollment_code": generated or args.code, "ssh_authorized_keys": keys}
            settings = parse_as(FirstBootSettings,
                                {k: v for k, v in fields.items() if v is not None})
        text = render_settings(settings)
        part = write_file(args.image, SETTINGS_NAME, text.encode())
        if read_file(args.image, SETTINGS_NAME) != text.encode():
            print(f"roomrec-edge: {args.image}: {SETTINGS_NAME} did not read back the same",
                  file=sys.stderr)
            return 1
    except ConfigError as e:
        print(f"roomrec-edge image-settings: {e}", file=sys.stderr)
        return 2
    except (EdgeError, OSError) as e:
        print(f"roomrec-edge image-settings: {e}", file=sys.stderr)
        return 1
    print(f"{args.image}: wrote {SETTINGS_NAME} to partition {part.number} "
          f"(room {settings.room_name!r}); it is applied at the box's first boot")
    if args.generate_code and settings.enrollment_code is not None:
        print(f"enrollment code: {settings.enrollment_code.get_secret_value()}")
    return 0


def cmd_tool(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The commands that neither run the service nor record."""
    if args.command == "firstboot":
        return cmd_firstboot(args, args.config or FirstBootPaths().config)
    if args.command == "image-settings":
        return cmd_image_settings(args, parser)
    print(render_sample(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one exit per command
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("sample-config", "firstboot", "image-settings"):
        return cmd_tool(args, parser)
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
