"""User accounts: password hashing, what each role may do, and logging in.

Passwords are hashed with scrypt and stored as ``scrypt$n$r$p$salt_b64$hash_b64``, so the
cost can rise later without breaking old hashes. A login hands out a random token for the
cookie; the store keeps only its SHA-256, so a copy of the database logs nobody in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from coordinator.db import Database, Invalid, Role, User

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 1024
LOGIN_LIFETIME: Final = timedelta(hours=12)
TOKEN_BYTES: Final = 32
# A stored hash that asks for more memory than this is refused rather than computed.
_MAX_SCRYPT_MEMORY: Final = 64 * 1024 * 1024
_SCHEME: Final = "scrypt"


class LoginFailed(Exception):
    """Unknown user, wrong password or inactive account: deliberately one error."""

    def __init__(self) -> None:
        super().__init__("wrong username or password")


class WeakPassword(Invalid):
    """A new password that is empty or too short."""


# -- permissions ------------------------------------------------------------------------


class Permission(StrEnum):
    RECORD = "record"
    VIEW = "view"
    MANAGE_USERS = "manage_users"
    MANAGE_LOCATIONS = "manage_locations"
    FORCE_STOP = "force_stop"            # stop a session someone else started
    DELETE_SESSIONS = "delete_sessions"


_P = Permission
PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = {
    Role.TECHNICIAN: frozenset({_P.RECORD, _P.VIEW, _P.MANAGE_USERS, _P.MANAGE_LOCATIONS,
                                _P.FORCE_STOP, _P.DELETE_SESSIONS}),
    Role.ADMINISTRATOR: frozenset({_P.RECORD, _P.VIEW, _P.MANAGE_USERS, _P.MANAGE_LOCATIONS,
                                   _P.DELETE_SESSIONS}),
    Role.TRAINER: frozenset({_P.RECORD, _P.VIEW}),
    Role.TRAINEE: frozenset({_P.VIEW}),
}


def may(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[Role(role)]


def may_record(role: Role) -> bool:
    return may(role, Permission.RECORD)


def may_view(role: Role) -> bool:
    return may(role, Permission.VIEW)


def may_manage_users(role: Role) -> bool:
    return may(role, Permission.MANAGE_USERS)


def may_manage_locations(role: Role) -> bool:
    return may(role, Permission.MANAGE_LOCATIONS)


def may_force_stop(role: Role) -> bool:
    return may(role, Permission.FORCE_STOP)


def may_delete_sessions(role: Role) -> bool:
    return may(role, Permission.DELETE_SESSIONS)


# -- passwords --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_new_password(password: str) -> None:
    """`WeakPassword` unless the password is at least MIN_PASSWORD_LENGTH characters."""
    if not password:
        raise WeakPassword("a password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` for a new password (checked by `check_new_password`).
    Takes tens of milliseconds of CPU: call it off the event loop."""
    check_new_password(password)
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=_MAX_SCRYPT_MEMORY + 1024 * 1024)


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the stored hash, compared in constant time. An empty
    password, or a stored string that is malformed or asks for absurd costs, is False."""
    parsed = _parse(stored)
    if parsed is None or not password or len(password) > MAX_PASSWORD_LENGTH:
        return False
    n, r, p, salt, expected = parsed
    key = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(key, expected)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if (n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16
            or 128 * n * r * p > _MAX_SCRYPT_MEMORY
            or len(salt) < SALT_BYTES or len(key) != KEY_BYTES):
        return None
    return n, r, p, salt, key


@functools.cache
def _decoy_hash() -> str:
    """A hash to check against when the user is unknown, so that takes as long."""
    return hash_password(secrets.token_urlsafe(16))


def _check(password: str, stored: str | None) -> bool:
    """verify_password, or as long a check against a decoy when there is no user."""
    if stored is None:
        verify_password(password, _decoy_hash())
        return False
    return verify_password(password, stored)


# -- accounts and logging in -------------------------------------------------------------


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(db: Database, username: str, display_name: str, role: Role,
                      password: str, now: datetime) -> User:
    """A new account; `WeakPassword`, `Invalid` or `Conflict` (username taken)."""
    password_hash = await asyncio.to_thread(hash_password, password)
    return await db.create_user(username, display_name, role, password_hash, now)


async def set_password(db: Database, user_id: int, password: str) -> None:
    """A new password for the user; all their login sessions end."""
    password_hash = await asyncio.to_thread(hash_password, password)
    await db.set_password_hash(user_id, password_hash)


async def login(db: Database, username: str, password: str, now: datetime,
                lifetime: timedelta = LOGIN_LIFETIME) -> tuple[str, User]:
    """A new login session: the token for the cookie, and the user. `LoginFailed` (the
    same error) for an unknown user, a wrong password or an inactive account."""
    found = await db.get_credentials(username)
    good = await asyncio.to_thread(_check, password, None if found is None else found[1])
    if found is None or not good or not found[0].active:
        raise LoginFailed
    user = found[0]
    token = secrets.token_urlsafe(TOKEN_BYTES)
    await db.create_login_session(token_sha256(token), user.id, now, now + lifetime)
    return token, user


async def user_for_token(db: Database, token: str, now: datetime) -> User | None:
    """The active user logged in with this token, if it has not expired."""
    if not token:
        return None
    return await db.user_for_token_hash(token_sha256(token), now)


async def logout(db: Database, token: str) -> None:
    await db.delete_login_session(token_sha256(token))


async def ensure_first_admin(db: Database, username: str, password: str,
                             now: datetime | None = None,
                             display_name: str = "Administrator") -> bool:
    """On first run (no users at all), create an Administrator; True if it did."""
    if await db.count_users() > 0:
        return False
    password_hash = await asyncio.to_thread(hash_password, password)
    created = await db.create_first_user(username, display_name, Role.ADMINISTRATOR,
                                         password_hash, now or datetime.now(UTC))
    return created is not None
