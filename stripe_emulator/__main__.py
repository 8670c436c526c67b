"""``python -m stripe_emulator [--host H] [--port P] [--webhook-url URL] [--webhook-secret whsec_...]
[--enabled-events TYPE,TYPE|*] [--latency-ms MS] [--latency-jitter-ms MS] [--rate-limits ENDPOINT/GLOBAL]``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from urllib.parse import urlsplit

from .realism import RealismSpecError, parse_rate_limits
from .server import EmulatorServer


def _rate_limits(text: str) -> tuple[float | None, float | None]:
    try:
        return parse_rate_limits(text)
    except RealismSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"milliseconds must be a number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("milliseconds must be >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    base = urlsplit(os.environ.get("STRIPE_API_BASE") or "http://127.0.0.1:12111")
    secret = (os.environ.get("STRIPE_WEBHOOK_SECRET") or "whsec_cartflow_dev").split(",")[0].strip()
    parser = argparse.ArgumentParser(prog="python -m stripe_emulator", description="CartFlow's Stripe emulator")
    parser.add_argument("--host", default=base.hostname or "127.0.0.1")
    parser.add_argument("--port", type=int, default=base.port or 12111)
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get("CARTFLOW_WEBHOOK_URL", "http://127.0.0.1:8000/api/webhooks/stripe"),
        help="where events are POSTed; an empty string disables delivery",
    )
    parser.add_argument("--webhook-secret", default=secret)
    parser.add_argument("--webhook-max-attempts", type=int, default=5)
    parser.add_argument("--webhook-retry-base-ms", type=int, default=500)
    parser.add_argument(
        "--enabled-events",
        default=os.environ.get("STRIPE_WEBHOOK_EVENTS", "*"),
        help='event types to deliver, comma-separated, or "*" for all (env STRIPE_WEBHOOK_EVENTS; default "*"); '
        "every event is still listed by /v1/events",
    )
    parser.add_argument(
        "--latency-ms",
        type=_ms,
        default=os.environ.get("STRIPE_EMULATOR_LATENCY_MS") or "0",
        help="added to every API answer, like real Stripe's (env STRIPE_EMULATOR_LATENCY_MS; default 0)",
    )
    parser.add_argument(
        "--latency-jitter-ms",
        type=_ms,
        default=os.environ.get("STRIPE_EMULATOR_LATENCY_JITTER_MS") or None,
        help="uniform +/- jitter of that latency (env STRIPE_EMULATOR_LATENCY_JITTER_MS; default 20%% of it)",
    )
    parser.add_argument(
        "--rate-limits",
        type=_rate_limits,
        default=os.environ.get("STRIPE_EMULATOR_RATE_LIMITS") or "off",
        help="requests per second PER_ENDPOINT/GLOBAL past which the API answers 429 rate_limit, e.g. 25/100 "
        "(Stripe's; env STRIPE_EMULATOR_RATE_LIMITS; default off)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = EmulatorServer(
        host=args.host,
        port=args.port,
        webhook_url=args.webhook_url or None,
        webhook_secret=args.webhook_secret,
        webhook_max_attempts=args.webhook_max_attempts,
        webhook_retry_base=args.webhook_retry_base_ms / 1000,
        enabled_events=args.enabled_events,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        rate_limits=args.rate_limits,
        verbose=args.verbose,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.bind()
    logging.getLogger("stripe_emulator").info(
        "Stripe emulator on %s, webhooks to %s (events: %s); latency %s, rate limits %s",
        server.url,
        args.webhook_url or "(none)",
        args.enabled_events,
        server.latency.describe(),
        server.rate_limiter.describe(),
    )
    assert server._httpd is not None
    try:
        server._httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
