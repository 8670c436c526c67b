"""Servers for the storefront's browser tests: CartFlow under gunicorn, and a second origin for the same page.

- ``second_origin`` (module): a plain static file server for the storefront/ folder on another port, as a
  storefront deployed apart from the API would be (the page then reaches the API with ``?api=``, by CORS).
- ``shop_server`` (module): a real gunicorn (tests/support/gunicorn.py) on the test database and the session's
  Stripe emulator, allowing ``second_origin`` by ``CARTFLOW_CORS_ALLOWED_ORIGINS``.
- ``shop`` (function): ``shop_server`` with the emulator's webhooks aimed at it and the real Celery worker
  processing them, as in production: a 3-D Secure payment is settled by the webhook, not by the page.
- ``chromium`` (module): Debian's Chromium (``/usr/bin/chromium``, scripts/chromium.sh) launched through
  Playwright, never a browser build of Playwright's own; ``page`` (function): a fresh tab in a fresh context.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from payments.webhooks.handlers import HANDLED_EVENT_TYPES
from tests.e2e.browser.support import WAIT_MS
from tests.support.gunicorn import GunicornServer
from tests.support.worker import ROOT


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def second_origin() -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(ROOT / "storefront"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, name="storefront-static", daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def shop_server(django_db_setup, stripe_emulator_server, second_origin) -> Iterator[GunicornServer]:  # noqa: ARG001
    server = GunicornServer.start(
        stripe_url=stripe_emulator_server.url,
        webhook_secret=stripe_emulator_server.webhook_secret,
        CARTFLOW_CORS_ALLOWED_ORIGINS=second_origin,
    )
    yield server
    server.stop()


@pytest.fixture
def shop(shop_server, stripe_emulator, celery_worker_process) -> Iterator[GunicornServer]:  # noqa: ARG001
    stripe_emulator.set_webhook_url(f"{shop_server.url}/api/webhooks/stripe", events=HANDLED_EVENT_TYPES)
    yield shop_server
    stripe_emulator.webhooks("resume")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (requirements.lock)")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed: `make browser` installs it (scripts/chromium.sh)")
    # While Playwright's sync API is started, its event loop counts as running in this thread, so Django would
    # refuse every query of the test (and pytest-django's flush after it). They are plain synchronous queries.
    with pytest.MonkeyPatch.context() as patch, sync_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium) -> Iterator[object]:
    from playwright.sync_api import expect  # the chromium fixture has made sure it is installed

    expect.set_options(timeout=WAIT_MS)
    context = chromium.new_context(viewport={"width": 1100, "height": 620})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()
