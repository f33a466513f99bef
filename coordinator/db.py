"""The coordinator's store: one SQLite file, written durably.

A change is acknowledged when the call that made it returns, and from then on survives a
kill -9 or a power cut: the file runs in WAL mode with ``synchronous=FULL`` and every
write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction.

One connection, owned by one dedicated thread (a single-worker executor); every async
method runs its work there, so the event loop never waits on the disk. ``run(fn)`` runs
``fn(connection)`` in a write transaction, ``read(fn)`` in a read transaction, for the
rare query no method covers.

The schema is a list of numbered migrations; ``PRAGMA user_version`` says how many have
been applied, and opening the file applies the rest, each in its own transaction.

Methods return frozen dataclasses, never rows. Times are aware datetimes, stored as UTC
ISO 8601 text of fixed width (so text order is time order). A location's pairing secret
is stored as is (it is needed to call the room box) but no dataclass carries it: only
`Database.get_location_secret` returns it.
"""

from __future__ import annotations

import asyncio
import csv
import enum
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, TypeVar

from coordinator.naming import counter_key
from edge.contract import ROOM_ID_PATTERN, SESSION_ID_PATTERN

T = TypeVar("T")

JsonValue: TypeAlias = (
    bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
)

BUSY_TIMEOUT_MS: Final = 5000
USERNAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
CODE_KEYS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
COLOR_PATTERN: Final = r"^#[0-9a-f]{6}$"
MAX_LABEL: Final = 100
MAX_TEXT: Final = 10_000

SessionKind = Literal["single", "separate", "composite"]
AnnotationKind = Literal["score", "remark"]
SESSION_KINDS: Final[tuple[SessionKind, ...]] = ("single", "separate", "composite")


class Role(StrEnum):
    TECHNICIAN = "technician"
    ADMINISTRATOR = "administrator"
    TRAINER = "trainer"
    TRAINEE = "trainee"


# -- errors -----------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError):
    """No such user, location, session, codes list or code."""


class Conflict(StoreError):
    """The change clashes with what is stored: a name taken, a thing still in use."""


class Invalid(StoreError, ValueError):
    """A value the store refuses: a malformed name, key, colour or time."""


class CodesListLocked(Conflict):
    """A session's codes list can change only until its first score."""


# -- leave-as-is marker for updates -----------------------------------------------------


class _Unset(enum.Enum):
    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
Unset: TypeAlias = Literal[_Unset.UNSET]


# -- what the methods return ------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    active: bool
    created_utc: datetime


@dataclass(frozen=True)
class Location:
    """A room as the coordinator knows it. The pairing secret is deliberately absent."""

    room_id: str
    name: str
    host: str
    port: int
    api_path: str
    version: str | None
    paired: bool
    flagged_reason: str | None
    last_seen_utc: datetime | None
    added_by: int | None
    given_name: str | None = None  # named on the coordinator: wins over the room's own name


@dataclass(frozen=True)
class SessionLocation:
    session_id: str
    room_id: str
    state: str
    recording_id: str | None
    first_frames: Mapping[str, datetime]  # camera name -> its first frame's wall time
    failure: str | None


@dataclass(frozen=True)
class Session:
    id: str
    group_id: str | None
    kind: SessionKind
    name: str | None
    name_default: str | None
    name_number: int | None
    started_by: int | None
    start_at_utc: datetime
    state: str
    stop_reason: str | None
    partial_reason: str | None
    stopped_by: int | None
    stopped_utc: datetime | None
    spread_s: float | None
    codes_list_id: int | None
    created_utc: datetime
    locations: tuple[SessionLocation, ...]
    deleted_utc: datetime | None = None  # deleted (hidden); its recordings are kept
    deleted_by: int | None = None


@dataclass(frozen=True)
class NewSession:
    """What `Database.create_sessions` needs. A single or separate session has exactly
    one room (separate sessions started together share a group_id); a composite session
    has two or more."""

    id: str
    kind: SessionKind
    started_by: int | None
    start_at_utc: datetime
    created_utc: datetime
    room_ids: tuple[str, ...]
    state: str = "starting"
    location_state: str = "starting"
    group_id: str | None = None
    name: str | None = None
    name_default: str | None = None
    name_number: int | None = None
    codes_list_id: int | None = None


@dataclass(frozen=True)
class Code:
    key: str     # one of 0-9a-z
    label: str
    color: str   # #rrggbb

    def __post_init__(self) -> None:
        if len(self.key) != 1 or self.key not in CODE_KEYS:
            raise Invalid(f"a code's key is one character of 0-9a-z, not {self.key!r}")
        _check_text("label", self.label, MAX_LABEL)
        if not re.fullmatch(COLOR_PATTERN, self.color):
            raise Invalid(f"a code's colour is #rrggbb in lower case, not {self.color!r}")


@dataclass(frozen=True)
class CodesList:
    id: int
    name: str
    created_by: int | None
    codes: tuple[Code, ...]  # by key


@dataclass(frozen=True)
class Annotation:
    id: int
    session_id: str
    kind: AnnotationKind
    session_time_s: float
    wall_utc: datetime
    code_key: str | None
    code_label: str | None  # the label when scored; later edits of the list don't change it
    text: str | None
    user_id: int


@dataclass(frozen=True)
class ExportedAnnotation:
    """One line of an annotation export, in session-time order."""

    session_time_s: float
    wall_utc: datetime
    kind: AnnotationKind
    code: str | None
    label: str | None
    text: str | None
    user: str  # the username


# -- helpers ----------------------------------------------------------------------------


def _ts(when: datetime) -> str:
    if when.tzinfo is None:
        raise Invalid(f"a time must carry its time zone: {when!r}")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _ts_or_none(when: datetime | None) -> str | None:
    return None if when is None else _ts(when)


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _dt_or_none(text: str | None) -> datetime | None:
    return None if text is None else _dt(text)


