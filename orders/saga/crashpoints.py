"""Where a test can make the saga's process die: before and after every step's side effect.

Points are named ``<step>:before`` (after "about to" is saved, before the side effect) and ``<step>:after``
(after the side effect, before "done" is saved). The steps call :func:`crash_point` at each; outside tests
nothing is armed and a point costs one set lookup and one falsy check.
"""

from __future__ import annotations

import os
import time


class SimulatedCrash(BaseException):  # noqa: N818 - it is not an error, it is the process dying
    """Raised at an armed crash point; BaseException so no ``except Exception`` in the saga catches it."""


# Armed by tests/orders/test_saga_failures.py and others. One-shot: a point fires once, then is disarmed.
crash_points: set[str] = set()

# A real crash, for tests that SIGKILL a live process (tests/e2e/test_crash_recovery.py): with
# CARTFLOW_TEST_PAUSE_AT=<point> and CARTFLOW_TEST_PAUSE_FILE=<path> in its environment, the first process
# to reach the point creates the file (holding its PID) and blocks there until it is killed. Read once at
# import; unset (always outside tests) it costs one falsy check per point.
_PAUSE_AT = os.environ.get("CARTFLOW_TEST_PAUSE_AT", "")
_PAUSE_FILE = os.environ.get("CARTFLOW_TEST_PAUSE_FILE", "")


def crash_point(name: str) -> None:
    if name in crash_points:
        crash_points.discard(name)
        raise SimulatedCrash(name)
    if _PAUSE_AT and name == _PAUSE_AT and _PAUSE_FILE:
        _pause_until_killed(name)


def _pause_until_killed(name: str) -> None:
    try:  # O_EXCL: one process pauses; a fresh one started after the kill runs through
        fd = os.open(_PAUSE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()} {name}\n".encode())
    os.close(fd)
    while True:
        time.sleep(0.05)
