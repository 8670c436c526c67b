import pytest


@pytest.mark.django_db
def test_unknown_api_path_is_a_problem(api_client):
    resp = api_client.get("/api/definitely-not-here")
    assert resp.status_code == 404
    assert resp["Content-Type"] == "application/problem+json"
    assert resp.json()["code"] == "not_found"
