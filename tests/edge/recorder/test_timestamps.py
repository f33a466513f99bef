import itertools
from collections.abc import Sequence
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from edge.recorder.timestamps import TimestampFixer

TB = Fraction(1, 90000)
FRAME = 3000  # 1/30 s at 90 kHz
NS_PER_FRAME = 33_333_333


def feed(fixer: TimestampFixer[int], dts_list: Sequence[int | None]) -> list[int]:
    out = []
    for i, d in enumerate(dts_list):
        out.append(fixer.fix(d, d, i * NS_PER_FRAME, FRAME).dts)
    return out


def test_normal_stream_passes_through() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB)
    dts = [1000 + i * FRAME for i in range(50)]
    assert feed(f, list(dts)) == dts
    assert f.discontinuities == 0


def test_first_keyframe_without_timestamps_is_kept() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB, nominal_duration=FRAME)
    first = f.fix(None, None, 0, None)
    second = f.fix(FRAME, FRAME, NS_PER_FRAME, FRAME)
    assert first.dts == 0
    assert second.dts > first.dts


def test_repeated_dts_becomes_increasing() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB)
    out = feed(f, [0, FRAME, FRAME, FRAME, 4 * FRAME])
    assert out == sorted(set(out))
    assert out[-1] == 4 * FRAME


def test_backward_jump_is_rebased_one_frame_on() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB)
    out = feed(f, [10 * FRAME + i * FRAME for i in range(10)] + [i * FRAME for i in range(10)])
    assert all(b > a for a, b in itertools.pairwise(out))
    assert out[10] - out[9] == FRAME
    assert f.discontinuities == 1


def test_forward_jump_not_explained_by_arrival_is_rebased() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB)
    hour = 3600 * 90000
    out = feed(f, [i * FRAME for i in range(10)] + [hour + i * FRAME for i in range(10)])
    assert out[10] - out[9] == FRAME
    assert f.discontinuities == 1


def test_network_stall_keeps_media_time() -> None:
    # Packets delayed 5 s in the network, then a burst: the timestamps are right.
    f: TimestampFixer[int] = TimestampFixer(TB)
    out = []
    for i in range(20):
        arrival = i * NS_PER_FRAME + (5_000_000_000 if i >= 10 else 0)
        out.append(f.fix(i * FRAME, i * FRAME, arrival, FRAME).dts)
    assert out == [i * FRAME for i in range(20)]
    assert f.discontinuities == 0


def test_real_pause_of_the_camera_keeps_its_gap() -> None:
    # The camera sent nothing for 4 s and its timestamps say so: keep the gap.
    f: TimestampFixer[int] = TimestampFixer(TB)
    out = []
    for i in range(20):
        t = i + (120 if i >= 10 else 0)
        out.append(f.fix(t * FRAME, t * FRAME, t * NS_PER_FRAME, FRAME).dts)
    assert out[10] - out[9] == 121 * FRAME


def test_b_frames_keep_pts_at_or_after_dts() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB)
    # decode order I P B B with pts reordered
    pts = [2 * FRAME, 5 * FRAME, 3 * FRAME, 4 * FRAME]
    dts = [0, FRAME, 2 * FRAME, 3 * FRAME]
    fixed = [f.fix(p, d, i * NS_PER_FRAME, FRAME) for i, (p, d) in enumerate(zip(pts, dts,
                                                                                   strict=True))]
    assert [x.pts for x in fixed] == pts
    assert all(x.pts >= x.dts for x in fixed)


@given(st.lists(st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40)),
                min_size=1, max_size=200),
       st.lists(st.integers(min_value=0, max_value=10**10), min_size=200, max_size=200))
def test_output_is_always_strictly_monotonic(dts: list[int | None], gaps: list[int]) -> None:
    f: TimestampFixer[int] = TimestampFixer(TB)
    arrival = 0
    last = None
    for i, d in enumerate(dts):
        arrival += gaps[i]
        fixed = f.fix(d, d, arrival, None)
        assert fixed.pts >= fixed.dts
        if last is not None:
            assert fixed.dts > last
        last = fixed.dts


def test_b_frame_stream_start_without_dts_is_timed_backwards() -> None:
    # What FFmpeg's RTSP demuxer gives for the first packets of a B-frame stream.
    arrivals = [(None, None), (8766, None), (2749, None), (5757, 2749), (17757, 5757),
                (11756, 8766), (14752, 11756)]
    f: TimestampFixer[int] = TimestampFixer(TB, nominal_duration=FRAME)
    out: list[tuple[int, int, int]] = []
    for i, (p, d) in enumerate(arrivals):
        out += [(tok, x.pts, x.dts) for tok, x in f.push(i, p, d, i * NS_PER_FRAME, FRAME)]
    assert [tok for tok, _, _ in out] == list(range(len(arrivals)))  # order kept, none lost
    dts = [d for _, _, d in out]
    pts = [p for _, p, _ in out]
    assert all(b > a for a, b in itertools.pairwise(dts))
    assert all(p >= d for _, p, d in out)
    assert pts[1:] == [8766, 2749, 5757, 17757, 11756, 14752]  # real pts untouched
    assert pts[0] < 2749  # the keyframe shows first
    assert len(set(pts)) == len(pts)


def test_stream_without_any_dts_is_timed_by_pts() -> None:
    f: TimestampFixer[int] = TimestampFixer(TB, nominal_duration=FRAME)
    out = []
    for i in range(40):
        out += f.push(i, i * FRAME, None, i * NS_PER_FRAME, FRAME)
    assert [tok for tok, _ in out] == list(range(40))
    assert [x.dts for _, x in out] == [i * FRAME for i in range(40)]
