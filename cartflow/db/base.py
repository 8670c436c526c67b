"""Django's PostgreSQL backend, with a persistent connection's health check made from its socket.

With ``CONN_HEALTH_CHECKS`` (``CARTFLOW_DB_HEALTH_CHECKS``, on) Django checks a reused connection before the
first query of every request, and its PostgreSQL backend does so with a ``SELECT 1``: one round trip more for
every request that touches the database, and a statement more for PostgreSQL to run. A connection that sits
idle between requests has nothing to read, so the check here asks the socket instead: readable (or hung up)
means the server closed it or sent something unasked (PostgreSQL's "terminating connection" message on a
restart, a failover or ``pg_terminate_backend``), and the connection is replaced, as after a failed
``SELECT 1``. Anything but a connection idle outside a transaction gets Django's ``SELECT 1`` as before.
What neither notices in time is a peer that vanished without a word (a cut network); the ``SELECT 1``
would wait for TCP's timeout there too.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            pgconn = conn.pgconn
            if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
                return super().is_usable()
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)  # POLLHUP and POLLERR are reported whether asked for or not
        except Exception:  # noqa: BLE001 - Django's contract: a failed check answers False, never raises
            return False
