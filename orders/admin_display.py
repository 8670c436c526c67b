"""HTML for the order's page in admin (orders/admin_order.py): small tables of rows, each capped, with a link
to the full list, and links to the other apps' admin pages (by URL: orders never reads their models).

Every table shows at most ``TABLE_CAP`` rows; past that it says "… and N more" and links to the list that
has them all, so a page costs a few bounded queries however busy the order was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

TABLE_CAP = 50


def capped(qs: QuerySet, limit: int = TABLE_CAP) -> tuple[list[Any], int]:
    """The first ``limit`` rows of ``qs`` and how many there are in all (a COUNT only when the rows fill it)."""
    rows = list(qs[:limit])
    return rows, (qs.count() if len(rows) == limit else len(rows))


def when(at: datetime | None) -> str:
    """A timestamp as staff read it on these pages (UTC, to the second)."""
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def code(text: str | None) -> SafeString | str:
    return format_html("<code>{}</code>", text) if text else "-"


def link(url: str, label: Any) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, label)


def changelist_url(model: str, **filters: str) -> str:
    """``model`` is ``<app_label>_<model_name>``; ``filters`` become the query string (``q`` searches)."""
    url = reverse(f"admin:{model}_changelist")
    return url + "?" + urlencode(filters) if filters else url


def changelist_link(model: str, label: str, **filters: str) -> SafeString:
    return link(changelist_url(model, **filters), label)


def reservations_link(checkout_id: str) -> SafeString:
    return changelist_link("inventory_reservation", f"reservations held by {checkout_id}", holder=checkout_id)


def webhooks_link(intent_id: str) -> str:
    if not intent_id:
        return "- (no PaymentIntent yet)"
    return changelist_link("payments_webhookevent", f"webhook events of {intent_id}", intent_id=intent_id)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    total: int,
    full_list: SafeString | str = "",
    empty: str = "none",
) -> SafeString:
    """A table of ``rows`` (cells are escaped unless already safe HTML), then "… and N more" when ``total``
    is more than the rows shown, and the link to the full list."""
    rows = list(rows)
    footer = []
    if total > len(rows):
        footer.append(format_html("… and {} more", total - len(rows)))
    if full_list:
        footer.append(format_html("{}", full_list))
    tail = format_html('<p class="cf-table-more">{}</p>', format_html_join(" — ", "{}", ((f,) for f in footer)))
    if not rows:
        return format_html("<p>{}</p>{}", empty, tail if footer else "")
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html(
        '<div class="cf-table-wrap"><table class="cf-table"><thead><tr>{}</tr></thead>'
        "<tbody>{}</tbody></table></div>{}",
        head,
        body,
        tail if footer else "",
    )
