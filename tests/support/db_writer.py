"""A process that writes to a coordinator database until it is killed.

``python -m tests.support.db_writer DB SESSION_ID USER_ID TAG`` opens the database,
prints ``READY``, then loops: reserve a name number, create a user, add a remark. After
each call returns (the change is acknowledged) it prints one line and flushes it:

    ACK number <n>
    ACK user <username>
    ACK remark <id> <text>

A test kills it with SIGKILL and checks that every acknowledged change survived.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from coordinator.db import Database, Role

DEFAULT_NAME = "Durable"


async def write_forever(path: Path, session_id: str, user_id: int, tag: str) -> None:
    async with Database(path) as db:
        print("READY", flush=True)
        i = 0
        while True:
            n = await db.reserve_name_number(DEFAULT_NAME)
            print(f"ACK number {n}", flush=True)
            user = await db.create_user(f"{tag}u{i}", f"User {i}", Role.TRAINEE, "x",
                                        datetime.now(UTC))
            print(f"ACK user {user.username}", flush=True)
            text = f"{tag} remark {i}"
            note = await db.add_remark(session_id, text=text, session_time_s=float(i),
                                       wall_utc=datetime.now(UTC), user_id=user_id)
            print(f"ACK remark {note.id} {text}", flush=True)
            i += 1


def main() -> None:
    path, session_id, user_id, tag = sys.argv[1:5]
    asyncio.run(write_forever(Path(path), session_id, int(user_id), tag))


if __name__ == "__main__":
    main()
