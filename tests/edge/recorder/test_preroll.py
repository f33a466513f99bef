from hypothesis import given
from hypothesis import strategies as st

from edge.recorder.preroll import Item, PrerollBuffer

S = 1_000_000_000


def fill(buf: PrerollBuffer[int], seconds: float, fps: int = 10, keyint: int = 10) -> None:
    for i in range(int(seconds * fps)):
        buf.append(Item(i, key=i % keyint == 0, media_ns=i * S // fps, size=100))


def wall(item: Item[int]) -> int:
    return 1_000 * S + item.media_ns  # wall clock = media time + a fixed offset


def test_keeps_two_keyframe_intervals_at_least() -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=0.1)
    fill(buf, 20, keyint=40)  # a keyframe every 4 s
    items = list(buf.start_at(0, wall) or [])
    assert items[0].key
    # from the keyframe before the previous one: two whole intervals plus the current part
    assert buf.span_ns() >= 2 * 4 * S


def test_keeps_at_least_the_pre_roll_seconds() -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=5)
    fill(buf, 30, keyint=5)  # a keyframe every 0.5 s
    assert buf.span_ns() >= 5 * S
    assert buf.span_ns() < 6 * S


def test_start_at_picks_the_keyframe_at_or_before_t() -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=10)
    fill(buf, 10)  # keyframes at 0 s, 1 s, ... 9 s
    t = 1_000 * S + int(6.5 * S)
    items = buf.start_at(t, wall)
    assert items is not None
    assert items[0].key and items[0].media_ns == 6 * S
    exact = buf.start_at(1_000 * S + 7 * S, wall)
    assert exact is not None and exact[0].media_ns == 7 * S


def test_start_before_the_buffer_begins_at_its_first_keyframe() -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=2)
    fill(buf, 10)
    items = buf.start_at(0, wall)
    assert items is not None and items[0].key
    assert items[0].media_ns == min(i.media_ns for i in items)


def test_no_keyframe_no_start() -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=2)
    for i in range(5):
        buf.append(Item(i, key=False, media_ns=i * S, size=1))
    assert buf.start_at(10 * S, wall) is None


def test_memory_is_bounded_without_keyframes() -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=2, max_seconds=10)
    for i in range(1000):
        buf.append(Item(i, key=i == 0, media_ns=i * S // 10, size=10))
    assert buf.span_ns() <= 10 * S + S
    assert buf.bytes == 10 * len(buf)


@given(st.lists(st.booleans(), min_size=1, max_size=400), st.floats(min_value=0, max_value=5))
def test_buffer_always_starts_on_a_keyframe(keys: list[bool], seconds: float) -> None:
    buf: PrerollBuffer[int] = PrerollBuffer(seconds=seconds)
    for i, k in enumerate(keys):
        buf.append(Item(i, key=k, media_ns=i * S // 30, size=1))
        got = buf.start_at(2**62, wall)
        if got is not None:
            assert got[0].key
            assert got[-1].payload == i
