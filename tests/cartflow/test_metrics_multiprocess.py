"""/metrics of a REAL gunicorn with several workers (and a Celery worker) sharing PROMETHEUS_MULTIPROC_DIR.

Each scrape is answered by whichever worker accepts it; in multiprocess mode every answer is the sum over
all the processes that wrote to the directory, so repeated scrapes agree, only go up, and keep the counts
of a worker that was SIGKILLed (gunicorn's master starts another). Before multiprocess mode each worker
answered with its own counts: the totals jumped between scrapes and fell when a worker was replaced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from stripe_emulator import sign
from tests.support.gunicorn import GunicornServer, app_environment, wait_for
from tests.support.saga import make_product
from tests.support.services import free_port
from tests.support.worker import ROOT, purge_broker, stop_process, task_queue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.slow]

BY_VIEW = "django_http_requests_total_by_view_transport_method_total"
HEALTHZ = (BY_VIEW, (("method", "GET"), ("transport", "http"), ("view", "healthz")))


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _key(view: str, help_text: str = "") -> str:
    """The key prometheus_client writes a GET of ``view`` under in a process's counter file."""
    return mmap_key(
        BY_VIEW.removesuffix("_total"), BY_VIEW, ["method", "transport", "view"], ["GET", "http", view], help_text
    )


def requests_by_pid(directory: Path, view: str = "healthz") -> dict[int, float]:
    """What each process's own file says about GETs of ``view`` (a scrape shows only their sum)."""
    wanted = json.loads(_key(view))[:3]
    counts = {}
    for path in directory.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        counts[int(path.stem.rpartition("_")[2])] = sum(v for k, v, _, _ in values if json.loads(k)[:3] == wanted)
    return counts


def hit_healthz(url: str, n: int) -> None:
    """``n`` requests, 8 at a time, each on a new connection so the workers share them out."""
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.get(url + "/healthz", timeout=10).status_code, range(n)))
    assert codes == [200] * n


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    return path


@pytest.fixture
def start_server(stripe_emulator, metrics_dir: Path) -> Iterator[Callable[..., GunicornServer]]:
    started: list[GunicornServer] = []

    def start(**extra: str) -> GunicornServer:
        server = GunicornServer.start(
            stripe_url=stripe_emulator.url, webhook_secret=stripe_emulator.secret, workers=2,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **extra,
        )  # fmt: skip
        started.append(server)
        wait_for(lambda: len(server.worker_pids()) == 2, timeout=30, what="two gunicorn workers", log=server.log)
        return server

    yield start
    for server in started:
        server.stop()


def test_counters_add_up_across_workers_agree_between_scrapes_and_survive_a_killed_worker(start_server, metrics_dir):
    # A file left by a process of an earlier run: the new server starts from zero without it.
    stale = metrics_dir / f"counter_{dead_pid()}.db"
    leftover = MmapedDict(str(stale))
    leftover.write_value(_key("healthz", "Count of requests by view."), 1000.0, 0.0)
    leftover.close()

    server = start_server()
    assert not stale.exists()
    workers = server.worker_pids()
    metrics = server.url + "/metrics"
    sent = scrape(metrics)[HEALTHZ]  # the start's readiness probes
    assert sent < 10  # not the 1000 of the stale file
    while not all(requests_by_pid(metrics_dir).get(pid, 0) > 0 for pid in workers):
        assert sent < 2000, f"one worker took every request: {requests_by_pid(metrics_dir)}"
        hit_healthz(server.url, 40)
        sent += 40

    seen = []
    for _ in range(10):  # each scrape may land on either worker: all of them see every worker's count
        hit_healthz(server.url, 3)
        sent += 3
        seen.append(scrape(metrics)[HEALTHZ])
    assert seen == [sent - 3 * (9 - i) for i in range(10)]

    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
        timeout=30, what="gunicorn's master replaced the killed worker", log=server.log,
    )  # fmt: skip
    (fresh,) = set(server.worker_pids()) - set(workers)
    scrapes = 0
    while not requests_by_pid(metrics_dir, "metrics").get(fresh):  # until the new worker has answered one
        assert scrapes < 300, "the new worker never answered a scrape"
        assert scrape(metrics)[HEALTHZ] == sent  # the killed worker's requests still count
        scrapes += 1
    hit_healthz(server.url, 10)
    assert scrape(metrics)[HEALTHZ] == sent + 10
    assert (metrics_dir / f"counter_{victim}.db").exists()


