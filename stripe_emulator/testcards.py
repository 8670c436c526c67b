"""Stripe's documented test PaymentMethods and what confirming a PaymentIntent with each one does.

https://docs.stripe.com/testing#cards, #declined-payments and #regulatory-cards.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    outcome: str = "succeed"  # "succeed" | "decline" | "authenticate"
    code: str | None = None  # error code for declines (card_declined, expired_card, ...)
    decline_code: str | None = None
    message: str | None = None
    funding: str = "credit"


_DECLINED = "Your card was declined."

TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_visa_debit": TestCard("visa", "5556", funding="debit"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_mastercard_debit": TestCard("mastercard", "8210", funding="debit"),
    "pm_card_amex": TestCard("amex", "8431"),
    "pm_card_discover": TestCard("discover", "1117"),
    "pm_card_us": TestCard("visa", "4242"),
    "pm_card_authenticationRequiredOnSetup": TestCard("visa", "3155"),
    "pm_card_visa_chargeDeclined": TestCard("visa", "0002", "decline", "card_declined", "generic_decline", _DECLINED),
    "pm_card_chargeDeclined": TestCard("visa", "0002", "decline", "card_declined", "generic_decline", _DECLINED),
    "pm_card_visa_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", "decline", "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", "decline", "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_visa_chargeDeclinedLostCard": TestCard("visa", "9987", "decline", "card_declined", "lost_card", _DECLINED),
    "pm_card_chargeDeclinedLostCard": TestCard("visa", "9987", "decline", "card_declined", "lost_card", _DECLINED),
    "pm_card_visa_chargeDeclinedStolenCard": TestCard(
        "visa", "9979", "decline", "card_declined", "stolen_card", _DECLINED
    ),
    "pm_card_chargeDeclinedStolenCard": TestCard("visa", "9979", "decline", "card_declined", "stolen_card", _DECLINED),
    "pm_card_visa_chargeDeclinedFraudulent": TestCard(
        "visa", "0019", "decline", "card_declined", "fraudulent", _DECLINED
    ),
    "pm_card_chargeDeclinedFraudulent": TestCard("visa", "0019", "decline", "card_declined", "fraudulent", _DECLINED),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "0069", "decline", "expired_card", "expired_card", "Your card has expired."
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestCard(
        "visa", "0127", "decline", "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
    ),
    "pm_card_chargeDeclinedProcessingError": TestCard(
        "visa",
        "0119",
        "decline",
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "pm_card_threeDSecure2Required": TestCard("visa", "3220", "authenticate"),
    "pm_card_threeDSecureRequired": TestCard("visa", "3063", "authenticate"),
    "pm_card_authenticationRequired": TestCard("visa", "3184", "authenticate"),
}

GENERIC_DECLINE = TEST_CARDS["pm_card_visa_chargeDeclined"]
