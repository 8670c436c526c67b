"""How staff read an amount (cartflow/money.py): minor units shown in whole units with the currency's own
number of decimals, never rounded, never a float."""

from __future__ import annotations

import pytest

from cartflow.money import currency_exponent, money_format


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (18000, "usd", "180.00 USD"),
        (5, "eur", "0.05 EUR"),
        (0, "gbp", "0.00 GBP"),
        (123456789, "usd", "1,234,567.89 USD"),
        (500, "jpy", "500 JPY"),
        (1234567, "krw", "1,234,567 KRW"),
        (1500, "kwd", "1.500 KWD"),
        (7, "bhd", "0.007 BHD"),
        (-550, "usd", "-5.50 USD"),
        (18000, "USD", "180.00 USD"),
    ],
)
def test_minor_units_are_shown_in_whole_units_with_the_currency(amount, currency, shown):
    assert money_format(amount, currency) == shown


def test_exponents_follow_stripes_minor_units():
    exponents = {c: currency_exponent(c) for c in ("usd", "eur", "jpy", "vnd", "xof", "kwd", "tnd", "omr")}
    assert exponents == {"usd": 2, "eur": 2, "jpy": 0, "vnd": 0, "xof": 0, "kwd": 3, "tnd": 3, "omr": 3}
    assert currency_exponent("") == 2  # unknown or missing: the common case


def test_no_amount_yet_and_no_currency_are_shown_as_such():
    assert money_format(None, "usd") == "-"
    assert money_format(100, "") == "1.00 ?"


def test_large_amounts_are_exact_not_floats():
    """A float would turn 2**53 + 1 cents into ...992 cents; integer arithmetic keeps the last digit."""
    assert money_format(2**53 + 1, "usd") == "90,071,992,547,409.93 USD"
