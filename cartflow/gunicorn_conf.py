"""gunicorn settings for `make run` (Procfile) and the Docker image: ``gunicorn -c python:cartflow.gunicorn_conf``.

Bind address, worker and thread counts come from the command line or gunicorn's own environment
variables (``WEB_CONCURRENCY``); this file fixes what does not vary between deployments.
"""

import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from cartflow.logconfig import logging_dict

# Threads, not processes, for the many short requests that wait on PostgreSQL, Redis and Stripe.
# 8 threads per worker (x 2 workers): a confirm waits on Stripe for hundreds of milliseconds, and at Stripe's
# 25 confirms/s about 10-15 of them are in flight at once; with 4 threads a realistic Stripe capped full
# checkouts at 13/s, with 8 they reach Stripe's 25/s. More threads buy nothing there and cost the CPU-bound
# hot rush (16 threads: 222 -> 167 starts/s, from GIL and row contention). docs/performance.md has the
# measurement ("Concurrency: why 2 workers x 8 threads", "Worker layouts for the hot rush"). Each thread
# keeps one PostgreSQL connection (CARTFLOW_DB_CONN_MAX_AGE): 16 per host.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# No control socket: several gunicorns on one machine would fight over ~/.gunicorn/gunicorn.ctl.
control_socket_disable = True
# Request lines are logged by cartflow.middleware (structlog, with the request id); gunicorn's own lines
# (boot, worker exits) go through the same structlog formatter.
accesslog = None
logconfig_dict = logging_dict(
    level=os.environ.get("LOG_LEVEL", "INFO"), fmt=os.environ.get("CARTFLOW_LOG_FORMAT", "auto")
)
logconfig_dict["loggers"].update(
    {
        "gunicorn.error": {"level": "INFO", "handlers": ["default"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["default"], "propagate": False},
    }
)

# --- Prometheus multiprocess mode (docs/operations.md, "Metrics") ---
# Every worker is a process of its own: without a shared directory each would count only its own requests
# and a scrape would see whichever worker answered. prometheus_client decides its mode when it is first
# imported, so the directory is set here, in the master, before any worker imports the app. Unset, each
# gunicorn gets a private directory (removed on exit); a deployment sets PROMETHEUS_MULTIPROC_DIR to share
# one with the Celery processes of the same host (`make run` does).
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cartflow-metrics-")
METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

from prometheus_client import multiprocess  # noqa: E402 - only after the directory is in the environment


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_metric_files(directory: Path) -> list[Path]:
    """The files of processes that no longer run (``counter_<pid>.db``, ``gauge_livesum_<pid>.db``, …)."""
    stale = []
    for path in directory.glob("*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            stale.append(path)
    return stale


def on_starting(server: Any) -> None:
    """A new server starts from zero: the files a previous run left behind go. Files of processes that run
    now stay, so a Celery worker sharing the directory that started a moment earlier keeps its counts."""
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for path in stale_metric_files(METRICS_DIR):
        path.unlink(missing_ok=True)
    _listen_per_worker(server.cfg)


# --- One listening socket per worker (CARTFLOW_WEB_REUSE_PORT: auto, 1 or 0) ---
# A keep-alive connection stays with the worker that accepted it. With one socket shared by every worker, 64
# clients connecting at once were taken 52/12 or 42/22 by two workers, and the fuller worker's clients queued
# longest and set the p99. With SO_REUSEPORT (gunicorn's reuse_port) each worker binds a socket of its own and
# the kernel spreads new connections over them: in the hot rush, two servers side by side (bench/ab.py), the
# p99 x0.71 and x0.72 with rates x1.04 and x1.12 (docs/performance.md, "One listening socket per worker").
# "auto" turns it on with two or more workers on a fixed TCP port; with one worker the port would be
# closed while its successor starts. A worker that stops drops the connections still queued on its socket
# unless the host sets net.ipv4.tcp_migrate_req=1 (docs/deploy.md).
def _listen_per_worker(cfg: Any) -> None:
    wanted = os.environ.get("CARTFLOW_WEB_REUSE_PORT", "auto").strip().lower()
    addresses = [a for a in cfg.address if isinstance(a, tuple)]
    if wanted in ("0", "false", "off", "no"):
        cfg.set("reuse_port", False)
    elif wanted in ("1", "true", "on", "yes") or (
        cfg.workers > 1 and addresses and len(addresses) == len(cfg.address) and all(port for _, port in addresses)
    ):
        cfg.set("reuse_port", True)
    if cfg.reuse_port:
        for host, port in addresses:
            _refuse_if_taken(host, port)


def _refuse_if_taken(host: str, port: int) -> None:
    """Sockets that all set SO_REUSEPORT share a port silently, so a second CartFlow started on a port already
    served would take half its connections instead of failing: a plain bind (no SO_REUSEPORT) tells first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SystemExit(f"{host}:{port} is already in use (another server listens on it)") from None
        raise
    finally:
        probe.close()


def child_exit(server: Any, worker: Any) -> None:
    """A worker died or was replaced: its counters stay in the sum (its files are kept, so nothing goes
    backwards), its live gauges go."""
    multiprocess.mark_process_dead(worker.pid, str(METRICS_DIR))


def on_exit(server: Any) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
