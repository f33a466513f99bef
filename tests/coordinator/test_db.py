"""The coordinator's store, on real SQLite files."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator.db import (
    CODE_KEYS,
    MIGRATIONS,
    Code,
    CodesListLocked,
    Conflict,
    Database,
    ExportedAnnotation,
    Invalid,
    JsonValue,
    NewSession,
    NotFound,
    Role,
    StoreError,
    annotations_csv,
    annotations_json,
)
from tests.support.db_writer import DEFAULT_NAME

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
COLORS = ("#ff0000", "#00ff00", "#0000ff")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "coordinator.db") as opened:
        yield opened


async def add_admin(db: Database, username: str = "admin") -> int:
    return (await db.create_user(username, "Admin", Role.ADMINISTRATOR, "x", T0)).id


async def add_room(db: Database, room_id: str = "room-1") -> str:
    await db.add_location(room_id, name=f"Room {room_id}", host="10.0.0.5", port=8080,
                          api_path="/api/v1")
    return room_id


async def add_session(db: Database, session_id: str = "s1", user_id: int | None = None,
                      room_id: str = "room-1", codes_list_id: int | None = None) -> str:
    await db.create_session(NewSession(
        id=session_id, kind="single", started_by=user_id, start_at_utc=T0,
        created_utc=T0, room_ids=(room_id,), codes_list_id=codes_list_id))
    return session_id


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


# -- opening, pragmas, migrations ----------------------------------------------------------


async def test_the_file_is_durable_and_private(db: Database) -> None:
    def pragmas(c: sqlite3.Connection) -> tuple[object, ...]:
        return tuple(c.execute(f"PRAGMA {p}").fetchone()[0] for p in (
            "journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version"))

    assert await db.read(pragmas) == ("wal", 2, 1, 5000, len(MIGRATIONS))  # 2 is FULL
    assert db.path.stat().st_mode & 0o077 == 0
    assert await db.integrity_check() == ["ok"]


async def test_migrations_run_once_and_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Database(path) as db:
        await add_admin(db)
    with sqlite3.connect(path) as conn:
        schema = conn.execute("SELECT sql FROM sqlite_schema ORDER BY name").fetchall()
    for _ in range(2):
        async with Database(path) as db:
            assert [u.username for u in await db.list_users()] == ["admin"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT sql FROM sqlite_schema ORDER BY name").fetchall() == schema
    assert pragma(path, "user_version") == len(MIGRATIONS)


async def test_two_databases_opening_a_new_file_at_once_migrate_it_once(
        tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    dbs = [Database(path) for _ in range(4)]
    await asyncio.gather(*(d.open() for d in dbs))
    for d in dbs:
        await d.close()
    assert pragma(path, "user_version") == len(MIGRATIONS)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Database(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer"):
        await Database(path).open()


async def test_a_closed_database_says_so(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.db")
    with pytest.raises(StoreError, match="not open"):
        await db.count_users()
    await db.open()
    await db.close()
    await db.close()
    with pytest.raises(StoreError, match="not open"):
        await db.count_users()


async def test_run_rolls_back_what_fails(db: Database) -> None:
    def half(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO settings VALUES ('a', '1')")
        raise RuntimeError("midway")

    with pytest.raises(RuntimeError):
        await db.run(half)
    assert await db.get_setting("a") is None
    with pytest.raises(Conflict):  # an integrity error of SQLite becomes Conflict
        await db.run(lambda c: c.execute("INSERT INTO settings VALUES ('a', 'not json')"))


# -- users and login sessions --------------------------------------------------------------


async def test_usernames_are_unique_in_any_letter_case(db: Database) -> None:
    alice = await db.create_user("Alice", "Alice A.", Role.TRAINER, "h", T0)
    for taken in ("alice", "ALICE", "aLiCe"):
        with pytest.raises(Conflict):
            await db.create_user(taken, "Other", Role.TRAINEE, "h", T0)
    assert await db.get_user_by_name("ALICE") == alice
    assert alice.username == "Alice"  # kept as typed
    assert await db.get_credentials("alice") == (alice, "h")
    assert await db.get_user(alice.id) == alice
    assert await db.get_user(alice.id + 1) is None


@pytest.mark.parametrize("username", ["", " bob", "bob smith", "-bob", "x" * 65, "bøb"])
async def test_malformed_usernames_are_refused(db: Database, username: str) -> None:
    with pytest.raises(Invalid):
        await db.create_user(username, "Bob", Role.TRAINEE, "h", T0)


async def test_naive_times_are_refused(db: Database) -> None:
    with pytest.raises(Invalid, match="time zone"):
        await db.create_user("bob", "Bob", Role.TRAINEE, "h", T0.replace(tzinfo=None))


async def test_the_first_user_is_created_only_when_there_are_none(db: Database) -> None:
    first = await db.create_first_user("root", "Root", Role.ADMINISTRATOR, "h", T0)
    assert first is not None
    assert await db.create_first_user("root2", "Root", Role.ADMINISTRATOR, "h", T0) is None
    assert await db.count_users() == 1


async def test_the_last_active_administrator_stays(db: Database) -> None:
    admin = await add_admin(db)
    trainer = await db.create_user("t", "T", Role.TRAINER, "h", T0)
    with pytest.raises(Conflict, match="last active administrator"):
        await db.update_user(admin, active=False)
    with pytest.raises(Conflict):
        await db.update_user(admin, role=Role.TECHNICIAN)
    assert (await db.update_user(trainer.id, active=False)).active is False
    second = await add_admin(db, "admin2")
    demoted = await db.update_user(admin, role=Role.TRAINER, display_name="Former")
    assert (demoted.role, demoted.display_name) == (Role.TRAINER, "Former")
    with pytest.raises(Conflict):
        await db.update_user(second, active=False)
    with pytest.raises(NotFound):
        await db.update_user(999, active=False)


async def test_login_sessions_expire_and_end_with_the_account(db: Database) -> None:
    admin = await add_admin(db)
    user = await db.create_user("t", "T", Role.TRAINER, "h", T0)
    await db.create_login_session("a" * 64, user.id, T0, T0 + timedelta(hours=1))
    assert await db.user_for_token_hash("a" * 64, T0) == user
    assert await db.user_for_token_hash("a" * 64, T0 + timedelta(hours=1)) is None
    assert await db.user_for_token_hash("b" * 64, T0) is None
    await db.set_password_hash(user.id, "new")
    assert await db.user_for_token_hash("a" * 64, T0) is None
    await db.create_login_session("c" * 64, user.id, T0, T0 + timedelta(hours=1))
    await db.update_user(user.id, active=False)
    assert await db.user_for_token_hash("c" * 64, T0) is None
    await db.create_login_session("d" * 64, admin, T0, T0 + timedelta(hours=1))
    assert await db.delete_login_session("d" * 64)
    assert not await db.delete_login_session("d" * 64)


# -- locations -------------------------------------------------------------------------------


async def test_the_pairing_secret_is_kept_but_never_listed(db: Database) -> None:
    admin = await add_admin(db)
    room = await db.add_location("room-1", name="Room 1", host="10.0.0.5", port=8080,
                                 api_path="/api/v1", version="0.1.0", added_by=admin)
    assert not room.paired
    assert await db.get_location_secret("room-1") is None
    paired = await db.set_location_secret("room-1", "s3cret-value")
    assert paired.paired
    assert await db.get_location_secret("room-1") == "s3cret-value"
    for shown in (paired, await db.get_location("room-1"), *await db.list_locations()):
        assert "s3cret-value" not in f"{shown} {shown!r} {vars(shown)}"
        assert not hasattr(shown, "secret")
    unpaired = await db.set_location_secret("room-1", None)
    assert not unpaired.paired
    assert await db.get_location_secret("room-1") is None


async def test_a_location_is_known_by_its_room_id(db: Database) -> None:
    await add_room(db)
    with pytest.raises(Conflict):
        await add_room(db)
    with pytest.raises(Invalid):
        await add_room(db, "bad id/")
    moved = await db.update_location("room-1", host="10.0.0.9", port=9000,
                                     last_seen_utc=T0, flagged_reason="unexpected device")
    assert (moved.host, moved.port, moved.last_seen_utc) == ("10.0.0.9", 9000, T0)
    assert moved.flagged_reason == "unexpected device"
    assert (await db.update_location("room-1", flagged_reason=None)).flagged_reason is None
    with pytest.raises(NotFound):
        await db.update_location("room-2", host="x")
    await add_session(db)
    with pytest.raises(Conflict, match="has sessions"):
        await db.delete_location("room-1")
    await db.delete_session("s1")
    await db.delete_location("room-1")
    assert await db.list_locations() == []


# -- session names ---------------------------------------------------------------------------


async def test_name_numbers_are_consecutive_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Database(path) as db:
        assert [await db.reserve_name_number("Simulation") for _ in range(3)] == [1, 2, 3]
        assert await db.reserve_name_number("Other") == 1
    async with Database(path) as db:
        assert await db.reserve_name_number("Simulation") == 4
        assert await db.reserve_name_number(" Simulation ") == 5  # same counter key
        assert await db.reserve_name_number("simulation") == 1  # case matters
        assert await db.name_counters() == {"Simulation": 5, "Other": 1, "simulation": 1}


async def test_concurrent_reservations_never_share_a_number(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Database(path) as one, Database(path) as two:  # two connections, one file
        numbers = await asyncio.gather(*(
            db.reserve_name_number("Simulation") for _ in range(100) for db in (one, two)))
    assert sorted(numbers) == list(range(1, 201))


# -- sessions ----------------------------------------------------------------------------------


async def test_a_composite_session_with_its_locations(db: Database) -> None:
    admin = await add_admin(db)
    await add_room(db, "room-1")
    await add_room(db, "room-2")
    [session] = await db.create_sessions([NewSession(
        id="c1", kind="composite", started_by=admin, start_at_utc=T0, created_utc=T0,
        room_ids=("room-2", "room-1"), name_default="Simulation", name_number=7)])
    assert [loc.room_id for loc in session.locations] == ["room-1", "room-2"]
    assert all(loc.state == "starting" and loc.first_frames == {} for loc in session.locations)
    frames = {"front": T0 + timedelta(seconds=0.2), "back": T0 + timedelta(seconds=0.5)}
    loc = await db.update_session_location("c1", "room-1", state="recording",
                                           recording_id="r-1", first_frames=frames)
    assert (loc.state, loc.recording_id, loc.first_frames) == ("recording", "r-1", frames)
    stopped = await db.update_session("c1", state="stopped", name="Simulation 7",
                                      stopped_by=admin, stopped_utc=T0 + timedelta(hours=1),
                                      spread_s=0.3, partial_reason="room-2 failed")
    assert stopped.name == "Simulation 7"
    assert stopped.stopped_utc == T0 + timedelta(hours=1)
    assert stopped.locations[0].first_frames == frames
    assert await db.get_session("c1") == stopped
    with pytest.raises(NotFound):
        await db.update_session_location("c1", "room-3", state="x")
    with pytest.raises(NotFound):
        await db.update_session("nope", state="x")


async def test_separate_sessions_start_together_or_not_at_all(db: Database) -> None:
    await add_room(db, "room-1")
    await add_room(db, "room-2")
    group = [NewSession(id=f"g-{r}", kind="separate", started_by=None, start_at_utc=T0,
                        created_utc=T0, room_ids=(r,), group_id="g")
             for r in ("room-1", "room-2", "room-3")]  # room-3 is unknown
    with pytest.raises(Invalid, match="room-3"):
        await db.create_sessions(group)
    assert await db.list_sessions() == []
    created = await db.create_sessions(group[:2])
    assert await db.list_sessions(group_id="g") == sorted(created, key=lambda s: s.id)
    assert [s.id for s in await db.list_sessions(room_id="room-2")] == ["g-room-2"]
    await db.update_session("g-room-1", state="stopped")
    assert [s.id for s in await db.list_sessions(states=["starting"])] == ["g-room-2"]
    assert len(await db.list_sessions(limit=1)) == 1
    with pytest.raises(Conflict):
        await db.create_session(group[0])


@pytest.mark.parametrize(("kind", "rooms", "group"), [
    ("single", ("room-1", "room-2"), None),
    ("composite", ("room-1",), None),
    ("composite", ("room-1", "room-1"), None),
    ("separate", ("room-1",), None),
])
async def test_malformed_sessions_are_refused(db: Database, kind: str, rooms: tuple[str, ...],
                                              group: str | None) -> None:
    new = NewSession(id="s", kind="single", started_by=None, start_at_utc=T0, created_utc=T0,
                     room_ids=rooms, group_id=group)
    with pytest.raises(Invalid):
        await db.create_session(replace(new, kind=kind))  # type: ignore[arg-type]  # str from the table


# -- codes lists and annotations -----------------------------------------------------------


def all_codes() -> list[Code]:
    return [Code(k, f"Code {k}", COLORS[i % 3]) for i, k in enumerate(CODE_KEYS)]


async def test_a_codes_list_holds_36_keys(db: Database) -> None:
    admin = await add_admin(db)
    codes = await db.create_codes_list("Resuscitation", admin, all_codes())
    assert len(codes.codes) == 36
    assert "".join(c.key for c in codes.codes) == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert await db.get_codes_list(codes.id) == codes
    assert await db.list_codes_lists() == [codes]
    with pytest.raises(Conflict):
        await db.create_codes_list("resuscitation", admin)
    with pytest.raises(Conflict):  # a key twice
        await db.create_codes_list("Other", admin, [Code("a", "A", "#000000")] * 2)
    changed = await db.put_code(codes.id, Code("a", "Airway", "#123456"))
    assert changed.codes[10] == Code("a", "Airway", "#123456")
    assert len((await db.delete_code(codes.id, "z")).codes) == 35
    assert (await db.rename_codes_list(codes.id, "CPR")).name == "CPR"
    await db.delete_codes_list(codes.id)
    assert await db.get_codes_list(codes.id) is None


@pytest.mark.parametrize(("key", "label", "color"), [
    ("A", "x", "#000000"), ("!", "x", "#000000"), ("ab", "x", "#000000"), ("", "x", "#000000"),
    ("a", " ", "#000000"), ("a", "x", "red"), ("a", "x", "#FFFFFF"), ("a", "x", "#fff"),
])
def test_malformed_codes_are_refused(key: str, label: str, color: str) -> None:
    with pytest.raises(Invalid):
        Code(key, label, color)


async def test_the_codes_list_is_fixed_by_the_first_score(db: Database) -> None:
    admin = await add_admin(db)
    await add_room(db)
    first = await db.create_codes_list("First", admin, all_codes())
    second = await db.create_codes_list("Second", admin, [Code("x", "X", "#000000")])
    await add_session(db, user_id=admin)
    with pytest.raises(Invalid, match="no codes list"):
        await db.add_score("s1", key="a", session_time_s=1.0, wall_utc=T0, user_id=admin)
    await db.set_session_codes_list("s1", second.id)
    await db.set_session_codes_list("s1", first.id)
    await db.add_remark("s1", text="a remark fixes nothing", session_time_s=1.0, wall_utc=T0,
                        user_id=admin)
    await db.set_session_codes_list("s1", None)
    await db.set_session_codes_list("s1", first.id)
    with pytest.raises(Invalid, match="no key"):
        await db.add_score("s1", key="A", session_time_s=1.5, wall_utc=T0, user_id=admin)
    await db.add_score("s1", key="a", session_time_s=2.0, wall_utc=T0, user_id=admin)
    for other in (second.id, None):
        with pytest.raises(CodesListLocked):
            await db.set_session_codes_list("s1", other)
    assert (await db.get_session("s1")).codes_list_id == first.id  # type: ignore[union-attr]  # it exists
    with pytest.raises(Conflict, match="used by sessions"):
        await db.delete_codes_list(first.id)
    with pytest.raises(NotFound):
        await db.set_session_codes_list("nope", first.id)


async def test_a_score_keeps_the_label_it_was_made_with(db: Database) -> None:
    admin = await add_admin(db)
    await add_room(db)
    codes = await db.create_codes_list("List", admin, [Code("a", "Airway", "#000000")])
    await add_session(db, user_id=admin, codes_list_id=codes.id)
    score = await db.add_score("s1", key="a", session_time_s=3.0, wall_utc=T0, user_id=admin,
                               text="late")
    await db.put_code(codes.id, Code("a", "Breathing", "#000000"))
    assert (await db.list_annotations("s1")) == [score]
    assert (score.kind, score.code_key, score.code_label, score.text) == (
        "score", "a", "Airway", "late")


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
async def test_session_times_are_finite_and_not_negative(db: Database, bad: float) -> None:
    admin = await add_admin(db)
    await add_room(db)
    await add_session(db)
    with pytest.raises(Invalid):
        await db.add_remark("s1", text="x", session_time_s=bad, wall_utc=T0, user_id=admin)


async def test_export_round_trips_through_csv_and_json(db: Database) -> None:
    admin = await add_admin(db)
    trainer = (await db.create_user("trainer", "T", Role.TRAINER, "h", T0)).id
    await add_room(db)
    codes = await db.create_codes_list("List", admin, all_codes())
    await add_session(db, user_id=admin, codes_list_id=codes.id)
    texts = ['comma, "quotes"', "two\nlines", "Ünïcødé ✓", "'quoted"]
    for i, text in enumerate(texts):
        await db.add_remark("s1", text=text, session_time_s=10.0 - i, user_id=trainer,
                            wall_utc=T0 + timedelta(seconds=10 - i, microseconds=123))
    await db.add_score("s1", key="z", session_time_s=0.25, wall_utc=T0, user_id=admin)
    rows = await db.export_annotations("s1")
    assert [r.session_time_s for r in rows] == [0.25, 7.0, 8.0, 9.0, 10.0]
    assert rows[0] == ExportedAnnotation(0.25, T0, "score", "z", "Code z", None, "admin")

    parsed = list(csv.DictReader(io.StringIO(annotations_csv(rows), newline="")))
    assert list(parsed[0]) == ["session_time_s", "wall_utc", "kind", "code", "label",
                               "text", "user"]
    assert [ExportedAnnotation(
        float(p["session_time_s"]), datetime.fromisoformat(p["wall_utc"]),
        p["kind"], p["code"] or None, p["label"] or None,  # type: ignore[arg-type]  # checked by ==
        p["text"] or None, p["user"]) for p in parsed] == rows

    loaded = json.loads(annotations_json(rows))
    assert [ExportedAnnotation(**{**o, "wall_utc": datetime.fromisoformat(o["wall_utc"])})
            for o in loaded] == rows
    assert await db.export_annotations("s1") == rows
    with pytest.raises(NotFound):
        await db.export_annotations("nope")


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    rows = [ExportedAnnotation(1.0, T0, "remark", None, None, text, "u")
            for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "fine")]
    texts = [r["text"] for r in csv.DictReader(io.StringIO(annotations_csv(rows), newline=""))]
    assert texts == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "fine"]
    assert [o["text"] for o in json.loads(annotations_json(rows))] == [r.text for r in rows]


async def test_settings_hold_json(db: Database) -> None:
    assert await db.get_setting("naming", {"default_name": None}) == {"default_name": None}
    value: JsonValue = {"default_name": "Simulation", "edit_before_save": True, "n": [1, 2.5]}
    await db.set_setting("naming", value)
    assert await db.get_setting("naming") == value
    await db.set_setting("naming", None)
    assert await db.get_setting("naming", "absent") is None
    await db.delete_setting("naming")
    assert await db.get_setting("naming", "absent") == "absent"


# -- durability ----------------------------------------------------------------------------------


async def kill_writer(path: Path, session_id: str, user_id: int, tag: str,
                      acks_before_kill: int, jitter_s: float = 0.0) -> list[str]:
    """Run tests.support.db_writer until it has acknowledged `acks_before_kill` changes,
    let it write `jitter_s` longer, SIGKILL it, and return every line it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.db_writer", str(path), session_id,
        str(user_id), tag, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while len([x for x in lines if x.startswith("ACK")]) < acks_before_kill:
                line = await proc.stdout.readline()
                if not line:
                    err = (await proc.stderr.read()).decode(errors="replace")
                    pytest.fail(f"the writer ended early: {err}")
                lines.append(line.decode().rstrip("\n"))
            await asyncio.sleep(jitter_s)  # to land the kill anywhere in the next write
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        rest, _ = await proc.communicate()  # drain what it printed before it died
        lines += rest.decode().splitlines()
    assert proc.returncode == -signal.SIGKILL
    return lines


