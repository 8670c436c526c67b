"""The reference storefront's files at /shop/ (cartflow/storefront.py); the page itself is tested in a real
browser (tests/e2e/browser/)."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.parametrize(
    ("path", "content_type", "starts"),
    [
        ("/shop/", "text/html", b"<!doctype html>"),
        ("/shop/shop.js", "text/javascript", b"// CartFlow's reference storefront"),
        ("/shop/shop.css", "text/css", b"/* CartFlow's reference storefront"),
    ],
)
def test_the_storefront_files_are_served_as_they_are(path, content_type, starts):
    response = Client().get(path)
    assert response.status_code == 200 and response["Content-Type"].startswith(content_type)
    assert b"".join(response.streaming_content).startswith(starts)
    assert response["Cache-Control"] == "no-cache"


def test_shop_without_its_slash_redirects_so_the_pages_relative_links_resolve():
    response = Client().get("/shop")
    assert response.status_code == 301 and response["Location"] == "/shop/"


def test_nothing_else_is_served_from_the_folder():
    client = Client()
    for path in ("/shop/index.html", "/shop/..%2Fmanage.py", "/shop/README.md"):
        assert client.get(path).status_code == 404, path
    assert client.post("/shop/").status_code == 405


def test_config_names_the_publishable_key_when_one_is_set(settings):
    settings.STRIPE_PUBLISHABLE_KEY = ""
    assert Client().get("/shop/config.json").json() == {"stripePublishableKey": None}  # the emulator's cards
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_123"
    assert Client().get("/shop/config.json").json() == {"stripePublishableKey": "pk_test_123"}
