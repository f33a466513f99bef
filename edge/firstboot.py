"""Per-device settings for a freshly flashed room box: `roomrec.toml` on the boot partition.

An administrator flashes the same image onto every card, then writes each card's own
settings (`roomrec-edge image-settings`, or any text editor on the FAT partition):

    room_name = "Simulation lab 1"          # required
    room_id = "sim-lab-1"                   # optional; stable once set
    coordinator = "coordinator.lab"         # optional: the time source (chrony)
    enrollment_code = "7f3a-91c2"           # optional: pairs without a button press
    hostname = "roomrec-sim-lab-1"          # optional
    ssh_authorized_keys = ["ssh-ed25519 AAAA... admin@lab"]   # optional: for Ansible
    [[cameras]]                             # optional: the edge.toml camera tables
    name = "front"
    url = "rtsp://192.0.2.21/stream1"

At boot, before the edge service and chrony, `roomrec-edge firstboot` applies the file:
the room's id and name, the enrollment code and any cameras go into the edge's
configuration (validated as a whole first: a bad setting changes nothing), the
coordinator becomes chrony's time source, the hostname is set, and the SSH keys may log
in as root (the image allows keys only, never passwords). Then the file is
renamed `roomrec.toml.applied`, with its secrets removed: the enrollment code and camera
passwords do not stay on a partition anyone can read. A file that cannot be applied is
left in place, with the reasons beside it in `roomrec.toml.error`.

Without a settings file, a box whose room id is still the image's placeholder
(`UNCONFIGURED_ROOM_ID`) is given its own from its machine id, so that two unconfigured
boxes never announce the same room.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from edge.config import CameraConfig, ConfigError, Strict, parse, parse_as
from edge.contract import ROOM_ID_PATTERN
from edge.files import write_atomic
from edge.tomlwrite import dumps

log = logging.getLogger(__name__)

UNCONFIGURED_ROOM_ID = "unconfigured"
UNCONFIGURED_ROOM_NAME = "Unconfigured room"
SETTINGS_NAME = "roomrec.toml"
APPLIED_SUFFIX = ".applied"
ERROR_SUFFIX = ".error"
CHRONY_SOURCES = Path("/etc/chrony/sources.d/roomrec.sources")
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)"
                        r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
                        r" [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                         r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


class FirstBootSettings(Strict):
    room_name: str = Field(min_length=1, max_length=100,
                           description="the location's display name")
    room_id: str | None = Field(default=None, pattern=ROOM_ID_PATTERN,
                                description="stable id of the room; unset: kept, or made "
                                            "from the name and the box's machine id")
    coordinator: str | None = Field(default=None,
                                    description="the coordinator's host name or address: "
                                                "the room's time source")
    enrollment_code: SecretStr | None = Field(default=None, min_length=4,
                                              description="one-time code to pair the room")
    hostname: str | None = Field(default=None, pattern=HOSTNAME_RE.pattern,
                                 description="the box's host name; unset: roomrec-<room id>")
    cameras: list[CameraConfig] | None = Field(default=None,
                                               description="replace the room's cameras")
    ssh_authorized_keys: list[str] | None = Field(
        default=None, description="OpenSSH public keys that may log in as root (Ansible)")

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        for i, key in enumerate(value or []):
            if not SSH_KEY_RE.match(key.strip()):
                raise ValueError(f"entry {i + 1} is not an OpenSSH public key "
                                 "(\"ssh-ed25519 AAAA... comment\"): give the .pub file's line")
        return value

    @field_validator("coordinator")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None:
            verify_host(value)
        return value


def verify_host(value: str) -> None:
    if "://" in value or "/" in value or "@" in value:
        raise ValueError(f"give the coordinator's host name or address, not a URL: {value!r}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not DNS_NAME_RE.match(value):
            raise ValueError(f"not a host name or an IP address: {value!r}") from None


def parse_settings(text: str) -> FirstBootSettings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"]) from None
    return parse_as(FirstBootSettings, data)


def settings_dict(s: FirstBootSettings, with_secrets: bool) -> dict[str, Any]:
    """The settings as TOML data; without secrets, codes and passwords are left out."""
    data = s.model_dump(exclude_none=True, exclude={"enrollment_code", "cameras"})
    if s.enrollment_code is not None and with_secrets:
        data["enrollment_code"] = s.enrollment_code.get_secret_value()
    if s.cameras is not None:
        data["cameras"] = [camera_dict(cam, with_secrets) for cam in s.cameras]
    return data


def camera_dict(cam: CameraConfig, with_secrets: bool) -> dict[str, Any]:
    c = cam.model_dump(exclude_none=True, exclude={"password"})
    if cam.password is not None and with_secrets:
        c["password"] = cam.password.get_secret_value()
    return c


def render_settings(s: FirstBootSettings) -> str:
    return dumps(settings_dict(s, with_secrets=True),
                 header="# roomrec first-boot settings for this box: applied at its next boot,"
                        "\n# then renamed roomrec.toml.applied without the secrets.")


def slug(name: str, limit: int = 40) -> str:
    """`name` as lowercase letters, digits and single dashes, at most `limit` long."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:limit].rstrip("-") or "room"


