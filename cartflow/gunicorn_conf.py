"""gunicorn settings for `make run` (Procfile) and the Docker image: ``gunicorn -c python:cartflow.gunicorn_conf``.

Bind address, worker and thread counts come from the command line or gunicorn's own environment
variables (``WEB_CONCURRENCY``); this file fixes what does not vary between deployments.
"""

import os

from cartflow.logconfig import logging_dict

# Threads, not processes, for the many short requests that wait on PostgreSQL, Redis and Stripe.
# 8 threads per worker (x 2 workers): a confirm waits on Stripe for hundreds of milliseconds, and at Stripe's
# 25 confirms/s about 10-15 of them are in flight at once; with 4 threads a realistic Stripe capped full
# checkouts at 13/s, with 8 they reach Stripe's 25/s. More threads buy nothing there and cost the CPU-bound
# hot rush (16 threads: 222 -> 167 starts/s, from GIL and row contention). README.md, "Concurrency", has the
# measurement. Each thread keeps one PostgreSQL connection (CARTFLOW_DB_CONN_MAX_AGE): 16 per host.
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
