"""The reference storefront (the storefront/ folder) at /shop/: its three files as they are, and config.json.

The page is plain HTML, one ES module and CSS, with no template and no build step, so the same folder can be
served from any other origin too and pointed at this API with ``?api=`` (docs/storefront.md). config.json
tells it which payment form to show: Stripe's Payment Element when ``STRIPE_PUBLISHABLE_KEY`` is set, else
the Stripe emulator's test cards.
"""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "shop.js": ("shop.js", "text/javascript; charset=utf-8"),
    "shop.css": ("shop.css", "text/css; charset=utf-8"),
}


@require_safe
def storefront_file(request: HttpRequest, name: str = "") -> HttpResponse:
    if name not in FILES:
        raise Http404("not a storefront file")
    filename, content_type = FILES[name]
    response = FileResponse((settings.BASE_DIR / "storefront" / filename).open("rb"), content_type=content_type)
    response["Cache-Control"] = "no-cache"  # small files: always revalidated, so an edit shows on reload
    return response


@require_safe
def storefront_config(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"stripePublishableKey": settings.STRIPE_PUBLISHABLE_KEY or None})
