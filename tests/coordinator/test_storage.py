"""Central storage: both backends through one set of tests, the folder on tmp_path and
S3 against a real SeaweedFS server (tests.support.seaweedfs), with real files."""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from coordinator.config import ConfigError, StorageConfig
from coordinator.config import parse as parse_coordinator
from coordinator.storage import (
    MIB,
    FolderStorage,
    MissingObject,
    S3Storage,
    StorageError,
    Stored,
    check_key,
    open_storage,
)
from tests.support.seaweedfs import SeaweedS3

KEY = "2026/11/28/Airway drill 2026-11-28 1405 a1b2c3/Sim room 1/cam1/segment-0001.mp4"


@dataclass
class Backend:
    kind: str
    storage: FolderStorage | S3Storage
    reopen: Callable[[], FolderStorage | S3Storage]  # another instance, as after a restart
    names: Callable[[], set[str]]  # all it holds: files, or objects and pending uploads
    name_of: Callable[[str], str]  # a key's entry in names()
    root: Path | None = None  # the folder backend's folder
    raw: Any = None  # S3: the test's own client
    bucket: str = ""
    prefix: str = ""


def _folder_names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def _s3_names(client: Any, bucket: str, prefix: str) -> set[str]:
    objects = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return {o["Key"] for o in objects} | {f"upload:{u['Key']}" for u in uploads
                                          if u["Key"].startswith(prefix)}


def _prefix() -> str:
    """A key prefix of its own for a test: all share the server's bucket."""
    return f"central-{secrets.token_hex(4)}/"


