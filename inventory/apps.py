from django.apps import AppConfig
from django.core.signals import request_finished, request_started


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self) -> None:
        # The catalog generation is read once per request (inventory/selectors.py).
        from inventory.selectors import generation_memo_close, generation_memo_open

        request_started.connect(generation_memo_open, dispatch_uid="catalog-generation-memo")
        request_finished.connect(generation_memo_close, dispatch_uid="catalog-generation-memo")
