"""The TOML writer gives back exactly what tomllib reads."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.tomlwrite import dumps

ROOT = Path(__file__).resolve().parents[2]

keys = st.text(min_size=1, max_size=8)
scalars = (st.text(max_size=12) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
           | st.floats(allow_nan=False) | st.booleans())
arrays = st.lists(scalars | st.lists(scalars, max_size=3), max_size=4)
values = scalars | arrays


def tables(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.dictionaries(keys, values, max_size=4)
    if depth == 0:
        return leaf
    inner = tables(depth - 1)
    return st.dictionaries(keys, values | inner | st.lists(inner, min_size=1, max_size=2),
                           max_size=4)


@given(tables(2))
def test_round_trip(data: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(data)) == data


def test_the_shipped_edge_configuration_round_trips() -> None:
    data = tomllib.loads((ROOT / "edge" / "data" / "roomrec-edge.toml").read_text())
    text = dumps(data, header="# a header\n# of two lines")
    assert text.startswith("# a header\n# of two lines\n")
    assert tomllib.loads(text) == data
    assert "[[cameras]]" in text and "[room]" in text
