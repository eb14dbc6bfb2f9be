"""The OpenAPI document describes the retry and conditional-request headers and answers."""

import pytest
import yaml
from django.core.management import call_command


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    # --fail-on-warn: an undocumented or ambiguous part fails the build, and this test.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def header_params(operation):
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}


@pytest.mark.parametrize("path", ["/api/widgets/", "/api/widgets/{id}/adjust/", "/api/adjustments/"])
def test_idempotent_posts_document_the_key_replay_and_refusals(schema, path):
    post = schema["paths"][path]["post"]

    assert "Idempotency-Key" in header_params(post)
    assert {"201", "409", "422"} <= set(post["responses"])
    assert "Idempotent-Replayed" in post["responses"]["201"]["headers"]


@pytest.mark.parametrize("path", ["/api/widgets/{id}/", "/api/categories/{id}/"])
def test_detail_endpoints_document_conditional_requests(schema, path):
    operations = schema["paths"][path]

    assert "If-None-Match" in header_params(operations["get"])
    assert "ETag" in operations["get"]["responses"]["200"]["headers"]
    assert "304" in operations["get"]["responses"]
    for method in ["put", "patch", "delete"]:
        assert "If-Match" in header_params(operations[method])
        assert {"412", "428"} <= set(operations[method]["responses"])
        assert "ETag" in operations[method]["responses"]["412"]["headers"]
    assert "ETag" in operations["patch"]["responses"]["200"]["headers"]


def test_adjustment_documents_the_widgets_new_etag(schema):
    assert "ETag" in schema["paths"]["/api/widgets/{id}/adjust/"]["post"]["responses"]["201"]["headers"]


def test_batch_errors_document_the_failing_index(schema):
    responses = schema["paths"]["/api/adjustments/"]["post"]["responses"]
    for code in ["400", "409"]:
        body = responses[code]["content"]["application/json"]["schema"]
        # 400 may also be a plain validation error (e.g. of the Idempotency-Key): anyOf.
        refs = [s["$ref"].rsplit("/", 1)[1] for s in body.get("anyOf", [body]) if "$ref" in s]
        assert any("index" in schema["components"]["schemas"][ref]["properties"] for ref in refs)
