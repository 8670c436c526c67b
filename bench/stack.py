"""The processes a benchmark or the fault campaign runs against, all on loopback and all its own.

- a private ``redis-server`` on a free port (``--save ""``), so the run can flush it and stop it freely;
- a scratch PostgreSQL database (``cartflow_bench`` by default) on the server named by ``DATABASE_URL``
  (default the local one), dropped and re-created, migrated and seeded by :func:`django_setup`;
- the Stripe emulator on a free port, posting signed webhooks to the web server;
- gunicorn on a free port (worker class, workers and threads given), and Celery worker(s) (and beat),
  in Prometheus multiprocess mode like a deployment (``PROMETHEUS_MULTIPROC_DIR``, docs/operations.md).

Every child runs in its own session and is stopped by its process group id, never by name.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "whsec_bench"


def free_port() -> int:
    """A free port below the ephemeral range. Port 0 hands out ephemeral ports, the range every outgoing
    connection takes its local port from: with thousands of bench connections, one of them took the port
    between our choice and the server's bind ("Address already in use" from the emulator)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def gunicorn_start(
    *, env: dict[str, str], workers: int, threads: int = 1, worker_class: str = "gthread"
) -> tuple[subprocess.Popen, str]:
    """A gunicorn of CartFlow on a free loopback port, in its own process group; returns (process, base URL)."""
    port = free_port()
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):  # the workers' counters add up, as under cartflow/gunicorn_conf.py
        metrics_dir = tempfile.mkdtemp(prefix="cf-bench-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, True)
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "cartflow.wsgi:application", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", str(workers), "--threads", str(threads), "--worker-class", worker_class]
        + ["--backlog", "2048"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        time.sleep(0.1)
    process_stop(proc)
    raise RuntimeError("gunicorn did not answer /healthz within 30 s")


def process_stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(interval)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
            self.popen.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def children(self) -> list[int]:
        """Direct children (gunicorn's workers, celery's pool processes)."""
        try:
            text = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Stack:
    """What :func:`start` started; ``env`` is what the server processes see (also used by ``manage.py``)."""

    db_url: str
    redis_url: str
    broker_url: str
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    web_url: str = ""
    stripe_url: str = ""
    redis_port: int = 0

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logdir / f"{name}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=env or self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    # --- redis ---
    def start_redis(self) -> Proc:
        proc = self.spawn(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--maxclients", "4096", "--dir", str(self.logdir),
            ],
        )  # fmt: skip
        import redis

        wait_until(lambda: redis.Redis(port=self.redis_port, socket_timeout=0.5).ping(), 10, "redis-server")
        return proc

    # --- the Stripe emulator ---
    def start_emulator(self, port: int, extra_env: dict[str, str] | None = None) -> Proc:
        """``extra_env``: the emulator's own settings (``STRIPE_EMULATOR_*``), which the servers never see."""
        # After django_setup: the emulator delivers only what CartFlow handles.
        from payments.webhooks.handlers import HANDLED_EVENT_TYPES

        proc = self.spawn(
            "stripe",
            [
                str(BIN / "python"), "-m", "stripe_emulator", "--host", "127.0.0.1", "--port", str(port),
                "--webhook-url", f"{self.web_url}/api/webhooks/stripe", "--webhook-secret", WEBHOOK_SECRET,
                "--enabled-events", ",".join(HANDLED_EVENT_TYPES),
            ],
            env={**self.env, **(extra_env or {})},
        )  # fmt: skip
        wait_until(
            lambda: httpx.get(f"{self.stripe_url}/_emulator/health", timeout=1).status_code == 200, 20, "emulator"
        )
        return proc

    # --- gunicorn ---
    def start_web(
        self,
        *,
        worker_class: str,
        workers: int,
        threads: int,
        name: str = "web",
        url: str = "",
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        """gunicorn on ``url`` (default ``web_url``); several web servers each get their own ``name`` and ``url``,
        and, like separate hosts, their own metrics directory (the default one is shared with Celery).
        ``extra_env``: settings of this server only (an A/B, bench/ab.py)."""
        url = url or self.web_url
        env = {**self.env, **(extra_env or {})}
        if name != "web":
            metrics_dir = self.logdir / f"metrics-{name}"
            metrics_dir.mkdir(exist_ok=True)
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        argv = [
            str(BIN / "gunicorn"), "cartflow.wsgi:application", "-c", "python:cartflow.gunicorn_conf",
            "--bind", url.removeprefix("http://"), "--workers", str(workers),
            "--worker-class", worker_class, "--threads", str(threads), "--backlog", "2048",
        ]  # fmt: skip
        proc = self.spawn(name, argv, env)
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60, "gunicorn")
        wait_until(lambda: len(proc.children()) >= workers, 30, "gunicorn workers")
        return proc

    # --- celery ---
    def start_worker(self, *, name: str = "worker", concurrency: int = 4, pool: str = "threads") -> Proc:
        argv = [
            str(BIN / "celery"), "-A", "cartflow", "worker", "--pool", pool, "--concurrency", str(concurrency),
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"{name}-{os.getpid()}@%h",
        ]  # fmt: skip
        return self.spawn(name, argv)

    def start_beat(self) -> Proc:
        schedule = self.logdir / "beat-schedule"
        argv = [
            str(BIN / "celery"), "-A", "cartflow", "beat", "--loglevel", "WARNING",
            "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--schedule", str(schedule),
        ]  # fmt: skip
        return self.spawn("beat", argv)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
        )