def _check_text(what: str, value: str, limit: int) -> None:
    if not value.strip():
        raise Invalid(f"{what} must not be empty")
    if len(value) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")


def _check_username(username: str) -> None:
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise Invalid("a username is 1-64 letters, digits or . _ @ -, starting with a "
                      f"letter or digit: {username!r}")


def _assignments(changes: Mapping[str, object]) -> tuple[str, list[object]]:
    """`col = ?` pairs for the changes that are not UNSET (column names come from code)."""
    given = {k: v for k, v in changes.items() if v is not UNSET}
    return ", ".join(f"{k} = ?" for k in given), list(given.values())


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["username"], row["display_name"], Role(row["role"]),
                bool(row["active"]), _dt(row["created_utc"]))


def _location(row: sqlite3.Row) -> Location:
    return Location(row["room_id"], row["name"], row["host"], row["port"], row["api_path"],
                    row["version"], bool(row["paired"]), row["flagged_reason"],
                    _dt_or_none(row["last_seen_utc"]), row["added_by"], row["given_name"])


def _session_location(row: sqlite3.Row) -> SessionLocation:
    frames = {k: _dt(v) for k, v in json.loads(row["first_frames"]).items()}
    return SessionLocation(row["session_id"], row["room_id"], row["state"],
                           row["recording_id"], frames, row["failure"])


def _session(row: sqlite3.Row, locations: Iterable[SessionLocation]) -> Session:
    return Session(
        id=row["id"], group_id=row["group_id"], kind=row["kind"], name=row["name"],
        name_default=row["name_default"], name_number=row["name_number"],
        started_by=row["started_by"], start_at_utc=_dt(row["start_at_utc"]),
        state=row["state"], stop_reason=row["stop_reason"],
        partial_reason=row["partial_reason"], stopped_by=row["stopped_by"],
        stopped_utc=_dt_or_none(row["stopped_utc"]), spread_s=row["spread_s"],
        codes_list_id=row["codes_list_id"], created_utc=_dt(row["created_utc"]),
        locations=tuple(locations), deleted_utc=_dt_or_none(row["deleted_utc"]),
        deleted_by=row["deleted_by"])


def _annotation(row: sqlite3.Row) -> Annotation:
    return Annotation(row["id"], row["session_id"], row["kind"], row["session_time_s"],
                      _dt(row["wall_utc"]), row["code_key"], row["code_label"], row["text"],
                      row["user_id"])


# -- schema -----------------------------------------------------------------------------

# Each migration is a tuple of statements, applied in one transaction; never edit one that
# has shipped, append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (  # 1: the first schema
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            display_name TEXT NOT NULL,
            role TEXT NOT NULL
                CHECK (role IN ('technician', 'administrator', 'trainer', 'trainee')),
            password_hash TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
            created_utc TEXT NOT NULL
        )""",
        """CREATE TABLE login_sessions (
            token_sha256 TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_utc TEXT NOT NULL,
            expires_utc TEXT NOT NULL
        )""",
        "CREATE INDEX login_sessions_by_user ON login_sessions (user_id)",
        """CREATE TABLE locations (
            room_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
            api_path TEXT NOT NULL,
            version TEXT,
            paired INTEGER NOT NULL DEFAULT 0 CHECK (paired = (secret IS NOT NULL)),
            secret TEXT,
            flagged_reason TEXT,
            last_seen_utc TEXT,
            added_by INTEGER REFERENCES users (id)
        )""",
        """CREATE TABLE codes_lists (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            created_by INTEGER REFERENCES users (id)
        )""",
        """CREATE TABLE codes (
            list_id INTEGER NOT NULL REFERENCES codes_lists (id) ON DELETE CASCADE,
            key TEXT NOT NULL CHECK (length(key) = 1 AND key GLOB '[0-9a-z]'),
            label TEXT NOT NULL,
            color TEXT NOT NULL,
            PRIMARY KEY (list_id, key)
        )""",
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            group_id TEXT,
            kind TEXT NOT NULL CHECK (kind IN ('single', 'separate', 'composite')),
            name TEXT,
            name_default TEXT,
            name_number INTEGER,
            started_by INTEGER REFERENCES users (id),
            start_at_utc TEXT NOT NULL,
            state TEXT NOT NULL,
            stop_reason TEXT,
            partial_reason TEXT,
            stopped_by INTEGER REFERENCES users (id),
            stopped_utc TEXT,
            spread_s REAL,
            codes_list_id INTEGER REFERENCES codes_lists (id),
            created_utc TEXT NOT NULL
        )""",
        "CREATE INDEX sessions_by_group ON sessions (group_id)",
        "CREATE INDEX sessions_by_created ON sessions (created_utc)",
        """CREATE TABLE session_locations (
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            room_id TEXT NOT NULL REFERENCES locations (room_id),
            recording_id TEXT,
            state TEXT NOT NULL,
            first_frames TEXT NOT NULL DEFAULT '{}',
            failure TEXT,
            PRIMARY KEY (session_id, room_id)
        )""",
        "CREATE INDEX session_locations_by_room ON session_locations (room_id)",
        """CREATE TABLE name_counters (
            default_name TEXT PRIMARY KEY,
            last_number INTEGER NOT NULL CHECK (last_number >= 0)
        )""",
        """CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('score', 'remark')),
            session_time_s REAL NOT NULL CHECK (session_time_s >= 0),
            wall_utc TEXT NOT NULL,
            code_key TEXT,
            code_label TEXT,
            text TEXT,
            user_id INTEGER NOT NULL REFERENCES users (id),
            CHECK (kind = 'remark' OR (code_key IS NOT NULL AND code_label IS NOT NULL)),
            CHECK (kind = 'score' OR (code_key IS NULL AND text IS NOT NULL))
        )""",
        "CREATE INDEX annotations_by_session ON annotations (session_id, session_time_s)",
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL CHECK (json_valid(value))
        )""",
    ),
    (  # 2: a location's name given on the coordinator; sessions deleted softly
        "ALTER TABLE locations ADD COLUMN given_name TEXT",
        "ALTER TABLE sessions ADD COLUMN deleted_utc TEXT",
        "ALTER TABLE sessions ADD COLUMN deleted_by INTEGER REFERENCES users (id)",
    ),
    (  # 3: gathering onto central storage
        """CREATE TABLE gathered_files (
            room_id TEXT NOT NULL,
            segment_id TEXT NOT NULL,
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            recording_id TEXT NOT NULL,
            camera TEXT NOT NULL,
            file TEXT NOT NULL,
            size INTEGER NOT NULL CHECK (size >= 0),
            sha256 TEXT NOT NULL,
            idx INTEGER NOT NULL,
            first_frame_utc TEXT NOT NULL,
            duration_s REAL,
            key TEXT,
            staged_utc TEXT,
            verified_utc TEXT,
            released_utc TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            PRIMARY KEY (room_id, segment_id)
        )""",
        "CREATE INDEX gathered_by_session ON gathered_files (session_id)",
        "ALTER TABLE sessions ADD COLUMN storage_folder TEXT",
        "ALTER TABLE sessions ADD COLUMN gathered_utc TEXT",
    ),
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations the file lacks, one transaction each. The version is read
    inside the transaction, so two processes opening a new file at once don't clash."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(f"the database's schema (version {version}) is newer than "
                                 f"this software knows (version {len(MIGRATIONS)})")
            if version == len(MIGRATIONS):
                conn.execute("COMMIT")
                return
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _wal(conn: sqlite3.Connection) -> str:
    """Switch to write-ahead logging. SQLite does not call the busy handler for this
    pragma, so a file that another process is opening at the same moment answers
    "database is locked": that is tried again for up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # in the database's own thread, never on the event loop


