"""A TCP proxy for tests that breaks HTTP/1.1 responses on purpose.

It sits between a client (the coordinator) and a room's HTTP server on 127.0.0.1, so a
test can prove that the client copes with whatever the network does:

    async with FaultProxy("127.0.0.1", room_port) as proxy:
        cut = proxy.add(CutAfter("/api/v1/segments/", 100_000))
        ...  # point the client at 127.0.0.1:proxy.port
        await proxy.wait_fired(cut)

Each client connection gets its own upstream connection. The proxy reads the framing of
every request (its request line, Content-Length or chunked body) and of every response
(Content-Length, chunked or until close; none for HEAD, 1xx, 204 and 304), so keep-alive
and pipelining work and each response is matched with its request. The first live rule
whose method and path match a request claims it (path: a prefix string, or a regex matched
at the start of the request target, query included); its fault is applied to that
request's response. Byte counts and offsets are on the raw bytes sent by the server:
`CutAfter` and `Stall` count the header block too; `FlipByte` counts from the first byte
after the header block, so in a chunked body the chunk-size lines count. Interim (1xx)
responses pass untouched.

A rule *fires* when its fault really happens; a response too short for it passes
unchanged and gives the claim back, so the rule waits for the next matching request.
Each rule fires `times` times, then is spent. `log` holds one `Event` per request, written
when its response ends or its connection does.

Beware that aiohttp's client retries an idempotent request (GET) once, silently, when
its connection dies before the response's status line: to make a GET fail there (a
`CutAfter` inside the headers), give the rule `times=2`. A `Refuse`d connection mostly
fails in connect (not retried), but may fail just after it (retried).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple, Self, TypeVar

_CHUNK = 64 * 1024


@dataclass(eq=False)
class Rule:
    """Which requests a fault applies to. Rules compare by identity."""

    path: str | re.Pattern[str]
    method: str | None = field(default=None, kw_only=True)
    times: int = field(default=1, kw_only=True)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if isinstance(self.path, str):
            return path.startswith(self.path)
        return self.path.match(path) is not None


@dataclass(eq=False)
class CutAfter(Rule):
    """Pass `n_bytes` of the response (headers count), then reset both connections."""

    n_bytes: int


@dataclass(eq=False)
class FlipByte(Rule):
    """Flip the lowest bit of the body byte at `offset`; pass everything else unchanged."""

    offset: int


@dataclass(eq=False)
class DropResponse(Rule):
    """Let the server do the work and send its whole response; swallow it all, then reset
    the client's connection."""


@dataclass(eq=False)
class Stall(Rule):
    """Pass `after_bytes` of the response, then send nothing for `seconds`."""

    after_bytes: int
    seconds: float


@dataclass(eq=False)
class Refuse(Rule):
    """Reset new connections at once (a room that cannot be reached); `path` is unused."""

    path: str | re.Pattern[str] = ""


R = TypeVar("R", bound=Rule)


class Event(NamedTuple):
    """One request, or one refused connection (method and path then "")."""

    method: str
    path: str
    fault: str | None  # the class name of the rule that fired on it
    passed: int  # bytes of the response delivered to the client


class _BadMessage(ValueError):
    """Bytes that are not HTTP/1.1 as this proxy understands it."""


class _Done(Exception):
    """Ends a connection: the server closed it, or a fault did."""


