"""Session naming (coordinator.naming): examples for each rule, properties for the
counters and for safe_filename."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.naming import (
    DISK_FULL_SUFFIX,
    FALLBACK_FILENAME,
    MAX_NAME_CHARS,
    GroupNaming,
    NameCounters,
    NamingError,
    NamingSettings,
    final_name,
    mark_disk_full,
    safe_filename,
    start_naming,
)

PROPERTY = settings(max_examples=300, deadline=None)

NO_DEFAULT = NamingSettings()
SIMULATION = NamingSettings(default_name="Simulation")
SIMULATION_EDITABLE = NamingSettings(default_name="Simulation", edit_before_save=True)


# --- no default name ------------------------------------------------------------------


def test_without_a_default_name_the_stopper_names_the_session() -> None:
    naming, counters = start_naming(NO_DEFAULT, NameCounters())
    assert naming.name_required and naming.proposal is None
    assert counters == NameCounters()
    assert final_name(naming, "  Trauma team, day 2 ") == "Trauma team, day 2"


@pytest.mark.parametrize("given", [None, "", "   ", "\t\n"])
def test_without_a_default_name_a_name_is_required(given: str | None) -> None:
    naming, _ = start_naming(NO_DEFAULT, NameCounters())
    with pytest.raises(NamingError, match="name"):
        final_name(naming, given)


def test_a_name_has_at_most_200_characters() -> None:
    naming, _ = start_naming(NO_DEFAULT, NameCounters())
    assert final_name(naming, "x" * MAX_NAME_CHARS) == "x" * MAX_NAME_CHARS
    with pytest.raises(NamingError, match="201 characters"):
        final_name(naming, "x" * (MAX_NAME_CHARS + 1))


@pytest.mark.parametrize("given", ["line\nbreak", "nul\x00", "bell\x07", "line\u2028separator"])
def test_a_name_has_no_control_characters(given: str) -> None:
    naming, _ = start_naming(NO_DEFAULT, NameCounters())
    with pytest.raises(NamingError, match="control"):
        final_name(naming, given)


def test_names_are_kept_as_typed() -> None:
    naming, _ = start_naming(NO_DEFAULT, NameCounters())
    for name in ["Ärztliche Übung", "救急訓練", "CPR / airway: <team B>", "ﬁrst", "e\u0301"]:
        assert final_name(naming, name) == name


# --- a default name -------------------------------------------------------------------


def test_a_default_name_is_followed_by_a_consecutive_number() -> None:
    counters = NameCounters()
    names = []
    for _ in range(3):
        naming, counters = start_naming(SIMULATION, counters)
        names.append(final_name(naming, None))
    assert names == ["Simulation 1", "Simulation 2", "Simulation 3"]
    assert counters.last_number("Simulation") == 3


def test_numbers_are_per_default_name_and_never_reused() -> None:
    counters = NameCounters({"Simulation": 11})
    sim, counters = start_naming(SIMULATION, counters)
    other, counters = start_naming(NamingSettings(default_name="Debrief"), counters)
    sim2, counters = start_naming(SIMULATION, counters)
    assert (sim.proposal, other.proposal, sim2.proposal) == (
        "Simulation 12", "Debrief 1", "Simulation 13")
    # a session that is deleted or renamed gives nothing back: the counters only grow


def test_concurrent_groups_get_different_numbers() -> None:
    """Numbers are reserved at start, so groups running at once never share one, in
    whatever order they stop."""
    first, counters = start_naming(SIMULATION, NameCounters())
    second, counters = start_naming(SIMULATION, counters)
    assert final_name(second, None) == "Simulation 2"
    assert final_name(first, None) == "Simulation 1"


def test_the_same_default_name_shares_one_counter_however_typed() -> None:
    composed = NamingSettings(default_name="Übung")
    decomposed = NamingSettings(default_name=" U\u0308bung ")
    _, counters = start_naming(composed, NameCounters())
    naming, counters = start_naming(decomposed, counters)
    assert naming.number == 2
    assert naming.proposal == "U\u0308bung 2"  # shown as typed, trimmed


def test_without_edit_before_save_a_different_name_is_refused() -> None:
    naming, _ = start_naming(SIMULATION, NameCounters())
    with pytest.raises(NamingError, match="Simulation 1"):
        final_name(naming, "My own name")
    assert final_name(naming, "Simulation 1") == "Simulation 1"  # the proposal echoed
    assert final_name(naming, "") == "Simulation 1"


def test_with_edit_before_save_the_proposal_can_be_changed() -> None:
    naming, _ = start_naming(SIMULATION_EDITABLE, NameCounters({"Simulation": 11}))
    assert naming.proposal == "Simulation 12"
    assert final_name(naming, None) == "Simulation 12"
    assert final_name(naming, "  ") == "Simulation 12"
    assert final_name(naming, "Simulation 12 - airway") == "Simulation 12 - airway"
    with pytest.raises(NamingError):
        final_name(naming, "x" * (MAX_NAME_CHARS + 1))


def test_the_rules_are_fixed_when_the_group_starts() -> None:
    """Changing the settings during a recording changes nothing for it."""
    naming, _ = start_naming(SIMULATION, NameCounters())
    assert naming == GroupNaming("Simulation", 1, editable=False)
    with pytest.raises(NamingError):
        final_name(naming, "changed")


@pytest.mark.parametrize("default", ["", "   ", "x" * 181, "two\nlines"])
def test_a_bad_default_name_is_refused(default: str) -> None:
    with pytest.raises(NamingError):
        NamingSettings(default_name=default)


def test_separate_sessions_share_the_name_and_the_number() -> None:
    """A separate group is named once: every session gets the same name; the disk-full
    mark is per session."""
    naming, counters = start_naming(SIMULATION, NameCounters())
    rooms = {"room-1": False, "room-2": True, "room-3": False}
    names = {room: final_name(naming, None, disk_full=full) for room, full in rooms.items()}
    assert names == {"room-1": "Simulation 1", "room-2": "Simulation 1 (disk full)",
                     "room-3": "Simulation 1"}
    assert counters.last_number("Simulation") == 1


def test_a_disk_full_stop_shows_in_the_name() -> None:
    naming, _ = start_naming(NO_DEFAULT, NameCounters())
    assert final_name(naming, "Night shift", disk_full=True) == "Night shift (disk full)"
    assert final_name(naming, "Night shift (disk full)", disk_full=True) == (
        "Night shift (disk full)")
    assert mark_disk_full(mark_disk_full("a")) == "a" + DISK_FULL_SUFFIX


def test_counters_are_immutable_values() -> None:
    before = NameCounters({"Simulation": 1})
    n, after = before.reserve("Simulation")
    assert (n, before.last_number("Simulation"), after.last_number("Simulation")) == (2, 1, 2)
    with pytest.raises(TypeError):
        after.last["Simulation"] = 0  # type: ignore[index]  # read-only on purpose
    with pytest.raises(ValueError, match="negative"):
        NameCounters({"x": -1})


@PROPERTY
@given(st.lists(st.sampled_from(["Simulation", "Debrief", "Übung", "U\u0308bung"]),
                max_size=40))
def test_numbers_per_default_name_count_up_from_one(defaults: list[str]) -> None:
    counters = NameCounters()
    seen: dict[str, list[int]] = {}
    for default in defaults:
        naming, counters = start_naming(NamingSettings(default_name=default), counters)
        assert naming.number is not None
        seen.setdefault(unicodedata.normalize("NFC", default), []).append(naming.number)
    for numbers in seen.values():
        assert numbers == list(range(1, len(numbers) + 1))


# --- safe_filename --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("Simulation 12", "Simulation 12"),
    ("a/b\\c", "a_b_c"),
    ('<>:"|?*', "_______"),
    ("tab\tand\n\nnewlines   runs", "tab and newlines runs"),
    ("nul\x00", "nul_"),
    ("  ..hidden.. ", "hidden"),
    ("..", FALLBACK_FILENAME),
    (".", FALLBACK_FILENAME),
    ("", FALLBACK_FILENAME),
    (" \u3000 ", FALLBACK_FILENAME),
    ("CON", "_CON"),
    ("con.txt", "_con.txt"),
    ("Lpt9", "_Lpt9"),
    ("COM\u00b9", "_COM\u00b9"),
    ("aux .tar.gz", "_aux .tar.gz"),
    ("CONSOLE", "CONSOLE"),
    ("救急訓練 第2回", "救急訓練 第2回"),
    ("Cafe\u0301", "Café"),
    ("right\u202eto left", "right_to left"),
])
def test_safe_filename_examples(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_cuts_between_characters() -> None:
    assert safe_filename("é" * 60, max_bytes=11) == "é" * 5
    assert safe_filename("a" * 200) == "a" * 100
    assert safe_filename("abc   def", max_bytes=8) == "abc def"
    assert safe_filename("abcdefg.xyz", max_bytes=8) == "abcdefg"
    assert safe_filename("CON.abcdef", max_bytes=8) == "_CON.abc"


def test_safe_filename_needs_room_for_the_fallback() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        safe_filename("x", max_bytes=3)


@PROPERTY
@given(st.text(), st.integers(min_value=7, max_value=255))
def test_safe_filename_is_always_a_safe_single_name(name: str, max_bytes: int) -> None:
    safe = safe_filename(name, max_bytes)
    assert safe not in ("", ".", "..")
    assert not set(safe) & set('/\\\x00<>:"|?*')
    assert len(safe.encode("utf-8")) <= max_bytes
    assert safe == safe.strip(". ")
    assert unicodedata.is_normalized("NFC", safe)
    assert not any(unicodedata.category(ch).startswith("C") for ch in safe)
    assert safe_filename(safe, max_bytes) == safe


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                min_size=1, max_size=12)


@PROPERTY
@given(st.lists(_WORD, min_size=1, max_size=6).map(" ".join))
def test_plain_ascii_words_survive(name: str) -> None:
    upper = name.upper()
    if upper in {"CON", "PRN", "AUX", "NUL"} or (
            len(upper) == 4 and upper[:3] in ("COM", "LPT") and upper[3] in "123456789"):
        assert safe_filename(name) == "_" + name
    else:
        assert safe_filename(name) == name