def derived_room_id(name: str, machine_id: str) -> str:
    return f"{slug(name)}-{machine_id[:6]}" if machine_id else slug(name)


def derived_hostname(room_id: str) -> str:
    return f"roomrec-{slug(room_id, 63 - len('roomrec-'))}"


@dataclass
class Paths:
    """Where the first boot reads and writes; the defaults are the box's own."""

    settings: Path = Path("/boot/firmware") / SETTINGS_NAME
    config: Path = Path("/etc/roomrec/edge.toml")
    chrony_sources: Path = CHRONY_SOURCES
    hostname: Path = Path("/etc/hostname")
    hosts: Path = Path("/etc/hosts")
    machine_id: Path = Path("/etc/machine-id")
    authorized_keys: Path = Path("/root/.ssh/authorized_keys")


@dataclass
class Outcome:
    changed: list[str] = field(default_factory=list)
    room_id: str | None = None

    def __str__(self) -> str:
        return "; ".join(self.changed) if self.changed else "nothing to do"


def _config_owner(path: Path) -> tuple[tuple[int, int] | None, int]:
    """The owner and mode to give the configuration: those it has, else root:roomrec 0640."""
    try:
        st = path.stat()
        return (st.st_uid, st.st_gid), st.st_mode & 0o7777
    except FileNotFoundError:
        try:
            return (0, grp.getgrnam("roomrec").gr_gid), 0o640
        except KeyError:
            return None, 0o640


def _set_hosts_name(hosts: str, hostname: str) -> str:
    lines = [ln for ln in hosts.splitlines() if not ln.startswith("127.0.1.1")]
    return "\n".join([*lines, f"127.0.1.1\t{hostname}"]) + "\n"


def room_of(current: dict[str, Any], settings: FirstBootSettings | None,
            machine_id: str) -> tuple[str, str]:
    """The room's (id, name) after the first boot: a stable id is never replaced unless
    the settings name another one."""
    current_id = current.get("id")
    placeholder = current_id in (None, UNCONFIGURED_ROOM_ID)
    if settings is None:
        if not placeholder:
            return str(current_id), str(current.get("name", UNCONFIGURED_ROOM_NAME))
        return (derived_room_id(UNCONFIGURED_ROOM_ID, machine_id),
                f"{UNCONFIGURED_ROOM_NAME} {machine_id[:6]}".strip())
    if settings.room_id:
        return settings.room_id, settings.room_name
    if not placeholder:
        return str(current_id), settings.room_name
    return derived_room_id(settings.room_name, machine_id), settings.room_name


def configured(data: dict[str, Any], settings: FirstBootSettings | None,
               machine_id: str) -> tuple[dict[str, Any], list[str]]:
    """The edge configuration `data` with `settings` applied, and what changed (pure)."""
    room_id, name = room_of(data.get("room", {}), settings, machine_id)
    new = {**data, "room": {**data.get("room", {}), "id": room_id, "name": name}}
    changed = [f"room {room_id} ({name})"]
    if settings and settings.enrollment_code is not None:
        new["pairing"] = {**data.get("pairing", {}),
                          "code": settings.enrollment_code.get_secret_value()}
        changed.append("enrollment code")
    if settings and settings.cameras is not None:
        new["cameras"] = [camera_dict(c, with_secrets=True) for c in settings.cameras]
        changed.append(f"{len(settings.cameras)} camera(s)")
    return new, changed


