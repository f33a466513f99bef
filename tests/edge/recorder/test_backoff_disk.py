import pytest

from edge.recorder import disk
from edge.recorder.backoff import Backoff


def test_backoff_first_retry_within_a_second_capped_at_ten() -> None:
    b = Backoff()
    delays = [b.next_delay() for _ in range(10)]
    assert delays[0] <= 1.0
    assert max(delays) == 10.0
    assert delays == sorted(delays)
    b.reset()
    assert b.next_delay() == delays[0]


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first=0)


def test_refuse_start_names_what_is_missing() -> None:
    why = disk.refuse_start(free=100_000_000, reserve=50_000_000, bytes_per_s=500_000,
                            expected_s=3600)
    assert why is not None and "not enough free space" in why and "50 MB usable" in why
    assert disk.refuse_start(free=10**12, reserve=10**9, bytes_per_s=500_000,
                             expected_s=3600) is None


def test_must_stop_before_the_reserve() -> None:
    assert not disk.must_stop(free=100 << 20, reserve=10 << 20, bytes_per_s=1 << 20, margin_s=10)
    assert disk.must_stop(free=15 << 20, reserve=10 << 20, bytes_per_s=1 << 20, margin_s=10)
    assert disk.must_stop(free=10 << 20, reserve=10 << 20, bytes_per_s=0, margin_s=10)


def test_runway() -> None:
    assert disk.runway_s(free=110, reserve=10, bytes_per_s=10) == 10
    assert disk.runway_s(free=110, reserve=10, bytes_per_s=0) is None
