"""The coordinator's configuration: one TOML file, validated strictly (as the edge's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from edge.config import ConfigError, Strict, load_as, parse_as

__all__ = ["ConfigError", "CoordinatorConfig", "load", "parse"]


class IdentityConfig(Strict):
    id: str = Field(default="roomrec-coordinator", min_length=1, max_length=200,
                    description="this coordinator's name, given to rooms when pairing")


class DatabaseConfig(Strict):
    path: Path = Field(default=Path("/var/lib/roomrec/coordinator.sqlite3"),
                       description="the SQLite database (WAL); every change is durable")


class S3Config(Strict):
    """An S3-compatible object store (SeaweedFS, MinIO, Ceph, AWS S3, ...). The secret key
    is a SecretStr: repr, errors and the validated dump all mask it."""

    endpoint_url: str = Field(min_length=1, description="the S3 endpoint, e.g. "
                                                        "http://storage.lab:8333")
    bucket: str = Field(min_length=3, max_length=63, description="the bucket; it must exist")
    prefix: str = Field(default="", description="keys are stored under this prefix, e.g. "
                                                "\"roomrec/\"; empty: at the bucket's top")
    region: str = Field(default="us-east-1", min_length=1, description="the signing region")
    access_key: str = Field(min_length=1, description="the access key id")
    secret_key: SecretStr = Field(description="the secret access key")

    @model_validator(mode="after")
    def _verify(self) -> S3Config:
        verify_endpoint_url(self.endpoint_url)
        verify_prefix(self.prefix)
        return self

    def __repr__(self) -> str:
        return (f"S3Config(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, "
                f"prefix={self.prefix!r}, region={self.region!r}, "
                f"access_key={self.access_key!r}, secret_key='**********')")


class StorageConfig(Strict):
    """Where gathered recordings are kept. `kind` "folder" (the default) uses `path`;
    "s3" uses the `[storage.s3]` table and stages downloads in `spool` (default: a
    "spool" folder beside the database), a local folder with room for the files being
    downloaded at once."""

    kind: Literal["folder", "s3"] = Field(default="folder",
                                          description="folder: `path`; s3: `[storage.s3]`")
    path: Path = Field(default=Path("/srv/roomrec"),
                       description="central storage: a local folder or a network mount")
    spool: Path | None = Field(default=None,
                               description="kind s3: local folder where downloads are staged "
                                           "before upload; unset: \"spool\" beside the "
                                           "database")
    s3: S3Config | None = Field(default=None, description="kind s3: the object store")

    @model_validator(mode="after")
    def _verify(self) -> StorageConfig:
        verify_storage_kind(self)
        return self


def verify_storage_kind(storage: StorageConfig) -> None:
    if storage.kind == "s3" and storage.s3 is None:
        raise ValueError('kind = "s3" needs a [storage.s3] table with endpoint_url, bucket, '
                         "access_key and secret_key")
    if storage.kind == "folder" and storage.s3 is not None:
        raise ValueError('[storage.s3] is set but kind is "folder": set kind = "s3" to use '
                         "it, or remove the table")
    if storage.kind == "folder" and storage.spool is not None:
        raise ValueError('spool is used with kind = "s3" only')


def verify_endpoint_url(url: str) -> None:
    parts = urlsplit(url)
    if "@" in parts.netloc:  # checked first: the message below shows the URL
        raise ValueError("put credentials in access_key/secret_key, not in endpoint_url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must be http://host[:port] or https://..., not {url!r}")


def verify_prefix(prefix: str) -> None:
    parts = prefix.strip("/").split("/") if prefix.strip("/") else []
    if prefix.startswith("/") or any(p in ("", ".", "..") or "\\" in p or "\0" in p
                                     for p in parts):
        raise ValueError(f"prefix must be a relative path like \"roomrec/\", not {prefix!r}")


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


class GatherConfig(Strict):
    per_room: int = Field(default=2, ge=1, le=16, description="files downloaded from one "
                                                             "room at a time")
    max_mbps: float | None = Field(default=None, gt=0, description="a cap on all gathering "
                                                                    "together, in Mbit/s; "
                                                                    "unset: none")
    poll_s: float = Field(default=2.0, gt=0, le=300, description="how often the rooms' "
                                                                 "recordings are looked at")


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
    gather: GatherConfig = GatherConfig()
    first_admin: FirstAdminConfig = FirstAdminConfig()


def parse(data: dict[str, object]) -> CoordinatorConfig:
    return parse_as(CoordinatorConfig, data)


def load(path: Path) -> CoordinatorConfig:
    return load_as(CoordinatorConfig, path)
