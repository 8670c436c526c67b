"""Operations endpoints (/healthz, /readyz) and the human-readable problem-type pages."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from cartflow import health
from cartflow.exceptions import django_problem_response
from cartflow.problems import BY_SLUG, REGISTRY


def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up. No backing service is touched (the cheapest endpoint)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    """PostgreSQL, Redis and the Celery broker all answer; otherwise a 503 problem naming the failing ones."""
    checks = health.readiness_checks()
    if all(v == "ok" for v in checks.values()):
        return JsonResponse({"status": "ok", "checks": checks})
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    return django_problem_response(request, "service_unavailable", f"Unreachable: {failing}.", checks=checks)


def problem_index(request: HttpRequest) -> HttpResponse:
    return render(request, "problems/index.html", {"problems": sorted(REGISTRY.values(), key=lambda p: p.code)})


def problem_detail(request: HttpRequest, slug: str) -> HttpResponse:
    problem = BY_SLUG.get(slug) or REGISTRY.get(slug)
    if problem is None:
        raise Http404("unknown problem type")
    return render(request, "problems/detail.html", {"problem": problem})


@csrf_exempt  # a POST/DELETE with a session cookie must get the 404 problem, not CSRF's HTML 403 (fuzzer)
def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Catch-all for /api paths no route matched: a 404 problem, in debug too."""
    return django_problem_response(request, "not_found", f"Nothing lives at {request.path}.")
