"""Inventory's domain errors: the catalog, stock, reservations and the flash sale (codes from
cartflow/problems.py, one class per code).

The cart refuses with the catalog's and stock's errors too (``ProductNotFound``, ``InsufficientStock``):
it reads the catalog and available stock through inventory.selectors.
"""

from __future__ import annotations

from cartflow.problems import DomainError

# --- catalog and stock -----------------------------------------------------------------------------


class ProductNotFound(DomainError):
    """No active product has this id (or SKU); carries ``productId`` when there is one."""

    code = "product_not_found"


class InsufficientStock(DomainError):
    """Fewer units available than asked; carries ``productId`` and ``available``."""

    code = "insufficient_stock"


class QuantityLimitExceeded(DomainError):
    """More units of one product than one buyer may hold or buy; carries ``productId`` and ``limit``. Raised
    by the flash-sale take (one cart's lines) and by the checkout start (the buyer's checkouts together)."""

    code = "quantity_limit_exceeded"


class InventoryContention(DomainError):
    """Lost the race too often within the retry budget; the API answers 503 with ``Retry-After``."""

    code = "inventory_contention"


class StockBelowReserved(DomainError):
    """A stock adjustment would leave fewer units on hand than checkouts hold."""

    code = "stock_below_reserved"


class ReservationStateError(Exception):
    """Acting on a reservation in the wrong state (e.g. committing one that was released or expired).

    Not a problem code: a caller's bug or a race the saga handles (re-reserve or refund), never an answer
    to a client."""


# --- flash sale ------------------------------------------------------------------------------------


class SoldOut(DomainError):
    code = "sold_out"


class FlashSaleBusy(DomainError):
    code = "flash_sale_busy"


class FlashSaleNotActive(DomainError):
    code = "flash_sale_not_active"


class FlashTicketNotFound(DomainError):
    code = "flash_ticket_not_found"
