"""Staff's day in the web page, in real headless Chromium: log in, record two rooms as one
composite session, watch it from a second browser, score, stop with the confirmation,
name it, find it, and play it back with every camera in step."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from playwright.async_api import Browser, Page, expect

from edge import clockcode
from tests.web.conftest import SiteFactory, screenshot

FRAME_S = 1 / 15  # the test cameras' frame interval

# Each video's picture as the viewer sees it: the painted clock's rows, as luma.
READ_CLOCKS = """() => [...document.querySelectorAll('#videos video')].map((v) => {
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const rows = v.videoWidth >= 1280 ? 32 : 16;
  const d = g.getImageData(0, 0, c.width, rows).data;
  const y = [];
  for (let i = 0; i < d.length; i += 4) {
    y.push(Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]));
  }
  return { width: c.width, height: c.height, rows, y, time: v.currentTime };
})"""


def painted_ms(frames: list[dict[str, Any]]) -> list[int]:
    out = []
    for f in frames:
        ms = clockcode.read(bytes(f["y"]), f["width"], f["rows"])
        assert ms is not None, "a video's painted clock did not read"
        out.append(ms)
    return out


async def wait_settled(page: Page) -> None:
    await expect(page.locator("#videos")).to_have_attribute("data-settled", "true",
                                                            timeout=15_000)


async def test_composite_session_from_start_to_synchronized_playback(
        browser: Browser, make_site: SiteFactory) -> None:
    site = await make_site(["Sim room 1", "Sim room 2"])
    r1, r2 = (room.config.room.id for room in site.rooms)
    codes = await site.api("POST", "/codes-lists", body={"name": "ABC", "codes": [
        {"key": "a", "label": "Airway", "color": "#cc3333"},
        {"key": "b", "label": "Breathing", "color": "#3366cc"}]}, status=201)
    observer = await site.add_user("olga", "trainer")

    _, page = await site.login(browser, shot="login")
    _, watch = await site.login(browser, observer)
    await expect(watch.locator(f"tr[data-room='{r1}'] .badge")).to_have_text("Idle")

    # Select both rooms and record them as one composite session, with the codes list.
    await page.check(f"tr[data-room='{r1}'] input[type=checkbox]")
    await page.check(f"tr[data-room='{r2}'] input[type=checkbox]")
    await page.select_option("#codes-list", label="ABC")
    await page.click("#record-composite")
    await page.wait_for_url(f"**/locations/{r1}")

    # The other browser sees the status column change without reloading.
    for rid in (r1, r2):
        await expect(watch.locator(f"tr[data-room='{rid}'] .badge")).to_have_text(
            "Recording by admin")
    await screenshot(watch, "locations")
    started = await site.api("GET", "/sessions")
    composite = started["sessions"][0]
    assert composite["kind"] == "composite"
    assert {loc["room_id"] for loc in composite["locations"]} == {r1, r2}
    assert composite["codes_list_id"] == codes["id"]

    # The location page: pictures, the running duration, scoring by key and a remark.
    await expect(page.locator("#rec-indicator")).to_be_visible()
    await expect(page.locator("#cameras img")).to_have_count(1)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#cameras img')].every(i => i.naturalWidth > 0)")
    await expect(page.locator("#codes button.code")).to_have_count(2)
    await expect(page.locator("#rec-duration")).to_have_text(re.compile(r"^0:0[3-9]$"),
                                                             timeout=15_000)
    await page.keyboard.press("a")
    await expect(page.locator("#log li.score")).to_have_count(1)
    await page.fill("#remark", "Mannequin moved")
    await page.click("#add-remark")
    await expect(page.locator("#log li.remark")).to_contain_text("Mannequin moved")
    await expect(page.locator("#rec-duration")).to_have_text(re.compile(r"^0:(0[6-9]|[1-5]\d)$"),
                                                             timeout=15_000)
    await screenshot(page, "location")
    # Going back to the locations keeps it recording.
    await page.click("text=← Locations")
    await expect(page.locator(f"tr[data-room='{r1}'] .badge")).to_have_text("Recording by admin")
    await page.click(f"tr[data-room='{r1}'] a")
    await expect(page.locator("#rec-indicator")).to_be_visible()

    # Stop: the confirmation names every location that will stop; then Save session.
    await page.click("#stop")
    dialog = page.locator("#dialog")
    await expect(dialog.locator("h2")).to_have_text("Stop this session?")
    await expect(dialog.locator(".stop-list li")).to_have_text(["Sim room 1", "Sim room 2"])
    await page.click("#dialog-ok")
    await expect(dialog.locator("h2")).to_have_text("Save session")
    await page.fill("#session-name", "Airway drill")
    await screenshot(page, "save-session")
    await page.click("#dialog-ok")
    await expect(page.locator("#room-status")).to_have_text("Idle", timeout=15_000)
    for rid in (r1, r2):
        await expect(watch.locator(f"tr[data-room='{rid}'] .badge")).to_have_text("Idle")

    # The sessions: found by searching, and opened.
    await page.click("nav >> text=Sessions")
    await page.fill("#search", "airway")
    rows = page.locator("#sessions tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Sim room 1, Sim room 2")
    await expect(rows.first).to_contain_text("Verified on central storage", timeout=30_000)
    await page.fill("#search", "")
    await screenshot(page, "sessions")
    await rows.first.locator("a").click()
    await page.wait_for_url(f"**/sessions/{composite['id']}")
    await expect(page.locator("#session-name")).to_have_text("Airway drill")
    await expect(page.locator("#videos video")).to_have_count(2)
    await expect(page.locator("#timeline .mark")).to_have_count(2)  # the score and remark
    await expect(page.locator("#play")).to_be_enabled()

    # Play: the one clock moves and every video plays.
    await page.click("#play")
    await expect(page.locator("#videos")).to_have_attribute("data-state", "playing")
    await page.wait_for_function(
        "() => Number(document.getElementById('videos').dataset.time) > 2.5", timeout=15_000)
    positions = await page.evaluate(
        "() => [...document.querySelectorAll('#videos video')].map(v => v.currentTime)")
    await page.wait_for_function(
        "(before) => [...document.querySelectorAll('#videos video')]"
        ".every((v, i) => v.currentTime > before[i] + 0.5 && !v.paused)", arg=positions)

    # Pause: the pictures on screen were taken at the same moment.
    await page.click("#play")
    await wait_settled(page)
    frames = await page.evaluate(READ_CLOCKS)
    shown = painted_ms(frames)
    assert max(shown) - min(shown) <= (FRAME_S + 0.04) * 1000, shown
    media = await site.api("GET", f"/sessions/{composite['id']}/media")
    origin_ms = _epoch_ms(media["origin_utc"])
    t = float(await page.locator("#videos").get_attribute("data-time") or "nan")
    for ms in shown:  # and at the session time the player shows
        assert -(FRAME_S + 0.06) * 1000 <= ms - (origin_ms + t * 1000) <= 60, (ms, origin_ms, t)
    await screenshot(page, "session")

    # The files download as recorded.
    first = media["tracks"][0]["segments"][0]
    async with page.expect_download() as info:
        await page.locator("#downloads a").first.click()
    download = await info.value
    path = await download.path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first["sha256"]
    assert download.suggested_filename.endswith(".mp4")

    # A click on the score jumps a few seconds before it, and stays in step there.
    notes = await site.api("GET", f"/sessions/{composite['id']}/annotations.json")
    score_at = next(_epoch_ms(a["wall_utc"]) for a in notes if a["kind"] == "score")
    await page.locator("#timeline .mark.score").click()
    await page.wait_for_function(
        f"() => Math.abs(Number(document.getElementById('videos').dataset.time) - "
        f"{max(0.0, (score_at - origin_ms) / 1000 - 3):.3f}) < 0.05")
    await wait_settled(page)
    shown = painted_ms(await page.evaluate(READ_CLOCKS))
    assert max(shown) - min(shown) <= (FRAME_S + 0.04) * 1000, shown
    assert site.page_errors == []


async def test_a_trainee_may_view_but_not_record_or_stop(browser: Browser,
                                                          make_site: SiteFactory) -> None:
    site = await make_site(["Sim room 1"])
    rid = site.rooms[0].config.room.id
    trainee = await site.add_user("tess", "trainee")
    _, page = await site.login(browser, trainee)
    await expect(page.locator(f"tr[data-room='{rid}'] .badge")).to_have_text("Idle")
    await expect(page.locator("#record-bar")).to_be_hidden()
    await expect(page.locator(f"tr[data-room='{rid}'] input[type=checkbox]")).to_be_disabled()
    await expect(page.locator("nav >> text=Administration")).to_have_count(0)

    await page.goto(f"{site.base}/locations/{rid}")
    await expect(page.locator("#room-name")).to_have_text("Sim room 1")
    await expect(page.locator("#record")).to_be_hidden()
    # Not through the API either, with the page's own login.
    r = await page.request.post(f"{site.base}/api/v1/sessions", data={"room_ids": [rid]})
    assert r.status == 403

    # Someone else records; the trainee sees it, cannot stop or score it.
    await site.api("POST", "/sessions", body={"room_ids": [rid]}, status=201)
    await expect(page.locator("#room-status")).to_have_text("Recording by admin")
    await expect(page.locator("#stop")).to_be_hidden()
    await expect(page.locator("#codes-panel")).to_be_hidden()
    session_id = (await site.api("GET", "/sessions"))["sessions"][0]["id"]
    r = await page.request.post(f"{site.base}/api/v1/sessions/{session_id}/stop", data={})
    assert r.status == 403
    await page.goto(f"{site.base}/admin")
    await expect(page.locator("h1")).to_have_text("Not allowed")
    assert site.page_errors == []


async def test_keyboard_only_at_tablet_width(browser: Browser, make_site: SiteFactory) -> None:
    site = await make_site(["Sim room 1"])
    rid = site.rooms[0].config.room.id
    ctx, page = await site.login(browser)
    await page.set_viewport_size({"width": 768, "height": 1024})
    await page.goto(f"{site.base}/locations/{rid}")
    await expect(page.locator("#record")).to_be_visible()
    for url in (f"{site.base}/locations", f"{site.base}/locations/{rid}"):
        await page.goto(url)
        await page.wait_for_load_state("networkidle")
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")

    async def tab_to(selector: str) -> None:
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate(f"document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    await expect(page.locator("#record")).to_be_visible()
    await tab_to("#record")
    await page.keyboard.press("Enter")
    await expect(page.locator("#stop")).to_be_visible(timeout=10_000)
    await tab_to("#stop")
    await page.keyboard.press("Enter")
    await expect(page.locator("#dialog h2")).to_have_text("Stop this session?")
    await page.keyboard.press("Enter")  # the focus is on "Keep recording": nothing stops
    await expect(page.locator("#dialog")).to_be_hidden()
    assert (await site.api("GET", "/sessions"))["sessions"][0]["state"] in ("starting",
                                                                         "recording")
    assert site.rooms[0].room.recording is not None
    await tab_to("#stop")
    await page.keyboard.press("Enter")
    await tab_to("#dialog-ok")
    await page.keyboard.press("Enter")
    await expect(page.locator("#dialog h2")).to_have_text("Save session")
    await page.keyboard.type("Keyboard session")
    await page.keyboard.press("Enter")
    await expect(page.locator("#room-status")).to_have_text("Idle", timeout=15_000)
    sessions = (await site.api("GET", "/sessions"))["sessions"]
    assert sessions[0]["name"] == "Keyboard session"
    await ctx.close()
    assert site.page_errors == []


def _epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000
