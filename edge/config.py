"""The edge service's configuration: one TOML file, validated strictly.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting);
cross-field rules are small `verify_*` functions called from one validator. Camera
credentials are kept apart from camera URLs and never shown: `repr`, errors and the
validated dump all mask them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from edge.contract import ROOM_ID_PATTERN
from edge.errors import EdgeError
from edge.gpio.pinmap import packaged_pinmap, verify_distinct, verify_not_reserved
from edge.panel import LedTimings

CAMERA_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
Pin = Annotated[int, Field(ge=0, le=27, description="BCM GPIO number")]
M = TypeVar("M", bound=BaseModel)
PINMAP = packaged_pinmap()  # hardware/pinmap.toml: the GPIO defaults are the box's wiring


class ConfigError(EdgeError):
    """The configuration is invalid; `errors` lists each problem with its key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  {e}" for e in errors))
        self.errors = errors


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoomConfig(Strict):
    id: str = Field(pattern=ROOM_ID_PATTERN,
                    description="stable id of this room; never changes, even if renamed")
    name: str = Field(min_length=1, max_length=100, description="the location's display name")


class CameraConfig(Strict):
    name: str = Field(pattern=CAMERA_NAME_PATTERN,
                      description="short name; the camera's folder in every recording")
    url: str = Field(min_length=1, description="rtsp://host[:port]/path, /dev/videoN, "
                                               "v4l2://..., test:NAME or lavfi:GRAPH; "
                                               "no credentials in it")
    username: str | None = Field(default=None, description="the camera's user name")
    password: SecretStr | None = Field(default=None, description="the camera's password")

    @model_validator(mode="after")
    def _verify(self) -> CameraConfig:
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            raise ValueError("put credentials in username/password, not in the url")
        if (self.password is not None) and self.username is None:
            raise ValueError("a password needs a username")
        return self

    def source_url(self) -> str:
        """The URL with credentials, for opening the camera only (never log it)."""
        if self.username is None:
            return self.url
        parts = urlsplit(self.url)
        user = quote(self.username, safe="")
        secret = quote(self.password.get_secret_value(), safe="") if self.password else ""
        userinfo = f"{user}:{secret}" if self.password is not None else user
        host = parts.netloc
        return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query,
                           parts.fragment))


class StorageConfig(Strict):
    path: Path = Field(default=Path("/var/lib/roomrec/recordings"),
                       description="where recordings are written")
    reserve_mb: int = Field(default=512, ge=0, description="free space never recorded into")
    expected_minutes: float = Field(default=60, gt=0,
                                    description="a recording must fit this long to start")


class RecorderConfig(Strict):
    preroll_s: float = Field(default=2.0, ge=0, le=60,
                             description="at least this much kept before a start (and two "
                                         "keyframe intervals)")
    segment_s: float = Field(default=60.0, ge=5, le=3600, description="length of one file")
    fragment_s: float = Field(default=0.5, ge=0.1, le=2.0,
                              description="the most video a crash can lose")
    sync_s: float = Field(default=2.0, ge=0.5, le=30, description="fsync at least this often")


class ApiConfig(Strict):
    host: str = Field(default="0.0.0.0", description="address the HTTP API listens on")  # noqa: S104 - a room box serves its LAN
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    max_body_kb: int = Field(default=64, ge=1, le=1024, description="largest request body")


class GpioConfig(Strict):
    backend: Literal["sim", "rpi"] = Field(
        default="sim", description="rpi: RPi.GPIO (or rpi-lgpio on a Pi 5); sim: simulated")
    button_pin: Pin = Field(default=PINMAP.button.bcm,
                            description="the record button's BCM GPIO number (to ground, "
                                        "internal pull-up); default from hardware/pinmap.toml")
    led_pin: Pin = Field(default=PINMAP.led.bcm,
                         description="the record LED's BCM GPIO number; default from "
                                     "hardware/pinmap.toml")
    tally_pin: Pin | None = Field(
        default=PINMAP.tally.bcm if PINMAP.tally.fitted else None,
        description=f"optional second LED or tally output, on while recording (wired to "
                    f"GPIO{PINMAP.tally.bcm} in hardware/pinmap.toml)")
    debounce_ms: int = Field(default=50, ge=5, le=1000,
                             description="a press counts after the contact is closed this long")
    button_user: str = Field(default="room button", min_length=1,
                             description="who a recording started with the button belongs to")

    @model_validator(mode="after")
    def _verify(self) -> GpioConfig:
        pins = {role: pin for role in ("button_pin", "led_pin", "tally_pin")
                if (pin := getattr(self, role)) is not None}
        verify_not_reserved(pins)
        verify_distinct(pins)
        return self


class PairingConfig(Strict):
    code: SecretStr | None = Field(
        default=None, description="one-time enrollment code; without it, pairing needs a "
                                  "press of the room's button")
    button_window_s: float = Field(default=60, gt=0, le=600,
                                   description="how long a pairing waits for the button")
    state_dir: Path = Field(default=Path("/var/lib/roomrec/state"),
                            description="where the pairing secret's hash is kept")


class RetentionConfig(Strict):
    release_after_hours: float = Field(
        default=24, ge=0, description="keep released files this long (for playback on the "
                                      "box) before deleting them; never before release")


class AnnounceConfig(Strict):
    enabled: bool = Field(default=True, description="announce the room over mDNS")
    interfaces: list[str] | None = Field(
        default=None, description="addresses to announce on; default: all")


class ClockConfig(Strict):
    require_sync: bool = Field(default=True,
                               description="show an error when the clock is not synchronised")


class EdgeConfig(Strict):
    room: RoomConfig
    cameras: list[CameraConfig] = Field(
        default_factory=list,
        description="the cameras of this room, one [[cameras]] each; none: the box is "
                    "discoverable and can be paired, but records nothing until they are added")
    storage: StorageConfig = StorageConfig()
    recorder: RecorderConfig = RecorderConfig()
    api: ApiConfig = ApiConfig()
    gpio: GpioConfig = GpioConfig()
    pairing: PairingConfig = PairingConfig()
    retention: RetentionConfig = RetentionConfig()
    announce: AnnounceConfig = AnnounceConfig()
    clock: ClockConfig = ClockConfig()
    led: LedTimings = Field(default=LedTimings(),
                            description="the LED's blink patterns, as [on_ms, off_ms] steps")

    @model_validator(mode="after")
    def _verify(self) -> EdgeConfig:
        verify_unique_cameras(self.cameras)
        return self

    def secrets(self) -> list[str]:
        out = [c.password.get_secret_value() for c in self.cameras if c.password]
        if self.pairing.code is not None:
            out.append(self.pairing.code.get_secret_value())
        return out


def verify_unique_cameras(cameras: list[CameraConfig]) -> None:
    names = [c.name for c in cameras]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"camera names must be unique: {', '.join(dupes)} used twice")


def _format(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {msg}")
    return lines


def parse_as(model: type[M], data: dict[str, object]) -> M:
    """Validate `data` as `model`; ConfigError lists every problem with its key path."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e)) from None


def load_as(model: type[M], path: Path) -> M:
    """Read and validate a TOML file as `model`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError([f"cannot read {path}: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    return parse_as(model, data)


def parse(data: dict[str, object]) -> EdgeConfig:
    return parse_as(EdgeConfig, data)


def load(path: Path) -> EdgeConfig:
    return load_as(EdgeConfig, path)
