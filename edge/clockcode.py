"""A machine-readable wall clock painted into video pictures.

Test cameras paint the capture time (milliseconds since the Unix epoch) into the top
left corner of every picture as two rows of 32 black or white blocks: 48 bits of time
and a 16-bit check. Decoding a frame gives the time back, or None when the blocks do
not read (compression damage, no code painted), so alignment between cameras can be
measured from the pictures alone.

Pure Python and standard library only: the GStreamer test camera runs it under Debian's
own Python, outside the project's virtual environment.
"""

from __future__ import annotations

BITS_PER_ROW = 32
ROWS = 2
TIME_BITS = 48
CHECK_BITS = 16
BLACK = 16
WHITE = 235
_THRESHOLD = (BLACK + WHITE) // 2


def block_size(width: int) -> int:
    """Side of one block in pixels for a picture of this width."""
    return 16 if width >= 1280 else 8


def code_height(width: int) -> int:
    """Rows of pixels the code covers at the top of the picture."""
    return ROWS * block_size(width)


def check_of(ms: int) -> int:
    """The 16-bit check painted after the time."""
    x = ms & ((1 << TIME_BITS) - 1)
    return (x ^ (x >> 16) ^ (x >> 32) ^ 0xA5C3) & 0xFFFF


def _bits(ms: int) -> list[int]:
    word = ((ms & ((1 << TIME_BITS) - 1)) << CHECK_BITS) | check_of(ms)
    total = TIME_BITS + CHECK_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def paint(y_plane: bytearray, width: int, height: int, ms: int, stride: int | None = None) -> None:
    """Paint `ms` into the luma plane `y_plane` (modified in place)."""
    stride = width if stride is None else stride
    bs = block_size(width)
    if BITS_PER_ROW * bs > width or ROWS * bs > height:
        raise ValueError(f"picture {width}x{height} is too small for the clock code")
    bits = _bits(ms)
    for r in range(ROWS):
        row_bits = bits[r * BITS_PER_ROW : (r + 1) * BITS_PER_ROW]
        line = b"".join((bytes((WHITE,)) if b else bytes((BLACK,))) * bs for b in row_bits)
        for dy in range(bs):
            start = (r * bs + dy) * stride
            y_plane[start : start + len(line)] = line


def read(y_plane: bytes | bytearray | memoryview, width: int, height: int,
         stride: int | None = None) -> int | None:
    """The time painted into a luma plane, or None when there is no valid code."""
    stride = width if stride is None else stride
    bs = block_size(width)
    if BITS_PER_ROW * bs > width or ROWS * bs > height:
        return None
    word = 0
    half = bs // 2
    for r in range(ROWS):
        for i in range(BITS_PER_ROW):
            x = i * bs + half
            y = r * bs + half
            # Average a 2x2 patch at the block's centre.
            total = (y_plane[y * stride + x] + y_plane[y * stride + x - 1]
                     + y_plane[(y - 1) * stride + x] + y_plane[(y - 1) * stride + x - 1])
            word = (word << 1) | (1 if total >= 4 * _THRESHOLD else 0)
    ms = word >> CHECK_BITS
    if word & 0xFFFF != check_of(ms):
        return None
    return ms
