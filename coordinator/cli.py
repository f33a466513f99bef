"""`roomrec-coordinator`: the central service.

- ``roomrec-coordinator --config FILE``: run it; ``--validate-config`` only checks the file.
- ``roomrec-coordinator demo [--rooms 3] [--dir DIR]``: a coordinator and simulated rooms
  (edge services with synthetic cameras) on this machine, paired and ready, with a first
  Administrator; prints the address to open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from coordinator import __version__
from coordinator.api import build
from coordinator.config import ConfigError, CoordinatorConfig, load, parse
from coordinator.db import Database
from coordinator.service import Coordinator

log = logging.getLogger("roomrec.coordinator")


async def serve(config: CoordinatorConfig, stop: asyncio.Event,
                ready: asyncio.Future[tuple[Coordinator, int]] | None = None) -> None:
    config.database.path.parent.mkdir(parents=True, exist_ok=True)
    async with Database(config.database.path) as db, aiohttp.ClientSession() as http:
        co = Coordinator(config, db, http)
        await co.start()
        app, _ = build(co)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.api.host, config.api.port)
        await site.start()
        port = int(runner.addresses[0][1])
        print(f"roomrec-coordinator {__version__}: web page on http://{config.api.host}:{port}/"
              f" (API under /api/v1)", flush=True)
        if co.first_admin_password:
            print(f"first Administrator: {config.first_admin.username} / "
                  f"{co.first_admin_password} (shown once; change it)", flush=True)
        if ready is not None:
            ready.set_result((co, port))
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await co.close()


def _signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run(config: CoordinatorConfig) -> int:
    stop = asyncio.Event()
    _signals(stop)
    await serve(config, stop)
    return 0


def _edge_config(folder: Path, room: int, code: str) -> str:
    return f"""[room]
id = "demo-room-{room}"
name = "Demo room {room}"

[[cameras]]
name = "overview"
url = "test:overview?size=640x360&fps=15"

[[cameras]]
name = "closeup"
url = "test:closeup?size=640x360&fps=15"

[storage]
path = "{folder / 'recordings'}"
reserve_mb = 256

[api]
host = "127.0.0.1"
port = 0

[pairing]
code = "{code}"
state_dir = "{folder / 'state'}"

[announce]
# The demo pairs its rooms by address. Announcing them would let another demo on this
# machine (same room ids) claim them, and its coordinator would rightly flag them.
enabled = false

[clock]
require_sync = false
"""


def _start_room(folder: Path, i: int, code: str) -> tuple[subprocess.Popen[bytes], Path]:
    room_dir = folder / f"room-{i}"
    room_dir.mkdir(parents=True, exist_ok=True)
    cfg = room_dir / "edge.toml"
    cfg.write_text(_edge_config(room_dir, i, code))
    out = room_dir / "edge.log"
    with out.open("ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(cfg)],
                                stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT)
    return proc, out


async def demo(rooms: int, folder: Path, port: int) -> int:
    """A coordinator with simulated rooms, for trying roomrec on one machine."""
    edges: list[tuple[subprocess.Popen[bytes], Path]] = []
    codes = []
    stop = asyncio.Event()
    _signals(stop)
    try:
        for i in range(1, rooms + 1):
            code = secrets.token_urlsafe(8)
            codes.append(code)
            edges.append(await asyncio.to_thread(_start_room, folder, i, code))
        ports = [await _edge_port(out, proc) for proc, out in edges]
        config = parse({
            "database": {"path": str(folder / "coordinator.sqlite3")},
            "storage": {"path": str(folder / "central")},
            "api": {"host": "127.0.0.1", "port": port, "secure_cookies": False},
            "discovery": {"interfaces": ["127.0.0.1"]},
            "sessions": {"allow_unsynced_clock": True},
            "first_admin": {"username": "admin", "password": "roomrec-demo"},
        })
        ready: asyncio.Future[tuple[Coordinator, int]] = asyncio.get_running_loop() \
            .create_future()
        task = asyncio.create_task(serve(config, stop, ready))
        co, api_port = await ready
        for edge_port, code in zip(ports, codes, strict=True):
            with contextlib.suppress(Exception):
                await co.locations.pair("127.0.0.1", edge_port, code)
        print(f"\nroomrec demo: {rooms} rooms paired. Open http://127.0.0.1:{api_port}/ and log "
              f"in as admin / roomrec-demo. Ctrl-C stops.", flush=True)
        await task
    finally:
        for proc, _ in edges:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in edges:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


async def _edge_port(out: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(out.read_text, errors="replace")
        for line in text.splitlines():
            if "API on port " in line:
                return int(line.rsplit(" ", 1)[1])
        if proc.poll() is not None:
            raise ConfigError([f"a demo room did not start: {text[-500:]}"])
        await asyncio.sleep(0.1)
    raise ConfigError(["a demo room did not start in 30 s"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="roomrec-coordinator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"roomrec-coordinator {__version__}")
    p.add_argument("--config", type=Path)
    p.add_argument("--validate-config", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser("demo", help="a coordinator and simulated rooms on this machine")
    d.add_argument("--rooms", type=int, default=3)
    d.add_argument("--dir", type=Path, default=Path("demo"))
    d.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return asyncio.run(demo(args.rooms, args.dir, args.port))
        if args.config is None:
            p.error("--config FILE is needed")
        config = load(args.config)
        if args.validate_config:
            print(f"{args.config}: valid")
            return 0
        return asyncio.run(run(config))
    except ConfigError as e:
        print(f"roomrec-coordinator: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
