"""The project boots: URLs resolve, the API answers, health probes work."""


def test_health_is_open_and_json(anon_client):
    """/health needs no credentials and says the process is up."""
    response = anon_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_api_lists_tools_for_staff(staff_client):
    response = staff_client.get("/api/tools")
    assert response.status_code == 200
    assert response.json() == {"items": [], "count": 0}