def apply(paths: Paths, set_hostname: Callable[[str], None] | None = None,
          now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Outcome:
    """Apply `paths.settings` (if present) to the box; see the module's description.

    Raises ConfigError (and writes the `.error` file beside the settings) when the
    settings or the configuration they make are invalid; nothing is changed then."""
    text = paths.settings.read_text() if paths.settings.exists() else None
    machine_id = paths.machine_id.read_text().strip() if paths.machine_id.exists() else ""
    try:
        settings = parse_settings(text) if text is not None else None
        data = tomllib.loads(paths.config.read_text() if paths.config.exists() else "")
    except (ConfigError, tomllib.TOMLDecodeError) as e:
        _write_error(paths, e)
        raise _as_config_error(e) from None
    if settings is None and data.get("room", {}).get("id") not in (None, UNCONFIGURED_ROOM_ID):
        return Outcome()  # an ordinary boot: nothing to apply
    new, changed = configured(data, settings, machine_id)
    try:
        parse(new)  # the whole configuration must be valid before anything is written
    except ConfigError as e:
        _write_error(paths, e)
        raise
    owner, mode = _config_owner(paths.config)
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.config, dumps(new, header=_config_header(now())), mode, owner)
    out = Outcome(changed=changed, room_id=new["room"]["id"])
    if settings and settings.coordinator:
        paths.chrony_sources.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(paths.chrony_sources,
                     "# the coordinator serves the rooms' time (written by roomrec first boot)"
                     f"\nserver {settings.coordinator} iburst prefer\n")
        out.changed.append(f"time from {settings.coordinator}")
    if settings and settings.ssh_authorized_keys is not None:
        paths.authorized_keys.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(paths.authorized_keys,
                     "".join(k.strip() + "\n" for k in settings.ssh_authorized_keys), 0o600)
        out.changed.append(f"{len(settings.ssh_authorized_keys)} SSH key(s)")
    hostname = (settings.hostname if settings else None) or derived_hostname(out.room_id or "")
    _apply_hostname(paths, hostname, set_hostname)
    out.changed.append(f"hostname {hostname}")
    if settings is not None:
        _retire(paths, settings, now())
    return out


def _apply_hostname(paths: Paths, hostname: str,
                    set_hostname: Callable[[str], None] | None) -> None:
    write_atomic(paths.hostname, hostname + "\n")
    hosts = paths.hosts.read_text() if paths.hosts.exists() else "127.0.0.1\tlocalhost\n"
    write_atomic(paths.hosts, _set_hosts_name(hosts, hostname))
    if set_hostname is not None:
        try:
            set_hostname(hostname)
        except OSError as e:
            log.warning("could not set the host name now (%s); it takes effect at next boot", e)


def _retire(paths: Paths, settings: FirstBootSettings, at: datetime) -> None:
    """Keep what was applied, without its secrets, and remove the settings file."""
    applied = paths.settings.with_name(paths.settings.name + APPLIED_SUFFIX)
    write_atomic(applied, dumps(settings_dict(settings, with_secrets=False),
                                header=f"# applied {at:%Y-%m-%d %H:%M:%S} UTC; secrets "
                                       "(enrollment code, camera passwords) removed"))
    paths.settings.unlink()
    paths.settings.with_name(paths.settings.name + ERROR_SUFFIX).unlink(missing_ok=True)


def _config_header(at: datetime) -> str:
    return ("# roomrec edge service configuration (TOML); see roomrec-edge sample-config.\n"
            f"# Written by the first boot at {at:%Y-%m-%d %H:%M:%S} UTC.")


def _as_config_error(e: Exception) -> ConfigError:
    return e if isinstance(e, ConfigError) else ConfigError([f"edge configuration: {e}"])


def _write_error(paths: Paths, e: Exception) -> None:
    err = _as_config_error(e)
    if not paths.settings.exists():
        return
    try:
        write_atomic(paths.settings.with_name(paths.settings.name + ERROR_SUFFIX),
                     "roomrec.toml was not applied:\n" + "\n".join(err.errors) + "\n")
    except OSError as oe:
        log.error("cannot write the error file beside %s: %s", paths.settings, oe)
