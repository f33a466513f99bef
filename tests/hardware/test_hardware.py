"""The hardware folder agrees with itself and with the pin map.

`hardware/pinmap.toml` is the one place the wiring is written down; the drawing, the
parts list and the notes follow it. Each check is a small function that returns the
problems it finds; it is run on the real files (no problems) and on a copy broken on
purpose (the problem is found), so every check is known to be able to fail.
Standard library only: tomllib, csv, xml.etree, re, urllib.parse.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"
SVG_NS = "http://www.w3.org/2000/svg"

LED_MAX_MA = 8.0     # our limit per LED; a pin is rated 16 mA at most
LED_MIN_MA = 1.0     # below this an indicator LED is too dim to read across a room
ALL_PINS_MAX_MA = 50.0
WIRED = ("button", "led", "tally")
LEDS = ("led", "tally")

PARTS_HEADER = ["item", "part", "example_part_number", "quantity", "required", "notes"]
PARTS_NEEDED = ["item", "part", "example_part_number", "quantity", "required"]
REQUIRED_VALUES = {"yes", "one of", "optional", "Pi 5"}

Pinmap = dict[str, Any]


# -- reading ----------------------------------------------------------------------------


def read(name: str) -> str:
    return (HARDWARE / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def pinmap() -> Pinmap:
    return tomllib.loads(read("pinmap.toml"))


@pytest.fixture(scope="module")
def svg() -> str:
    return read("wiring.svg")


def led_ma(pm: Pinmap, name: str) -> float:
    """The current through an LED of the pin map when its pin is high, in mA."""
    led = pm[name]
    return (float(pm["logic_v"]) - float(led["forward_v"])) / float(led["series_ohm"]) * 1000


def agrees(shown: str, exact: float) -> bool:
    """`shown` is `exact` rounded to the digits it shows."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - exact) <= 0.5 * 10.0 ** -decimals + 1e-9


def ohms(value: str, kilo: str) -> float:
    return float(value) * (1000 if kilo else 1)


def ohm_words(value: float) -> str:
    """220 -> '220 ohm', 1000 -> '1 kohm': how parts.csv writes a resistor."""
    if value >= 1000:
        return f"{value / 1000:g} kohm"
    return f"{value:g} ohm"


# -- the drawing ------------------------------------------------------------------------


def parse_svg(text: str) -> ET.Element:
    return ET.fromstring(text.encode("utf-8"))


def svg_problems(text: str) -> list[str]:
    """An SVG document: XML, the SVG namespace, a viewBox and a title."""
    try:
        root = parse_svg(text)
    except ET.ParseError as e:
        return [f"not XML: {e}"]
    problems = []
    if root.tag != f"{{{SVG_NS}}}svg":
        problems.append(f"root element is {root.tag}, not svg in the SVG namespace")
    if not root.get("viewBox"):
        problems.append("no viewBox")
    if root.find(f"{{{SVG_NS}}}title") is None:
        problems.append("no <title>")
    return problems


def drawn_text(root: ET.Element) -> str:
    """Every piece of visible text of the drawing, one <text> element a line."""
    lines = ("".join(t.itertext()) for t in root.iter(f"{{{SVG_NS}}}text"))
    return "\n".join(" ".join(line.split()) for line in lines)


def text_of(root: ET.Element, element_id: str) -> str | None:
    for el in root.iter():
        if el.get("id") == element_id:
            return " ".join("".join(el.itertext()).split())
    return None


def missing_pins(text: str, pm: Pinmap) -> list[str]:
    """The pins of the pin map the drawing does not name: BCM and physical numbers."""
    missing = []
    for name in WIRED:
        wired = pm[name]
        if not re.search(rf"\bBCM\s?{wired['bcm']}\b", text):
            missing.append(f"{name}: BCM{wired['bcm']}")
        for key in ("physical", "ground_physical"):
            if not re.search(rf"\bpin {wired[key]}\b", text):
                missing.append(f"{name}: pin {wired[key]} ({key})")
    return missing


MINUS = "\N{MINUS SIGN}"  # the drawing's typography; a hyphen is accepted too
CURRENT = re.compile(r"\(\s*(?P<logic>[\d.]+)\s*V\s*[" + MINUS + r"-]\s*"
                     r"(?P<vf>[\d.]+)\s*V\s*\)\s*/\s*"
                     r"(?P<r>[\d.]+)\s*(?P<k>k?)Ω\s*=\s*(?P<ma>[\d.]+)\s*mA")
