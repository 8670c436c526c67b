# syntax=docker/dockerfile:1
# CartFlow image: one image for the api, the Celery worker and beat (docker-compose.yml picks the command).

# --- build: install the locked dependencies into a virtualenv -------------------------------------------
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# --require-hashes: exactly what requirements.lock pins, nothing resolved at build time.
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.lock

# --- runtime: the venv, the code, a non-root user ---------------------------------------------------------
FROM python:3.11.10-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=cartflow.settings \
    CARTFLOW_LOG_FORMAT=json \
    WEB_CONCURRENCY=2
RUN groupadd --system cartflow && useradd --system --gid cartflow --home-dir /app --shell /usr/sbin/nologin cartflow
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=cartflow:cartflow . .
# Static files are collected at build time (whitenoise serves them); a throwaway key is enough for that.
RUN DJANGO_SECRET_KEY=collectstatic-only DATABASE_URL=postgres://unused@127.0.0.1/unused \
    REDIS_URL=redis://127.0.0.1:6379/0 CELERY_BROKER_URL=redis://127.0.0.1:6379/1 \
    python manage.py collectstatic --noinput -v 0
USER cartflow
EXPOSE 8000
# Health checks live in docker-compose.yml: the same image also runs the worker and beat, which serve no HTTP.
CMD ["gunicorn", "cartflow.wsgi", "-c", "python:cartflow.gunicorn_conf", "--bind", "0.0.0.0:8000"]
