"""API keys with roles, checked route by route from the app's own route table: every route
declares its access (public, ask or admin) as a dependency, a route missing from ROLES (or
declaring none) fails here, and a live server answers 401 / 403 / allowed for each role."""

from __future__ import annotations

import re

import httpx
import pytest

from api.app import create_app
from api.deps import GREEDY_BELOW, role_of, route_access
from api.config import ApiConfig
from ragtune.errors import ConfigError
from ragtune.settings import load_settings
from tests.fakes import EchoGenerator
from tests.serving_fixtures import serving, settings_for

ASK_KEY, ADMIN_KEY, LEGACY_KEY = "ask-key-1", "admin-key-2", "legacy-admin-3"
# Every route of the app and the role it needs (None: public). A new route must be added here.
ROLES: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): None,
    ("GET", "/auth/whoami"): "ask",
    ("POST", "/ask"): "ask",
    ("GET", "/generate"): "ask",
    ("GET", "/v1/models"): "ask",
    ("POST", "/v1/chat/completions"): "ask",
    ("POST", "/feedback"): "ask",
    ("GET", "/feedback/stats"): "admin",
    ("GET", "/documents"): "admin",
    ("POST", "/documents"): "admin",
    ("POST", "/documents/ingest"): "admin",
    ("DELETE", "/documents/{doc_id}"): "admin",
}


def keyed_app(tmp_path, **overrides):
    settings = settings_for(tmp_path, api_key=LEGACY_KEY,
                            api_keys={ASK_KEY: "ask", ADMIN_KEY: "admin"}, **overrides)
    return create_app(settings, generator=EchoGenerator(), retriever=None)


def test_every_route_declares_exactly_the_role_in_the_table(tmp_path) -> None:
    app = keyed_app(tmp_path)
    seen = set()
    for method, path, roles in route_access(app):
        assert len(roles) == 1, f"{method} {path} declares {len(roles)} roles: add "\
            "Depends(public | require_ask | require_admin)"
        assert (method, path) in ROLES, f"{method} {path} is not in the ROLES table"
        assert roles[0] == ROLES[(method, path)], f"{method} {path}"
        seen.add((method, path))
    assert seen == set(ROLES)


def _request(client: httpx.Client, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.request(method, re.sub(r"\{\w+\}", "nosuchid", path), headers=headers)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    app = keyed_app(tmp_path_factory.mktemp("roles"))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield app, client


def test_each_role_on_each_route(live) -> None:
    app, client = live
    for method, path, _ in route_access(app):
        role = ROLES[(method, path)]
        anonymous = _request(client, method, path, None)
        if role is None:
            assert anonymous.status_code == 200, (method, path)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert f"`{role}`" in anonymous.json()["error"]["message"]
        wrong = _request(client, method, path, "not-a-key")
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        with_ask = _request(client, method, path, ASK_KEY)
        if role == "admin":
            assert with_ask.status_code == 403, (method, path, with_ask.text)
            error = with_ask.json()["error"]
            assert error["type"] == "permission_error"
            assert "needs the role `admin`" in error["message"] and "`ask`" in error["message"]
        else:
            assert with_ask.status_code not in (401, 403), (method, path, with_ask.text)
        for key in (ADMIN_KEY, LEGACY_KEY):  # an admin key (the single api_key too) may all
            assert _request(client, method, path, key).status_code not in (401, 403), \
                (method, path, key)


def test_docs_stay_public_and_health_reports_auth(live) -> None:
    _, client = live
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert client.get(path).status_code == 200, path
    assert client.get("/health").json()["auth"] is True


def test_key_parsing_and_constant_time_lookup(monkeypatch) -> None:
    monkeypatch.setenv("RAGTUNE_API_KEYS", "k1:ask, k2:admin,k3")
    settings = load_settings()
    assert [(k.key.get_secret_value(), k.role) for k in settings.api_keys] == [
        ("k1", "ask"), ("k2", "admin"), ("k3", "ask")]
    assert "k2" not in repr(settings) and "k2" not in str(settings.api_keys)
    api = ApiConfig.from_settings(settings)
    assert "k1" not in repr(api)
    assert [role_of(api, k) for k in ("k1", "k2", "k3", "k", "k22", "")] == [
        "ask", "admin", "ask", None, None, None]
    with pytest.raises(ConfigError, match="api_keys"):
        ApiConfig(keys={"k": "root"})  # type: ignore[dict-item]


def _three_routes(client: httpx.Client, temperature: float) -> list[httpx.Response]:
    return [client.post("/ask", json={"question": "annual leave?", "use_rag": False,
                                      "temperature": temperature, "max_new_tokens": 4}),
            client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "hi"}], "temperature": temperature,
                "max_tokens": 4}),
            client.get("/generate", params={"prompt": "hi", "temperature": temperature,
                                            "max_new_tokens": 4})]


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, GREEDY_BELOW / 2])
def test_tiny_temperatures_become_greedy_requests(tmp_path, temperature) -> None:
    generator = EchoGenerator()
    app = create_app(settings_for(tmp_path), generator=generator, retriever=None)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        for response in _three_routes(client, temperature):
            assert response.status_code == 200, response.text
        kept = client.post("/ask", json={"question": "hi", "use_rag": False,
                                         "temperature": 0.7})
        assert kept.status_code == 200
    assert [c.temperature for c in generator.calls] == [0.0, 0.0, 0.0, 0.7]


@pytest.mark.integration
def test_tiny_temperature_on_a_real_model(tmp_path, tiny_llama_dir) -> None:
    """The real sampler fails on 1e-300 ("probability tensor contains inf/nan"); the API
    turns it into greedy decoding on all three routes."""
    from serving.config import EngineConfig
    from serving.engine import TransformersGenerator

    engine = TransformersGenerator.load(str(tiny_llama_dir), config=EngineConfig())
    app = create_app(settings_for(tmp_path), generator=engine, retriever=None)
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=300) as client:
            tiny, greedy = _three_routes(client, 1e-300), _three_routes(client, 0.0)
    finally:
        engine.close()
    for a, b in zip(tiny, greedy):
        assert a.status_code == 200, a.text
        assert a.json().get("answer", a.json().get("generated_text")) == \
            b.json().get("answer", b.json().get("generated_text"))


def test_cors_preflight_allows_the_methods_the_api_uses(tmp_path) -> None:
    app = keyed_app(tmp_path, cors_origins=["https://app.example.com"])
    with serving(app) as url:
        for method in ("GET", "POST", "DELETE"):
            response = httpx.options(f"{url}/documents/abc", headers={
                "Origin": "https://app.example.com", "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "Authorization"})
            assert response.status_code == 200, (method, response.text)
            assert method in response.headers["access-control-allow-methods"]
        other = httpx.options(f"{url}/ask", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
