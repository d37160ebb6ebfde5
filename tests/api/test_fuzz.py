"""Schemathesis against the real app on a real uvicorn, keys on, canned generator: a bounded
number of generated requests per operation; no 5xx, every response (status, content type,
body) as the OpenAPI document declares it, and without a key every route but /health answers
401. The docs (/docs, /openapi.json) are public: the schema is read without a key."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from api.app import create_app
from tests.fakes import EchoGenerator
from tests.serving_fixtures import serving, settings_for

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer fuzz-admin"}
PUBLIC = {"/health"}
EXAMPLES = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_schema(tmp_path_factory, retriever):
    workspace = tmp_path_factory.mktemp("fuzz")
    app_settings = settings_for(workspace, embedder="import:tests.fakes:HashEmbedder?dim=32",
                                api_keys={"fuzz-ask": "ask", "fuzz-admin": "admin"},
                                max_file_mb=0.05)
    app = create_app(app_settings, generator=EchoGenerator(), retriever=retriever)
    with serving(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def _each_operation(schema, check) -> list[str]:
    """Run `check(case)` on a bounded number of generated cases of every operation. (The
    schema comes from a live server, so this drives hypothesis per operation itself:
    schemathesis' `pytest.from_fixture` fails under pytest 9.)"""
    from hypothesis import given

    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        def run(case) -> None:
            check(case)

        EXAMPLES(given(operation.as_strategy())(run))()
    return labels


def test_no_5xx_and_responses_match_the_schema(fuzz_schema) -> None:
    def check(case) -> None:
        case.call_and_validate(headers=ADMIN, checks=CHECKS, timeout=60)

    labels = _each_operation(fuzz_schema, check)
    assert "POST /ask" in labels and "DELETE /documents/{doc_id}" in labels


def test_every_route_but_health_needs_a_key(fuzz_schema) -> None:
    def check(case) -> None:
        response = case.call(timeout=60)
        if case.path in PUBLIC:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 401, (case.method, case.path, response.text)
            assert response.json()["error"]["type"] == "authentication_error"

    assert len(_each_operation(fuzz_schema, check)) >= 12
