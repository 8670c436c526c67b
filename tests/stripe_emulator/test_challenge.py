"""3-D Secure with a return_url: next_action redirects to the emulator's challenge page, whose buttons finish the
authentication (events and webhooks as Stripe sends them) and send the browser back to the return_url."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
import stripe

CREATE = {"amount": 2500, "currency": "usd", "payment_method_types": ["card"]}
RETURN_URL = "http://127.0.0.1:9/shop/?api=http%3A%2F%2F127.0.0.1%3A8000"


@pytest.fixture
def client(emulator):
    return emulator.client()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the test reads the 303 itself


def _open(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _pending(client, **params):
    return client.v1.payment_intents.create(
        params={**CREATE, "confirm": True, "payment_method": "pm_card_threeDSecure2Required", **params}
    )


def test_a_return_url_makes_next_action_a_redirect_to_the_challenge_page(client, emulator):
    pi = _pending(client, return_url=RETURN_URL)
    assert pi.status == "requires_action" and pi.next_action.type == "redirect_to_url"
    redirect = pi.next_action.redirect_to_url
    assert redirect.url == f"{emulator.url}/_emulator/3ds/{pi.id}" and redirect.return_url == RETURN_URL
    status, headers, page = _open(redirect.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'data-test="approve"' in page and 'data-test="fail"' in page and "25.00 USD" in page


def test_approving_succeeds_the_intent_sends_its_webhooks_and_returns_the_shopper(client, emulator, receiver):
    pi = _pending(client, return_url=RETURN_URL)
    status, headers, _ = _open(pi.next_action.redirect_to_url.url, data=b"outcome=succeed")
    assert status == 303
    back = urlsplit(headers["Location"])
    assert headers["Location"].startswith(RETURN_URL + "&")
    query = parse_qs(back.query)
    assert query["payment_intent"] == [pi.id] and query["redirect_status"] == ["succeeded"]
    assert query["payment_intent_client_secret"] == [pi.client_secret]
    assert query["api"] == ["http://127.0.0.1:8000"]  # the return_url's own query is kept
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    deadline = time.monotonic() + 5
    while "payment_intent.succeeded" not in receiver.types():
        assert time.monotonic() < deadline, receiver.types()
        time.sleep(0.01)
    # Answered once: a second click finds nothing to authenticate.
    assert _open(pi.next_action.redirect_to_url.url, data=b"outcome=succeed")[0] == 409


def test_failing_reopens_the_intent_and_says_so_to_the_return_url(client, emulator):
    pi = _pending(client, return_url="https://shop.example/pay")
    status, headers, _ = _open(pi.next_action.redirect_to_url.url, data=b"outcome=fail")
    assert status == 303 and headers["Location"].startswith("https://shop.example/pay?payment_intent=")
    assert parse_qs(urlsplit(headers["Location"]).query)["redirect_status"] == ["failed"]
    after = client.v1.payment_intents.retrieve(pi.id)
    assert after.status == "requires_payment_method"
    assert after.last_payment_error.code == "payment_intent_authentication_failure"


def test_the_challenge_page_refuses_what_it_cannot_answer(client, emulator):
    assert _open(f"{emulator.url}/_emulator/3ds/pi_unknown")[0] == 404
    paid = client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    assert _open(f"{emulator.url}/_emulator/3ds/{paid.id}")[0] == 409
    pending = _pending(client, return_url=RETURN_URL)
    assert _open(pending.next_action.redirect_to_url.url, data=b"outcome=maybe")[0] == 400
    assert client.v1.payment_intents.retrieve(pending.id).status == "requires_action"


def test_a_return_url_that_is_not_an_absolute_http_url_is_refused_before_anything_is_created(client, emulator):
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        _pending(client, return_url="javascript:alert(1)")
    assert excinfo.value.param == "return_url"
    assert client.v1.payment_intents.list().data == []
