"""CartFlow's database backend: Django's PostgreSQL backend with a health check that costs no round trip
(``cartflow.db.base``)."""