async def test_every_acknowledged_change_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Database(path) as db:
        admin = await add_admin(db)
        await add_room(db)
        await add_session(db, user_id=admin)
    rng = random.Random()
    numbers: list[int] = []
    users: list[str] = []
    remarks: dict[int, str] = {}
    for round_ in range(3):
        lines = await kill_writer(path, "s1", admin, f"r{round_}", rng.randint(1, 120),
                                  rng.uniform(0, 0.01))
        assert lines[0] == "READY"
        for line in lines[1:]:
            _, what, value = line.split(" ", 2)
            if what == "number":
                numbers.append(int(value))
            elif what == "user":
                users.append(value)
            else:
                note_id, text = value.split(" ", 1)
                remarks[int(note_id)] = text

        async with Database(path) as db:
            assert await db.integrity_check() == ["ok"]
            assert numbers == list(range(1, len(numbers) + 1))
            counter = (await db.name_counters())[DEFAULT_NAME]
            assert counter >= numbers[-1]  # a number reserved but not yet acknowledged is
            numbers += range(numbers[-1] + 1, counter + 1)  # still taken, never reused
            stored_users = {u.username for u in await db.list_users()}
            assert set(users) <= stored_users
            stored_remarks = {a.id: a.text for a in await db.list_annotations("s1")}
            assert remarks.items() <= stored_remarks.items()
