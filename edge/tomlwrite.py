"""Writing TOML: the small subset the room box's own files use.

Python reads TOML (tomllib) but does not write it. The first boot rewrites the edge's
configuration and its settings file, so this writes what `tomllib.loads` gives back:
tables, arrays of tables, strings, integers, floats, booleans and (nested) arrays of
those. `tomllib.loads(dumps(d)) == d` for every such `d`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
            "\f": "\\f", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return '"' + _NEEDS_ESCAPE.sub(
        lambda m: _ESCAPES.get(m[0], f"\\u{ord(m[0]):04x}"), s) + '"'


def _key(k: str) -> str:
    return k if BARE_KEY.match(k) else _string(k)


def _value(v: Any) -> str:  # noqa: PLR0911 - one return per kind of value
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, Sequence):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return (isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
            and all(isinstance(x, Mapping) for x in v))


def _table(path: list[str], table: Mapping[str, Any], out: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items()
               if not isinstance(v, Mapping) and not _is_table_array(v)]
    for k, v in scalars:
        out.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        sub = [*path, _key(k)]
        if isinstance(v, Mapping):
            out += ["", f"[{'.'.join(sub)}]"]
            _table(sub, v, out)
        elif _is_table_array(v):
            for item in v:
                out += ["", f"[[{'.'.join(sub)}]]"]
                _table(sub, item, out)


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """`data` as a TOML document, after `header` (comment lines, each starting with #)."""
    out: list[str] = [header.rstrip("\n")] if header else []
    _table([], data, out)
    return "\n".join(out).strip("\n") + "\n"