_EXPECTED = (_Done, _BadMessage, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass
class _Exchange:
    method: str
    path: str
    rule: Rule | None
    passed: int = 0
    body_at: int | None = None  # bytes passed when the body began
    fault: str | None = None
    done: bool = False


@dataclass
class _Conn:
    cr: asyncio.StreamReader
    cw: asyncio.StreamWriter
    ur: asyncio.StreamReader
    uw: asyncio.StreamWriter
    pending: collections.deque[_Exchange] = field(default_factory=collections.deque)


class _Head(NamedTuple):
    raw: bytes
    words: list[str]  # request: method, target, version; response: version, status, ...
    headers: dict[str, str]  # names in lower case


def _int(text: str, base: int = 10) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise _BadMessage(f"not a number: {text!r}") from None


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """The next header block, or None if the peer closed between messages."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise
        return None
    lines = raw.decode("latin-1").lstrip("\r\n").split("\r\n")
    words = lines[0].split(" ", 2)
    if len(words) < 2:
        raise _BadMessage(f"bad start line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return _Head(raw, words, headers)


def _framing(head: _Head, response_to: str | None = None) -> int | str:
    """How the body ends: a length, "chunked", or "close" (when the server closes)."""
    if response_to is not None:
        status = _int(head.words[1])
        if status == 101:
            return "close"  # another protocol: bytes until the end
        if response_to == "HEAD" or status < 200 or status in (204, 304):
            return 0
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        return "chunked"
    if "content-length" in head.headers:
        return _int(head.headers["content-length"])
    return 0 if response_to is None else "close"


async def _copy_body(reader: asyncio.StreamReader, framing: int | str,
                     send: Callable[[bytes], Awaitable[None]]) -> None:
    async def exactly(n: int) -> None:
        while n > 0:
            data = await reader.read(min(n, _CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", n)
            n -= len(data)
            await send(data)

    if framing == "close":
        while data := await reader.read(_CHUNK):
            await send(data)
    elif framing == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            await send(line)
            size = _int(line.split(b";")[0].strip().decode("latin-1"), 16)
            if size == 0:
                break
            await exactly(size + 2)  # the chunk and its CRLF
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
            await send(line)
        await send(line)
    else:
        assert isinstance(framing, int)
        await exactly(framing)


def _reset(sock: socket.socket | None) -> None:
    """Make the next close send RST instead of FIN."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _abort(writer: asyncio.StreamWriter) -> None:
    _reset(writer.get_extra_info("socket"))
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1 and forwards to (upstream_host, upstream_port), applying rules."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._rules: list[Rule] = []
        self._left: dict[Rule, int] = {}
        self._fired: dict[Rule, int] = {}
        self._changed = asyncio.Event()  # set, and replaced, whenever a rule fires
        self._log: list[Event] = []
        self._errors: list[BaseException] = []
        self._conns: dict[asyncio.Task[None], socket.socket] = {}
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None
        self._closing = False

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.setblocking(False)
        self._port = self._listener.getsockname()[1]
        self._loop.add_reader(self._listener.fileno(), self._accept)
        return self._port

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    async def close(self) -> None:
        """Stop listening, end every connection and wait until they are gone. Raises the
        first unexpected error a connection met (a bug of the proxy), if any."""
        self._closing = True
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        conns = dict(self._conns)
        for task in conns:
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
        for sock in conns.values():
            sock.close()  # a connection cancelled before it began has not closed it
        errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def add(self, rule: R) -> R:
        """Add a rule after the others; returns it (to wait for it, count its firings)."""
        self._rules.append(rule)
        self._left[rule] = rule.times
        return rule

    def clear(self) -> None:
        self._rules.clear()
        self._left.clear()

    @property
    def log(self) -> list[Event]:
        return list(self._log)

    def fired(self, rule: Rule) -> int:
        return self._fired.get(rule, 0)

    async def wait_fired(self, rule: Rule, timeout: float = 10.0,
                         count: int | None = None) -> int:
        """Wait until `rule` has fired `count` times (default: all its `times`)."""
        want = rule.times if count is None else count
        async with asyncio.timeout(timeout):
            while self.fired(rule) < want:
                await self._changed.wait()
        return self.fired(rule)

    # -- rules ---------------------------------------------------------------------------

    def _claim(self, method: str, path: str) -> Rule | None:
        for rule in self._rules:
            if self._left[rule] > 0 and not isinstance(rule, Refuse) \
                    and rule.matches(method, path):
                self._left[rule] -= 1
                return rule
        return None

    def _fire(self, rule: Rule, ex: _Exchange | None = None) -> None:
        if ex is not None:
            ex.fault = type(rule).__name__
        self._fired[rule] = self.fired(rule) + 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _finish(self, ex: _Exchange) -> None:
        if ex.done:
            return
        ex.done = True
        if ex.rule is not None and ex.fault is None and ex.rule in self._left:
            self._left[ex.rule] += 1  # it did not fire: the next matching request gets it
        self._log.append(Event(ex.method, ex.path, ex.fault, ex.passed))

    def _refuse(self) -> bool:
        for rule in self._rules:
            if isinstance(rule, Refuse) and self._left[rule] > 0:
                self._left[rule] -= 1
                self._fire(rule)
                self._log.append(Event("", "", "Refuse", 0))
                return True
        return False

    # -- connections ---------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            sock.setblocking(False)
            if self._closing or self._refuse():
                _reset(sock)
                sock.close()
                continue
            task = asyncio.create_task(self._serve(sock))
            self._conns[task] = sock
            task.add_done_callback(lambda t: self._conns.pop(t, None))

    async def _serve(self, sock: socket.socket) -> None:
        writers: list[asyncio.StreamWriter] = []
        conn: _Conn | None = None
        try:
            try:
                cr, cw = await asyncio.open_connection(sock=sock)
                writers.append(cw)
                ur, uw = await asyncio.open_connection(self.upstream_host, self.upstream_port)
                writers.append(uw)
                conn = _Conn(cr, cw, ur, uw)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._requests(conn))
                    tg.create_task(self._responses(conn))
            except* _EXPECTED:
                pass
            except* Exception as e:
                self._errors.append(e)
            for w in writers:  # a graceful end: what is buffered still goes out
                w.close()
            for w in writers:
                with contextlib.suppress(OSError):
                    await w.wait_closed()
        finally:  # after the above a no-op; if cancelled (close()), at once
            for w in writers:
                w.transport.abort()
            if not writers:
                sock.close()
            for ex in conn.pending if conn is not None else ():
                self._finish(ex)

    async def _requests(self, conn: _Conn) -> None:
        async def send(data: bytes) -> None:
            conn.uw.write(data)
            await conn.uw.drain()

        while (head := await _read_head(conn.cr)) is not None:
            method, target = head.words[0], head.words[1]
            conn.pending.append(_Exchange(method, target, self._claim(method, target)))
            await send(head.raw)
            await _copy_body(conn.cr, _framing(head), send)
        if conn.uw.can_write_eof():  # the client is done: tell the server, keep its answers
            conn.uw.write_eof()

    async def _responses(self, conn: _Conn) -> None:
        while (head := await _read_head(conn.ur)) is not None:
            if not conn.pending:
                raise _BadMessage("a response to no request")
            ex = conn.pending[0]
            framing = _framing(head, response_to=ex.method)
            if _int(head.words[1]) < 200 and framing == 0:  # interim (1xx): not the answer
                conn.cw.write(head.raw)
                await conn.cw.drain()
                continue
            await self._pass(conn, ex, head.raw)
            ex.body_at = len(head.raw)

            async def send(data: bytes, ex: _Exchange = ex) -> None:
                await self._pass(conn, ex, data)

            await _copy_body(conn.ur, framing, send)
            if isinstance(ex.rule, DropResponse):
                self._fire(ex.rule, ex)
                _abort(conn.cw)
                raise _Done
            self._finish(conn.pending.popleft())
            if framing == "close":
                break
        raise _Done  # the server closed the connection: so does the client's

    async def _pass(self, conn: _Conn, ex: _Exchange, data: bytes) -> None:
        """Deliver `data`, the next bytes of `ex`'s response, applying its rule."""
        rule = ex.rule if ex.fault is None else None
        end = ex.passed + len(data)
        if isinstance(rule, DropResponse):
            return
        if isinstance(rule, CutAfter) and end > rule.n_bytes:
            await self._flush(conn.cw, ex, data[:rule.n_bytes - ex.passed])
            self._fire(rule, ex)
            _abort(conn.cw)
            _abort(conn.uw)
            raise _Done
        if isinstance(rule, Stall) and end > rule.after_bytes:
            keep = rule.after_bytes - ex.passed
            await self._flush(conn.cw, ex, data[:keep])
            self._fire(rule, ex)
            await asyncio.sleep(rule.seconds)
            data = data[keep:]
        if isinstance(rule, FlipByte) and ex.body_at is not None:
            i = ex.body_at + rule.offset - ex.passed
            if 0 <= i < len(data):
                flipped = bytearray(data)
                flipped[i] ^= 0x01
                data = bytes(flipped)
                self._fire(rule, ex)
        conn.cw.write(data)
        ex.passed += len(data)
        await conn.cw.drain()

    @staticmethod
    async def _flush(writer: asyncio.StreamWriter, ex: _Exchange, data: bytes) -> None:
        """Write `data` and wait until the kernel has all of it (before a reset or stall)."""
        writer.transport.set_write_buffer_limits(high=0)
        writer.write(data)
        ex.passed += len(data)
        await writer.drain()
        writer.transport.set_write_buffer_limits()
