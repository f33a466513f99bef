"""Administration and review in real headless Chromium: users and roles, location names,
codes lists, session naming, then renaming and deleting a session behind its dialog."""

from __future__ import annotations

import re

from playwright.async_api import Browser, expect

from tests.web.conftest import SiteFactory, screenshot


async def test_administration_then_named_session_renamed_and_deleted(
        browser: Browser, make_site: SiteFactory) -> None:
    site = await make_site(["Sim room 1"])
    rid = site.rooms[0].config.room.id
    _, page = await site.login(browser)
    await page.click("nav >> text=Administration")
    await page.wait_for_url("**/admin")

    # A user, then a change of role.
    form = page.locator("#new-user")
    await form.locator("[name=username]").fill("nina")
    await form.locator("[name=display_name]").fill("Nina N.")
    await form.locator("[name=role]").select_option("trainer")
    await form.locator("[name=password]").fill("nina-password-1")
    await form.locator("button[type=submit]").click()
    row = page.locator("#users tbody tr", has_text="nina")
    await expect(row).to_have_count(1)
    await row.locator("select").select_option("technician")
    await expect(page.locator("#toasts")).to_contain_text("nina is now Technician")
    users = (await site.api("GET", "/users"))["users"]
    assert next(u for u in users if u["username"] == "nina")["role"] == "technician"

    # The location's name, kept by the coordinator.
    loc_row = page.locator("#admin-locations tbody tr", has_text=rid)
    await expect(loc_row).to_contain_text("cam1 (online)")
    await loc_row.locator("text=Rename").click()
    await page.fill("#loc-name", "Debrief room")
    await page.click("#dialog-ok")
    await expect(loc_row).to_contain_text("Debrief room")

    # A codes list: a line that does not read keeps the dialog open with the reason.
    await page.click("#new-codes-list")
    await page.fill("#cl-name", "Resus")
    await page.fill("#cl-codes", "a Airway\nCompressions")
    await page.click("#dialog-ok")
    await expect(page.locator("#dialog-error")).to_contain_text("line 2")
    await expect(page.locator("#dialog")).to_be_visible()
    await page.fill("#cl-codes", "a Airway\nc Compressions #cc3333")
    await page.click("#dialog-ok")
    await expect(page.locator("#codes-lists")).to_contain_text("Compressions")
    lists = (await site.api("GET", "/codes-lists"))["lists"]
    assert [(c["key"], c["label"], c["color"]) for c in lists[0]["codes"]] == [
        ("a", "Airway", "#3366cc"), ("c", "Compressions", "#cc3333")]

    # Session names: a default name, not editable before saving.
    naming = page.locator("#naming")
    await naming.locator("[name=default_name]").fill("Simulation")
    await naming.locator("[name=edit_before_save]").uncheck()
    await naming.locator("button[type=submit]").click()
    await expect(page.locator("#toasts")).to_contain_text("Naming saved")
    assert await site.api("GET", "/settings/naming") == {"default_name": "Simulation",
                                                         "edit_before_save": False}
    await page.evaluate("scrollTo(0, 0)")
    await screenshot(page, "admin")

    # Record and stop: the Save session step proposes the name and does not let it change.
    await page.goto(f"{site.base}/locations/{rid}")
    await expect(page.locator("#room-name")).to_have_text("Debrief room")
    await page.click("#record")
    await expect(page.locator("#rec-duration")).to_have_text(re.compile(r"^0:0[2-9]$"),
                                                             timeout=15_000)
    await page.click("#stop")
    await page.click("#dialog-ok")
    name = page.locator("#session-name")
    await expect(name).to_have_value("Simulation 1")
    await expect(name).to_have_attribute("readonly", "")
    await page.click("#dialog-ok")
    await expect(page.locator("#room-status")).to_have_text("Idle", timeout=15_000)

    # Rename it, then delete it: each behind its dialog; deleting can be cancelled.
    await page.goto(f"{site.base}/sessions")
    row = page.locator("#sessions tbody tr", has_text="Simulation 1")
    await expect(row).to_contain_text("Debrief room")
    await row.locator("text=Rename").click()
    await page.fill("#new-name", "Simulation 1 (debriefed)")
    await page.click("#dialog-ok")
    row = page.locator("#sessions tbody tr", has_text="debriefed")
    await expect(row).to_have_count(1)
    await row.locator("text=Delete").click()
    await expect(page.locator("#dialog h2")).to_have_text("Delete this session?")
    await page.click("#dialog-cancel")
    await expect(row).to_have_count(1)
    await row.locator("text=Delete").click()
    await page.click("#dialog-ok")
    await expect(row).to_have_count(0)
    assert (await site.api("GET", "/sessions"))["sessions"] == []
    assert any(site.rooms[0].config.storage.path.rglob("*.mp4"))  # the files are kept
    assert site.page_errors == []
