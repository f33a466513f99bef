"""The room box's pin map: what is wired to which pin of the 40-pin header, as data.

`hardware/pinmap.toml` is the one place the wiring is written down (the drawing and the
parts list follow it); the edge package carries it as `edge/data/pinmap.toml`, and the
GPIO configuration takes its defaults from it. Loading checks every physical pin
against the header (a wire on pin 11 is BCM 17, or the file is wrong), every ground pin
against the header's grounds, and that no pin is used twice.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.gpio.pins import GpioError

# The 40-pin header of the Raspberry Pi 4 and 5 (and every 40-pin Pi before them):
# physical pin -> BCM GPIO number, for the pins that carry a GPIO.
PHYSICAL_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24,
    19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12,
    33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}
BCM_TO_PHYSICAL: dict[int, int] = {b: p for p, b in PHYSICAL_TO_BCM.items()}
GROUND_PINS = frozenset({6, 9, 14, 20, 25, 30, 34, 39})

# GPIOs a room box keeps free, and why (a configured pin on one of them is refused).
RESERVED_BCM: dict[int, str] = {
    0: "the HAT ID EEPROM (ID_SD), read by PoE HATs",
    1: "the HAT ID EEPROM (ID_SC), read by PoE HATs",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WiredPin(_Strict):
    bcm: int = Field(ge=0, le=27, description="BCM GPIO number")
    physical: int = Field(ge=1, le=40, description="pin of the 40-pin header")
    ground_physical: int = Field(ge=1, le=40, description="the ground pin wired beside it")

    @model_validator(mode="after")
    def _verify(self) -> WiredPin:
        verify_on_header(self.bcm, self.physical, self.ground_physical)
        return self


class InputWiring(WiredPin):
    pull: Literal["up"] = Field(description="the switch closes to ground against a pull-up")


class LedWiring(WiredPin):
    forward_v: float = Field(gt=0, lt=3.3, description="the LED's forward voltage")
    series_ohm: float = Field(gt=0, description="its series resistor")
    fitted: bool = Field(default=True, description="fitted on the standard box")


class PinMap(_Strict):
    format: Literal["roomrec.pinmap/1"]
    header: str
    logic_v: float = Field(gt=0)
    button: InputWiring
    led: LedWiring
    tally: LedWiring

    @model_validator(mode="after")
    def _verify(self) -> PinMap:
        verify_distinct({"button": self.button.bcm, "led": self.led.bcm,
                         "tally": self.tally.bcm})
        return self

    def led_current_ma(self, led: LedWiring) -> float:
        """The current through `led` when its pin is high, in mA."""
        return (self.logic_v - led.forward_v) / led.series_ohm * 1000


def verify_on_header(bcm: int, physical: int, ground: int) -> None:
    if PHYSICAL_TO_BCM.get(physical) != bcm:
        where = BCM_TO_PHYSICAL.get(bcm)
        raise ValueError(f"physical pin {physical} is not GPIO{bcm}"
                         + (f" (GPIO{bcm} is pin {where})" if where else ""))
    if ground not in GROUND_PINS:
        raise ValueError(f"physical pin {ground} is not a ground pin "
                         f"(grounds: {', '.join(map(str, sorted(GROUND_PINS)))})")


def verify_distinct(pins: dict[str, int]) -> None:
    """Raise ValueError naming the first pin that two roles share."""
    used: dict[int, str] = {}
    for role, bcm in pins.items():
        if bcm in used:
            raise ValueError(f"GPIO{bcm} is used twice: {used[bcm]} and {role}")
        used[bcm] = role


def verify_not_reserved(pins: dict[str, int]) -> None:
    for role, bcm in pins.items():
        if bcm in RESERVED_BCM:
            raise ValueError(f"{role}: GPIO{bcm} is kept free for {RESERVED_BCM[bcm]}")


def parse_pinmap(text: str) -> PinMap:
    try:
        return PinMap.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise GpioError(f"pin map: not valid TOML: {e}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: "
                             f"{err['msg'].removeprefix('Value error, ')}"
                             for err in e.errors())
        raise GpioError(f"pin map: {problems}") from None


def packaged_pinmap() -> PinMap:
    """The pin map shipped with the edge package (hardware/pinmap.toml)."""
    return parse_pinmap(resources.files("edge").joinpath("data/pinmap.toml").read_text())
