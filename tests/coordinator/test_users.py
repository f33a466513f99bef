"""Accounts: password hashes, the role table, logging in and out."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator import users
from coordinator.db import Conflict, Database, Role, User
from coordinator.users import (
    LOGIN_LIFETIME,
    PERMISSIONS,
    LoginFailed,
    Permission,
    WeakPassword,
    ensure_first_admin,
    hash_password,
    login,
    logout,
    user_for_token,
    verify_password,
)

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "coordinator.db") as opened:
        yield opened


@pytest.fixture
async def trainer(db: Database) -> User:
    return await users.create_user(db, "Trainer", "Tess Trainer", Role.TRAINER, PASSWORD, T0)


# -- password hashes -------------------------------------------------------------------------


def test_a_hash_describes_itself_and_verifies_only_its_password() -> None:
    stored = hash_password(PASSWORD)
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert (len(base64.b64decode(salt)), len(base64.b64decode(key))) == (16, 32)
    assert verify_password(PASSWORD, stored)
    for wrong in ("correct horse batter", "Correct horse battery", PASSWORD + " ", ""):
        assert not verify_password(wrong, stored)
    assert hash_password(PASSWORD) != stored  # a fresh salt each time


def _flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_a_tampered_hash_is_rejected() -> None:
    stored = hash_password(PASSWORD)
    scheme, n, r, p, salt, key = stored.split("$")
    tampered = [
        f"{scheme}${n}${r}${p}${_flip(salt)}${key}",
        f"{scheme}${n}${r}${p}${salt}${_flip(key)}",
        f"{scheme}${2**13}${r}${p}${salt}${key}",
        f"{scheme}${n}$4${p}${salt}${key}",
        f"{scheme}${n}${r}$2${salt}${key}",
        f"{scheme}${n}${r}${p}${salt}${key[:-4]}",      # a shorter key, its prefix
        f"{scheme}$1000${r}${p}${salt}${key}",          # n not a power of two
        f"{scheme}${2**30}${r}${p}${salt}${key}",       # absurd memory: refused, not run
        f"{scheme}${n}${r}${p}$!!${key}",               # not base64
        f"{scheme}${n}${r}${p}${salt}",                 # a part missing
        f"pbkdf2${n}${r}${p}${salt}${key}",
        "", "scrypt", PASSWORD,
    ]
    for bad in tampered:
        assert not verify_password(PASSWORD, bad), bad


@pytest.mark.parametrize("password", ["", "short", "1234567"])
def test_new_passwords_have_eight_characters_at_least(password: str) -> None:
    with pytest.raises(WeakPassword):
        hash_password(password)
    assert verify_password("12345678", hash_password("12345678"))


# -- the role table --------------------------------------------------------------------------


def test_what_each_role_may_do() -> None:
    expected = {  # record, view, manage users, manage locations, force stop, delete sessions
        Role.TECHNICIAN: (1, 1, 1, 1, 1, 1),
        Role.ADMINISTRATOR: (1, 1, 1, 1, 0, 1),
        Role.TRAINER: (1, 1, 0, 0, 0, 0),
        Role.TRAINEE: (0, 1, 0, 0, 0, 0),
    }
    checks = (users.may_record, users.may_view, users.may_manage_users,
              users.may_manage_locations, users.may_force_stop, users.may_delete_sessions)
    assert set(PERMISSIONS) == set(Role)
    for role, row in expected.items():
        assert tuple(int(check(role)) for check in checks) == row, role
    assert users.may(Role.TECHNICIAN, Permission.FORCE_STOP)
    assert not users.may(Role.TRAINEE, Permission.RECORD)


# -- logging in and out ----------------------------------------------------------------------


async def test_login_gives_a_token_whose_hash_alone_is_stored(db: Database,
                                                               trainer: User) -> None:
    token, user = await login(db, "trainer", PASSWORD, T0)  # any letter case
    assert user == trainer
    assert len(token) >= 43  # 32 random bytes, urlsafe base64
    stored = await db.read(lambda c: c.execute("SELECT * FROM login_sessions").fetchall())
    assert [(r["token_sha256"], r["user_id"]) for r in stored] == [
        (hashlib.sha256(token.encode()).hexdigest(), trainer.id)]
    assert token not in db.path.read_bytes().decode(errors="replace")
    assert await user_for_token(db, token, T0 + timedelta(hours=1)) == trainer
    other, _ = await login(db, "Trainer", PASSWORD, T0)
    assert other != token


async def test_a_login_expires(db: Database, trainer: User) -> None:
    token, _ = await login(db, "Trainer", PASSWORD, T0)
    assert timedelta(hours=12) == LOGIN_LIFETIME
    assert await user_for_token(db, token, T0 + LOGIN_LIFETIME - timedelta(seconds=1)) == trainer
    assert await user_for_token(db, token, T0 + LOGIN_LIFETIME) is None
    short, _ = await login(db, "Trainer", PASSWORD, T0, lifetime=timedelta(minutes=5))
    assert await user_for_token(db, short, T0 + timedelta(minutes=5)) is None


async def test_logout_ends_the_login(db: Database, trainer: User) -> None:
    token, _ = await login(db, "Trainer", PASSWORD, T0)
    kept, _ = await login(db, "Trainer", PASSWORD, T0)
    await logout(db, token)
    assert await user_for_token(db, token, T0) is None
    assert await user_for_token(db, kept, T0) == trainer
    await logout(db, token)  # twice is fine
    assert await user_for_token(db, "", T0) is None
    assert await user_for_token(db, "made-up", T0) is None


async def test_failed_logins_look_alike(db: Database, trainer: User) -> None:
    await db.create_user("admin", "A", Role.ADMINISTRATOR, hash_password(PASSWORD), T0)
    await db.update_user(trainer.id, active=False)
    messages = set()
    for username, password in [("nobody", PASSWORD), ("admin", "wrong password"),
                               ("admin", ""), ("Trainer", PASSWORD)]:  # the last: inactive
        with pytest.raises(LoginFailed) as failed:
            await login(db, username, password, T0)
        messages.add(str(failed.value))
    assert messages == {"wrong username or password"}
    count = await db.read(lambda c: c.execute("SELECT count(*) FROM login_sessions")
                          .fetchone()[0])
    assert count == 0


async def test_a_new_password_ends_every_login(db: Database, trainer: User) -> None:
    token, _ = await login(db, "Trainer", PASSWORD, T0)
    await users.set_password(db, trainer.id, "another password")
    assert await user_for_token(db, token, T0) is None
    with pytest.raises(LoginFailed):
        await login(db, "Trainer", PASSWORD, T0)
    await login(db, "Trainer", "another password", T0)
    with pytest.raises(WeakPassword):
        await users.set_password(db, trainer.id, "short")


async def test_accounts_are_unique(db: Database, trainer: User) -> None:
    with pytest.raises(Conflict):
        await users.create_user(db, "TRAINER", "Other", Role.TRAINEE, PASSWORD, T0)


# -- the first administrator ---------------------------------------------------------------


async def test_the_first_administrator_is_created_once(db: Database) -> None:
    assert await ensure_first_admin(db, "admin", PASSWORD, T0)
    assert not await ensure_first_admin(db, "admin2", "other password", T0)
    assert not await ensure_first_admin(db, "admin", "other password", T0)
    [admin] = await db.list_users()
    assert (admin.username, admin.role, admin.active) == ("admin", Role.ADMINISTRATOR, True)
    _, user = await login(db, "admin", PASSWORD, T0)
    assert user == admin


async def test_no_first_administrator_when_users_exist(db: Database, trainer: User) -> None:
    assert not await ensure_first_admin(db, "admin", PASSWORD, T0)
    assert [u.username for u in await db.list_users()] == ["Trainer"]


async def test_the_first_administrator_needs_a_proper_password(tmp_path: Path) -> None:
    async with Database(tmp_path / "c.db") as db:
        with pytest.raises(WeakPassword):
            await ensure_first_admin(db, "admin", "", T0)
        assert await db.count_users() == 0
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
