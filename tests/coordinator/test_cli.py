"""The coordinator's command line, run as a user runs it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.camera import wait_until


def test_demo_starts_rooms_pairs_them_and_stops_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    with out.open("wb") as o:
        proc = subprocess.Popen([sys.executable, "-m", "coordinator", "demo", "--rooms", "2",
                                 "--dir", str(tmp_path / "demo"), "--port", "0"],
                                stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: "rooms paired" in out.read_text(), 60), out.read_text()
        port = int(re.findall(r"Open http://127\.0\.0\.1:(\d+)/ ", out.read_text())[-1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as r:
            assert b'id="login-form"' in r.read()  # the web page is served
        body = json.dumps({"username": "admin", "password": "roomrec-demo"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/login", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            token = json.load(r)["token"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/locations",
                                     headers={"Authorization": f"Bearer {token}"})

        def two_idle() -> bool:
            with urllib.request.urlopen(req, timeout=10) as r:
                locs = json.load(r)["locations"]
            return len(locs) == 2 and all(loc["status"] == "idle" for loc in locs)

        assert wait_until(two_idle, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        proc.wait(30)
    assert time.monotonic() - t0 < 15
    rooms = list((tmp_path / "demo").glob("room-*/edge.log"))
    assert len(rooms) == 2


def test_validate_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[api]\nport = 8001\n[sessions]\ndefault_name = "Simulation"\n')
    res = subprocess.run([sys.executable, "-m", "coordinator", "--config", str(good),
                          "--validate-config"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nport = -1\nsurprise = 2\n")
    res = subprocess.run([sys.executable, "-m", "coordinator", "--config", str(bad),
                          "--validate-config"], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert "api.port" in res.stderr and "api.surprise" in res.stderr
