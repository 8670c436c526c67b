#!/usr/bin/env bash
# `make run`: find or start PostgreSQL and Redis, migrate, load the demo catalog, then run the web server,
# the Celery worker and Celery beat under honcho (Procfile). Ctrl-C stops all of them.
#
# Environment: PORT (8000), WEB_CONCURRENCY (gunicorn workers, 2), GUNICORN_THREADS (threads per worker, 8),
# CELERY_CONCURRENCY (2), PROMETHEUS_MULTIPROC_DIR (.data/metrics-$PORT, emptied on start), CARTFLOW_EMBEDDED=1
# (embedded PostgreSQL + Redis under .data/ even when local servers answer), STRIPE_EMULATOR_LATENCY_MS /
# STRIPE_EMULATOR_LATENCY_JITTER_MS / STRIPE_EMULATOR_RATE_LIMITS (the emulator's realistic profile; they reach
# it through honcho's environment), plus everything cartflow/settings.py reads (README.md, "Configuration").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
export PATH="$ROOT/.venv/bin:$PATH"
PY="$ROOT/.venv/bin/python"

# .env is git-ignored and read by cartflow/settings.py (the real environment wins), so a `manage.py`
# command in a second terminal sees the same configuration as the processes started here: CARTFLOW_DEV=1
# (unless .env keeps a DJANGO_SECRET_KEY), how this run chose its services, and which Stripe it talks to
# (cartflow/servicefinder.py, dotenv_record).
"$PY" -m cartflow.servicefinder record-env

echo "==> services"
# Prints what it found; creates a missing database named by DATABASE_URL, or says in one line why not.
"$PY" -m cartflow.servicefinder
echo "==> migrate"
"$PY" manage.py migrate --noinput
echo "==> demo catalog"
"$PY" manage.py seed_demo
echo "==> static files"
"$PY" manage.py collectstatic --noinput -v 0

# Logs are JSON lines; readable ones when this runs on a terminal (honcho's pipe would hide that).
if [ -t 1 ] && [ -z "${CARTFLOW_LOG_FORMAT:-}" ]; then export CARTFLOW_LOG_FORMAT=console; fi
# honcho sets its own $PORT for every process, so the address travels as CARTFLOW_BIND.
export CARTFLOW_BIND="127.0.0.1:${PORT:-8000}"
export WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}"
export GUNICORN_THREADS="${GUNICORN_THREADS:-8}"
export CELERY_CONCURRENCY="${CELERY_CONCURRENCY:-2}"
# The emulator delivers only the event types CartFlow handles (payments/webhooks/handlers.py HANDLED_EVENT_TYPES).
if [ -z "${STRIPE_WEBHOOK_EVENTS:-}" ]; then STRIPE_WEBHOOK_EVENTS="$("$PY" manage.py stripe_webhook_events)"; fi
export STRIPE_WEBHOOK_EVENTS
# Prometheus multiprocess mode (docs/operations.md, "Metrics"): gunicorn's workers and the Celery processes
# started here write their counters to one directory, so /metrics adds them all up. Emptied now, before any
# of them starts; one per port, so two `make run`s never add up each other's counts.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$ROOT/.data/metrics-${PORT:-8000}}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
echo "==> serving http://${CARTFLOW_BIND} (Ctrl-C stops everything)"
# -e /dev/null: the processes get this environment as is; Django reads .env itself (environment wins).
exec honcho start -f Procfile -e /dev/null
