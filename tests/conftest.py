"""Session-wide pytest configuration; shared helpers live in tests/support.py."""

from __future__ import annotations

import os

# Evidently and other tools phone home unless told not to; tests never reach the network.
os.environ.setdefault("DO_NOT_TRACK", "1")