def new_stack(*, db_url: str, log_level: str = "WARNING", extra_env: dict[str, str] | None = None) -> Stack:
    """A Stack with free ports chosen and the environment the server processes will see."""
    logdir = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    redis_port, web_port, stripe_port = free_port(), free_port(), free_port()
    stack = Stack(
        db_url=db_url,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        broker_url=f"redis://127.0.0.1:{redis_port}/1",
        logdir=logdir,
        web_url=f"http://127.0.0.1:{web_port}",
        stripe_url=f"http://127.0.0.1:{stripe_port}",
        redis_port=redis_port,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "CARTFLOW_", "DJANGO_"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": stack.redis_url,
            "CELERY_BROKER_URL": stack.broker_url,
            "STRIPE_API_BASE": stack.stripe_url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CARTFLOW_DEV": "1",
            "CARTFLOW_CART_WRITE_RATE": "100000000/min",
            "CARTFLOW_CART_CREATE_RATE": "100000000/min",
            "CARTFLOW_CHECKOUT_RATE": "100000000/min",
            # Every simulated buyer comes from 127.0.0.1, one client to the per-client hold caps: off.
            "CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT": "0",
            "CARTFLOW_MAX_UNITS_PER_PRODUCT": "0",
            "CARTFLOW_FLASH_MAX_UNITS_PER_BUYER": "0",
            "CARTFLOW_CART_TTL_SECONDS": "3600",
            "CARTFLOW_LOG_FORMAT": "json",
            "LOG_LEVEL": log_level,
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "cartflow.settings",
            # One directory for the web workers, the Celery workers and beat: /metrics adds them all up.
            "PROMETHEUS_MULTIPROC_DIR": str(logdir / "metrics"),
            **(extra_env or {}),
            # A/B runs: BENCH_SET_CARTFLOW_X=1 sets CARTFLOW_X=1 for the servers only.
            **{k.removeprefix("BENCH_SET_"): v for k, v in os.environ.items() if k.startswith("BENCH_SET_")},
        }
    )
    (logdir / "metrics").mkdir()
    stack.env = env
    return stack


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create ``name`` on the server of ``server_url``; returns its URL."""
    import psycopg

    with psycopg.connect(with_db(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_db(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(with_db(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def django_setup(stack: Stack) -> None:
    """Point this process's Django at the stack (its DB, Redis, emulator) and migrate."""
    for key in list(os.environ):
        if key.startswith(("STRIPE_", "CARTFLOW_", "DJANGO_")):
            del os.environ[key]
    # Not the metrics directory: the driver's own process is no part of the servers' sum.
    os.environ.update({k: v for k, v in stack.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
