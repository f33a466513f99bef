"""How sessions are named: pure rules, no I/O, no clock.

The settings (`NamingSettings`) hold an optional default name and whether that name may be
edited when a session is saved.

- No default name: a session is named when it stops (the "Save session" step). The
  stopper must give a name: not blank, at most `MAX_NAME_CHARS` characters, no control
  characters.
- A default name: the session is named "<default name> <n>", n a consecutive number per
  default name that is never reused, even when sessions are deleted or renamed. The
  number is reserved when the session starts (`start_naming`), so sessions running at the
  same time never share one. The counters (`NameCounters`) are values passed in and out;
  whoever calls this persists them in the same transaction as the session they numbered.
- "Edit the default name before saving": the proposal ("Simulation 12") may be replaced by
  a name given at stop. Without it a different name given at stop is refused; the
  proposal itself, or no name, is accepted.

Naming is per group: the sessions of a separate recording (several locations started
together, one session each) are named once and share the name and the number; a composite
session is one session with one name; a single session is a group of one.

The rules are fixed when a group starts (`GroupNaming` keeps them), so changing the
settings during a recording changes neither the number already reserved nor what is
asked at stop.

A session whose recording stopped because a disk was full says so: its name ends with
`DISK_FULL_SUFFIX`, " (disk full)". It is per session: in a separate group only the
session of the room that ran out of space carries it.

Names may repeat (sessions are told apart by their date and time) and are kept as typed:
no case folding, no transliteration, Unicode included; only surrounding whitespace is
trimmed. `safe_filename` derives a file or folder name from a display name; being lossy,
it is not unique either, so a caller adds the date, time or id where it must be.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_NAME_CHARS = 200
"""The longest name a user may type, in characters."""

MAX_DEFAULT_NAME_CHARS = 180
"""The longest default name, leaving room for the number in MAX_NAME_CHARS."""

DISK_FULL_SUFFIX = " (disk full)"
"""Appended to the name of a session whose recording stopped on a full disk."""

FALLBACK_FILENAME = "session"
"""The file name of a display name that leaves nothing usable."""


class NamingError(ValueError):
    """A name, a default name or a naming request that the rules refuse; the message is
    meant for the person who typed it."""


def _check_typed(name: str, what: str, max_chars: int) -> str:
    """`name` without surrounding whitespace, or NamingError saying what is wrong."""
    trimmed = name.strip()
    if not trimmed:
        raise NamingError(f"{what} cannot be empty")
    if len(trimmed) > max_chars:
        raise NamingError(f"{what} is {len(trimmed)} characters long; at most {max_chars} "
                          f"are allowed")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in trimmed):
        raise NamingError(f"{what} cannot contain control characters or line breaks")
    return trimmed


@dataclass(frozen=True)
class NamingSettings:
    """`default_name` None means "no default name". A blank or over-long default name is
    a NamingError, so a settings form can show it."""

    default_name: str | None = None
    edit_before_save: bool = False

    def __post_init__(self) -> None:
        if self.default_name is not None:
            trimmed = _check_typed(self.default_name, "the default session name",
                                   MAX_DEFAULT_NAME_CHARS)
            object.__setattr__(self, "default_name", trimmed)


def counter_key(default_name: str) -> str:
    """The key of a default name's counter: trimmed and in Unicode NFC, so the same name
    typed on two keyboards shares one counter. Case matters: "Simulation" and
    "simulation" are two default names with two counters."""
    return unicodedata.normalize("NFC", default_name.strip())


@dataclass(frozen=True)
class NameCounters:
    """The last number handed out per default name (by `counter_key`). Immutable:
    `reserve` returns new counters. A name not in `last` has handed out nothing yet."""

    last: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, n in self.last.items():
            if n < 0:
                raise ValueError(f"the counter of {key!r} is negative: {n}")
        object.__setattr__(self, "last", MappingProxyType(dict(self.last)))

    def last_number(self, default_name: str) -> int:
        """The last number reserved for `default_name`; 0 if none was."""
        return self.last.get(counter_key(default_name), 0)

    def reserve(self, default_name: str) -> tuple[int, NameCounters]:
        """The next number for `default_name` (1 for the first) and the counters that
        remember it was taken."""
        key = counter_key(default_name)
        n = self.last.get(key, 0) + 1
        return n, NameCounters({**self.last, key: n})


@dataclass(frozen=True)
class GroupNaming:
    """How a group of sessions will be named, decided when it starts.

    `default_name` and `number` are both None (the name is asked at stop) or both set;
    `proposal` is then "<default_name> <number>". `editable`: a name given at stop may
    replace the proposal."""

    default_name: str | None = None
    number: int | None = None
    editable: bool = False

    def __post_init__(self) -> None:
        if (self.default_name is None) != (self.number is None):
            raise ValueError("default_name and number are set together or not at all")
        if self.number is not None and self.number < 1:
            raise ValueError(f"session numbers start at 1, not {self.number}")

    @property
    def proposal(self) -> str | None:
        """The name a session gets unless one is given at stop; None: a name is asked."""
        if self.default_name is None:
            return None
        return f"{self.default_name} {self.number}"

    @property
    def name_required(self) -> bool:
        """Whoever stops the group must give a name (no default name)."""
        return self.default_name is None


def start_naming(settings: NamingSettings,
                 counters: NameCounters) -> tuple[GroupNaming, NameCounters]:
    """The naming of a group that starts now. With a default name, its next number is
    reserved: persist the returned counters with the group, so the number is never
    handed out again."""
    if settings.default_name is None:
        return GroupNaming(editable=True), counters
    number, counters = counters.reserve(settings.default_name)
    return (GroupNaming(settings.default_name, number, settings.edit_before_save),
            counters)


def final_name(naming: GroupNaming, given: str | None, disk_full: bool = False) -> str:
    """The name of a session of the group when it is saved.

    `given` is what the stopper typed, None if nothing. Without a default name it is
    required. With one: None or blank gives the proposal; another name replaces it only
    when the group's naming is editable, and is refused otherwise (giving the proposal
    itself back is fine). `disk_full`: this session's recording stopped on a full disk;
    the name then ends with DISK_FULL_SUFFIX (once, even if it was typed).

    Call it once per session of a separate group with the same `given`: all get the same
    name, and only the ones that ran out of space get the suffix. NamingError says what
    is wrong with `given`."""
    proposal = naming.proposal
    if proposal is None:
        if given is None:
            raise NamingError("a name is needed to save this session")
        name = _check_typed(given, "the session name", MAX_NAME_CHARS)
    elif given is None or not given.strip() or given.strip() == proposal:
        name = proposal
    elif naming.editable:
        name = _check_typed(given, "the session name", MAX_NAME_CHARS)
    else:
        raise NamingError(f"this session is named {proposal!r} automatically; editing "
                          f"the default name before saving is not enabled")
    return mark_disk_full(name) if disk_full else name


def check_name(name: str) -> str:
    """A name typed for a session (when it is renamed later): trimmed, or NamingError
    saying what is wrong (blank, too long, control characters)."""
    return _check_typed(name, "the session name", MAX_NAME_CHARS)


def mark_disk_full(name: str) -> str:
    """`name` with DISK_FULL_SUFFIX, added once."""
    return name if name.endswith(DISK_FULL_SUFFIX) else name + DISK_FULL_SUFFIX


# --- file names -----------------------------------------------------------------------

# Reserved in file names on Windows and SMB shares, besides control characters.
_RESERVED_CHARS = frozenset('<>:"/\\|?*')
# Windows device names, reserved with or without an extension and in any case. The
# superscript digits are reserved too.
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{d}" for dev in ("COM", "LPT") for d in "123456789\u00b9\u00b2\u00b3"})
_WHITESPACE_RUN = re.compile(r"\s+")


def _replace_char(ch: str) -> str:
    if ch in _RESERVED_CHARS or unicodedata.category(ch).startswith("C"):
        return "_"
    return ch


def _is_device_name(name: str) -> bool:
    stem = name.split(".", 1)[0].rstrip(" ")
    return stem.upper() in _DEVICE_NAMES


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` of at most `max_bytes` UTF-8 bytes; never cuts a
    character in two."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def _trim(text: str, max_bytes: int) -> str:
    return _cut_utf8(text, max_bytes).strip(". ")


def safe_filename(display_name: str, max_bytes: int = 100) -> str:
    """A file or folder name derived from a display name, safe on Linux, macOS, Windows
    and SMB shares.

    In order: Unicode NFC; every run of whitespace (tabs and line breaks included)
    becomes one space; control, format, private-use and unassigned characters and
    <>:"/\\|?* become "_"; leading and trailing dots and spaces go; at most `max_bytes`
    bytes of UTF-8, cut between characters; a Windows device name (CON, PRN, AUX, NUL,
    COM1-9, LPT1-9, CONIN$, CONOUT$, in any case, with or without an extension) gets a
    "_" in front; nothing left gives FALLBACK_FILENAME. Letters, digits, other
    punctuation and single spaces are kept, so "Simulation 12" stays "Simulation 12".
    Applying it twice changes nothing more than applying it once.
    """
    if max_bytes < len(FALLBACK_FILENAME):
        raise ValueError(f"max_bytes must be at least {len(FALLBACK_FILENAME)}")
    text = unicodedata.normalize("NFC", display_name)
    text = _WHITESPACE_RUN.sub(" ", text)
    text = "".join(_replace_char(ch) for ch in text)
    text = _trim(text, max_bytes)
    if _is_device_name(text):
        text = _trim("_" + text, max_bytes)
    return text or FALLBACK_FILENAME
