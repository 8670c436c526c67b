"""What ``refund_order`` and ``cancel_order`` share: who ran them, and how a refusal becomes an exit status."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TypeVar

from django.core.management.base import CommandError

from cartflow.problems import DomainError
from payments.errors import PaymentProviderBusy, PaymentTransientError, RefundInProgress

# Exit status 75 (EX_TEMPFAIL in sysexits.h): nothing is wrong with the request; the operation is started or
# Stripe has not answered, and running the command again finishes it (same idempotency keys).
TRY_AGAIN = (RefundInProgress, PaymentTransientError, PaymentProviderBusy)

T = TypeVar("T")


def command_actor(command: str) -> str:
    """``manage.py <command> (<login name>)``: recorded on the order as who did it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        user = "unknown user"
    return f"manage.py {command} ({user})"


def run_operation(call: Callable[[], T]) -> T:
    """``call()``; a refusal (nothing changed) exits 1, one to run again exits 75, each with the problem's detail."""
    try:
        return call()
    except TRY_AGAIN as exc:
        raise CommandError(f"{exc.detail} (run the command again)", returncode=75) from exc
    except DomainError as exc:
        raise CommandError(exc.detail, returncode=1) from exc
