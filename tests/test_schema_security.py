"""The OpenAPI document describes the token endpoints, the change log and throttling."""

import pytest
import yaml
from django.core.management import call_command


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def resolve(schema, ref):
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def test_token_endpoint_takes_credentials_and_answers_with_the_key_once(schema):
    post = schema["paths"]["/api/auth/token/"]["post"]

    request = resolve(schema, post["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["properties"]) == {"username", "password", "name", "expires_in_days", "read_only"}
    issued = resolve(schema, post["responses"]["201"]["content"]["application/json"]["schema"])
    assert set(issued["properties"]) == {"token", "id", "name", "prefix", "read_only", "expires_at"}
    # It needs no credentials, so it never answers 401 or 403.
    assert not post.get("security")
    assert {"400", "429"} <= set(post["responses"])
    assert not {"401", "403"} & set(post["responses"])


def test_token_list_shows_no_key(schema):
    get = schema["paths"]["/api/auth/tokens/"]["get"]

    page = resolve(schema, get["responses"]["200"]["content"]["application/json"]["schema"])
    token = resolve(schema, page["properties"]["results"]["items"])
    assert "token" not in token["properties"]
    assert "revoked_at" in token["properties"]
    assert "204" in schema["paths"]["/api/auth/tokens/{id}/"]["delete"]["responses"]


def test_change_log_documents_its_filters(schema):
    get = schema["paths"]["/api/changes/"]["get"]

    params = {p["name"] for p in get["parameters"]}
    assert {"object_type", "object_id", "user", "since", "limit", "offset"} <= params
    assert "post" not in schema["paths"]["/api/changes/"]


def test_every_operation_documents_429_with_retry_after(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "Retry-After" in operation["responses"]["429"]["headers"], f"{method} {path}"
