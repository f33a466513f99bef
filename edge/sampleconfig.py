"""The sample configuration: every key with its type, default and meaning.

Generated from the configuration models themselves, so it cannot fall out of date;
`roomrec-edge sample-config` prints it and `edge/data/roomrec-edge.toml` holds a copy.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge.config import CameraConfig, EdgeConfig

EXAMPLES: dict[str, Any] = {
    "room.id": "sim-lab-1",
    "room.name": "Simulation lab 1",
}
CAMERA_EXAMPLES: list[dict[str, Any]] = [
    {"name": "front", "url": "rtsp://192.0.2.21:554/stream1", "username": "viewer",
     "password": "change-me"},
    {"name": "back", "url": "test:back?size=640x360&fps=15"},
]


def _type_name(t: Any) -> str:  # noqa: PLR0911 - one return per kind of type
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(t))
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(t))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(t)[0])
    if origin is list:
        return f"list of {_type_name(typing.get_args(t)[0])}"
    if t is type(None):
        return "unset"
    if t is SecretStr:
        return "secret str"
    return getattr(t, "__name__", str(t))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path | str):
        return json.dumps(str(value))
    if isinstance(value, SecretStr):
        return json.dumps(value.get_secret_value())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _field_lines(key: str, info: FieldInfo, value: Any) -> list[str]:
    required = info.default is PydanticUndefined and info.default_factory is None
    default = "required" if required else f"default {_toml_or_unset(info.default)}"
    lines = [f"# {info.description or key} ({_type_name(info.annotation)}; {default})"]
    lines.append(f"# {key} =" if value is None else f"{key} = {_toml(value)}")
    return lines


def _toml_or_unset(value: Any) -> str:
    return "unset" if value is None else _toml(value)


def _section(name: str, model: type[BaseModel], values: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    for key, info in model.model_fields.items():
        full = f"{name}.{key}"
        if full in EXAMPLES:
            value = EXAMPLES[full]
        elif key in values:
            value = values[key]
        else:
            value = None if info.default is PydanticUndefined else info.default
        lines += _field_lines(key, info, value)
    return lines


def render() -> str:
    out = ["# roomrec edge service configuration (TOML).",
           "# Every key is listed with its type and default; a key left out takes its",
           "# default. Check a file with: roomrec-edge --config FILE --validate-config", ""]
    for name, info in EdgeConfig.model_fields.items():
        if name == "cameras":
            out.append(f"# {info.description or 'the cameras of this room, one [[cameras]] each'}")
            for cam in CAMERA_EXAMPLES:
                out.append("[[cameras]]")
                for key, finfo in CameraConfig.model_fields.items():
                    value = cam.get(key, finfo.default)
                    out += _field_lines(key, finfo, value)
                out.append("")
            continue
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out += _section(name, model, {})
        out.append("")
    return "\n".join(out).rstrip() + "\n"
