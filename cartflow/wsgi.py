import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cartflow.settings")

from cartflow.tracing import install_tracing  # noqa: E402

install_tracing("cartflow-api")
application = get_wsgi_application()
