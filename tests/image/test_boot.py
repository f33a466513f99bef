"""The edge OS image, booted: image/build's qemu board in qemu-system-aarch64 (software
emulation, -M virt), its first-boot settings (roomrec.toml, written by
`roomrec-edge image-settings`) applied.

Checked, each by waiting for it, within BOOT_BUDGET_S of qemu's start: the first boot
grows the root to the bigger disk and applies the settings; the edge service starts and
its API answers through a forwarded port; it announces the room over real mDNS on a
link of its own (a tap device into a network namespace), with the name from
roomrec.toml; pairing with the enrollment code gives a status that names the room; and
the box powers off cleanly, its announcement withdrawn and its settings file retired
without the code.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from edge.imagefile import list_files, read_file
from tests.image.conftest import (
    BOOT_BUDGET_S,
    BUILD_TIMEOUT_S,
    ROOM_NAME,
    TIMINGS,
    Booted,
    skip_unless_enabled,
)

# The first test to run also waits for the image build (a session fixture).
TEST_TIMEOUT_S = BUILD_TIMEOUT_S + BOOT_BUDGET_S + 300

pytestmark = [skip_unless_enabled, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]


def call(method: str, url: str, body: dict[str, Any] | None = None,
         token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for_health(b: Booted) -> dict[str, Any]:
    """Polls the forwarded API port until the edge answers (user networking accepts the
    connection and drops it while nothing listens in the guest)."""
    last: object = None
    while b.left() > 0:
        assert b.vm.running(), "qemu exited:\n" + "\n".join(b.vm.console.lines[-40:])
        try:
            status, body = call("GET", f"{b.api}/health")
            if status == 200:
                return dict(body)
            last = status
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(1.0)  # the poll's interval
    raise AssertionError(f"the API did not answer within {BOOT_BUDGET_S} s (last: {last!r});"
                         " console:\n" + "\n".join(b.vm.console.lines[-40:]))


def health(b: Booted) -> dict[str, Any]:
    cached = b.facts.get("health")
    if isinstance(cached, dict):
        return cached
    found = wait_for_health(b)
    TIMINGS.setdefault("boot_to_api_s", round(time.monotonic() - b.vm.started, 1))
    b.facts["health"] = found
    return found


def test_first_boot_grows_the_root_and_applies_the_settings(booted: Booted) -> None:
    con = booted.vm.console
    con.wait_for_re(r"Finished .*roomrec-growroot", booted.left(), "the root grown")
    con.wait_for_re(r"roomrec-edge firstboot: .*room ", booted.left(),
                    "the first boot applying roomrec.toml")
    con.wait_for_re(r"Finished .*roomrec-firstboot", booted.left(), "the first-boot unit")


def test_edge_service_starts_and_answers(booted: Booted) -> None:
    booted.vm.console.wait_for_re(r"Started .*roomrec-edge", booted.left(),
                                  "the edge service starting")
    h = health(booted)
    assert h["ok"] is True
    # no room id in roomrec.toml: the first boot made one from the name and machine id
    assert h["room_id"].startswith("image-test-room-"), h
    assert h["room_id"] != "image-test-room-", h


def test_announced_over_mdns_on_its_own_link(booted: Booted) -> None:
    room_id = health(booted)["room_id"]

    def ours(line: str) -> bool:
        event = json.loads(line)
        return event.get("event") in ("found", "updated") and event["room"]["room_id"] == room_id

    started = time.monotonic()
    event = json.loads(booted.probe.wait_for(ours, booted.left(), f"mDNS: room {room_id}"))
    TIMINGS.setdefault("api_to_mdns_s", round(time.monotonic() - started, 1))
    room = event["room"]
    assert room["name"] == ROOM_NAME
    assert room["port"] == 8080
    assert room["api"] == "/api/v1"
    # the address on this link is among those announced: IPv4 link-local, no DHCP here
    assert any(a.startswith("169.254.") for a in room["addresses"]), room


def test_status_after_pairing_names_the_room(booted: Booted) -> None:
    h = health(booted)
    status, _ = call("GET", f"{booted.api}/status")
    assert status == 401
    status, body = call("POST", f"{booted.api}/pair",
                        {"coordinator_id": "image-test", "code": "not-the-code"})
    assert status == 403, body
    status, body = call("POST", f"{booted.api}/pair",
                        {"coordinator_id": "image-test", "code": booted.code})
    assert status == 200, body
    assert body["room_id"] == h["room_id"]
    status, st = call("GET", f"{booted.api}/status", token=body["secret"])
    assert status == 200, st
    assert st["name"] == ROOM_NAME
    assert st["room_id"] == h["room_id"]
    assert st["paired"] is True
    # the root was grown to the bigger disk: more free than the whole root as built
    assert st["disk"]["free_bytes"] > booted.root_size, (st["disk"], booted.root_size)


def test_reachable_for_ansible_over_ssh_with_the_key_from_roomrec_toml(booted: Booted) -> None:
    """What Ansible needs: root over SSH with the key the first boot installed; passwords
    are refused; the host keys are the box's own, made at its first boot."""
    health(booted)  # booted and serving
    base = ["ssh", "-p", str(booted.ssh_port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR"]
    done = subprocess.run([*base, "-i", str(booted.ssh_key), "-o", "IdentitiesOnly=yes",
                           "root@127.0.0.1", "systemctl is-active roomrec-edge; "
                           "ls /etc/ssh/ssh_host_ed25519_key; python3 -c 'print(1+1)'"],
                          capture_output=True, text=True, timeout=max(booted.left(), 60),
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["active", "/etc/ssh/ssh_host_ed25519_key", "2"], done.stdout
    refused = subprocess.run([*base, "-o", "PreferredAuthentications=password,keyboard-"
                              "interactive", "root@127.0.0.1", "true"], capture_output=True,
                             text=True, timeout=60, check=False)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr


def test_powers_off_cleanly_with_the_settings_retired(booted: Booted) -> None:
    room_id = health(booted)["room_id"]
    started = time.monotonic()
    rc = booted.vm.power_off(timeout=max(booted.left(), 60))
    TIMINGS["power_off_s"] = round(time.monotonic() - started, 1)
    TIMINGS["boot_test_total_s"] = round(time.monotonic() - booted.vm.started, 1)
    assert rc == 0
    booted.vm.console.wait_for_re(r"reboot: Power down", 10, "the kernel powering down")
    booted.vm.console.wait_for_re(r"Stopped .*roomrec-edge", 1, "the edge stopped by systemd")
    # a clean stop withdraws the announcement (goodbye packets on the link)
    booted.probe.wait_for(
        lambda line: json.loads(line).get("event") == "removed"
        and json.loads(line)["room"]["room_id"] == room_id, 10, "the mDNS goodbye")
    names = list_files(booted.disk)
    assert "roomrec.toml" not in names, names
    assert "roomrec.toml.applied" in names, names
    applied = read_file(booted.disk, "roomrec.toml.applied")
    assert applied is not None
    text = applied.decode()
    assert ROOM_NAME in text
    assert booted.code not in text
