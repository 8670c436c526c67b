"""Money for people to read: integer minor units and an ISO 4217 currency, shown as ``1,234.56 USD``.

Amounts everywhere else stay integers in the currency's minor unit, as Stripe counts them (``amount`` in a
PaymentIntent); this is only how staff see them (the admin, the money commands' output). The exponent is
Stripe's: most currencies have two decimals; Stripe's zero-decimal currencies (JPY, KRW, …) have none, so
``500 jpy`` is ``500 JPY``; and a few dinars have three (``1500 kwd`` is ``1.500 KWD``).
"""

from __future__ import annotations

# Stripe's zero-decimal currencies: the amount is already in whole units.
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Stripe's three-decimal currencies: thousandths (fils, baisa, millime).
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def currency_exponent(currency: str) -> int:
    """How many decimals the currency's minor unit has: 0, 2 (the default) or 3."""
    code = (currency or "").lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def money_format(amount: int | None, currency: str) -> str:
    """``amount`` minor units of ``currency`` as staff read it: ``18000, "usd"`` → ``"180.00 USD"``.

    Thousands are grouped with commas; a negative amount keeps its sign (``-5.00 USD``); ``None`` (no amount
    yet) is ``"-"``. Integer arithmetic only, so no amount is ever rounded."""
    if amount is None:
        return "-"
    exponent = currency_exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(int(amount)), 10**exponent)
    number = f"{whole:,}" + (f".{fraction:0{exponent}d}" if exponent else "")
    code = (currency or "").upper() or "?"
    return f"{sign}{number} {code}"