@pytest.fixture(params=["folder", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: list[FolderStorage | S3Storage] = []
    if request.param == "folder":
        root = tmp_path / "central"

        def make_folder() -> FolderStorage | S3Storage:
            made.append(FolderStorage(root))
            return made[-1]

        b = Backend("folder", make_folder(), make_folder, lambda: _folder_names(root),
                    lambda key: key, root=root)
    else:
        server: SeaweedS3 = request.getfixturevalue("seaweed")
        client = server.client()
        prefix = _prefix()

        def make_s3() -> FolderStorage | S3Storage:
            made.append(S3Storage(server.endpoint_url, server.bucket, prefix, "us-east-1",
                                  server.access_key, SecretStr(server.secret_key),
                                  tmp_path / "spool"))
            return made[-1]

        b = Backend("s3", make_s3(), make_s3, lambda: _s3_names(client, server.bucket, prefix),
                    lambda key: prefix + key, raw=client, bucket=server.bucket, prefix=prefix)
    try:
        yield b
    finally:
        for storage in made:
            await storage.close()
        if b.raw is not None:
            b.raw.close()


def _data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stage(path: Path, data: bytes) -> Path:
    """Write `data` as a download does: appended in pieces, as after cuts."""
    cut = len(data) // 3
    for piece in (data[:cut], data[cut:]):
        with path.open("ab") as f:
            f.write(piece)
    return path


# --- commit -------------------------------------------------------------------------------


async def test_commit_of_a_large_file(backend: Backend) -> None:
    data = _data(40 * MIB)
    staged = _stage(backend.storage.staging(KEY), data)
    stored = await backend.storage.commit(KEY, staged, _sha(data))
    assert stored == Stored(KEY, len(data), _sha(data))
    assert not staged.exists()
    st = await backend.storage.stat(KEY)
    assert st is not None and st.size == len(data)
    assert st.sha256 == (None if backend.kind == "folder" else _sha(data))
    assert await backend.storage.get_bytes(KEY) == data
    assert await backend.storage.exists(KEY)
    assert backend.names() == {backend.name_of(KEY)}  # nothing staged or pending is left
    if backend.kind == "s3":
        head = backend.raw.head_object(Bucket=backend.bucket, Key=backend.prefix + KEY,
                                       ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"].endswith("-3")  # 16 + 16 + 8 MiB, each checked
        assert head["Metadata"]["sha256"] == _sha(data)


@pytest.mark.parametrize("size", [1000, 17 * MIB])
async def test_commit_again_with_the_same_content_succeeds(backend: Backend,
                                                           size: int) -> None:
    data = _data(size)
    first = await backend.storage.commit(KEY, _stage(backend.storage.staging(KEY), data),
                                         _sha(data))
    staged = _stage(backend.storage.staging(KEY), data)
    again = await backend.storage.commit(KEY, staged, _sha(data))
    assert again == first == Stored(KEY, size, _sha(data))
    assert not staged.exists()
    assert await backend.storage.get_bytes(KEY) == data
    assert backend.names() == {backend.name_of(KEY)}


@pytest.mark.parametrize("size", [1000, 17 * MIB])
async def test_different_content_never_replaces_a_stored_file(backend: Backend,
                                                              size: int) -> None:
    original = _data(size, seed=1)
    await backend.storage.commit(KEY, _stage(backend.storage.staging(KEY), original),
                                 _sha(original))
    for other in (_data(size, seed=2), _data(size + 1, seed=3)):
        staged = _stage(backend.storage.staging(KEY), other)
        with pytest.raises(StorageError, match=r"different .* already stored"):
            await backend.storage.commit(KEY, staged, _sha(other))
        assert staged.exists()  # kept: nothing is thrown away on a refusal
        staged.unlink()
    assert await backend.storage.get_bytes(KEY) == original
    st = await backend.storage.stat(KEY)
    assert st is not None and st.size == size


async def test_commit_after_a_crash_before_the_staged_file_was_removed(
        backend: Backend, tmp_path: Path) -> None:
    """The object was stored but the coordinator died before removing the staged file
    (or before recording it): committing again succeeds and cleans up."""
    data = _data(100_000)
    copy = tmp_path / "first-try"
    copy.write_bytes(data)
    await backend.storage.commit(KEY, copy, _sha(data))
    staged = _stage(backend.storage.staging(KEY), data)  # still there after the "crash"
    stored = await backend.storage.commit(KEY, staged, _sha(data))
    assert stored == Stored(KEY, len(data), _sha(data))
    assert not staged.exists()
    assert backend.names() == {backend.name_of(KEY)}


async def test_commit_after_a_crash_after_the_staged_file_was_removed(
        backend: Backend) -> None:
    data = _data(100_000)
    staged = _stage(backend.storage.staging(KEY), data)
    await backend.storage.commit(KEY, staged, _sha(data))
    assert not staged.exists()
    stored = await backend.storage.commit(KEY, staged, _sha(data))
    assert stored.size == len(data) and stored.sha256 == _sha(data)
    with pytest.raises(StorageError):  # another content: not this object
        await backend.storage.commit(KEY, staged, _sha(b"other"))


async def test_commit_of_a_missing_staged_file_fails(backend: Backend) -> None:
    with pytest.raises(StorageError, match="missing"):
        await backend.storage.commit(KEY, backend.storage.staging(KEY), _sha(b""))
    assert not await backend.storage.exists(KEY)


@pytest.mark.parametrize("size", [1000, 20 * MIB])
async def test_content_that_does_not_match_its_sha256_is_not_stored(
        backend: Backend, size: int) -> None:
    """The staged file is not what the caller checked (it changed since): refused, and
    no object appears under the key (S3: the multipart upload is aborted)."""
    data = _data(size)
    staged = _stage(backend.storage.staging(KEY), data)
    with pytest.raises(StorageError, match="does not match"):
        await backend.storage.commit(KEY, staged, _sha(data + b"x"))
    assert not await backend.storage.exists(KEY)
    assert backend.name_of(KEY) not in backend.names()
    if backend.kind == "s3":
        assert backend.names() == set()  # no object, no pending upload
        assert staged.exists()


async def test_an_empty_file(backend: Backend) -> None:
    staged = _stage(backend.storage.staging(KEY), b"")
    assert await backend.storage.commit(KEY, staged, _sha(b"")) == Stored(KEY, 0, _sha(b""))
    assert await backend.storage.get_bytes(KEY) == b""


async def test_nothing_partial_is_seen_under_the_final_name(backend: Backend) -> None:
    data = _data(3 * MIB)
    staged = backend.storage.staging(KEY)
    assert staged.parent.is_dir()
    with staged.open("ab") as f:
        f.write(data[: MIB])
    assert await backend.storage.stat(KEY) is None
    assert not await backend.storage.exists(KEY)
    assert backend.name_of(KEY) not in backend.names()
    if backend.root is not None:
        final = backend.root / KEY
        assert staged.parent == final.parent and staged != final
        assert staged.name == ".segment-0001.mp4.partial"  # hidden, beside its final name
        assert not final.exists()
    assert backend.reopen().staging(KEY) == staged  # a restart resumes the same file
    with staged.open("ab") as f:
        f.write(data[MIB:])
    await backend.storage.commit(KEY, staged, _sha(data))
    assert await backend.storage.get_bytes(KEY) == data


async def test_a_cancelled_upload_leaves_nothing_behind_or_a_complete_object(
        seaweed: SeaweedS3, tmp_path: Path) -> None:
    bucket, prefix = seaweed.bucket, _prefix()
    client = seaweed.client()
    storage = S3Storage(seaweed.endpoint_url, bucket, prefix, "us-east-1",
                        seaweed.access_key, seaweed.secret_key, tmp_path / "spool",
                        part_size=5 * MIB)
    data = _data(60 * MIB)
    staged = _stage(storage.staging(KEY), data)
    task = asyncio.create_task(storage.commit(KEY, staged, _sha(data)))
    try:
        async with asyncio.timeout(30):
            while not task.done():  # polling for the upload to show up
                if await asyncio.to_thread(_s3_names, client, bucket, prefix):
                    break
                await asyncio.sleep(0.005)
        finished_first = task.done()
        task.cancel()
        if finished_first:  # the upload beat the poll: then it is complete
            await task
            assert await storage.get_bytes(KEY) == data
        else:
            with pytest.raises(asyncio.CancelledError):
                await task
            assert _s3_names(client, bucket, prefix) == set()  # the upload was aborted
            assert staged.exists()
    finally:
        await storage.close()
        client.close()


async def test_a_missing_bucket_fails_and_stores_nothing(seaweed: SeaweedS3,
                                                         tmp_path: Path) -> None:
    storage = S3Storage(seaweed.endpoint_url, "roomrec-no-such-bucket", "", "us-east-1",
                        seaweed.access_key, seaweed.secret_key, tmp_path / "spool",
                        part_size=5 * MIB)
    client = seaweed.client()
    try:
        for size in (1000, 12 * MIB):
            data = _data(size)
            staged = _stage(storage.staging(KEY), data)
            with pytest.raises(StorageError, match="NoSuchBucket"):
                await storage.commit(KEY, staged, _sha(data))
            assert staged.exists()
            staged.unlink()
        buckets = {b["Name"] for b in client.list_buckets()["Buckets"]}
        assert "roomrec-no-such-bucket" not in buckets
    finally:
        await storage.close()
        client.close()


# --- small files ------------------------------------------------------------------------


async def test_put_bytes_replaces_atomically(backend: Backend) -> None:
    key = "2026/11/28/Airway drill 2026-11-28 1405 a1b2c3/session.json"
    await backend.storage.put_bytes(key, b'{"v": 1}')
    reader = (backend.root / key).open("rb") if backend.root is not None else None
    try:
        await backend.storage.put_bytes(key, b'{"v": 2, "longer": true}')
        assert await backend.storage.get_bytes(key) == b'{"v": 2, "longer": true}'
        if reader is not None:
            assert reader.read() == b'{"v": 1}'  # replaced by a rename, never rewritten
    finally:
        if reader is not None:
            reader.close()
    st = await backend.storage.stat(key)
    assert st is not None and st.size == len(b'{"v": 2, "longer": true}')
    assert backend.names() == {backend.name_of(key)}  # no temporary file left


async def test_get_bytes_of_a_missing_key(backend: Backend) -> None:
    with pytest.raises(MissingObject):
        await backend.storage.get_bytes("2026/nothing.json")
    assert await backend.storage.stat("2026/nothing.json") is None


# --- keys -------------------------------------------------------------------------------

BAD_KEYS = ["", "/abs/a.mp4", "a//b.mp4", "a/", "a/./b.mp4", "a/../b.mp4", "..", ".",
            "a\\b.mp4", "a\0b.mp4", "a/\nb.mp4", "x" * 1025,
            "a/.segment.mp4.partial", "a/.session.json.1a2b3c4d.tmp", "a/.s.mp4.unverified"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(StorageError):
        check_key(key)
    with pytest.raises(StorageError):
        backend.storage.staging(key)
    with pytest.raises(StorageError):
        await backend.storage.put_bytes(key, b"x")
    with pytest.raises(StorageError):
        await backend.storage.stat(key)
    with pytest.raises(StorageError):
        await backend.storage.commit(key, backend.storage.staging(KEY), _sha(b""))
    assert backend.names() == set()


def test_good_keys_are_kept() -> None:
    assert check_key(KEY) == KEY
    assert check_key("a.b/ünïcode (disk full)/x") == "a.b/ünïcode (disk full)/x"
    assert check_key(".incoming/s1/room-1/7.mp4") == ".incoming/s1/room-1/7.mp4"
    assert check_key("a/.hidden") == "a/.hidden"


async def test_staged_under_one_key_committed_under_another(backend: Backend) -> None:
    """As the gatherer does: downloaded before the session has a name, stored under the
    name once it has one."""
    data = _data(100_000)
    staged = _stage(backend.storage.staging(".incoming/s1/room-1/7.mp4"), data)
    assert await backend.storage.commit(KEY, staged, _sha(data)) \
        == Stored(KEY, len(data), _sha(data))
    assert not staged.exists()
    assert await backend.storage.get_bytes(KEY) == data
    assert backend.names() == {backend.name_of(KEY)}


# --- configuration and secrets ------------------------------------------------------------

S3_SETTINGS = {"endpoint_url": "http://127.0.0.1:8333", "bucket": "roomrec",
               "prefix": "site-a/", "access_key": "AKID", "secret_key": "hunter2-s3cr3t"}


def test_default_configuration_is_a_folder(tmp_path: Path) -> None:
    config = StorageConfig()
    assert config.kind == "folder" and config.path == Path("/srv/roomrec")
    storage = open_storage(StorageConfig(path=tmp_path), tmp_path / "db")
    assert isinstance(storage, FolderStorage)
    assert storage.description == f"folder {tmp_path}"


@pytest.mark.parametrize(("storage", "message"), [
    ({"kind": "s3"}, 'kind = "s3" needs a \\[storage.s3\\] table'),
    ({"s3": S3_SETTINGS}, 'kind is "folder"'),
    ({"spool": "/var/spool/x"}, "spool is used with"),
    ({"kind": "s3", "s3": {**S3_SETTINGS, "endpoint_url": "http://u:pw@h:1"}}, "credentials"),
    ({"kind": "s3", "s3": {**S3_SETTINGS, "endpoint_url": "ftp://h"}}, "endpoint_url must"),
    ({"kind": "s3", "s3": {**S3_SETTINGS, "prefix": "/abs"}}, "prefix must"),
    ({"kind": "s3", "s3": {**S3_SETTINGS, "prefix": "a/../b"}}, "prefix must"),
    ({"kind": "s3", "s3": {k: v for k, v in S3_SETTINGS.items() if k != "secret_key"}},
     "storage.s3.secret_key"),
])
def test_configuration_errors(storage: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_coordinator({"storage": storage})
    assert "hunter2" not in str(err.value) and "pw@" not in str(err.value)


def test_s3_configuration_opens_s3_with_a_spool_beside_the_database(tmp_path: Path) -> None:
    config = parse_coordinator({"storage": {"kind": "s3", "s3": S3_SETTINGS}}).storage
    storage = open_storage(config, tmp_path / "db")
    assert isinstance(storage, S3Storage)
    assert storage.spool == tmp_path / "db" / "spool"
    assert storage.description == "s3 http://127.0.0.1:8333 roomrec/site-a/"
    assert storage.staging(KEY).parent == tmp_path / "db" / "spool"
    spooled = StorageConfig(kind="s3", spool=tmp_path / "sp", s3=config.s3)
    assert open_storage(spooled, tmp_path).staging(KEY).parent == tmp_path / "sp"
    for text in (repr(config), str(config), repr(config.s3), config.model_dump_json(),
                 repr(storage), storage.description):
        assert "hunter2" not in text


async def test_s3_secret_never_appears_in_errors(seaweed: SeaweedS3, tmp_path: Path) -> None:
    wrong = "wrong-" + seaweed.secret_key
    storage = S3Storage(seaweed.endpoint_url, seaweed.bucket, _prefix(), "us-east-1",
                        seaweed.access_key, wrong, tmp_path / "spool")
    data = _data(1000)
    errors: list[BaseException] = []
    try:
        for attempt in (storage.stat(KEY), storage.put_bytes(KEY, b"x"),
                        storage.get_bytes(KEY),
                        storage.commit(KEY, _stage(storage.staging(KEY), data), _sha(data))):
            with pytest.raises(StorageError) as err:
                await attempt
            errors.append(err.value)
    finally:
        await storage.close()
    assert any("SignatureDoesNotMatch" in str(e) or "AccessDenied" in str(e)
               for e in errors), [str(e) for e in errors]
    for e in errors:
        text = "".join(traceback.format_exception(e))
        assert wrong not in text and seaweed.secret_key not in text
    for text in (repr(storage), storage.description, str(vars(storage))):
        assert wrong not in text


def test_part_size_must_suit_s3(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="part_size"):
        S3Storage("http://127.0.0.1:1", "roomrec", "", "us-east-1", "a", "b", tmp_path,
                  part_size=MIB)
