"""Central storage: where gathered recordings end up, behind one small interface.

The gatherer downloads a file into `staging(key)` (appending after a cut), checks its
sha256, then calls `commit`. Only once `commit` returns may the room delete its copy, so
`commit` either leaves a durable, complete, verified object under `key` or raises
StorageError. It never replaces a different object: losing a recording is the worst
thing this product can do.

Two backends:

- `FolderStorage`: a local folder or a network mount (the default). The staged file sits
  beside its final name (".NAME.partial", hidden), so making it final is one atomic
  link (or rename) on the same filesystem; the file and its folders are fsynced and the
  final file is read back and hashed before `commit` returns.
- `S3Storage`: an S3-compatible object store (SeaweedFS, MinIO, Ceph, AWS). Staged files
  sit in a local spool folder. `commit` uploads with a multipart upload whose every part
  carries its SHA-256 and MD5 (the server refuses a part whose bytes differ), stores the
  file's sha256 as metadata, completes only if no object has the key meanwhile
  (If-None-Match), aborts the upload on any failure, and reads the object's size,
  metadata and the server's checksum back. Give the bucket a lifecycle rule that aborts
  incomplete multipart uploads, for a coordinator killed mid-upload.

Keys are relative POSIX paths ("2026/11/28/Session .../Room/cam1/segment-0001.mp4"),
checked by `check_key`. Messages never contain secrets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import mimetypes
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from coordinator.config import StorageConfig

log = logging.getLogger(__name__)

MIB = 1024 * 1024
HASH_CHUNK = MIB  # bytes read at a time when hashing
MIN_PART_SIZE = 5 * MIB  # S3's smallest part (but the last)
MAX_PARTS = 10_000  # S3's most parts in one upload
MAX_KEY_BYTES = 1024  # S3's longest key, applied to both backends
SHA256_META = "sha256"  # x-amz-meta-sha256: the whole file's sha256, hex
PART_SIZE_META = "part-size"  # x-amz-meta-part-size: to recompute a composite checksum
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RESERVED_SUFFIXES = (".partial", ".tmp", ".unverified")  # of hidden names, see check_key
T = TypeVar("T")


class StorageError(Exception):
    """Central storage failed or refused; the message says what, and never holds a
    secret."""


class MissingObject(StorageError):
    """No object has the key (get_bytes)."""


@dataclass(frozen=True)
class Stored:
    key: str
    size: int
    sha256: str | None  # hex, when the backend knows it


class Storage(Protocol):
    description: str  # e.g. "folder /srv/roomrec"; never a secret

    def staging(self, key: str) -> Path:
        """A local path where a partial download of `key` is written (its parent exists
        after this call). Stable for a key across restarts, so a download can resume by
        appending. Never the final object."""
        ...

    async def commit(self, key: str, staged: Path, sha256: str) -> Stored:
        """Make the complete file `staged` the object `key`, durably and atomically,
        verify what was stored (size and sha256) and remove `staged`. Idempotent: the
        same content again (even with `staged` already removed) succeeds. A different
        object under `key` is never replaced: StorageError."""
        ...

    async def stat(self, key: str) -> Stored | None: ...

    async def put_bytes(self, key: str, data: bytes) -> None:
        """A small file (a session's JSON description), replaced atomically."""
        ...

    async def get_bytes(self, key: str) -> bytes: ...

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes of the object from `start` (fewer at its end); for playing and
        downloading a stored file piece by piece."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """`key` if it is a relative POSIX path of plain names, else StorageError. Refused:
    empty keys and components, absolute keys, "." and "..", backslashes, control
    characters (NUL included), keys over 1024 bytes of UTF-8, and file names of the
    backends' own hidden files (".NAME.partial", ".NAME.tmp", ".NAME.unverified")."""
    if not key:
        raise StorageError("a storage key cannot be empty")
    if key.startswith("/"):
        raise StorageError(f"storage key {key!r} is absolute; keys are relative paths")
    if "\\" in key:
        raise StorageError(f"storage key {key!r} contains a backslash")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise StorageError(f"storage key {key!r} contains a control character")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise StorageError(f"storage key is longer than {MAX_KEY_BYTES} bytes")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise StorageError(f"storage key {key!r} has an empty, '.' or '..' component")
    name = key.rsplit("/", 1)[-1]
    if name.startswith(".") and name.endswith(_RESERVED_SUFFIXES):
        raise StorageError(f"storage key {key!r} names a staged or temporary file")
    return key


def _check_sha256(sha256: str) -> str:
    digest = sha256.lower()
    if not _HEX64.match(digest):
        raise StorageError(f"not a sha256 in hex: {sha256!r}")
    return digest


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _drop_cache(fd: int) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read comes from
    the disk (or the server) rather than from memory: the read-back is then a proof."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def hash_file(path: Path, *, from_disk: bool = False) -> tuple[int, str]:
    """(size, sha256 hex) of the bytes in `path`, read 1 MiB at a time. `from_disk`:
    drop cached pages first (see _drop_cache)."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        if from_disk:
            _drop_cache(f.fileno())
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a folder, so the names created or removed in it are on disk. Filesystems
    that cannot (some network ones answer EINVAL) are left to their own guarantees."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


# --- a folder ---------------------------------------------------------------------------

# A hard link that fails with one of these means "this filesystem has none" (FAT, some
# SMB shares): a rename is used instead.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                       errno.ENOSYS})


class FolderStorage:
    """Objects are files under `root`, a local folder or a network mount, created if
    missing (mind an unmounted share: the folder is then made on the local disk)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"folder {root}"

    def __repr__(self) -> str:
        return f"FolderStorage({str(self.root)!r})"

    def _final(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def staging(self, key: str) -> Path:
        final = self._final(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.partial")

    async def commit(self, key: str, staged: Path, sha256: str) -> Stored:
        final = self._final(key)
        digest = _check_sha256(sha256)
        try:
            return await asyncio.to_thread(self._commit, key, final, staged, digest)
        except OSError as e:
            raise StorageError(f"cannot store {key!r} in {self.description}: "
                               f"{e.strerror or e}") from e

    def _commit(self, key: str, final: Path, staged: Path, sha256: str) -> Stored:
        try:
            fsync_path(staged)
        except FileNotFoundError:
            # Already committed and removed, if `final` holds that content.
            if final.is_file():
                return self._same(key, final, sha256, staged=None)
            raise StorageError(f"cannot store {key!r}: the staged file {staged} is "
                               f"missing") from None
        size = staged.stat().st_size
        final.parent.mkdir(parents=True, exist_ok=True)  # staged elsewhere than staging()
        if not self._place(final, staged):
            return self._same(key, final, sha256, staged)
        self._fsync_parents(final)
        stored_size, stored_sha = hash_file(final, from_disk=True)
        if stored_sha != sha256 or stored_size != size:
            aside = final.with_name(f".{final.name}.unverified")
            final.replace(aside)
            fsync_dir(final.parent)
            raise StorageError(
                f"the stored copy of {key!r} does not match: {stored_size} bytes, sha256 "
                f"{stored_sha}, expected {size} bytes, sha256 {sha256}; moved aside to "
                f"{aside.name}")
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        fsync_dir(staged.parent)
        return Stored(key, stored_size, stored_sha)

    def _place(self, final: Path, staged: Path) -> bool:
        """Give the staged file its final name without ever replacing a file: a hard link
        (fails if the name exists), or a rename where the filesystem has no links. False
        if the final name exists."""
        try:
            os.link(staged, final)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            if final.exists():
                return False
            staged.rename(final)  # no links here; a race would need a 2nd gatherer
        return True

    def _same(self, key: str, final: Path, sha256: str, staged: Path | None) -> Stored:
        """`final` exists: success if it holds the `sha256` content (remove `staged`),
        else StorageError."""
        size, stored_sha = hash_file(final, from_disk=True)
        if stored_sha != sha256:
            raise StorageError(
                f"a different file is already stored as {key!r} ({size} bytes, sha256 "
                f"{stored_sha}; this one's sha256 is {sha256}); not replacing it")
        if staged is not None and staged != final:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
            fsync_dir(staged.parent)
        return Stored(key, size, stored_sha)

    def _fsync_parents(self, final: Path) -> None:
        """The final file's folder and every folder up to the root, since `staging` may
        have created them."""
        folder = final.parent
        while True:
            fsync_dir(folder)
            if folder in (self.root, folder.parent):
                break
            folder = folder.parent

    async def stat(self, key: str) -> Stored | None:
        final = self._final(key)
        try:
            st = await asyncio.to_thread(final.stat)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot stat {key!r}: {e.strerror or e}") from e
        return Stored(key, st.st_size, None) if S_ISREG(st.st_mode) else None

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def put_bytes(self, key: str, data: bytes) -> None:
        final = self._final(key)
        try:
            await asyncio.to_thread(self._put_bytes, final, data)
        except OSError as e:
            raise StorageError(f"cannot store {key!r}: {e.strerror or e}") from e

    def _put_bytes(self, final: Path, data: bytes) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            with tmp.open("xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._fsync_parents(final)

    async def get_bytes(self, key: str) -> bytes:
        final = self._final(key)
        try:
            return await asyncio.to_thread(final.read_bytes)
        except FileNotFoundError:
            raise MissingObject(f"no object {key!r} in {self.description}") from None
        except OSError as e:
            raise StorageError(f"cannot read {key!r}: {e.strerror or e}") from e

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        final = self._final(key)

        def read() -> bytes:
            with final.open("rb") as f:
                f.seek(start)
                return f.read(length)

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError:
            raise MissingObject(f"no object {key!r} in {self.description}") from None
        except OSError as e:
            raise StorageError(f"cannot read {key!r}: {e.strerror or e}") from e

    async def close(self) -> None:
        return None


# --- an S3 object store -------------------------------------------------------------------


class _S3Failure(StorageError):
    """A failed S3 call, with the error code ("404", "NoSuchKey", "PreconditionFailed")."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS_CODES = frozenset({"412", "PreconditionFailed"})


@dataclass(frozen=True)
class _Head:
    size: int
    sha256: str | None  # from the metadata, else from a whole-object ChecksumSHA256
    checksum: str | None  # the server's ChecksumSHA256 (composite ones end in "-N")
    part_size: int | None  # from the metadata


def _composite(digests: list[bytes]) -> str:
    """S3's COMPOSITE SHA-256 checksum of a multipart upload with these part digests."""
    return f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"


def _composite_of_file(path: Path, part_size: int) -> tuple[str, str]:
    """(composite checksum with `part_size` parts, whole sha256 hex) of a file."""
    whole = hashlib.sha256()
    digests = []
    with path.open("rb") as f:
        while part := f.read(part_size):
            whole.update(part)
            digests.append(hashlib.sha256(part).digest())
    return _composite(digests), whole.hexdigest()


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _prefix(prefix: str) -> str:
    stripped = prefix.strip("/")
    if stripped:
        check_key(stripped)
        return stripped + "/"
    return ""


class S3Storage:
    """Objects in an S3 bucket under `prefix`, through boto3 (its clients are
    thread-safe; every call runs in a worker thread). Staged files live in `spool`."""

    def __init__(self, endpoint_url: str, bucket: str, prefix: str, region: str,
                 access_key: str, secret_key: SecretStr | str, spool: Path,
                 part_size: int = 16 * MIB) -> None:
        if not MIN_PART_SIZE <= part_size <= 5 * 1024 * MIB:
            raise StorageError(f"part_size must be between 5 MiB and 5 GiB, not {part_size}")
        secret = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) \
            else secret_key
        self._secret = SecretStr(secret)
        self.endpoint_url = _public_url(endpoint_url)
        self.bucket = bucket
        self.prefix = _prefix(prefix)
        self.region = region
        self.access_key = access_key
        self.spool = spool
        self.part_size = part_size
        self.description = f"s3 {self.endpoint_url} {bucket}/{self.prefix}"
        session = boto3.session.Session(aws_access_key_id=access_key,
                                        aws_secret_access_key=secret, region_name=region)
        self._client: Any = session.client(  # boto3 ships no types
            "s3", endpoint_url=endpoint_url,
            config=BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": "path"},  # what SeaweedFS, MinIO and Ceph expect
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10, read_timeout=120,
                # The checksums are ours, given explicitly on every upload.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required"))

    def __repr__(self) -> str:
        return (f"S3Storage(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, "
                f"prefix={self.prefix!r}, region={self.region!r}, "
                f"access_key={self.access_key!r}, secret_key='**********')")

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def staging(self, key: str) -> Path:
        name = hashlib.sha1(f"{self.bucket}/{self._object_key(key)}".encode(),
                            usedforsecurity=False).hexdigest()
        self.spool.mkdir(parents=True, exist_ok=True)
        return self.spool / f"{name}.partial"

    # -- calls --

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """boto3's errors as StorageError (_S3Failure), with any secret scrubbed."""
        try:
            yield
        except ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", "?"))
            text = str(err.get("Message") or "")
            raise _S3Failure(self._scrub(f"{what} in {self.description}: {code} {text}"),
                             code) from e
        except BotoCoreError as e:
            raise StorageError(self._scrub(f"{what} in {self.description}: {e}")) from e

    def _scrub(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        return text.replace(secret, "**********") if secret else text

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self._sync, what, fn, *args, **kwargs)

    def _sync(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._errors(what):
            return fn(*args, **kwargs)

    async def _head(self, key: str) -> _Head | None:
        try:
            r = await self._call(f"cannot stat {key!r}", self._client.head_object,
                                 Bucket=self.bucket, Key=self._object_key(key),
                                 ChecksumMode="ENABLED")
        except _S3Failure as e:
            if e.code in _MISSING_CODES:
                return None
            raise
        meta = {str(k).lower(): str(v) for k, v in (r.get("Metadata") or {}).items()}
        checksum = r.get("ChecksumSHA256")
        sha256 = meta.get(SHA256_META)
        if (sha256 is None or not _HEX64.match(sha256)) and checksum and "-" not in checksum:
            with contextlib.suppress(binascii.Error, ValueError):
                sha256 = base64.b64decode(checksum, validate=True).hex()
        part_size = meta.get(PART_SIZE_META, "")
        return _Head(int(r["ContentLength"]),
                     sha256 if sha256 and _HEX64.match(sha256) else None,
                     str(checksum) if checksum else None,
                     int(part_size) if part_size.isdigit() else None)

    async def stat(self, key: str) -> Stored | None:
        head = await self._head(key)
        return None if head is None else Stored(key, head.size, head.sha256)

    async def exists(self, key: str) -> bool:
        return await self._head(key) is not None

    async def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            r = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            body: bytes = r["Body"].read()
            meta = {str(k).lower(): str(v) for k, v in (r.get("Metadata") or {}).items()}
            expected = meta.get(SHA256_META)
            if expected and hashlib.sha256(body).hexdigest() != expected:
                raise StorageError(f"{key!r} read from {self.description} does not match "
                                   f"its sha256")
            return body

        return await self._read(key, get)

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""

        def get() -> bytes:
            r = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key),
                                        Range=f"bytes={start}-{start + length - 1}")
            body: bytes = r["Body"].read()
            return body

        return await self._read(key, get)

    async def _read(self, key: str, get: Callable[[], bytes]) -> bytes:
        """`get()` in a thread: MissingObject for a missing key, nothing past its end."""
        try:
            return await self._call(f"cannot read {key!r}", get)
        except _S3Failure as e:
            if e.code in _MISSING_CODES:
                raise MissingObject(f"no object {key!r} in {self.description}") from None
            if e.code == "InvalidRange":
                return b""
            raise

    async def put_bytes(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data)
        await self._call(f"cannot store {key!r}", self._client.put_object,
                         Bucket=self.bucket, Key=self._object_key(key), Body=data,
                         ChecksumSHA256=_b64(digest.digest()),
                         ContentMD5=_b64(hashlib.md5(data, usedforsecurity=False).digest()),
                         Metadata={SHA256_META: digest.hexdigest()},
                         ContentType=_content_type(key))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    # -- commit --

    async def commit(self, key: str, staged: Path, sha256: str) -> Stored:
        self._object_key(key)  # checks the key
        sha256 = _check_sha256(sha256)
        try:
            size = (await asyncio.to_thread(staged.stat)).st_size
        except FileNotFoundError:
            size = None
        head = await self._head(key)
        if head is not None:
            return await self._same(key, head, sha256, staged if size is not None else None)
        if size is None:
            raise StorageError(f"cannot store {key!r}: the staged file {staged} is missing")
        try:
            if size < self.part_size:
                checksum = await self._put_single(key, staged, size, sha256)
            else:
                checksum = await self._put_multipart(key, staged, size, sha256)
        except _S3Failure as e:
            if e.code not in _EXISTS_CODES:
                raise
            # Another object got the key meanwhile (If-None-Match): same content or not?
            head = await self._head(key)
            if head is None:
                raise
            return await self._same(key, head, sha256, staged)
        stored = await self._verify(key, size, sha256, checksum)
        await asyncio.to_thread(_unlink, staged)
        return stored

    async def _same(self, key: str, head: _Head, sha256: str, staged: Path | None) -> Stored:
        """An object already has the key: success if it is this content (remove
        `staged`), else StorageError."""
        whole_checksum = head.checksum if head.checksum and "-" not in head.checksum else None
        if head.sha256 != sha256 or (whole_checksum is not None
                                     and whole_checksum != _b64(bytes.fromhex(sha256))):
            raise StorageError(
                f"a different object is already stored as {key!r} in {self.description} "
                f"({head.size} bytes, sha256 {head.sha256 or 'unknown'}; this one's sha256 "
                f"is {sha256}); not replacing it")
        if staged is not None and head.checksum and "-" in head.checksum and head.part_size:
            # The metadata says so; the server's own checksum must agree too.
            composite, whole = await asyncio.to_thread(_composite_of_file, staged,
                                                       head.part_size)
            if whole == sha256 and composite != head.checksum:
                raise StorageError(
                    f"the object stored as {key!r} in {self.description} has sha256 "
                    f"{sha256} in its metadata but the server's checksum of its parts "
                    f"differs; not replacing it")
        if staged is not None:
            await asyncio.to_thread(_unlink, staged)
        return Stored(key, head.size, head.sha256)

    async def _put_single(self, key: str, staged: Path, size: int, sha256: str) -> str:
        data = await asyncio.to_thread(staged.read_bytes)
        digest = hashlib.sha256(data)
        if len(data) != size or digest.hexdigest() != sha256:
            raise StorageError(f"cannot store {key!r}: the staged file changed or does not "
                               f"match sha256 {sha256}")
        checksum = _b64(digest.digest())
        await self._call(f"cannot store {key!r}", self._client.put_object,
                         Bucket=self.bucket, Key=self._object_key(key), Body=data,
                         ChecksumSHA256=checksum,
                         ContentMD5=_b64(hashlib.md5(data, usedforsecurity=False).digest()),
                         Metadata={SHA256_META: sha256}, ContentType=_content_type(key),
                         IfNoneMatch="*")
        return checksum

    async def _put_multipart(self, key: str, staged: Path, size: int, sha256: str) -> str:
        count = -(-size // self.part_size)
        if count > MAX_PARTS:
            raise StorageError(f"cannot store {key!r}: {size} bytes need more than "
                               f"{MAX_PARTS} parts of {self.part_size}")
        object_key = self._object_key(key)
        r = await self._call(f"cannot start uploading {key!r}",
                             self._client.create_multipart_upload,
                             Bucket=self.bucket, Key=object_key, ChecksumAlgorithm="SHA256",
                             Metadata={SHA256_META: sha256,
                                       PART_SIZE_META: str(self.part_size)},
                             ContentType=_content_type(key))
        upload_id: str = r["UploadId"]
        try:
            whole = hashlib.sha256()
            parts: list[dict[str, Any]] = []
            for number in range(1, count + 1):
                offset = (number - 1) * self.part_size
                length = min(self.part_size, size - offset)
                parts.append(await self._call(
                    f"cannot upload part {number} of {key!r}", self._upload_part, staged,
                    object_key, upload_id, number, offset, length, whole))
            now = (await asyncio.to_thread(staged.stat)).st_size
            if now != size or whole.hexdigest() != sha256:
                raise StorageError(f"cannot store {key!r}: the staged file changed during "
                                   f"the upload or does not match sha256 {sha256}")
            await self._call(f"cannot complete uploading {key!r}",
                             self._client.complete_multipart_upload,
                             Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                             MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            # Failed, or cancelled (a part may still be on its way in its thread; the
            # server refuses it once the upload is gone).
            await asyncio.shield(asyncio.to_thread(self._abort, key, upload_id))
            raise
        return _composite([base64.b64decode(p["ChecksumSHA256"]) for p in parts])

    def _upload_part(self, staged: Path, object_key: str, upload_id: str, number: int,
                     offset: int, length: int, whole: Any) -> dict[str, Any]:
        """Part `number`: `length` bytes at `offset`, sent with their SHA-256 and MD5 so
        the server refuses them if they arrive different."""
        with staged.open("rb") as f:  # opened here: a cancelled commit closes nothing
            data = _pread_exactly(f.fileno(), length, offset)
        whole.update(data)
        checksum = _b64(hashlib.sha256(data).digest())
        r = self._client.upload_part(
            Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number,
            Body=data, ChecksumSHA256=checksum,
            ContentMD5=_b64(hashlib.md5(data, usedforsecurity=False).digest()))
        return {"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            with self._errors(f"cannot abort uploading {key!r}"):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._object_key(key), UploadId=upload_id)
        except StorageError as e:
            log.warning("%s (a lifecycle rule will clean it up)", e)

    async def _verify(self, key: str, size: int, sha256: str, checksum: str) -> Stored:
        head = await self._head(key)
        if head is None:
            raise StorageError(f"{key!r} is missing from {self.description} right after "
                               f"it was stored")
        problems = []
        if head.size != size:
            problems.append(f"{head.size} bytes instead of {size}")
        if head.sha256 != sha256:
            problems.append(f"sha256 {head.sha256} instead of {sha256}")
        if head.checksum is not None and head.checksum != checksum:
            problems.append(f"the server's checksum is {head.checksum}, not {checksum}")
        if problems:
            raise StorageError(f"{key!r} as stored in {self.description} does not match: "
                               + "; ".join(problems))
        return Stored(key, head.size, sha256)


def _pread_exactly(fd: int, length: int, offset: int) -> bytes:
    chunks = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise StorageError("the staged file got shorter during the upload")
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


# --- from the configuration ---------------------------------------------------------------


def open_storage(config: StorageConfig, database_dir: Path) -> Storage:
    """The storage the configuration names. S3 stages downloads in `config.spool`, by
    default `database_dir / "spool"` (a local disk, beside the database)."""
    if config.kind == "folder":
        return FolderStorage(config.path)
    s3 = config.s3
    if s3 is None:  # the configuration's validation refuses this
        raise StorageError('storage kind "s3" needs a [storage.s3] table')
    return S3Storage(s3.endpoint_url, s3.bucket, s3.prefix, s3.region, s3.access_key,
                     s3.secret_key, config.spool or database_dir / "spool")
