from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders and checkout"

    def ready(self) -> None:
        # inventory and payments know nothing of orders: they call these hooks
        # (docs/architecture.md, "Dependency rules").
        # Imported here, not at the top: the listeners use the models, which load once the registry is ready.
        from inventory.hooks import register_expired_listener, register_extend_policy
        from orders import refunds
        from orders.saga import listeners
        from payments.hooks import register_intent_listener

        register_extend_policy(listeners.saga_keeps_hold)
        register_expired_listener(listeners.saga_on_reservation_expired)
        register_intent_listener(listeners.saga_on_intent, settled=listeners.saga_settled_for_intent)
        # After the saga: a refund seen by a webhook or the reconciliation reaches the order's refunded amount.
        register_intent_listener(refunds.order_on_intent, settled=refunds.order_settled_for_intent)

        # Here too: the collector reads the models. Scraped by /metrics (cartflow/metrics.py).
        from cartflow.metrics import register_scrape_collector
        from orders.backlog import BacklogCollector

        register_scrape_collector(BacklogCollector())
