"""A Stripe emulator for CartFlow's development and tests: pure standard library, no Django.

Run it with ``python -m payments.emulator`` or in-process with ``EmulatorServer(...).start()``.
"""

from .server import EmulatorServer
from .webhooks import sign

__all__ = ["EmulatorServer", "sign"]
