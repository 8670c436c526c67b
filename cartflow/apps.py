from django.apps import AppConfig


class CartflowConfig(AppConfig):
    name = "cartflow"
    verbose_name = "CartFlow"