def _connect(path: Path) -> sqlite3.Connection:
    created = not path.exists()
    if created:  # it holds password hashes and pairing secrets: owner only
        path.touch(mode=0o600)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = _wal(conn)
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot use write-ahead logging (journal mode {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
        if created:  # make the new file's directory entry durable too
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        conn.close()
        raise
    return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T],
                 write: bool) -> T:
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except sqlite3.IntegrityError as e:
        conn.execute("ROLLBACK")
        raise Conflict(str(e)) from e
    except sqlite3.Error as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(str(e)) from e
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


# -- the database -----------------------------------------------------------------------


class Database:
    """The coordinator's SQLite file. ``async with Database(path) as db:`` or
    ``await Database(path).open()`` ... ``await db.close()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    async def open(self) -> Self:
        if self._executor is not None:
            raise StoreError(f"{self.path} is already open")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomrec-db")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(
                executor, _connect, self.path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        return self

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
        executor.shutdown(wait=True)  # the worker is idle now: this returns at once

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        executor = self._executor
        if executor is None:
            raise StoreError(f"{self.path} is not open")

        def work() -> T:
            assert self._conn is not None
            return _transaction(self._conn, fn, write)

        return await asyncio.get_running_loop().run_in_executor(executor, work)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in one write transaction on the database's thread: committed
        when this returns, rolled back if fn raises. sqlite3 integrity errors become
        `Conflict`, other sqlite3 errors `StoreError`."""
        return await self._call(fn, write=True)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in one read transaction: a consistent snapshot."""
        return await self._call(fn, write=False)

    async def integrity_check(self) -> list[str]:
        """SQLite's verdict on the file: ``["ok"]`` when it is sound."""
        return await self.read(
            lambda c: [str(r[0]) for r in c.execute("PRAGMA integrity_check")])

    # -- users ----------------------------------------------------------------------

    async def create_user(self, username: str, display_name: str, role: Role,
                          password_hash: str, created_utc: datetime) -> User:
        """A new active user; `Conflict` if the username is taken in any letter case."""
        _check_username(username)
        _check_text("display name", display_name, 200)
        role = Role(role)
        created = _ts(created_utc)

        def insert(c: sqlite3.Connection) -> User:
            return _insert_user(c, username, display_name, role, password_hash, created)

        return await self.run(insert)

    async def create_first_user(self, username: str, display_name: str, role: Role,
                                password_hash: str, created_utc: datetime) -> User | None:
        """Like `create_user`, but only when there are no users at all (checked in the
        same transaction); None when there are."""
        _check_username(username)
        _check_text("display name", display_name, 200)
        role = Role(role)
        created = _ts(created_utc)

        def insert(c: sqlite3.Connection) -> User | None:
            if c.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
                return None
            return _insert_user(c, username, display_name, role, password_hash, created)

        return await self.run(insert)

    async def get_user(self, user_id: int) -> User | None:
        def get(c: sqlite3.Connection) -> User | None:
            row = c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
            return None if row is None else _user(row)

        return await self.read(get)

    async def get_user_by_name(self, username: str) -> User | None:
        """The user of this name in any letter case."""
        found = await self.get_credentials(username)
        return None if found is None else found[0]

    async def get_credentials(self, username: str) -> tuple[User, str] | None:
        """The user of this name (any letter case) and their password hash."""
        def get(c: sqlite3.Connection) -> tuple[User, str] | None:
            row = c.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
            return None if row is None else (_user(row), str(row["password_hash"]))

        return await self.read(get)

    async def list_users(self) -> list[User]:
        return await self.read(lambda c: [
            _user(r) for r in c.execute("SELECT * FROM users ORDER BY username")])

    async def count_users(self) -> int:
        return await self.read(
            lambda c: int(c.execute("SELECT count(*) FROM users").fetchone()[0]))

    async def update_user(self, user_id: int, *, display_name: str | Unset = UNSET,
                          role: Role | Unset = UNSET, active: bool | Unset = UNSET) -> User:
        """Change what is given. Deactivating a user ends their login sessions. The last
        active administrator cannot be demoted or deactivated (`Conflict`)."""
        if display_name is not UNSET:
            _check_text("display name", display_name, 200)
        changes: dict[str, object] = {
            "display_name": display_name,
            "role": UNSET if role is UNSET else Role(role).value,
            "active": UNSET if active is UNSET else int(active)}

        def update(c: sqlite3.Connection) -> User:
            before = c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
            if before is None:
                raise NotFound(f"no user {user_id}")
            sets, values = _assignments(changes)
            if sets:
                c.execute(f"UPDATE users SET {sets} WHERE id = ?",  # noqa: S608 - columns from code
                          (*values, user_id))
            after = _user(c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
            if _is_admin(_user(before)) and not _is_admin(after) and c.execute(
                    "SELECT 1 FROM users WHERE active = 1 AND role = 'administrator' "
                    "LIMIT 1").fetchone() is None:
                raise Conflict("the last active administrator cannot be demoted or "
                               "deactivated")
            if not after.active:
                c.execute("DELETE FROM login_sessions WHERE user_id = ?", (user_id,))
            return after

        return await self.run(update)

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """A new password; every login session of the user ends."""
        def update(c: sqlite3.Connection) -> None:
            cur = c.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                            (password_hash, user_id))
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id}")
            c.execute("DELETE FROM login_sessions WHERE user_id = ?", (user_id,))

        await self.run(update)

    # -- login sessions ---------------------------------------------------------------

    async def create_login_session(self, token_sha256: str, user_id: int,
                                   created_utc: datetime, expires_utc: datetime) -> None:
        """Also forgets login sessions that expired before `created_utc`."""
        created, expires = _ts(created_utc), _ts(expires_utc)

        def insert(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM login_sessions WHERE expires_utc <= ?", (created,))
            c.execute("INSERT INTO login_sessions VALUES (?, ?, ?, ?)",
                      (token_sha256, user_id, created, expires))

        await self.run(insert)

    async def user_for_token_hash(self, token_sha256: str, now: datetime) -> User | None:
        """The active user whose unexpired login session has this token hash."""
        at = _ts(now)

        def get(c: sqlite3.Connection) -> User | None:
            row = c.execute(
                "SELECT users.* FROM login_sessions JOIN users ON users.id = user_id "
                "WHERE token_sha256 = ? AND expires_utc > ? AND active = 1",
                (token_sha256, at)).fetchone()
            return None if row is None else _user(row)

        return await self.read(get)

    async def delete_login_session(self, token_sha256: str) -> bool:
        return await self.run(lambda c: c.execute(
            "DELETE FROM login_sessions WHERE token_sha256 = ?",
            (token_sha256,)).rowcount > 0)

    # -- locations --------------------------------------------------------------------

    async def add_location(self, room_id: str, *, name: str, host: str, port: int,
                           api_path: str, version: str | None = None,
                           added_by: int | None = None,
                           last_seen_utc: datetime | None = None) -> Location:
        """A new, unpaired location; `Conflict` if the room id is known already."""
        if not re.fullmatch(ROOM_ID_PATTERN, room_id):
            raise Invalid(f"not a room id: {room_id!r}")
        _check_text("a location's name", name, 200)
        seen = _ts_or_none(last_seen_utc)

        def insert(c: sqlite3.Connection) -> Location:
            if c.execute("SELECT 1 FROM locations WHERE room_id = ?", (room_id,)).fetchone():
                raise Conflict(f"location {room_id} exists already")
            c.execute("INSERT INTO locations (room_id, name, host, port, api_path, version, "
                      "last_seen_utc, added_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (room_id, name, host, port, api_path, version, seen, added_by))
            return _get_location(c, room_id)

        return await self.run(insert)

    async def get_location(self, room_id: str) -> Location | None:
        def get(c: sqlite3.Connection) -> Location | None:
            row = c.execute("SELECT * FROM locations WHERE room_id = ?", (room_id,)).fetchone()
            return None if row is None else _location(row)

        return await self.read(get)

    async def list_locations(self) -> list[Location]:
        return await self.read(lambda c: [
            _location(r) for r in c.execute("SELECT * FROM locations ORDER BY name, room_id")])

    async def update_location(
            self, room_id: str, *, name: str | Unset = UNSET, host: str | Unset = UNSET,
            port: int | Unset = UNSET, api_path: str | Unset = UNSET,
            version: str | Unset | None = UNSET,
            last_seen_utc: datetime | Unset | None = UNSET,
            flagged_reason: str | Unset | None = UNSET,
            given_name: str | Unset | None = UNSET) -> Location:
        """Change what is given (rediscovery: a new address; a flag and its reason).
        `name` is the room's own name; `given_name` the one given on the coordinator,
        which wins over it (None: none given)."""
        if name is not UNSET:
            _check_text("a location's name", name, 200)
        if given_name is not UNSET and given_name is not None:
            _check_text("a location's name", given_name, 200)
        changes: dict[str, object] = {
            "name": name, "host": host, "port": port, "api_path": api_path,
            "version": version, "flagged_reason": flagged_reason, "given_name": given_name,
            "last_seen_utc": (UNSET if last_seen_utc is UNSET
                              else _ts_or_none(last_seen_utc))}
        return await self.run(lambda c: _update_location(c, room_id, changes))

    async def set_location_secret(self, room_id: str, secret: str | None) -> Location:
        """Paired with this secret, or unpaired (secret None, which forgets it)."""
        if secret is not None and not secret:
            raise Invalid("a pairing secret must not be empty")
        changes: dict[str, object] = {"secret": secret, "paired": int(secret is not None)}
        return await self.run(lambda c: _update_location(c, room_id, changes))

    async def get_location_secret(self, room_id: str) -> str | None:
        """The pairing secret to send to the room box; None if unpaired or unknown."""
        def get(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT secret FROM locations WHERE room_id = ?",
                            (room_id,)).fetchone()
            return None if row is None else row["secret"]

        return await self.read(get)

    async def delete_location(self, room_id: str) -> None:
        """Forget a location; `Conflict` while sessions recorded there are kept."""
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM session_locations WHERE room_id = ? LIMIT 1",
                         (room_id,)).fetchone():
                raise Conflict(f"location {room_id} has sessions")
            if c.execute("DELETE FROM locations WHERE room_id = ?", (room_id,)).rowcount == 0:
                raise NotFound(f"no location {room_id}")

        await self.run(delete)

    # -- session names ------------------------------------------------------------------

    async def reserve_name_number(self, default_name: str) -> int:
        """The next number for this default session name: 1, 2, ... committed before this
        returns, so never handed out twice, even if the session that got it is deleted or
        never starts. Names share a counter by `naming.counter_key` (trimmed, NFC)."""
        _check_text("a default session name", default_name, 200)
        default_name = counter_key(default_name)

        def reserve(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO name_counters VALUES (?, 1) ON CONFLICT (default_name) "
                      "DO UPDATE SET last_number = last_number + 1", (default_name,))
            return int(c.execute("SELECT last_number FROM name_counters "
                                 "WHERE default_name = ?", (default_name,)).fetchone()[0])

        return await self.run(reserve)

    async def name_counters(self) -> dict[str, int]:
        """The last number handed out per default name (see `naming.NameCounters`)."""
        return await self.read(lambda c: {
            r[0]: int(r[1]) for r in c.execute("SELECT * FROM name_counters")})

    # -- sessions -----------------------------------------------------------------------

    async def create_session(self, new: NewSession) -> Session:
        return (await self.create_sessions([new]))[0]

    async def create_sessions(self, news: Sequence[NewSession]) -> list[Session]:
        """Sessions started together (e.g. separate sessions of one group), all or none.
        `Invalid` for an unknown room, user or codes list."""
        for new in news:
            _check_new_session(new)
        rows = [(n.id, n.group_id, n.kind, n.name, n.name_default, n.name_number,
                 n.started_by, _ts(n.start_at_utc), n.state, n.codes_list_id,
                 _ts(n.created_utc)) for n in news]

        def insert(c: sqlite3.Connection) -> list[Session]:
            for new, row in zip(news, rows, strict=True):
                _check_references(c, new)
                if c.execute("SELECT 1 FROM sessions WHERE id = ?", (new.id,)).fetchone():
                    raise Conflict(f"session {new.id} exists already")
                c.execute("INSERT INTO sessions (id, group_id, kind, name, name_default, "
                          "name_number, started_by, start_at_utc, state, codes_list_id, "
                          "created_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                c.executemany("INSERT INTO session_locations (session_id, room_id, state) "
                              "VALUES (?, ?, ?)",
                              [(new.id, r, new.location_state) for r in new.room_ids])
            return [_get_session(c, n.id) for n in news]

        return await self.run(insert)

    async def get_session(self, session_id: str) -> Session | None:
        def get(c: sqlite3.Connection) -> Session | None:
            try:
                return _get_session(c, session_id)
            except NotFound:
                return None

        return await self.read(get)

    async def list_sessions(self, *, states: Collection[str] | None = None,
                            group_id: str | None = None, room_id: str | None = None,
                            limit: int | None = None,
                            include_deleted: bool = False) -> list[Session]:
        """Newest first; each filter given narrows the list. Deleted sessions are left
        out unless `include_deleted`."""
        where: list[str] = [] if include_deleted else ["deleted_utc IS NULL"]
        args: list[object] = []
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += list(states)
        if group_id is not None:
            where.append("group_id = ?")
            args.append(group_id)
        if room_id is not None:
            where.append("id IN (SELECT session_id FROM session_locations WHERE room_id = ?)")
            args.append(room_id)
        sql = "SELECT * FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_utc DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)

        def get(c: sqlite3.Connection) -> list[Session]:
            rows = c.execute(sql, args).fetchall()
            by_session: dict[str, list[SessionLocation]] = {r["id"]: [] for r in rows}
            if rows:
                marks = ", ".join("?" * len(rows))
                for loc in c.execute(
                        f"SELECT * FROM session_locations WHERE session_id IN ({marks}) "  # noqa: S608 - placeholders only
                        "ORDER BY session_id, room_id", list(by_session)):
                    by_session[loc["session_id"]].append(_session_location(loc))
            return [_session(r, by_session[r["id"]]) for r in rows]

        return await self.read(get)

    async def update_session(
            self, session_id: str, *, state: str | Unset = UNSET,
            name: str | Unset | None = UNSET, name_default: str | Unset | None = UNSET,
            name_number: int | Unset | None = UNSET, stop_reason: str | Unset | None = UNSET,
            partial_reason: str | Unset | None = UNSET,
            stopped_by: int | Unset | None = UNSET,
            stopped_utc: datetime | Unset | None = UNSET,
            spread_s: float | Unset | None = UNSET) -> Session:
        """Change what is given. The codes list has its own method."""
        changes: dict[str, object] = {
            "state": state, "name": name, "name_default": name_default,
            "name_number": name_number, "stop_reason": stop_reason,
            "partial_reason": partial_reason, "stopped_by": stopped_by,
            "stopped_utc": UNSET if stopped_utc is UNSET else _ts_or_none(stopped_utc),
            "spread_s": spread_s}

        def update(c: sqlite3.Connection) -> Session:
            sets, values = _assignments(changes)
            if sets:
                c.execute(f"UPDATE sessions SET {sets} WHERE id = ?",  # noqa: S608 - columns from code
                          (*values, session_id))
            return _get_session(c, session_id)

        return await self.run(update)

    async def update_session_location(
            self, session_id: str, room_id: str, *, state: str | Unset = UNSET,
            recording_id: str | Unset | None = UNSET,
            first_frames: Mapping[str, datetime] | Unset = UNSET,
            failure: str | Unset | None = UNSET) -> SessionLocation:
        changes: dict[str, object] = {
            "state": state, "recording_id": recording_id, "failure": failure,
            "first_frames": UNSET if first_frames is UNSET else json.dumps(
                {k: _ts(v) for k, v in first_frames.items()}, sort_keys=True)}

        def update(c: sqlite3.Connection) -> SessionLocation:
            sets, values = _assignments(changes)
            if sets:
                c.execute(f"UPDATE session_locations SET {sets} "  # noqa: S608 - columns from code
                          "WHERE session_id = ? AND room_id = ?", (*values, session_id, room_id))
            row = c.execute("SELECT * FROM session_locations WHERE session_id = ? "
                            "AND room_id = ?", (session_id, room_id)).fetchone()
            if row is None:
                raise NotFound(f"session {session_id} has no location {room_id}")
            return _session_location(row)

        return await self.run(update)

    async def delete_session(self, session_id: str) -> bool:
        """Forget a session with its locations and annotations; False if unknown."""
        return await self.run(lambda c: c.execute(
            "DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0)

    async def soft_delete_session(self, session_id: str, *, deleted_by: int | None,
                                  deleted_utc: datetime) -> Session:
        """Mark a session deleted: `list_sessions` leaves it out from now on, but its row,
        locations and annotations stay (and so do its recordings, wherever they are).
        `NotFound` if there is no such session or it is deleted already."""
        when = _ts(deleted_utc)

        def update(c: sqlite3.Connection) -> Session:
            if c.execute("UPDATE sessions SET deleted_utc = ?, deleted_by = ? "
                         "WHERE id = ? AND deleted_utc IS NULL",
                         (when, deleted_by, session_id)).rowcount == 0:
                raise NotFound(f"no session {session_id}")
            return _get_session(c, session_id)

        return await self.run(update)

    async def set_session_codes_list(self, session_id: str, list_id: int | None) -> Session:
        """Choose the session's codes list (None: none). `CodesListLocked` once the
        session has a score."""
        def update(c: sqlite3.Connection) -> Session:
            session = _get_session(c, session_id)
            if c.execute("SELECT 1 FROM annotations WHERE session_id = ? AND kind = 'score' "
                         "LIMIT 1", (session_id,)).fetchone():
                raise CodesListLocked(f"session {session_id} has scores: its codes list "
                                      "can no longer change")
            if list_id is not None and not _exists(c, "codes_lists", "id", list_id):
                raise NotFound(f"no codes list {list_id}")
            c.execute("UPDATE sessions SET codes_list_id = ? WHERE id = ?",
                      (list_id, session.id))
            return _get_session(c, session_id)

        return await self.run(update)

    # -- codes lists --------------------------------------------------------------------

    async def create_codes_list(self, name: str, created_by: int | None,
                                codes: Iterable[Code] = ()) -> CodesList:
        """`Conflict` if the name is taken (any letter case) or a key repeats."""
        _check_text("a codes list's name", name, 200)
        codes = tuple(codes)

        def insert(c: sqlite3.Connection) -> CodesList:
            if c.execute("SELECT 1 FROM codes_lists WHERE name = ? COLLATE NOCASE",
                         (name,)).fetchone():
                raise Conflict(f"a codes list named {name!r} exists already")
            cur = c.execute("INSERT INTO codes_lists (name, created_by) VALUES (?, ?)",
                            (name, created_by))
            list_id = int(cur.lastrowid or 0)
            c.executemany("INSERT INTO codes VALUES (?, ?, ?, ?)",
                          [(list_id, k.key, k.label, k.color) for k in codes])
            return _get_codes_list(c, list_id)

        return await self.run(insert)

    async def get_codes_list(self, list_id: int) -> CodesList | None:
        def get(c: sqlite3.Connection) -> CodesList | None:
            try:
                return _get_codes_list(c, list_id)
            except NotFound:
                return None

        return await self.read(get)

    async def list_codes_lists(self) -> list[CodesList]:
        def get(c: sqlite3.Connection) -> list[CodesList]:
            ids = [r[0] for r in c.execute("SELECT id FROM codes_lists ORDER BY name")]
            return [_get_codes_list(c, i) for i in ids]

        return await self.read(get)

    async def rename_codes_list(self, list_id: int, name: str) -> CodesList:
        _check_text("a codes list's name", name, 200)

        def update(c: sqlite3.Connection) -> CodesList:
            if c.execute("UPDATE codes_lists SET name = ? WHERE id = ?",
                         (name, list_id)).rowcount == 0:
                raise NotFound(f"no codes list {list_id}")
            return _get_codes_list(c, list_id)

        return await self.run(update)

    async def put_code(self, list_id: int, code: Code) -> CodesList:
        """Add the code, or replace the one with its key. Scores already made keep the
        label they were made with."""
        def upsert(c: sqlite3.Connection) -> CodesList:
            if not _exists(c, "codes_lists", "id", list_id):
                raise NotFound(f"no codes list {list_id}")
            c.execute("INSERT INTO codes VALUES (?, ?, ?, ?) ON CONFLICT (list_id, key) "
                      "DO UPDATE SET label = excluded.label, color = excluded.color",
                      (list_id, code.key, code.label, code.color))
            return _get_codes_list(c, list_id)

        return await self.run(upsert)

    async def delete_code(self, list_id: int, key: str) -> CodesList:
        def delete(c: sqlite3.Connection) -> CodesList:
            if c.execute("DELETE FROM codes WHERE list_id = ? AND key = ?",
                         (list_id, key)).rowcount == 0:
                raise NotFound(f"codes list {list_id} has no key {key!r}")
            return _get_codes_list(c, list_id)

        return await self.run(delete)

    async def replace_codes_list(self, list_id: int, name: str,
                                 codes: Iterable[Code]) -> CodesList:
        """Give the list this name and exactly these codes, in one transaction. Scores
        already made keep the label they were made with. `Conflict` if another list has
        the name (any letter case), `Invalid` if a key repeats."""
        _check_text("a codes list's name", name, 200)
        codes = tuple(codes)
        keys = [k.key for k in codes]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise Invalid(f"each key is used once in a codes list: {', '.join(repeated)} "
                          "repeated")

        def replace(c: sqlite3.Connection) -> CodesList:
            if not _exists(c, "codes_lists", "id", list_id):
                raise NotFound(f"no codes list {list_id}")
            if c.execute("SELECT 1 FROM codes_lists WHERE name = ? COLLATE NOCASE "
                         "AND id != ?", (name, list_id)).fetchone():
                raise Conflict(f"a codes list named {name!r} exists already")
            c.execute("UPDATE codes_lists SET name = ? WHERE id = ?", (name, list_id))
            c.execute("DELETE FROM codes WHERE list_id = ?", (list_id,))
            c.executemany("INSERT INTO codes VALUES (?, ?, ?, ?)",
                          [(list_id, k.key, k.label, k.color) for k in codes])
            return _get_codes_list(c, list_id)

        return await self.run(replace)

    async def delete_codes_list(self, list_id: int) -> None:
        """`Conflict` while a session uses it."""
        def delete(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM sessions WHERE codes_list_id = ? LIMIT 1",
                         (list_id,)).fetchone():
                raise Conflict(f"codes list {list_id} is used by sessions (deleted ones "
                               "included): it cannot be deleted")
            if c.execute("DELETE FROM codes_lists WHERE id = ?", (list_id,)).rowcount == 0:
                raise NotFound(f"no codes list {list_id}")

        await self.run(delete)

    # -- annotations --------------------------------------------------------------------

    async def add_score(self, session_id: str, *, key: str, session_time_s: float,
                        wall_utc: datetime, user_id: int,
                        text: str | None = None) -> Annotation:
        """Score the code `key` of the session's codes list, keeping its current label.
        `Invalid` if the session has no codes list or the list has no such key."""
        if text is not None:
            _check_text("a score's note", text, MAX_TEXT)
        wall = _ts(wall_utc)
        _check_session_time(session_time_s)

        def insert(c: sqlite3.Connection) -> Annotation:
            session = _get_session(c, session_id)
            if session.codes_list_id is None:
                raise Invalid(f"session {session_id} has no codes list")
            code = c.execute("SELECT label FROM codes WHERE list_id = ? AND key = ?",
                             (session.codes_list_id, key)).fetchone()
            if code is None:
                raise Invalid(f"the session's codes list has no key {key!r}")
            return _insert_annotation(c, session_id, "score", session_time_s, wall, key,
                                      code["label"], text, user_id)

        return await self.run(insert)

    async def add_remark(self, session_id: str, *, text: str, session_time_s: float,
                         wall_utc: datetime, user_id: int) -> Annotation:
        _check_text("a remark", text, MAX_TEXT)
        wall = _ts(wall_utc)
        _check_session_time(session_time_s)

        def insert(c: sqlite3.Connection) -> Annotation:
            _get_session(c, session_id)
            return _insert_annotation(c, session_id, "remark", session_time_s, wall, None,
                                      None, text, user_id)

        return await self.run(insert)

    async def list_annotations(self, session_id: str) -> list[Annotation]:
        return await self.read(lambda c: [_annotation(r) for r in c.execute(
            "SELECT * FROM annotations WHERE session_id = ? ORDER BY session_time_s, id",
            (session_id,))])

    async def export_annotations(self, session_id: str) -> list[ExportedAnnotation]:
        """The session's annotations in session-time order, with usernames."""
        def get(c: sqlite3.Connection) -> list[ExportedAnnotation]:
            _get_session(c, session_id)
            return [ExportedAnnotation(r["session_time_s"], _dt(r["wall_utc"]), r["kind"],
                                       r["code_key"], r["code_label"], r["text"],
                                       r["username"])
                    for r in c.execute(
                        "SELECT annotations.*, users.username FROM annotations "
                        "JOIN users ON users.id = user_id WHERE session_id = ? "
                        "ORDER BY session_time_s, annotations.id", (session_id,))]

        return await self.read(get)

    # -- settings -----------------------------------------------------------------------

    async def get_setting(self, key: str, default: JsonValue = None) -> JsonValue:
        def get(c: sqlite3.Connection) -> JsonValue:
            row = c.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return default if row is None else _json_value(row["value"])

        return await self.read(get)

    async def set_setting(self, key: str, value: JsonValue) -> None:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
        await self.run(lambda c: c.execute(
            "INSERT INTO settings VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value", (key, text)))

    async def delete_setting(self, key: str) -> None:
        await self.run(lambda c: c.execute("DELETE FROM settings WHERE key = ?", (key,)))


# -- work done on the database thread ----------------------------------------------------


def _exists(c: sqlite3.Connection, table: str, column: str, value: object) -> bool:
    return c.execute(f"SELECT 1 FROM {table} WHERE {column} = ?",  # noqa: S608 - names from code
                     (value,)).fetchone() is not None


def _is_admin(user: User) -> bool:
    return user.active and user.role is Role.ADMINISTRATOR


def _json_value(text: str) -> JsonValue:
    value: JsonValue = json.loads(text)
    return value


def _insert_user(c: sqlite3.Connection, username: str, display_name: str, role: Role,
                 password_hash: str, created: str) -> User:
    if c.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
        raise Conflict(f"the username {username!r} is taken")
    cur = c.execute("INSERT INTO users (username, display_name, role, password_hash, "
                    "created_utc) VALUES (?, ?, ?, ?, ?)",
                    (username, display_name, role.value, password_hash, created))
    return _user(c.execute("SELECT * FROM users WHERE id = ?", (cur.lastrowid,)).fetchone())


def _get_location(c: sqlite3.Connection, room_id: str) -> Location:
    row = c.execute("SELECT * FROM locations WHERE room_id = ?", (room_id,)).fetchone()
    if row is None:
        raise NotFound(f"no location {room_id}")
    return _location(row)


def _update_location(c: sqlite3.Connection, room_id: str,
                     changes: Mapping[str, object]) -> Location:
    sets, values = _assignments(changes)
    if sets:
        c.execute(f"UPDATE locations SET {sets} WHERE room_id = ?",  # noqa: S608 - columns from code
                  (*values, room_id))
    return _get_location(c, room_id)


def _get_session(c: sqlite3.Connection, session_id: str) -> Session:
    row = c.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise NotFound(f"no session {session_id}")
    locations = [_session_location(r) for r in c.execute(
        "SELECT * FROM session_locations WHERE session_id = ? ORDER BY room_id",
        (session_id,))]
    return _session(row, locations)


def _check_new_session(new: NewSession) -> None:
    if not re.fullmatch(SESSION_ID_PATTERN, new.id):
        raise Invalid(f"not a session id: {new.id!r}")
    if new.kind not in SESSION_KINDS:
        raise Invalid(f"not a session kind: {new.kind!r}")
    rooms = len(new.room_ids)
    if len(set(new.room_ids)) != rooms:
        raise Invalid(f"session {new.id} names a room twice")
    if new.kind == "composite" and rooms < 2:
        raise Invalid("a composite session records two or more locations")
    if new.kind != "composite" and rooms != 1:
        raise Invalid(f"a {new.kind} session records exactly one location")
    if new.kind == "separate" and new.group_id is None:
        raise Invalid("separate sessions share a group id")


def _check_references(c: sqlite3.Connection, new: NewSession) -> None:
    for room_id in new.room_ids:
        if not _exists(c, "locations", "room_id", room_id):
            raise Invalid(f"no location {room_id}")
    if new.started_by is not None and not _exists(c, "users", "id", new.started_by):
        raise Invalid(f"no user {new.started_by}")
    if new.codes_list_id is not None and not _exists(c, "codes_lists", "id",
                                                     new.codes_list_id):
        raise Invalid(f"no codes list {new.codes_list_id}")


def _get_codes_list(c: sqlite3.Connection, list_id: int) -> CodesList:
    row = c.execute("SELECT * FROM codes_lists WHERE id = ?", (list_id,)).fetchone()
    if row is None:
        raise NotFound(f"no codes list {list_id}")
    codes = tuple(Code(r["key"], r["label"], r["color"]) for r in c.execute(
        "SELECT * FROM codes WHERE list_id = ? ORDER BY key", (list_id,)))
    return CodesList(row["id"], row["name"], row["created_by"], codes)


def _check_session_time(session_time_s: float) -> None:
    if not 0 <= session_time_s < float("inf"):
        raise Invalid(f"a session time is a finite number of seconds >= 0: {session_time_s}")


def _insert_annotation(c: sqlite3.Connection, session_id: str, kind: AnnotationKind,
                       session_time_s: float, wall: str, key: str | None, label: str | None,
                       text: str | None, user_id: int) -> Annotation:
    if not _exists(c, "users", "id", user_id):
        raise Invalid(f"no user {user_id}")
    cur = c.execute("INSERT INTO annotations (session_id, kind, session_time_s, wall_utc, "
                    "code_key, code_label, text, user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (session_id, kind, session_time_s, wall, key, label, text, user_id))
    return _annotation(c.execute("SELECT * FROM annotations WHERE id = ?",
                                 (cur.lastrowid,)).fetchone())


# -- exports ------------------------------------------------------------------------------

EXPORT_COLUMNS: Final = ("session_time_s", "wall_utc", "kind", "code", "label", "text", "user")
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | None) -> str:
    """A text cell that a spreadsheet will not run as a formula (OWASP CSV injection):
    text starting with = + - @ or a tab gets a leading apostrophe."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _export_dict(row: ExportedAnnotation) -> dict[str, Any]:
    out = asdict(row)
    out["wall_utc"] = _ts(row.wall_utc)
    return out


def annotations_csv(rows: Iterable[ExportedAnnotation]) -> str:
    """CSV with a header line: session_time_s, wall_utc, kind, code, label, text, user.
    Missing values are empty cells; text cells are guarded against formula injection."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow([repr(float(row.session_time_s)), _ts(row.wall_utc), row.kind,
                         _cell(row.code), _cell(row.label), _cell(row.text), _cell(row.user)])
    return out.getvalue()


def annotations_json(rows: Iterable[ExportedAnnotation]) -> str:
    """A JSON array of objects with the CSV's columns as keys; missing values are null."""
    return json.dumps([_export_dict(r) for r in rows], ensure_ascii=False, indent=2,
                      allow_nan=False)
