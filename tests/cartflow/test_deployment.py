"""docker-compose.yml and the Dockerfile, read as files: Docker is not on the test machines, so these check
the properties docs/deploy.md promises (one-shot migrations, one beat, workers that scale, the emulator
without a key, pinned images, secrets only from the environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.urls import resolve

ROOT = Path(__file__).resolve().parents[2]
BUILT = "cartflow:local"
# An exact version in the tag (16.4, v1.21.8, 3.11.10), or a digest; never `latest` or a bare major.
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$|^[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
# A secret's whole value is an interpolation that names it and has no literal default.
FROM_ENVIRONMENT = re.compile(r"^\$\{(?P<name>[A-Z_]+)(:\?[^}]*|:-(\$\{[A-Z_]+:-\})?)?\}$")
SECRET_NAMES = ("SECRET", "PASSWORD", "API_KEY")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _command(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(command)


def _app_services(services: dict) -> dict:
    return {name: s for name, s in services.items() if s.get("image") == BUILT}


def test_every_image_is_pinned_to_a_version(services):
    for name, service in services.items():
        if service.get("image") == BUILT:
            assert service["build"] == ".", name
            continue
        assert PINNED.match(service["image"]), f"{name}: {service['image']}"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert PINNED.match(line.split()[1]), line


def test_the_stripe_cli_is_pinned_and_only_runs_with_real_stripe(services):
    cli = services["stripe-cli"]
    assert cli["image"].startswith("stripe/stripe-cli:v") and PINNED.match(cli["image"])
    assert cli["profiles"] == ["stripe"]
    assert cli["command"] == ["listen", "--forward-to", "api:8000/api/webhooks/stripe"]
    assert resolve("/api/webhooks/stripe")  # the path it forwards to is CartFlow's webhook route


def test_one_shot_migrations_before_anything_else(services):
    migrate = services["migrate"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["restart"] == "no"
    assert {k: v["condition"] for k, v in migrate["depends_on"].items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    apps = _app_services(services)
    assert {"migrate", "seed-demo", "api", "worker", "beat", "stripe-emulator"} <= set(apps)
    for name in ("seed-demo", "api", "worker", "beat"):
        assert apps[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    for name, service in apps.items():
        if name != "migrate":
            assert "migrate" not in _command(service).split(), f"{name} must not migrate: replicas would race"


def test_demo_data_only_in_the_dev_profile(services):
    seeding = [name for name, s in services.items() if "seed_demo" in _command(s)]
    assert seeding == ["seed-demo"]
    assert services["seed-demo"]["profiles"] == ["dev"]
    assert services["seed-demo"]["restart"] == "no"


def test_exactly_one_beat_and_workers_that_scale(services):
    beats = [name for name, s in services.items() if re.search(r"celery .*\bbeat\b", _command(s))]
    assert beats == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "django_celery_beat.schedulers:DatabaseScheduler" in _command(services["beat"])
    worker = services["worker"]
    assert "celery -A cartflow worker" in _command(worker)
    assert not {"-B", "--beat"} & set(_command(worker).split()), "a worker with an embedded beat cannot scale"
    # `docker compose up --scale worker=3`: nothing a second copy would have to share.
    assert "ports" not in worker and "container_name" not in worker
    assert not [name for name, s in services.items() if "container_name" in s]


def test_health_checks(services):
    for name in ("postgres", "redis", "api", "worker", "stripe-emulator"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/_emulator/health" in " ".join(services["stripe-emulator"]["healthcheck"]["test"])
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_secrets_come_only_from_the_environment(services):
    for name, service in services.items():
        for var, value in (service.get("environment") or {}).items():
            if any(part in var for part in SECRET_NAMES):
                assert value is None or FROM_ENVIRONMENT.match(str(value)), f"{name}: {var}={value!r}"
    for name, service in _app_services(services).items():
        env = service["environment"]
        if name == "stripe-emulator":
            continue
        assert env["DJANGO_SECRET_KEY"] == "${DJANGO_SECRET_KEY:?set DJANGO_SECRET_KEY}", name
        assert re.fullmatch(
            r"postgres://cartflow:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/cartflow", env["DATABASE_URL"]
        ), name
        assert env["STRIPE_SECRET_KEY"] is None and env["STRIPE_WEBHOOK_SECRET"] is None, name
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["CELERY_BROKER_URL"].startswith("${CELERY_BROKER_URL:-redis://redis:6379/")
        assert env["CARTFLOW_TRUSTED_PROXIES"] == "${CARTFLOW_TRUSTED_PROXIES:-0}"
        assert env["STRIPE_EMULATOR_URL"] == "http://stripe-emulator:12111"
        assert "STRIPE_API_BASE" not in env, "an explicit base would send a real key's calls to the emulator"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_the_emulator_serves_what_the_apps_call(services):
    emulator = services["stripe-emulator"]
    script = emulator["command"][-1]
    module = re.search(r"exec python -m (\S+)", script).group(1)
    assert (ROOT / module.replace(".", "/") / "__main__.py").is_file(), module
    assert "--host 0.0.0.0 --port 12111" in script
    assert "--webhook-url http://api:8000/api/webhooks/stripe" in script
    assert emulator["restart"] == "on-failure"  # exits 0 with a real key and stays down


def test_the_emulator_stands_down_with_a_real_key(services):
    script = services["stripe-emulator"]["command"][-1].replace("$$", "$")  # compose's escape for a literal $
    env = {**os.environ, "STRIPE_SECRET_KEY": "sk_test_compose"}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "real Stripe, no emulator" in out.stdout, out.stdout + out.stderr


def _stripe_settings(**env_vars: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CARTFLOW_", "STRIPE_"))}
    env.update(
        CARTFLOW_DEV="0",
        DJANGO_SECRET_KEY="x",
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        REDIS_URL="redis://127.0.0.1:1/0",
        CELERY_BROKER_URL="redis://127.0.0.1:1/1",
        DJANGO_SETTINGS_MODULE="cartflow.settings",
        **env_vars,
    )
    code = "from django.conf import settings\nprint(repr(settings.STRIPE_API_BASE))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_stripe_calls_reach_the_emulator_service_only_without_a_key():
    assert _stripe_settings(STRIPE_EMULATOR_URL="http://stripe-emulator:12111") == "'http://stripe-emulator:12111'"
    real = _stripe_settings(STRIPE_EMULATOR_URL="http://stripe-emulator:12111", STRIPE_SECRET_KEY="sk_test_x")
    assert real == "''"
    assert _stripe_settings() == "'http://127.0.0.1:12111'"
