"""The coordinator's configuration: one TOML file, validated strictly (as the edge's)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from edge.config import ConfigError, Strict, load_as, parse_as

__all__ = ["ConfigError", "CoordinatorConfig", "load", "parse"]


class IdentityConfig(Strict):
    id: str = Field(default="roomrec-coordinator", min_length=1, max_length=200,
                    description="this coordinator's name, given to rooms when pairing")


class DatabaseConfig(Strict):
    path: Path = Field(default=Path("/var/lib/roomrec/coordinator.sqlite3"),
                       description="the SQLite database (WAL); every change is durable")


class StorageConfig(Strict):
    path: Path = Field(default=Path("/srv/roomrec"),
                       description="central storage: a local folder or a network mount")


class ApiConfig(Strict):
    host: str = Field(default="0.0.0.0", description="address the web page and API listen on")  # noqa: S104 - serves the LAN
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    max_body_kb: int = Field(default=256, ge=1, le=10240, description="largest request body")
    secure_cookies: bool = Field(default=True, description="login cookies only over HTTPS "
                                                           "(turn off for plain HTTP on a LAN)")


class DiscoveryConfig(Strict):
    enabled: bool = Field(default=True, description="find rooms over mDNS")
    interfaces: list[str] | None = Field(default=None,
                                         description="addresses to browse on; default: all")
    heartbeat_s: float = Field(default=2.0, gt=0, le=60, description="how often rooms are asked "
                                                                    "for their status")
    offline_after_s: float = Field(default=6.0, gt=0, le=600,
                                   description="a room silent this long is offline")


class SessionsConfig(Strict):
    start_lead_s: float = Field(default=1.5, ge=0.2, le=30,
                                description="a synchronized start is this far in the future")
    allow_unsynced_clock: bool = Field(
        default=False, description="allow recording a room whose clock is not synchronised "
                                   "(with a warning) instead of refusing it")
    default_name: str | None = Field(default=None, max_length=100,
                                     description="sessions are named this plus a number; "
                                                 "unset: named when stopped")
    edit_before_save: bool = Field(default=True, description="the proposed name can be "
                                                             "changed when stopping")


class FirstAdminConfig(Strict):
    username: str = Field(default="admin", min_length=1, max_length=100,
                          description="the Administrator created on the first run")
    password: SecretStr | None = Field(default=None, description="its password; unset: a "
                                                                 "random one, printed once")


class CoordinatorConfig(Strict):
    coordinator: IdentityConfig = IdentityConfig()
    database: DatabaseConfig = DatabaseConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    sessions: SessionsConfig = SessionsConfig()
    first_admin: FirstAdminConfig = FirstAdminConfig()


def parse(data: dict[str, object]) -> CoordinatorConfig:
    return parse_as(CoordinatorConfig, data)


def load(path: Path) -> CoordinatorConfig:
    return load_as(CoordinatorConfig, path)
