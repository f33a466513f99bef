"""Pairing a room box with a coordinator, and checking the secret on every call.

mDNS is only an address hint: anyone on the LAN can announce anything. A coordinator
becomes this box's coordinator by pairing, which needs a local confirmation: the one-time
enrollment code from the box's configuration, or a press of the room's button within a
time window. Pairing hands the coordinator a random secret that every later call
carries; the box keeps only its SHA-256, in a file readable by the service alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import EdgeError
from edge.recorder.manifest import write_atomic

log = logging.getLogger(__name__)
STATE_FILE = "pairing.json"


class PairingRefused(EdgeError):
    """No local confirmation: wrong or used code, or no button press in time."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _State:
    coordinator_id: str | None = None
    secret_sha256: str | None = None
    paired_utc: str | None = None
    used_codes: tuple[str, ...] = ()  # hashes of enrollment codes already spent


class Pairing:
    def __init__(self, state_dir: Path, code: str | None = None) -> None:
        self._path = state_dir / STATE_FILE
        self._code = code
        self._state = self._load()

    def _load(self) -> _State:
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return _State()
        return _State(raw.get("coordinator_id"), raw.get("secret_sha256"),
                      raw.get("paired_utc"), tuple(raw.get("used_codes", ())))

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._path, json.dumps(self._state.__dict__, indent=2))
        self._path.chmod(0o600)

    @property
    def paired(self) -> bool:
        return self._state.secret_sha256 is not None

    @property
    def coordinator_id(self) -> str | None:
        return self._state.coordinator_id

    def check(self, secret: str | None) -> bool:
        expected = self._state.secret_sha256
        if not secret or expected is None:
            return False
        return hmac.compare_digest(_digest(secret), expected)

    def _code_ok(self, code: str) -> bool:
        if self._code is None or not hmac.compare_digest(code.encode(), self._code.encode()):
            return False
        return _digest(code) not in self._state.used_codes

    async def pair(self, coordinator_id: str, code: str | None,
                   wait_for_button: Callable[[], Awaitable[bool]]) -> str:
        """Pair after a local confirmation; returns the new secret."""
        if code is not None:
            if not self._code_ok(code):
                raise PairingRefused("the enrollment code is wrong or was used already")
            self._state.used_codes = (*self._state.used_codes, _digest(code))
        elif not await wait_for_button():
            raise PairingRefused("the room's button was not pressed in time")
        secret = secrets.token_urlsafe(32)
        self._state.coordinator_id = coordinator_id
        self._state.secret_sha256 = _digest(secret)
        self._state.paired_utc = datetime.now(UTC).isoformat()
        self._save()
        log.info("paired with coordinator %s", coordinator_id)
        return secret
