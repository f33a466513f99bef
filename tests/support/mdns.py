"""Real mDNS on the loopback interface, for tests of announcing and browsing rooms.

Every zeroconf instance of a test binds to ``LOOPBACK`` (multicast goes out and comes
back on ``lo``), so nothing reaches the LAN. Other processes on the machine may do the
same (another test run), so tests pick a fresh room id (`unique_room_id`) and look only
at their own rooms (`next_event`).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
from collections.abc import Callable

from edge.mdns import Browser, RoomEvent

LOOPBACK = ["127.0.0.1"]
MDNS_GROUP = "224.0.0.251"


def loopback_multicast_problem(timeout: float = 1.0) -> str | None:
    """Why mDNS cannot work on 127.0.0.1 here, or None if a multicast datagram sent out on
    127.0.0.1 comes back to a socket that joined the mDNS group there (the way zeroconf
    uses the interface). Uses an ephemeral port, not 5353."""
    token = secrets.token_bytes(8)
    try:
        with (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
              socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx):
            rx.bind(("", 0))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          struct.pack("4s4s", socket.inet_aton(MDNS_GROUP),
                                      socket.inet_aton(LOOPBACK[0])))
            rx.settimeout(timeout)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                          socket.inet_aton(LOOPBACK[0]))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(token, (MDNS_GROUP, rx.getsockname()[1]))
            while rx.recv(64) != token:
                pass
    except TimeoutError:
        return f"a multicast datagram sent on {LOOPBACK[0]} did not come back in {timeout} s"
    except OSError as e:
        return f"multicast on {LOOPBACK[0]} failed: {e}"
    return None


def unique_room_id() -> str:
    return f"t{secrets.token_hex(4)}"


async def next_event(browser: Browser, room_id: str,
                     where: Callable[[RoomEvent], bool] = lambda e: True,
                     timeout: float = 5.0) -> RoomEvent:
    """The next event of room `room_id` that satisfies `where`; others are dropped."""
    async with asyncio.timeout(timeout):
        async for event in browser:
            if event.room.room_id == room_id and where(event):
                return event
    raise AssertionError("the browser was closed")