def _celery_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    celery = str(Path(sys.executable).with_name("celery"))
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [
                celery, "-A", "cartflow", "worker", "--pool", "prefork", "--concurrency", "1", "--loglevel", "info",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--queues", task_queue(),
                "--hostname", f"metrics-{uuid.uuid4().hex[:8]}@cartflow-tests",
            ],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_a_celery_worker_sharing_the_directory_is_counted_by_the_web_servers_metrics(
    start_server, metrics_dir, stripe_emulator, settings, tmp_path
):
    server = start_server()
    env = {**app_environment(stripe_url=stripe_emulator.url, webhook_secret=stripe_emulator.secret),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}  # fmt: skip
    purge_broker(settings.CELERY_BROKER_URL)
    log_path = tmp_path / "celery.log"
    worker = _celery_worker(env, log_path)
    try:
        wait_for(lambda: "ready" in log_path.read_text(), timeout=60, what="celery ready", log=log_path.read_text)
        body = json.dumps({
            "id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": "customer.created",
            "created": int(time.time()), "data": {"object": {"id": "cus_1", "object": "customer"}},
        })  # fmt: skip
        response = httpx.post(
            server.url + "/api/webhooks/stripe", content=body, timeout=10,
            headers={"Content-Type": "application/json",
                     "Stripe-Signature": sign(body, stripe_emulator.secret, int(time.time()))},
        )  # fmt: skip
        assert response.status_code == 200, response.text

        def processed() -> dict | None:
            samples = scrape(server.url + "/metrics")
            return samples if samples[("cartflow_webhooks_processed_total", (("outcome", "ignored"),))] else None

        samples = wait_for(processed, timeout=30, what="the worker's count on /metrics", log=log_path.read_text)
        assert samples[("cartflow_webhooks_received_total", (("outcome", "new"),))] == 1.0  # counted by gunicorn
        assert samples[("cartflow_webhooks_processed_total", (("outcome", "ignored"),))] == 1.0  # by Celery
    finally:
        stop_process(worker)
        purge_broker(settings.CELERY_BROKER_URL)


def test_metrics_can_leave_the_public_port_for_serve_metrics_on_a_private_one(start_server, metrics_dir, tmp_path):
    server = start_server(CARTFLOW_METRICS_ENABLED="0")
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 404
    hit_healthz(server.url, 20)

    port = free_port()
    env = {k: v for k, v in server.env.items() if k != "CARTFLOW_METRICS_ENABLED"}
    log_path = tmp_path / "serve_metrics.log"
    with open(log_path, "wb") as log_file:
        exporter = subprocess.Popen(
            [sys.executable, "manage.py", "serve_metrics", "--bind", f"127.0.0.1:{port}", "--skip-checks"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def answered() -> dict | None:
            try:
                return scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                return None

        samples = wait_for(answered, timeout=30, what="serve_metrics answers", log=log_path.read_text)
        assert samples[HEALTHZ] >= 20  # every worker's count, read from the same directory
        assert samples[("cartflow_sagas_stuck", ())] == 0.0  # the shared state too
        assert ("cartflow_outbox_lag_seconds", ()) in samples
    finally:
        stop_process(exporter)


def test_a_checkout_started_through_either_worker_is_counted_once(start_server):
    product = make_product(on_hand=5)
    server = start_server()
    before = scrape(server.url + "/metrics")[("cartflow_checkouts_total", (("outcome", "started"),))]
    for _ in range(4):
        http = httpx.Client(base_url=server.url + "/api", timeout=30)
        added = http.post("/cart/items", json={"productId": product.id, "quantity": 1})
        assert added.status_code == 201, added.text
        http.headers["X-Cart-Token"] = added.json()["token"]
        assert http.post("/checkout/start", json={"email": "buyer@example.com"}).status_code == 201
        http.close()
    for _ in range(4):
        assert scrape(server.url + "/metrics")[("cartflow_checkouts_total", (("outcome", "started"),))] == before + 4
