"""Finding the services, settings from the environment, tracing on demand, the Dockerfile and the Procfile
(docker-compose.yml: test_deployment.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from cartflow import servicefinder, tracing

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture
def fresh_finder(monkeypatch):
    """servicefinder with no service variables set and its memo cleared (restored afterwards)."""
    for var in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CARTFLOW_EMBEDDED"):
        monkeypatch.delenv(var, raising=False)
    servicefinder.database_url.cache_clear()
    servicefinder.redis_url.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    servicefinder.database_url.cache_clear()
    servicefinder.redis_url.cache_clear()


def test_environment_wins(fresh_finder):
    fresh_finder.setenv("DATABASE_URL", "postgres://someone@db.example:6543/shop")
    fresh_finder.setenv("REDIS_URL", "redis://cache.example:6380/4")
    fresh_finder.setenv("CARTFLOW_EMBEDDED", "1")  # even over a forced embedded mode
    assert servicefinder.database_url() == "postgres://someone@db.example:6543/shop"
    assert servicefinder.redis_url() == "redis://cache.example:6380/4"
    assert servicefinder.celery_broker_url() == "redis://cache.example:6380/1"
    fresh_finder.setenv("CELERY_BROKER_URL", "redis://broker.example:6379/9")
    assert servicefinder.celery_broker_url() == "redis://broker.example:6379/9"


def test_local_defaults_when_their_ports_answer(fresh_finder):
    if not (servicefinder.port_answers("127.0.0.1", 5432) and servicefinder.port_answers("127.0.0.1", 6379)):
        pytest.skip("no local PostgreSQL and Redis on their default ports on this machine")
    assert servicefinder.database_url() == servicefinder.LOCAL_DATABASE_URL
    assert servicefinder.redis_url() == servicefinder.LOCAL_REDIS_URL
    assert servicefinder.celery_broker_url() == "redis://127.0.0.1:6379/1"
    with psycopg.connect(servicefinder.LOCAL_DATABASE_URL, connect_timeout=3) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("cartflow",)


def test_port_answers_is_false_for_a_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert servicefinder.port_answers("127.0.0.1", port) is False


def test_kombu_spelling_of_a_unix_socket():
    assert servicefinder.broker_url_for("unix:///x/redis.sock?db=3") == "redis+socket:///x/redis.sock?virtual_host=3"
    assert servicefinder.with_redis_db("unix:///x/redis.sock?db=0", 14) == "unix:///x/redis.sock?db=14"
    assert servicefinder.with_redis_db("redis://h:6379/0", 1) == "redis://h:6379/1"
    assert servicefinder.with_redis_db("redis://h:6379", 2) == "redis://h:6379/2"


def _finder_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "CELERY_"))}
    # Empty values also shadow whatever a developer's .env says (the real environment wins).
    env.update(DATABASE_URL="", REDIS_URL="", CELERY_BROKER_URL="", **extra)
    return env


@pytest.mark.slow
def test_forced_embedded_servers_start_and_are_reachable():
    """`CARTFLOW_EMBEDDED=1 python -m cartflow.servicefinder` starts pgserver + redis under the data dir."""
    data = Path(tempfile.mkdtemp(prefix="cf-embedded-"))
    data.chmod(0o755)  # pgserver runs PostgreSQL as its own system user when we are root
    env = _finder_env(CARTFLOW_EMBEDDED="1", CARTFLOW_DATA_DIR=str(data))
    try:
        out = subprocess.run(
            [PYTHON, "-m", "cartflow.servicefinder"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        found = dict(line.split(None, 1) for line in out.stdout.splitlines())
        assert found["database"].startswith("postgresql://postgres@/cartflow?host=")
        assert str(data) in found["database"]
        assert found["redis"] == f"unix://{data}/redis/redis.sock?db=0"
        assert found["broker"] == f"redis+socket://{data}/redis/redis.sock?virtual_host=1"
        with psycopg.connect(found["database"], connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("cartflow",)
        client = redis.Redis.from_url(found["redis"])
        assert client.ping()
        client.set("cf:probe", "1")
        client.close()

        # A second process finds the very same servers instead of starting new ones.
        again = subprocess.run(
            [PYTHON, "-m", "cartflow.servicefinder"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert dict(line.split(None, 1) for line in again.stdout.splitlines()) == found
        assert redis.Redis.from_url(found["redis"]).get("cf:probe") == b"1"
    finally:
        stop = subprocess.run(
            [PYTHON, "-m", "cartflow.servicefinder", "stop"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        shutil.rmtree(data, ignore_errors=True)
    assert "postgresql" in stop.stdout and "redis" in stop.stdout, stop.stdout + stop.stderr


def _settings_probe(code: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CARTFLOW_"))}
    # CARTFLOW_DEV=0 overrides a developer's .env; the service URLs keep the finder from probing.
    env.update({"CARTFLOW_DEV": "0", "DJANGO_DEBUG": "0", **env_vars})
    env.setdefault("DATABASE_URL", "postgres://u@127.0.0.1:1/x")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:1/1")
    env["DJANGO_SETTINGS_MODULE"] = "cartflow.settings"
    script = f"from django.conf import settings\n{code}"
    return subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_secret_key_is_required_outside_debug():
    out = _settings_probe("settings.SECRET_KEY")
    assert out.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in out.stderr


def test_production_defaults_are_safe():
    out = _settings_probe(
        "print(settings.DEBUG, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.ALLOWED_HOSTS,"
        " settings.SECURE_PROXY_SSL_HEADER, settings.SECRET_KEY)",
        DJANGO_SECRET_KEY="prod-secret-from-env",
        DJANGO_ALLOWED_HOSTS="shop.example.com, api.shop.example.com",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "False True True ['shop.example.com', 'api.shop.example.com'] None prod-secret-from-env"
    )
    behind_a_proxy = _settings_probe(
        "print(settings.SECURE_PROXY_SSL_HEADER)",
        DJANGO_SECRET_KEY="prod-secret-from-env",
        CARTFLOW_TRUSTED_PROXIES="1",
    )
    assert behind_a_proxy.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')", behind_a_proxy.stderr


def test_dev_mode_gets_a_dev_key_and_plain_http_cookies():
    out = _settings_probe("print(settings.DEBUG, settings.SESSION_COOKIE_SECURE)", CARTFLOW_DEV="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_domain_settings_read_from_the_environment():
    out = _settings_probe(
        "print(settings.CARTFLOW_RESERVATION_TTL_SECONDS, settings.CARTFLOW_MAX_LINE_QUANTITY)",
        DJANGO_SECRET_KEY="x",
        CARTFLOW_RESERVATION_TTL_SECONDS="60",
        CARTFLOW_MAX_LINE_QUANTITY="7",
    )
    assert out.stdout.strip() == "60 7", out.stderr


def test_tracing_is_not_installed_without_an_endpoint(monkeypatch):
    from opentelemetry import trace
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.install_tracing("cartflow-test") is False
    assert not DjangoInstrumentor().is_instrumented_by_opentelemetry
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"


def test_tracing_installs_every_instrumentation_with_an_endpoint():
    code = (
        "import django; django.setup()\n"
        "from cartflow.tracing import install_tracing\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.instrumentation.django import DjangoInstrumentor\n"
        "from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor\n"
        "from opentelemetry.instrumentation.redis import RedisInstrumentor\n"
        "from opentelemetry.instrumentation.celery import CeleryInstrumentor\n"
        "from opentelemetry.instrumentation.requests import RequestsInstrumentor\n"
        "print(install_tracing('probe'), install_tracing('probe'), type(trace.get_tracer_provider()).__name__,"
        " all(i().is_instrumented_by_opentelemetry for i in (DjangoInstrumentor, PsycopgInstrumentor,"
        " RedisInstrumentor, CeleryInstrumentor, RequestsInstrumentor)))\n"
    )
    out = _settings_probe(code, DJANGO_SECRET_KEY="x", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True False TracerProvider True"


def test_dockerfile_is_multi_stage_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2 and " AS build" in stages[0]
    assert "--require-hashes -r /tmp/requirements.lock" in text
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1] not in {"root", "0"}
    assert text.index(user_lines[-1]) > text.index("COPY --chown")


def test_procfile_runs_web_worker_beat_and_the_emulator():
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line and line[0] != "#")
    assert set(lines) >= {"web", "worker", "beat"}
    assert "gunicorn cartflow.wsgi" in lines["web"] and "$CARTFLOW_BIND" in lines["web"]
    assert "$WEB_CONCURRENCY" in lines["web"]
    assert "celery -A cartflow worker" in lines["worker"]
    assert "--scheduler django_celery_beat.schedulers:DatabaseScheduler" in lines["beat"]
    assert "exec python -m stripe_emulator --webhook-url" in lines["stripe"]


def test_dotenv_fills_gaps_but_the_environment_wins(tmp_path, monkeypatch):
    """The .env that `make run` writes is how a second terminal finds the same services."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nCARTFLOW_EMBEDDED=1\nCARTFLOW_DATA_DIR=/somewhere/.data\nREDIS_URL=redis://from-dotenv:6379/0\n"
    )
    monkeypatch.delenv("CARTFLOW_EMBEDDED", raising=False)
    monkeypatch.delenv("CARTFLOW_DATA_DIR", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://from-environment:6379/0")
    servicefinder.load_dotenv(env_file)
    assert os.environ["CARTFLOW_EMBEDDED"] == "1"
    assert servicefinder.embedded_forced()
    assert servicefinder.data_dir() == Path("/somewhere/.data")
    assert os.environ["REDIS_URL"] == "redis://from-environment:6379/0"


def test_pytest_ignores_the_checkout_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("CARTFLOW_FOUNDATION_DOTENV_PROBE=1\n")
    monkeypatch.setattr(servicefinder, "BASE_DIR", tmp_path)
    monkeypatch.delenv("CARTFLOW_FOUNDATION_DOTENV_PROBE", raising=False)
    servicefinder.load_dotenv()  # under pytest: a no-op, whatever the checkout's .env says
    assert "CARTFLOW_FOUNDATION_DOTENV_PROBE" not in os.environ


def test_run_script_records_the_service_choice_for_a_second_terminal():
    script = (ROOT / "scripts" / "run.sh").read_text()
    assert os.access(ROOT / "scripts" / "run.sh", os.X_OK)
    steps = ("cartflow.servicefinder record-env", "cartflow.servicefinder\n", "migrate --noinput", "seed_demo")
    for step in (*steps, "collectstatic --noinput"):
        assert step in script
    assert script.index("record-env") < script.index("migrate --noinput")
    assert script.rstrip().endswith("exec honcho start -f Procfile -e /dev/null")
    for var in ("CARTFLOW_EMBEDDED", "CARTFLOW_DATA_DIR", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        assert var in servicefinder.RECORDED


def _record(path: Path, **environ: str) -> dict[str, str]:
    servicefinder.dotenv_record(path, environ)
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_the_dotenv_records_which_stripe_this_run_talks_to(tmp_path):
    """A second terminal reaches the same emulator, with the same rate limits, as `make run` did."""
    env_file = tmp_path / ".env"
    first = _record(
        env_file,
        DATABASE_URL="postgres://u@127.0.0.1:5432/shop",
        STRIPE_API_BASE="http://127.0.0.1:12999",
        STRIPE_EMULATOR_LATENCY_MS="300",
        STRIPE_EMULATOR_RATE_LIMITS="25/100",
    )
    assert first == {
        "CARTFLOW_DEV": "1",
        "DATABASE_URL": "postgres://u@127.0.0.1:5432/shop",
        "STRIPE_API_BASE": "http://127.0.0.1:12999",
        "STRIPE_EMULATOR_LATENCY_MS": "300",
        "STRIPE_EMULATOR_RATE_LIMITS": "25/100",
    }
    # Without STRIPE_API_BASE: the emulator's default address, written down all the same.
    assert _record(env_file)["STRIPE_API_BASE"] == servicefinder.EMULATOR_API_BASE
    # With a real key: real Stripe (an empty base), and the key itself is never written.
    real = _record(env_file, STRIPE_SECRET_KEY="sk_test_not_written")
    assert real["STRIPE_API_BASE"] == ""
    assert "sk_test_not_written" not in env_file.read_text()
    assert "STRIPE_SECRET_KEY came from the environment" in env_file.read_text()


def test_the_dotenv_keeps_a_developers_own_lines_and_secret(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_SECRET_KEY=mine\nLOG_LEVEL=DEBUG\n")
    recorded = _record(env_file, REDIS_URL="redis://127.0.0.1:6379/0")
    recorded = _record(env_file, REDIS_URL="redis://127.0.0.1:6380/0")  # rewritten, not appended
    assert recorded == {
        "DJANGO_SECRET_KEY": "mine",
        "LOG_LEVEL": "DEBUG",
        "REDIS_URL": "redis://127.0.0.1:6380/0",
        "STRIPE_API_BASE": servicefinder.EMULATOR_API_BASE,
    }
    assert env_file.read_text().count(servicefinder.DOTENV_BEGIN) == 1
    assert "CARTFLOW_DEV" not in env_file.read_text()  # a kept secret key means this is no dev checkout


def test_an_empty_stripe_api_base_means_real_stripe_and_none_the_emulator():
    out = _settings_probe("print(repr(settings.STRIPE_API_BASE))", DJANGO_SECRET_KEY="x", STRIPE_API_BASE="")
    assert out.stdout.strip() == "''", out.stderr
    out = _settings_probe("print(settings.STRIPE_API_BASE)", DJANGO_SECRET_KEY="x")
    assert out.stdout.strip() == servicefinder.EMULATOR_API_BASE, out.stderr


def _finder(database_url: str) -> subprocess.CompletedProcess:
    env = {**_finder_env(), "DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    return subprocess.run(
        [PYTHON, "-m", "cartflow.servicefinder"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def server_url(settings) -> str:
    """This run's PostgreSQL server as a URL without a database name."""
    db = settings.DATABASES["default"]
    user = f"{db['USER']}:{db['PASSWORD']}@" if db.get("PASSWORD") else f"{db['USER']}@"
    return f"postgres://{user}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"


def test_make_run_creates_a_missing_database_named_by_database_url(server_url):
    name = f"cf_missing_{os.getpid()}"
    try:
        out = _finder(f"{server_url}/{name}")
        assert out.returncode == 0, out.stderr
        assert f"created database '{name}'" in out.stderr and "Traceback" not in out.stderr
        with psycopg.connect(f"{server_url}/{name}", connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
        again = _finder(f"{server_url}/{name}")  # there now: nothing to say
        assert again.returncode == 0 and again.stderr == ""
    finally:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_an_unreachable_database_is_one_clear_line_not_a_traceback():
    out = _finder("postgres://someone@127.0.0.1:1/shop")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: cannot connect to PostgreSQL at 127.0.0.1:1")
