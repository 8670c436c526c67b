"""What the browser tests share besides fixtures (conftest.py): where screenshots go and how long a step may take."""

from __future__ import annotations

from pathlib import Path

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
WAIT_MS = 30_000  # what a step may take on a loaded 2-core machine (a 3-D Secure webhook through the worker)
