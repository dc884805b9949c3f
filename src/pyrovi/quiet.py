"""Keep third-party notices that are not pyrovi's off the user's terminal.

Imported first by :mod:`pyrovi` (before anything imports :mod:`arviz`). It silences
exactly one message: ArviZ 0.23's once-a-day ``FutureWarning`` that "ArviZ is undergoing
a major refactor", which it prints on import and which says nothing about the user's
work. Every other warning, ArviZ's included, is shown as usual.
"""

from __future__ import annotations

import warnings

__all__ = ["ARVIZ_REFACTOR_MESSAGE"]

ARVIZ_REFACTOR_MESSAGE = r"\s*ArviZ is undergoing a major refactor"
"""Start of the silenced message (a regular expression; the message begins with a newline)."""

warnings.filterwarnings("ignore", message=ARVIZ_REFACTOR_MESSAGE, category=FutureWarning)
