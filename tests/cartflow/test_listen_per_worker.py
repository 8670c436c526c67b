"""cartflow/gunicorn_conf.py: with two or more workers each worker listens on a socket of its own
(SO_REUSEPORT), so the kernel spreads keep-alive clients over the workers; one worker, or
CARTFLOW_WEB_REUSE_PORT=0, keeps the one shared socket; and a second server on a port already served fails
instead of sharing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.gunicorn import GunicornServer, wait_for
from tests.support.worker import ROOT


def _listening_sockets(port: int) -> int:
    """LISTEN sockets (state 0A) on ``port`` in the kernel's tables."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


@pytest.fixture
def server():
    started: list[GunicornServer] = []

    def start(workers: int, **env: str) -> GunicornServer:
        web = GunicornServer.start(stripe_url="http://127.0.0.1:9", webhook_secret="x", workers=workers, **env)
        started.append(web)
        wait_for(lambda: len(started[-1].worker_pids()) == workers, timeout=30, what="workers", log=started[-1].log)
        return started[-1]

    yield start
    for s in started:
        s.stop()


def _port(server: GunicornServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_two_workers_listen_on_a_socket_each_and_both_answer(server):
    web = server(2)
    port = _port(web)
    wait_for(lambda: _listening_sockets(port) == 2, timeout=10, what="a socket per worker", log=web.log)
    assert all(httpx.get(f"{web.url}/healthz", timeout=5).status_code == 200 for _ in range(20))


def test_one_worker_or_the_setting_off_keeps_one_shared_socket(server):
    single = server(1)
    off = server(2, CARTFLOW_WEB_REUSE_PORT="0")
    assert _listening_sockets(_port(single)) == 1
    assert _listening_sockets(_port(off)) == 1


def test_a_second_server_on_a_served_port_fails_instead_of_sharing_it(server):
    web = server(2)
    port = _port(web)
    second = subprocess.run(
        [
            str(Path(sys.executable).with_name("gunicorn")), "cartflow.wsgi", "-c", "python:cartflow.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "--workers", "2",
        ],
        cwd=ROOT, env=web.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in second.stderr
    assert _listening_sockets(port) == 2  # the first server's, still serving
