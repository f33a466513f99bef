"""The host's end of the boot test's mDNS link: a browser for rooms, alone on one link.

Run by the boot test (tests/image/conftest.py) as ``unshare --net python -m
tests.image.mdns_probe --interface TAP --address 169.254.0.1/16``, in a network namespace
of its own: the test moves the tap device of the guest's second NIC into it, then writes
a line to this process's standard input. This process gives the device a link-local
address and follows every announced room with `edge.mdns.Browser` bound to that address
only. Nothing else is in the namespace, so mDNS reaches the guest and nothing beyond it;
the namespace ends with this process.

Prints one JSON object per line: ``{"event": "ready"}`` once browsing, then
``{"event": "found" | "updated" | "removed", "room": {...}}``. Ends on SIGTERM or when
its standard input is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import subprocess
import sys

from edge.mdns import Browser


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def configure(name: str, address: str) -> None:
    for args in (["link", "set", "lo", "up"],
                 ["address", "add", address, "dev", name],
                 ["link", "set", name, "up"]):
        subprocess.run(["ip", *args], check=True)


async def browse(interface: str, address: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # the test closes our stdin to stop us, too
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    async with Browser(interfaces=[address.split("/", maxsplit=1)[0]]) as browser:
        emit({"event": "ready"})

        async def follow() -> None:
            async for event in browser:
                emit({"event": event.kind, "room": dataclasses.asdict(event.room)})

        task = asyncio.create_task(follow())
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interface", required=True, help="the tap device to wait for")
    p.add_argument("--address", required=True, help="its address, with the prefix length")
    args = p.parse_args()
    # the test writes a line once the device is in this namespace
    if not sys.stdin.readline():
        return 1
    # (not /sys/class/net: the sysfs mounted here still shows the parent's namespace)
    if subprocess.run(["ip", "link", "show", "dev", args.interface], check=False,
                      capture_output=True).returncode != 0:
        print(f"no {args.interface} in this namespace", file=sys.stderr)
        return 1
    configure(args.interface, args.address)
    asyncio.run(browse(args.interface, args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
