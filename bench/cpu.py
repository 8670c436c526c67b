"""Where the two cores went: CPU seconds by process group, read from /proc before and after a workload.

On a 2-core machine the load driver, gunicorn, PostgreSQL, Redis and the Stripe emulator all share the
same CPUs, so a request's cost is the CPU every one of them spent on it. :func:`cpu_snapshot` sums
``utime + stime`` of every live process by group; the difference of two snapshots divided by the
requests served is the CPU milliseconds per request that ``make bench`` prints under its table.

Linux only (``/proc``); elsewhere the snapshot is empty and the breakdown is skipped. Each process counts
its own CPU plus that of its children that have exited and been reaped (``cutime``/``cstime``): a
PostgreSQL backend that lives for one Celery task is counted in the postmaster once it is gone.

On a machine that others use too, a :class:`Scope` keeps their processes out: only the sessions the bench
started (each child leads its own) and the PostgreSQL backends of the bench's database. Then PostgreSQL's
shared background processes and backends that have already exited are not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# (group, test on "comm\0cmdline"), first match wins.
_GROUPS = (
    ("web", lambda s: "gunicorn" in s),
    ("celery", lambda s: "celery" in s),
    ("stripe emulator", lambda s: "stripe_emulator" in s),
    ("postgres", lambda s: s.startswith("postgres")),
    ("redis", lambda s: s.startswith("redis-server")),
)


@dataclass(frozen=True)
class Scope:
    """The processes to count: those in ``sessions``, and PostgreSQL backends connected to ``database``."""

    sessions: frozenset[int]
    database: str

    def counts(self, group: str, session: int, cmdline: str) -> bool:
        if group == "postgres":  # a backend's title: "postgres: <user> <database> <client> <state>"
            return f" {self.database} " in f"{cmdline} "
        return session in self.sessions


def cpu_snapshot(scope: Scope | None = None) -> dict[str, float]:
    """CPU seconds used so far by each group; ``driver`` is this process (the load driver)."""
    out: dict[str, float] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = sum(int(f) for f in fields[11:15]) / _TICK  # utime, stime, cutime, cstime
        if int(entry.name) == me:
            group = "driver"
        else:
            label = f"{comm}\0{cmdline}"
            group = next((name for name, test in _GROUPS if test(label)), None)
            if group and scope is not None and not scope.counts(group, int(fields[3]), cmdline):
                group = None
        if group:
            out[group] = out.get(group, 0.0) + seconds
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request by group (and ``total``), groups that used any CPU only."""
    if not requests or not before:
        return {}
    spent = {g: (after.get(g, 0.0) - before.get(g, 0.0)) * 1000 / requests for g in after}
    spent = {g: round(ms, 2) for g, ms in sorted(spent.items(), key=lambda kv: -kv[1]) if ms > 0}
    spent["total"] = round(sum(spent.values()), 2)
    return spent