RESISTOR = re.compile(r"(?P<r>\d+(?:\.\d+)?)\s*(?P<k>k?)Ω")
MILLIAMPS = re.compile(r"(?P<ma>\d+(?:\.\d+)?)\s*mA")


def printed_value_problems(root: ET.Element, pm: Pinmap) -> list[str]:
    """The resistors, formulas and currents printed on the drawing are the pin map's."""
    problems = []
    for name in LEDS:
        led = pm[name]
        exact = led_ma(pm, name)
        resistor = text_of(root, f"{name}-resistor") or ""
        m = RESISTOR.search(resistor)
        if not m or ohms(m["r"], m["k"]) != float(led["series_ohm"]):
            problems.append(f"{name}: resistor printed {resistor!r}, pin map has "
                            f"{led['series_ohm']} Ω")
        current = text_of(root, f"{name}-current") or ""
        c = CURRENT.search(current)
        if not c:
            problems.append(f"{name}: no (V - Vf) / R = I formula in {current!r}")
        elif (float(c["logic"]) != float(pm["logic_v"]) or float(c["vf"]) != float(led["forward_v"])
              or ohms(c["r"], c["k"]) != float(led["series_ohm"]) or not agrees(c["ma"], exact)):
            problems.append(f"{name}: printed {current!r}, pin map gives ({pm['logic_v']} V - "
                            f"{led['forward_v']} V) / {led['series_ohm']} Ω = {exact:.2f} mA")
        budget = text_of(root, f"{name}-budget") or ""
        b = MILLIAMPS.search(budget)
        if not b or not agrees(b["ma"], exact):
            problems.append(f"{name}: current budget shows {budget!r}, not {exact:.2f} mA")
    total = text_of(root, "total-budget") or ""
    t = MILLIAMPS.search(total)
    exact_total = sum(led_ma(pm, name) for name in LEDS)
    if not t or not agrees(t["ma"], exact_total):
        problems.append(f"total budget shows {total!r}, not {exact_total:.2f} mA")
    fitted_text = (text_of(root, "tally-fitted") or "").lower()
    says_not_fitted = "not fitted" in fitted_text
    if says_not_fitted == bool(pm["tally"]["fitted"]):
        problems.append(f"tally: the drawing says {fitted_text!r}, the pin map fitted = "
                        f"{pm['tally']['fitted']}")
    return problems


def test_the_drawing_is_an_svg_document(svg: str) -> None:
    assert svg_problems(svg) == []


