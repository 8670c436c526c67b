"""CartFlow settings: every value read from the environment here, and only here.

Each setting names its environment variable and its default. App code reads ``django.conf.settings``
at call time, never at import time.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as default_cors_headers

from cartflow import servicefinder

BASE_DIR = Path(__file__).resolve().parent.parent
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# `make run` writes a git-ignored .env (CARTFLOW_DEV=1, the services it chose) so that a manage.py command
# in a second terminal sees the same configuration. The real environment always wins; pytest ignores it.
servicefinder.load_dotenv()

TESTING = "pytest" in sys.modules or os.environ.get("CARTFLOW_TESTING") == "1"

# DJANGO_DEBUG: off unless "1". DJANGO_SECRET_KEY: required outside debug, `make run` and tests.
DEBUG = env_bool("DJANGO_DEBUG")
_DEV_SECRET = "cartflow-dev-only-secret-key-not-for-production-0123456789abcdef"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
# The development relaxations below (plain-HTTP cookies, no HTTPS redirect, no HSTS) hold in debug, in the
# tests, and under CARTFLOW_DEV=1 only while no DJANGO_SECRET_KEY is given: a real secret means a real
# deployment, even when a leftover .env still says CARTFLOW_DEV=1. DJANGO_SECURE decides explicitly.
_DEV_MODE = DEBUG or TESTING or (env_bool("CARTFLOW_DEV") and not SECRET_KEY)
if not SECRET_KEY:
    if DEBUG or TESTING or env_bool("CARTFLOW_DEV"):
        SECRET_KEY = _DEV_SECRET
    else:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off. For local work set CARTFLOW_DEV=1 "
            "(`make run` writes it to the git-ignored .env, which manage.py reads too)."
        )

# DJANGO_ALLOWED_HOSTS: comma-separated.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# A CSRF failure on an /api path is a problem document like every other error there.
CSRF_FAILURE_VIEW = "cartflow.exceptions.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "cartflow",
    "inventory",
    "cart",
    "payments",
    "orders",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "cartflow.middleware.RequestIdMiddleware",
    # CORS headers on every /api answer, the early refusals below included; preflights end here.
    "corsheaders.middleware.CorsMiddleware",
    # Bodies over CARTFLOW_MAX_BODY_BYTES and impossible paths are refused before anything reads them.
    "cartflow.limits.RequestLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, Swagger UI, ReDoc from the sidecar) straight from gunicorn, no CDN, no nginx.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "cartflow.urls"
WSGI_APPLICATION = "cartflow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASE_URL, else local PostgreSQL, else embedded (cartflow/servicefinder.py).
# CARTFLOW_DB_CONN_MAX_AGE: persistent connections (seconds).
# CARTFLOW_DB_HEALTH_CHECKS: a reused connection is checked before its first query in each request, from its
# socket where it sits idle (cartflow/db/base.py), instead of Django's SELECT 1 round trip.
# CARTFLOW_DB_SERVER_SIDE_BINDING (on): parameters sent apart from the SQL text, which is what lets
# CARTFLOW_DB_PREPARE_THRESHOLD (5) work: a statement a connection has run that many times is prepared once
# and then only executed, so PostgreSQL stops parsing and planning it on every checkout (a third of its CPU
# per start, docs/performance.md). 0 never prepares: for a pooler in transaction mode that cannot keep
# prepared statements (docs/deploy.md).
DATABASES = {
    "default": dj_database_url.parse(
        servicefinder.database_url(),
        conn_max_age=env_int("CARTFLOW_DB_CONN_MAX_AGE", 300),
        conn_health_checks=env_bool("CARTFLOW_DB_HEALTH_CHECKS", True),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "cartflow.db"
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
if env_bool("CARTFLOW_DB_SERVER_SIDE_BINDING", True):
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
    # Django passes None (never prepare) unless told; psycopg's own default is 5.
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = env_int("CARTFLOW_DB_PREPARE_THRESHOLD", 5) or None
# Short transactions only: no ATOMIC_REQUESTS (docs/architecture.md, "Layout").
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# REDIS_URL, else local Redis, else embedded. Timeouts keep a dead Redis from hanging a request.
REDIS_URL = servicefinder.redis_url()
if TESTING and not os.environ.get("REDIS_URL"):
    # The suite flushes its Redis DB: keep it away from the DB `make run` uses.
    REDIS_URL = servicefinder.with_redis_db(REDIS_URL, 14)
REDIS_SOCKET_TIMEOUT = env_float("CARTFLOW_REDIS_SOCKET_TIMEOUT", 0.5)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cf",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "CONNECTION_POOL_KWARGS": {"health_check_interval": 30, "retry_on_timeout": False},
        },
    }
}

# Celery: broker on Redis (DB 1) unless CELERY_BROKER_URL is set; beat uses django-celery-beat.
CELERY_BROKER_URL = servicefinder.celery_broker_url()
if TESTING and not os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = servicefinder.broker_url_for(servicefinder.with_redis_db(REDIS_URL, 15))
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes the database connection around every task unless this is set; CartFlow
# recycles connections itself around each task like Django does per request (cartflow/celery.py), so the
# fixup only closes them every this many tasks.
CELERY_DB_REUSE_MAX = env_int("CARTFLOW_CELERY_DB_REUSE_MAX", 1000)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 5}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# Celery logs through cartflow.logconfig (structlog JSON lines) instead of its own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# CELERY_TASK_ALWAYS_EAGER: only for unit tests that do not depend on the broker.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER")
# Outbound webhook deliveries (orders/outbound/) have a queue of their own. A worker started without -Q
# consumes every queue named here; a deployment that gives deliveries their own workers (-Q webhooks, and
# -Q celery for the rest) keeps a slow receiver from ever holding a slot that fulfilment needs.
CELERY_TASK_QUEUES = {"celery": {}, "webhooks": {}}
CELERY_TASK_ROUTES = {"orders.tasks.webhook_delivery_task": {"queue": "webhooks"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# `make run` runs collectstatic; tests and dev also find files in the apps directly.
WHITENOISE_USE_FINDERS = DEBUG or TESTING or env_bool("CARTFLOW_DEV")

# DJANGO_SECURE: served over HTTPS (default: on outside development, see _DEV_MODE). Then cookies are
# Secure, plain-HTTP requests are redirected to HTTPS (DJANGO_SECURE_SSL_REDIRECT) and responses carry
# Strict-Transport-Security: DJANGO_SECURE_HSTS_SECONDS (default 3600, short so a mistake heals within the
# hour; raise it to a year once HTTPS is proven), DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS and
# DJANGO_SECURE_HSTS_PRELOAD (both on; browsers' preload lists accept only a max-age of a year or more).
_SECURE = env_bool("DJANGO_SECURE", default=not _DEV_MODE)
SESSION_COOKIE_SECURE = _SECURE
CSRF_COOKIE_SECURE = _SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=_SECURE)
# Load balancers' health checks and Prometheus scrape the web servers over plain HTTP from inside.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 3600 if _SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Clients, proxies and browsers (cartflow/clients.py, cartflow/signin.py, docs/api.md) ---
# CARTFLOW_TRUSTED_PROXIES: how many proxies (load balancer, CDN) stand in front of the web servers. 0 (the
# default) ignores X-Forwarded-For: the connection's peer is the client.
CARTFLOW_TRUSTED_PROXIES = env_int("CARTFLOW_TRUSTED_PROXIES", 0)
# HTTPS is read from X-Forwarded-Proto only when a proxy stands in front, as X-Forwarded-For is: without one
# the header is the client's own, and "https" from a plain-HTTP client would skip the HTTPS redirect.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if CARTFLOW_TRUSTED_PROXIES else None
# CARTFLOW_MAX_BODY_BYTES: larger request bodies get 413 payload_too_large before anything reads them.
CARTFLOW_MAX_BODY_BYTES = env_int("CARTFLOW_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = CARTFLOW_MAX_BODY_BYTES
# CARTFLOW_MAX_JSON_DEPTH: JSON bodies nested deeper get 400 malformed_json (the API needs 3 levels).
CARTFLOW_MAX_JSON_DEPTH = env_int("CARTFLOW_MAX_JSON_DEPTH", 32)
# CARTFLOW_CORS_ALLOWED_ORIGINS: comma-separated origins (https://shop.example.com) whose pages may call /api
# from a browser, with credentials; the same origins pass Django's CSRF origin check for session sign-in.
CORS_ALLOWED_ORIGINS = env_list("CARTFLOW_CORS_ALLOWED_ORIGINS", "")
CORS_URLS_REGEX = r"^/api(/.*)?$"
CORS_ALLOW_CREDENTIALS = True
CORS_ALLOW_HEADERS = (
    *default_cors_headers,
    "x-cart-token",
    "idempotency-key",
    "if-match",
    "flash-ticket",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = ["X-Cart-Token", "ETag", "X-Request-Id", "Idempotent-Replayed", "Retry-After"]
CSRF_TRUSTED_ORIGINS = list(dict.fromkeys([*CSRF_TRUSTED_ORIGINS, *CORS_ALLOWED_ORIGINS]))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["cartflow.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "cartflow.exceptions.problem_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        # CARTFLOW_CART_WRITE_RATE: cart writes per client (DRF throttle syntax).
        "cart_write": os.environ.get("CARTFLOW_CART_WRITE_RATE", "600/min"),
        # CARTFLOW_CHECKOUT_RATE: checkout calls per user, else cart token, else address; queue joins per address.
        "checkout": os.environ.get("CARTFLOW_CHECKOUT_RATE", "120/min"),
        # CARTFLOW_CART_CREATE_RATE: writes that start a new guest cart, per client address.
        "cart_create": os.environ.get("CARTFLOW_CART_CREATE_RATE", "120/min"),
        # CARTFLOW_SIGN_IN_RATE: sign-in attempts (API and admin) per client address (password guessing).
        "sign_in": os.environ.get("CARTFLOW_SIGN_IN_RATE", "20/min"),
        # CARTFLOW_SIGN_IN_USERNAME_RATE: failed sign-ins per username, from any address.
        "sign_in_username": os.environ.get("CARTFLOW_SIGN_IN_USERNAME_RATE", "10/hour"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "CartFlow API",
    "DESCRIPTION": "Checkout backend: Redis cart, inventory reservations, idempotent Stripe payments.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api",
    # The order's paymentStatus, named after what it describes (a checkout has a paymentStatus too).
    "ENUM_NAME_OVERRIDES": {"OrderPaymentStatusEnum": "orders.selectors.PAYMENT_STATUSES"},
    # Path parameters published in camelCase ({productId}) as docs/api.md writes them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cartflow.schema.camelize_path_parameters",
    ],
}

# --- CartFlow domain settings (documented in README.md, "Configuration") ---
# CARTFLOW_RESERVATION_TTL_SECONDS: how long a checkout holds stock.
CARTFLOW_RESERVATION_TTL_SECONDS = env_int("CARTFLOW_RESERVATION_TTL_SECONDS", 900)
# CARTFLOW_RELEASE_INTERVAL_SECONDS: how often beat releases expired holds.
CARTFLOW_RELEASE_INTERVAL_SECONDS = env_int("CARTFLOW_RELEASE_INTERVAL_SECONDS", 60)
# CARTFLOW_CART_TTL_SECONDS: sliding expiry of a guest cart (7 days); signed-in carts keep 30 days.
CARTFLOW_CART_TTL_SECONDS = env_int("CARTFLOW_CART_TTL_SECONDS", 7 * 24 * 3600)
CARTFLOW_USER_CART_TTL_SECONDS = env_int("CARTFLOW_USER_CART_TTL_SECONDS", 30 * 24 * 3600)
# CARTFLOW_MAX_LINE_QUANTITY: most units of one product in a cart line.
CARTFLOW_MAX_LINE_QUANTITY = env_int("CARTFLOW_MAX_LINE_QUANTITY", 100)
# CARTFLOW_MAX_CART_LINES: most distinct products in a cart.
CARTFLOW_MAX_CART_LINES = env_int("CARTFLOW_MAX_CART_LINES", 100)
# Reservation retries: attempts and total time budget for a lost version race.
CARTFLOW_RESERVE_MAX_ATTEMPTS = env_int("CARTFLOW_RESERVE_MAX_ATTEMPTS", 12)
CARTFLOW_RESERVE_MAX_SECONDS = env_float("CARTFLOW_RESERVE_MAX_SECONDS", 2.0)
# The pause between attempts: full jitter, U(0, min(max, base * 2^attempt)). A loser lost to a writer that has
# already committed (the stock row is locked for one statement only), so the row is free again at once; a long
# pause only leaves its web thread idle while its clients queue (docs/performance.md, the hot rush's tail).
CARTFLOW_RESERVE_BACKOFF_BASE_SECONDS = env_float("CARTFLOW_RESERVE_BACKOFF_BASE_SECONDS", 0.001)
CARTFLOW_RESERVE_BACKOFF_MAX_SECONDS = env_float("CARTFLOW_RESERVE_BACKOFF_MAX_SECONDS", 0.02)
CARTFLOW_CATALOG_CACHE_SECONDS = env_int("CARTFLOW_CATALOG_CACHE_SECONDS", 300)

# --- Hold caps (orders/saga/hold_caps.py): what one client (signed-in user, else address) may hold; 0 = off ---
# CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT: unfinished checkouts at once. 5 leaves room for the few real
# buyers behind one shared address (an office, a carrier's NAT); a signed-in user has one cart, so one.
CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT = env_int("CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT", 5)
# CARTFLOW_MAX_UNITS_PER_PRODUCT: units of one product across a client's unfinished checkouts. The default
# is the per-line limit (CARTFLOW_MAX_LINE_QUANTITY), so every cart the cart API accepts can check out; it
# stops one client piling up holds of a product over several carts.
CARTFLOW_MAX_UNITS_PER_PRODUCT = env_int("CARTFLOW_MAX_UNITS_PER_PRODUCT", CARTFLOW_MAX_LINE_QUANTITY)
# CARTFLOW_FLASH_MAX_UNITS_PER_BUYER: the same for a product in a flash sale (the lower of the two applies).
CARTFLOW_FLASH_MAX_UNITS_PER_BUYER = env_int("CARTFLOW_FLASH_MAX_UNITS_PER_BUYER", 2)

# --- Checkout saga and Idempotency-Key (orders/saga/, cartflow/idempotency.py) ---
# CARTFLOW_SAGA_LEASE_SECONDS: how long a process may drive a saga before a crashed one's lease lapses.
CARTFLOW_SAGA_LEASE_SECONDS = env_float("CARTFLOW_SAGA_LEASE_SECONDS", 30)
# CARTFLOW_CHECKOUT_START_WAIT_SECONDS: a second start waits this long for the cart's first one to finish.
CARTFLOW_CHECKOUT_START_WAIT_SECONDS = env_float("CARTFLOW_CHECKOUT_START_WAIT_SECONDS", 5.0)
# CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS: a confirm waits this long for another request's lease on the saga.
CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS = env_float("CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS", 5.0)
# CARTFLOW_IDEMPOTENCY_TTL_SECONDS: how long an Idempotency-Key's stored response is replayed (24 h).
CARTFLOW_IDEMPOTENCY_TTL_SECONDS = env_int("CARTFLOW_IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
# CARTFLOW_IDEMPOTENCY_LOCK_SECONDS: after this, a key whose first request died is taken over by a retry.
CARTFLOW_IDEMPOTENCY_LOCK_SECONDS = env_int("CARTFLOW_IDEMPOTENCY_LOCK_SECONDS", 60)
# Flash-sale fair queue: an admitted ticket must start its checkout within ADMIT seconds, and a waiting
# ticket that reaches the head without having been polled for POLL seconds loses its place.
CARTFLOW_FLASH_QUEUE_ADMIT_SECONDS = env_float("CARTFLOW_FLASH_QUEUE_ADMIT_SECONDS", 30.0)
CARTFLOW_FLASH_QUEUE_POLL_SECONDS = env_float("CARTFLOW_FLASH_QUEUE_POLL_SECONDS", 60.0)

# --- Stripe (payments/) ---
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
# STRIPE_PUBLISHABLE_KEY: the storefront at /shop/ shows Stripe's Payment Element with it (pk_...); without it,
# the emulator's test cards (docs/storefront.md).
STRIPE_PUBLISHABLE_KEY = os.environ.get("STRIPE_PUBLISHABLE_KEY", "")
# STRIPE_EMULATOR_URL: where the emulator answers; Stripe calls go there only while no key is set, so a
# deployment can name its emulator (docker-compose.yml does) and a real key still reaches the real Stripe.
STRIPE_EMULATOR_URL = os.environ.get("STRIPE_EMULATOR_URL", servicefinder.EMULATOR_API_BASE)
# STRIPE_API_BASE: where Stripe calls go, when set; by default the real Stripe with a key, else the emulator
# (cartflow/servicefinder.py decides, so the .env that `make run` writes records the same answer).
STRIPE_API_BASE = servicefinder.stripe_api_base()
# STRIPE_WEBHOOK_SECRET: comma-separated to accept several during rotation.
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "" if STRIPE_SECRET_KEY else "whsec_cartflow_dev")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 2)
STRIPE_TIMEOUT_SECONDS = env_float("STRIPE_TIMEOUT_SECONDS", 10.0)
# CARTFLOW_STRIPE_RATE: requests per second to Stripe shared by every process (payments/budget.py); 0 means
# unlimited. With a key the default is 20: under Stripe's sandbox limit of 25/s (live mode allows 100/s),
# leaving room for the Dashboard and the CLI on the same account. The emulator is unlimited unless it is told
# to be as rate-limited as Stripe (STRIPE_EMULATOR_RATE_LIMITS, which `make run` hands to it too): then the
# same 20 applies, so the budget is exercised as it would be against the real account.
CARTFLOW_STRIPE_RATE = env_float(
    "CARTFLOW_STRIPE_RATE", 20.0 if STRIPE_SECRET_KEY or os.environ.get("STRIPE_EMULATOR_RATE_LIMITS") else 0.0
)
# CARTFLOW_STRIPE_WAIT_SECONDS: how long a buyer's Stripe call waits for the budget before 503
# payment_provider_busy (nothing sent); background calls wait longer (payments/budget.py).
CARTFLOW_STRIPE_WAIT_SECONDS = env_float("CARTFLOW_STRIPE_WAIT_SECONDS", 2.0)
# CARTFLOW_CAPTURE_METHOD: "automatic" (the charge is captured at confirm) or "manual" (confirm only
# authorizes; fulfilment captures, a compensation voids; docs/payments.md, "Authorize now, capture at fulfilment").
CARTFLOW_CAPTURE_METHOD = os.environ.get("CARTFLOW_CAPTURE_METHOD", "automatic").strip().lower()
if CARTFLOW_CAPTURE_METHOD not in ("automatic", "manual"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"CARTFLOW_CAPTURE_METHOD is automatic or manual, not {CARTFLOW_CAPTURE_METHOD!r}.")
# CARTFLOW_CAPTURE_WITHIN_HOURS: an authorization still uncaptured this long after it was made is captured
# (its order confirmed) or voided by the hourly beat task; Stripe itself cancels one after 7 days (168 h).
CARTFLOW_CAPTURE_WITHIN_HOURS = env_float("CARTFLOW_CAPTURE_WITHIN_HOURS", 144.0)
# Stripe webhook processing: retries (exponential backoff from the base, capped at 600 s) before an event is parked.
CARTFLOW_WEBHOOK_MAX_RETRIES = env_int("CARTFLOW_WEBHOOK_MAX_RETRIES", 8)
CARTFLOW_WEBHOOK_RETRY_BASE_SECONDS = env_float("CARTFLOW_WEBHOOK_RETRY_BASE_SECONDS", 2.0)
# The emulator posts webhooks here.
CARTFLOW_WEBHOOK_URL = os.environ.get("CARTFLOW_WEBHOOK_URL", "")

# --- Outbound webhooks to the shop's own systems (orders/outbound/, docs/webhooks.md) ---
# CARTFLOW_WEBHOOK_ENDPOINTS: comma-separated URLs that get every event (admin manages more).
CARTFLOW_WEBHOOK_ENDPOINTS = env_list("CARTFLOW_WEBHOOK_ENDPOINTS", "")
# CARTFLOW_WEBHOOK_SIGNING_SECRET: signs CartFlow-Signature for those, and for admin endpoints without a secret.
CARTFLOW_WEBHOOK_SIGNING_SECRET = os.environ.get("CARTFLOW_WEBHOOK_SIGNING_SECRET", "")
# CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS: per connect (at most 3 s) / write / read of one POST.
CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS = env_float("CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS", 5.0)
# Retries on anything but a 2xx: base × 2^(n-1) capped at the max, jittered in its upper half, for RETRY_FOR
# seconds after the fan-out (24 h), then the delivery is parked (admin can re-send it).
CARTFLOW_WEBHOOK_DELIVERY_RETRY_BASE_SECONDS = env_float("CARTFLOW_WEBHOOK_DELIVERY_RETRY_BASE_SECONDS", 30.0)
CARTFLOW_WEBHOOK_DELIVERY_RETRY_MAX_SECONDS = env_float("CARTFLOW_WEBHOOK_DELIVERY_RETRY_MAX_SECONDS", 3600.0)
CARTFLOW_WEBHOOK_DELIVERY_RETRY_FOR_SECONDS = env_float("CARTFLOW_WEBHOOK_DELIVERY_RETRY_FOR_SECONDS", 24 * 3600.0)

# --- Logging: structlog JSON lines (pretty on a terminal), carrying the request id ---
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOG_FORMAT = os.environ.get("CARTFLOW_LOG_FORMAT", "auto")  # auto | json | console
LOGGING_CONFIG = None
from cartflow.logconfig import configure_logging  # noqa: E402

configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)

# OpenTelemetry: exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set (cartflow/tracing.py).
OTEL_EXPORTER_OTLP_ENDPOINT = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")

# --- Metrics: GET /metrics (cartflow/metrics.py; docs/operations.md, "Metrics") ---
# CARTFLOW_METRICS_ENABLED: serve /metrics on the app's port; 0 answers 404 (scrape `manage.py serve_metrics` instead).
CARTFLOW_METRICS_ENABLED = env_bool("CARTFLOW_METRICS_ENABLED", True)
# CARTFLOW_METRICS_TOKEN: when set, /metrics answers only requests with `Authorization: Bearer <token>`.
CARTFLOW_METRICS_TOKEN = os.environ.get("CARTFLOW_METRICS_TOKEN", "")
