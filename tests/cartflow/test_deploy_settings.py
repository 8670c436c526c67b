"""HTTPS settings for production (HSTS, the redirect, Secure cookies) from the environment, off in
development, and never switched off by a leftover CARTFLOW_DEV=1 next to a real secret key."""

from __future__ import annotations

import os
import secrets
import subprocess

from tests.cartflow.test_servicefinder import PYTHON, ROOT, _settings_probe

SECURITY = (
    "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SECURE_SSL_REDIRECT,"
    " settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, settings.SECURE_HSTS_PRELOAD)"
)
PRODUCTION = "True True True 3600 True True"


def _production_env(**extra: str) -> dict[str, str]:
    return {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "shop.example.com", **extra}


def test_production_redirects_to_https_and_sends_hsts():
    out = _settings_probe(SECURITY, **_production_env())
    assert out.stdout.strip() == PRODUCTION, out.stderr


def test_cartflow_dev_does_not_relax_security_next_to_a_real_secret():
    """`make run`'s .env says CARTFLOW_DEV=1; a deployment that also sets its own secret stays secure."""
    out = _settings_probe(SECURITY, **_production_env(CARTFLOW_DEV="1"))
    assert out.stdout.strip() == PRODUCTION, out.stderr


def test_dev_mode_without_a_secret_serves_plain_http():
    out = _settings_probe(SECURITY, CARTFLOW_DEV="1")
    assert out.stdout.strip() == "False False False 0 True True", out.stderr


def test_each_https_setting_can_be_set_explicitly():
    out = _settings_probe(
        SECURITY,
        **_production_env(
            DJANGO_SECURE_SSL_REDIRECT="0",
            DJANGO_SECURE_HSTS_SECONDS="31536000",
            DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
            DJANGO_SECURE_HSTS_PRELOAD="0",
        ),
    )
    assert out.stdout.strip() == "True True False 31536000 False False", out.stderr
    plain = _settings_probe(SECURITY, **_production_env(DJANGO_SECURE="0"))  # e.g. docker compose on localhost
    assert plain.stdout.strip() == "False False False 0 True True", plain.stderr


def test_health_checks_and_metrics_are_not_redirected():
    out = _settings_probe("print(settings.SECURE_REDIRECT_EXEMPT)", **_production_env())
    assert out.stdout.strip() == "['^healthz$', '^readyz$', '^metrics$']", out.stderr


def test_check_deploy_is_clean_with_production_settings():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CARTFLOW_"))}
    env.update(
        CARTFLOW_DEV="0",  # over a developer's .env
        DJANGO_DEBUG="0",
        DATABASE_URL="postgres://u@127.0.0.1:1/x",  # the checks need no database
        REDIS_URL="redis://127.0.0.1:1/0",
        CELERY_BROKER_URL="redis://127.0.0.1:1/1",
        **_production_env(),
    )
    out = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout
