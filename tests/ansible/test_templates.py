"""The roles' configuration templates rendered by Ansible itself (on localhost, with the
roles' defaults and a case's inventory values) and read back by the services' own
configuration loaders: quoting, optional keys, zero cameras, S3. Fast: no Debian root."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from coordinator import config as coordinator_config
from edge import config as edge_config
from tests.ansible.support import ANSIBLE_DIR, ANSIBLE_PLAYBOOK, run_playbook

pytestmark = pytest.mark.timeout(300)

# A value that would break out of a naively quoted TOML string.
NASTY = 'Lab "A"\\ \u00fc\n[api]\nport = 1'


def _render(tmp_path: Path, role: str, template: str, values: dict[str, Any]) -> str:
    if not ANSIBLE_PLAYBOOK.exists():
        reason = "needs ansible-playbook in this venv (the test extra's ansible)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path / template.removesuffix(".j2")
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "Render a template",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(ANSIBLE_DIR / "roles" / role / "defaults" / "main.yml")],
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(ANSIBLE_DIR / "roles" / role / "templates" / template),
            "dest": str(out), "mode": "0600"}}],
    }]))
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    run = run_playbook(str(playbook), tmp_path / "inventory", tmp_path / "ansible-home",
                       "--extra-vars", f"@{values_file}")
    assert run.returncode == 0, run.explain()
    return out.read_text()


def _inventory(tmp_path: Path) -> None:
    (tmp_path / "inventory").write_text("localhost ansible_python_interpreter=python3\n")


def test_edge_values_survive_quoting(tmp_path: Path) -> None:
    _inventory(tmp_path)
    text = _render(tmp_path, "edge", "edge.toml.j2", {
        "edge_room_id": "sim-lab-1",
        "edge_room_name": NASTY,
        "edge_cameras": [
            {"name": "front", "url": "rtsp://192.0.2.21:554/s1", "username": "viewer",
             "password": NASTY},
            {"name": "back", "url": "test:back?size=320x180&fps=5"},
        ],
        "edge_enrollment_code": "c0de \"x\"",
        "edge_button_pin": 5, "edge_led_pin": 6, "edge_tally_pin": 13,
    })
    config = edge_config.parse(tomllib.loads(text))
    assert config.room.name == NASTY
    assert config.api.port == 8080  # the injected "[api] port = 1" stayed inside a string
    assert [c.name for c in config.cameras] == ["front", "back"]
    front, back = config.cameras
    assert front.password is not None
    assert front.password.get_secret_value() == NASTY
    assert (back.username, back.password) == (None, None)
    assert config.pairing.code is not None
    assert config.pairing.code.get_secret_value() == 'c0de "x"'
    assert (config.gpio.backend, config.gpio.button_pin, config.gpio.led_pin,
            config.gpio.tally_pin) == ("rpi", 5, 6, 13)


def test_edge_defaults_leave_pins_and_code_to_the_edge(tmp_path: Path) -> None:
    _inventory(tmp_path)
    text = _render(tmp_path, "edge", "edge.toml.j2", {
        "edge_room_id": "interview-1",
        "edge_cameras": [{"name": "room", "url": "test:room"}],
    })
    data = tomllib.loads(text)
    assert data["gpio"] == {"backend": "rpi"}
    assert "code" not in data["pairing"]
    config = edge_config.parse(data)
    assert config.gpio == edge_config.GpioConfig(backend="rpi")
    assert config.room.name == "localhost"  # the default: the inventory host name
    assert (config.storage.path, config.storage.reserve_mb) == \
        (Path("/var/lib/roomrec/recordings"), 512)
    assert (config.announce.enabled, config.clock.require_sync) == (True, True)
    assert config.retention.release_after_hours == 24


def test_edge_with_no_cameras_yet(tmp_path: Path) -> None:
    _inventory(tmp_path)
    text = _render(tmp_path, "edge", "edge.toml.j2", {"edge_room_id": "new-box"})
    data = tomllib.loads(text)
    assert data["cameras"] == []
    assert edge_config.parse(data).cameras == []


def test_coordinator_s3(tmp_path: Path) -> None:
    _inventory(tmp_path)
    text = _render(tmp_path, "coordinator", "coordinator.toml.j2", {
        "coordinator_storage_kind": "s3",
        "coordinator_storage_spool": "/var/lib/roomrec/spool",
        "coordinator_s3_endpoint_url": "https://s3.lab.example",
        "coordinator_s3_bucket": "roomrec",
        "coordinator_s3_prefix": "lab-a/",
        "coordinator_s3_access_key": "roomrec",
        "coordinator_s3_secret_key": NASTY,
        "coordinator_gather_max_mbps": 200,
        "coordinator_first_admin_password": NASTY,
    })
    config = coordinator_config.parse(tomllib.loads(text))
    assert config.storage.kind == "s3"
    assert config.storage.spool == Path("/var/lib/roomrec/spool")
    assert config.storage.s3 is not None
    assert (config.storage.s3.endpoint_url, config.storage.s3.bucket,
            config.storage.s3.prefix) == ("https://s3.lab.example", "roomrec", "lab-a/")
    assert config.storage.s3.secret_key.get_secret_value() == NASTY
    assert config.gather.max_mbps == 200
    assert config.first_admin.password is not None
    assert config.first_admin.password.get_secret_value() == NASTY
    assert config.api.secure_cookies is True


def test_coordinator_defaults(tmp_path: Path) -> None:
    _inventory(tmp_path)
    text = _render(tmp_path, "coordinator", "coordinator.toml.j2", {})
    config = coordinator_config.parse(tomllib.loads(text))
    assert (config.storage.kind, config.storage.path, config.storage.s3) == \
        ("folder", Path("/srv/roomrec"), None)
    assert (config.api.host, config.api.port) == ("0.0.0.0", 8000)
    assert config.first_admin.password is None
    assert config.gather.max_mbps is None