def test_a_drawing_without_the_svg_namespace_is_refused(svg: str) -> None:
    assert svg_problems(svg.replace(f'xmlns="{SVG_NS}"', "", 1)) != []
    assert svg_problems(svg[: len(svg) // 2]) != []  # cut short: not XML


def test_the_drawing_names_every_pin_of_the_pin_map(svg: str, pinmap: Pinmap) -> None:
    text = drawn_text(parse_svg(svg))
    assert missing_pins(text, pinmap) == []


def test_a_pin_missing_from_the_drawing_is_found(svg: str, pinmap: Pinmap) -> None:
    text = drawn_text(parse_svg(svg))
    button = pinmap["button"]
    no_pin = re.sub(rf"\bpin {button['physical']}\b", "pin ?", text)
    assert missing_pins(no_pin, pinmap) == [f"button: pin {button['physical']} (physical)"]
    moved = {**pinmap, "led": {**pinmap["led"], "bcm": 5, "ground_physical": 39}}
    assert missing_pins(text, moved) == ["led: BCM5", "led: pin 39 (ground_physical)"]


@pytest.mark.parametrize("name", LEDS)
def test_led_currents_are_within_the_pins_limits(pinmap: Pinmap, name: str) -> None:
    current = led_ma(pinmap, name)
    assert LED_MIN_MA < current <= LED_MAX_MA, f"{name}: {current:.2f} mA"


def test_all_leds_together_stay_within_the_headers_total(pinmap: Pinmap) -> None:
    assert sum(led_ma(pinmap, name) for name in LEDS) <= ALL_PINS_MAX_MA


def test_a_too_small_or_too_large_resistor_breaks_the_limits(pinmap: Pinmap) -> None:
    small = {**pinmap, "led": {**pinmap["led"], "series_ohm": 100}}
    assert led_ma(small, "led") > LED_MAX_MA
    large = {**pinmap, "led": {**pinmap["led"], "series_ohm": 2200}}
    assert led_ma(large, "led") <= LED_MIN_MA


def test_the_drawing_prints_the_pin_maps_resistors_and_currents(svg: str,
                                                                pinmap: Pinmap) -> None:
    assert printed_value_problems(parse_svg(svg), pinmap) == []


def test_a_pin_map_change_not_drawn_is_found(svg: str, pinmap: Pinmap) -> None:
    root = parse_svg(svg)
    other_r = {**pinmap, "led": {**pinmap["led"], "series_ohm": 330}}
    found = printed_value_problems(root, other_r)
    assert [p.split(" ")[0] for p in found] == ["led:", "led:", "led:", "total"]
    other_vf = {**pinmap, "tally": {**pinmap["tally"], "forward_v": 1.8}}
    assert any(p.startswith("tally: printed") for p in printed_value_problems(root, other_vf))
    fitted = {**pinmap, "tally": {**pinmap["tally"], "fitted": True}}
    assert any("fitted" in p for p in printed_value_problems(root, fitted))


def test_the_drawing_has_its_title_block_and_the_button_warning(svg: str) -> None:
    text = drawn_text(parse_svg(svg))
    for needed in ("roomrec", "REVISION", "2026-12", "3\N{EN DASH}6 V", "no built-in resistor",
                   "not fitted"):
        assert needed.lower() in text.lower(), needed


# -- the parts list ---------------------------------------------------------------------


def parts_problems(text: str, pm: Pinmap) -> list[str]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != PARTS_HEADER:
        return [f"header is {rows[0] if rows else None}, not {PARTS_HEADER}"]
    problems = []
    parts = [dict(zip(PARTS_HEADER, r, strict=False)) for r in rows[1:]]
    groups: dict[str, list[str]] = {}
    for n, (raw, row) in enumerate(zip(rows[1:], parts, strict=True), start=2):
        if len(raw) != len(PARTS_HEADER):
            problems.append(f"line {n}: {len(raw)} cells, not {len(PARTS_HEADER)}")
            continue
        problems += [f"line {n}: empty {key}" for key in PARTS_NEEDED if not row[key].strip()]
        if not row["quantity"].isdigit() or int(row["quantity"]) < 1:
            problems.append(f"line {n}: quantity {row['quantity']!r} is not a count")
        if row["required"] not in REQUIRED_VALUES:
            problems.append(f"line {n}: required {row['required']!r} not in "
                            f"{sorted(REQUIRED_VALUES)}")
        if row["required"] == "one of":
            groups.setdefault(re.sub(r"\D.*", "", row["item"]), []).append(row["item"])
    items = [row["item"] for row in parts]
    problems += [f"item {i} listed twice" for i in sorted(set(items)) if items.count(i) > 1]
    problems += [f"'one of' group {g} has only {members}" for g, members in groups.items()
                 if len(members) < 2]
    names = " ".join(row["part"] for row in parts)
    problems += [f"no {board}" for board in ("Raspberry Pi 4", "Raspberry Pi 5")
                 if board not in names]
    button = [row for row in parts if "push button" in row["part"].lower()]
    if not any("3-6 V" in r["part"] and "without" in r["part"] for r in button):
        problems.append("no push button with a 3-6 V LED without a built-in resistor")
    for name, ref in (("led", "R1"), ("tally", "R3")):
        want = ohm_words(float(pm[name]["series_ohm"]))
        resistors = [row["part"] for row in parts if re.search(rf"\b{ref}\b", row["part"])]
        if not any(want in part for part in resistors):
            problems.append(f"{ref} ({name}) is {resistors}, not {want} as in the pin map")
    return problems


def test_the_parts_list_is_complete(pinmap: Pinmap) -> None:
    assert parts_problems(read("parts.csv"), pinmap) == []


def test_a_broken_parts_list_is_found(pinmap: Pinmap) -> None:
    text = read("parts.csv")
    lines = text.splitlines()
    assert parts_problems("\n".join(lines[1:]), pinmap) != []          # no header
    pi4_row = next(n for n, line in enumerate(lines) if "Raspberry Pi 4 Model B 4GB" in line)
    without_pi4 = "\n".join(line for n, line in enumerate(lines) if n != pi4_row)
    found = parts_problems(without_pi4, pinmap)
    assert "no Raspberry Pi 4" in found
    assert any(p.startswith("'one of' group 1 ") for p in found)
    empty_part = lines[:]
    empty_part[1] = ",".join(next(csv.reader([lines[1]]))[:1] + [""] + ["x"] * 4)
    assert any("empty part" in p for p in parts_problems("\n".join(empty_part), pinmap))
    other_r = {**pinmap, "led": {**pinmap["led"], "series_ohm": 330}}
    assert any(p.startswith("R1 (led)") for p in parts_problems(text, other_r))


# -- camera notes -----------------------------------------------------------------------


RTSP_URL = re.compile(r"\brtsps?://[^\s`|<>()\"']+", re.IGNORECASE)
MAKERS = ("Axis", "Hikvision", "Dahua", "Amcrest", "Reolink", "Hanwha", "Bosch", "UniFi")


def camera_url_problems(text: str) -> list[str]:
    urls = RTSP_URL.findall(text)
    problems = [] if len(urls) >= 10 else [f"only {len(urls)} RTSP URLs"]
    for url in urls:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            problems.append(f"{url}: does not parse: {e}")
            continue
        if parts.scheme != "rtsp":
            problems.append(f"{url}: scheme {parts.scheme}, not rtsp")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            problems.append(f"{url}: has credentials in it")
        if not parts.hostname:
            problems.append(f"{url}: no host")
    return problems


def test_every_camera_url_is_plain_rtsp_without_credentials() -> None:
    assert camera_url_problems(read("cameras.md")) == []


def test_a_camera_url_with_credentials_or_another_scheme_is_found() -> None:
    text = read("cameras.md")
    with_password = text.replace("rtsp://HOST/axis-media", "rtsp://root:secret@HOST/axis-media",
                                 1)
    assert any("credentials" in p for p in camera_url_problems(with_password))
    secure = text.replace("rtsp://HOST:554/h264Preview_01_main",
                          "rtsps://HOST:554/h264Preview_01_main", 1)
    assert any("scheme rtsps" in p for p in camera_url_problems(secure))
    bad_port = text.replace("rtsp://HOST:554/", "rtsp://HOST:55x/", 1)
    assert any("does not parse" in p for p in camera_url_problems(bad_port))
    assert camera_url_problems("no addresses here") == ["only 0 RTSP URLs"]


def test_the_camera_notes_cover_the_makes_usb_and_probe() -> None:
    text = read("cameras.md")
    for needed in (*MAKERS, "/dev/video", "roomrec-edge probe", "NTP", "RTCP", "AAC"):
        assert needed in text, needed
    usb = re.search(r"v4l2://[^\s`|]+", text)
    assert usb is not None
    parts = urlsplit(usb.group(0))
    assert parts.scheme == "v4l2" and parts.path.startswith("/dev/video")
    assert {"input_format", "video_size", "framerate"} <= {
        kv.split("=")[0] for kv in parts.query.split("&")}


# -- storage notes ----------------------------------------------------------------------


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a markdown text, as rows of cells (the separator row left out)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def storage_table_problems(text: str) -> list[str]:
    """The table of Mbit/s against GB per hour and per 8 h day adds up, row by row."""
    tables = [t for t in markdown_tables(text)
              if t[0][:3] == ["Mbit/s", "GB per hour", "GB per 8 h day"]]
    if len(tables) != 1:
        return [f"{len(tables)} tables of Mbit/s, GB per hour, GB per 8 h day"]
    rows = tables[0][1:]
    problems = [] if len(rows) >= 5 else [f"only {len(rows)} rows"]
    for row in rows:
        mbit, per_hour, per_day = row[:3]
        exact_hour = float(mbit) * 1e6 * 3600 / 8 / 1e9
        if not agrees(per_hour, exact_hour):
            problems.append(f"{mbit} Mbit/s is {exact_hour:g} GB per hour, not {per_hour}")
        if not agrees(per_day, exact_hour * 8):
            problems.append(f"{mbit} Mbit/s is {exact_hour * 8:g} GB per 8 h, not {per_day}")
    return problems


def test_the_storage_table_agrees_with_its_arithmetic() -> None:
    text = read("storage.md")
    assert storage_table_problems(text) == []
    assert re.search(r"^\| 4 \| 1\.8 \|", text, re.MULTILINE)  # the README's example


def test_a_wrong_storage_figure_is_found() -> None:
    text = read("storage.md")
    wrong = text.replace("| 4 | 1.8 | 14.4 |", "| 4 | 1.8 | 18 |", 1)
    assert storage_table_problems(wrong) == ["4 Mbit/s is 14.4 GB per 8 h, not 18"]
    wrong = text.replace("| 8 | 3.6 |", "| 8 | 4.5 |", 1)
    assert storage_table_problems(wrong) == ["8 Mbit/s is 3.6 GB per hour, not 4.5"]
    assert storage_table_problems("no table") != []


def test_the_storage_notes_cover_wear_reserve_and_power_loss() -> None:
    text = read("storage.md")
    for needed in ("fdatasync", "journald", "High-endurance", "SSD", "reserve_mb",
                   "disk_full", "release_after_hours", "0.5 s", "UPS"):
        assert needed in text, needed
