"""The pin map (hardware/pinmap.toml) as the GPIO configuration's source of defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge.config import ConfigError, GpioConfig, parse
from edge.gpio.pinmap import (
    BCM_TO_PHYSICAL,
    GROUND_PINS,
    PHYSICAL_TO_BCM,
    packaged_pinmap,
    parse_pinmap,
)
from edge.gpio.pins import GpioError

ROOT = Path(__file__).resolve().parents[3]
PINMAP = ROOT / "hardware" / "pinmap.toml"


def test_the_package_carries_the_hardware_folders_pin_map() -> None:
    assert (ROOT / "edge" / "data" / "pinmap.toml").read_bytes() == PINMAP.read_bytes()
    raw = tomllib.loads(PINMAP.read_text())
    pm = packaged_pinmap()
    assert (pm.button.bcm, pm.led.bcm, pm.tally.bcm) == (
        raw["button"]["bcm"], raw["led"]["bcm"], raw["tally"]["bcm"])


def test_the_default_configuration_is_the_pin_map() -> None:
    pm = packaged_pinmap()
    g = GpioConfig()
    assert g.button_pin == pm.button.bcm
    assert g.led_pin == pm.led.bcm
    assert g.tally_pin == (pm.tally.bcm if pm.tally.fitted else None)


def test_the_header_table_is_a_bijection_of_the_28_gpios() -> None:
    assert sorted(PHYSICAL_TO_BCM.values()) == list(range(28))
    assert set(PHYSICAL_TO_BCM).isdisjoint(GROUND_PINS)
    assert all(PHYSICAL_TO_BCM[p] == b for b, p in BCM_TO_PHYSICAL.items())


def _with(**changes: dict[str, object]) -> str:
    raw = tomllib.loads(PINMAP.read_text())
    for table, values in changes.items():
        raw[table] = {**raw[table], **values}
    lines = [f'format = "{raw["format"]}"', f'header = "{raw["header"]}"',
             f"logic_v = {raw['logic_v']}"]
    for table in ("button", "led", "tally"):
        lines.append(f"[{table}]")
        for k, v in raw[table].items():
            lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                         .replace("'", '"'))
    return "\n".join(lines) + "\n"


def test_a_physical_pin_that_is_not_the_gpio_is_an_error_naming_both() -> None:
    assert parse_pinmap(_with()).button.bcm == 17  # the round trip itself is faithful
    with pytest.raises(GpioError, match=r"button: physical pin 12 is not GPIO17 "
                                        r"\(GPIO17 is pin 11\)"):
        parse_pinmap(_with(button={"physical": 12}))


def test_a_ground_that_is_not_a_ground_pin_is_an_error() -> None:
    with pytest.raises(GpioError, match=r"led: physical pin 1 is not a ground pin"):
        parse_pinmap(_with(led={"ground_physical": 1}))


def test_the_pin_map_rejects_a_pin_used_twice() -> None:
    with pytest.raises(GpioError, match=r"GPIO27 is used twice: led and tally"):
        parse_pinmap(_with(tally={"bcm": 27, "physical": 13}))


def _config(**gpio: object) -> dict[str, object]:
    return {"room": {"id": "lab-1", "name": "Lab"}, "gpio": gpio}


def test_the_config_rejects_a_pin_used_twice_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"gpio: GPIO22 is used twice: led_pin and tally_pin"):
        parse(_config(led_pin=22, tally_pin=22))
    with pytest.raises(ConfigError, match=r"GPIO5 is used twice: button_pin and led_pin"):
        parse(_config(button_pin=5, led_pin=5))


def test_the_config_keeps_the_hat_id_pins_free() -> None:
    with pytest.raises(ConfigError, match=r"tally_pin: GPIO0 is kept free for the HAT ID"):
        parse(_config(tally_pin=0))
    assert parse(_config(tally_pin=22)).gpio.tally_pin == 22
