"""A Stripe emulator for CartFlow's development and tests: pure standard library, no Django, no ``stripe``.

Run it with ``python -m stripe_emulator`` or in-process with ``EmulatorServer(...).start()``; README.md in this
folder says what it answers and how to make it slow, rate-limited or faulty.
"""

from .server import EmulatorServer
from .webhooks import sign

__all__ = ["EmulatorServer", "sign"]
