"""Reading the small data files bundled in :mod:`pyrovi.data`."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def read_json(filename: str) -> dict[str, Any]:
    """Return the parsed content of ``pyrovi/data/<filename>``."""
    text = resources.files("pyrovi.data").joinpath(filename).read_text(encoding="utf-8")
    return json.loads(text)


def pick_dataset(name: str | None, available: tuple[str, ...], model: str) -> str:
    """Return the data set to load (the first one when ``name`` is None) or raise."""
    chosen = available[0] if name is None else name
    if chosen not in available:
        raise ValueError(
            f"model {model!r} has no bundled data set {chosen!r}; choose one of "
            f"{', '.join(available)}"
        )
    return chosen
