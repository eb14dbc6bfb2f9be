"""OpenAPI schema and the two docs pages, served entirely from our own origin."""

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from webhooks.models import EventType

pytestmark = pytest.mark.django_db

ASSET = re.compile(r'(?:src|href)="([^"]+)"')
EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


@pytest.fixture
def schema(anon):
    response = anon.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def static_served(settings):
    """WhiteNoise serving from the finders, as collectstatic's output would be served."""
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = False


def test_schema_is_public_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert "/api/widgets/" in schema["paths"]


def test_schema_describes_the_adjust_operation(schema):
    adjust = schema["paths"]["/api/widgets/{id}/adjust/"]["post"]

    assert "201" in adjust["responses"] and "409" in adjust["responses"]
    body = adjust["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][body]["properties"]) == {"delta", "reason", "note"}
    conflict = adjust["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "available" in schema["components"]["schemas"][conflict]["properties"]


def test_schema_describes_the_filters_and_pagination(schema):
    widget_list = schema["paths"]["/api/widgets/"]["get"]
    names = {p["name"] for p in widget_list["parameters"]}

    assert {
        "search",
        "category",
        "is_active",
        "low_stock",
        "min_price",
        "max_price",
        "min_stock",
        "max_stock",
        "updated_after",
        "updated_before",
        "ordering",
        "limit",
        "offset",
    } <= names
    movement_names = {p["name"] for p in schema["paths"]["/api/movements/"]["get"]["parameters"]}
    assert {"widget", "reason", "created_by", "created_after", "created_before"} <= movement_names


def test_schema_describes_conflicts_on_delete(schema):
    assert "409" in schema["paths"]["/api/widgets/{id}/"]["delete"]["responses"]
    assert "409" in schema["paths"]["/api/categories/{id}/"]["delete"]["responses"]


def test_schema_documents_the_webhook_endpoints_and_every_event_payload(schema):
    components = schema["components"]["schemas"]

    def resolve(node):
        return components[node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node

    for path in (
        "/api/webhooks/",
        "/api/webhooks/{id}/",
        "/api/webhooks/{id}/deliveries/",
        "/api/webhooks/{id}/deliveries/{delivery_id}/redeliver/",
        "/api/webhooks/{id}/ping/",
        "/api/webhooks/{id}/rotate-secret/",
    ):
        assert path in schema["paths"], path
    documented = {}
    for webhook in schema["x-webhooks"].values():
        body = resolve(webhook["post"]["requestBody"]["content"]["application/json"]["schema"])
        assert {"id", "type", "occurred_at", "request_id", "sequence", "data"} <= set(body["properties"])
        assert "webhook-signature" in webhook["post"]["description"]
        for event_type in resolve(body["properties"]["type"])["enum"]:
            documented[event_type] = resolve(body["properties"]["data"])
    assert set(documented) == set(EventType.values)
    assert {"movement", "widget"} <= set(documented["stock.adjusted"]["properties"])
    assert {"stock", "reserved", "available", "reorder_level"} <= set(documented["widget.low_stock"]["properties"])


def test_schema_documents_token_authentication(schema):
    assert schema["components"]["securitySchemes"]["tokenAuth"]["name"] == "Authorization"


def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=io.StringIO())

    assert out.read_text().startswith("openapi: 3.")


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_docs_page_is_public_and_uses_only_our_own_origin(anon, url, settings):
    assert settings.DEBUG is False

    response = anon.get(url, HTTP_ACCEPT="text/html")

    page = response.content.decode()
    assert response.status_code == 200
    assert EXTERNAL.findall(page) == []
    assert "fonts.googleapis" not in page and "fonts.gstatic" not in page
    assert "/api/schema/" in page


def test_swagger_ui_does_not_call_the_online_validator(anon):
    page = anon.get("/api/docs/").content.decode()

    assert '"validatorUrl": null' in page


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_docs_assets_are_served_by_the_app(static_served, url, settings):
    assert settings.DEBUG is False
    client = Client()  # a fresh client builds its middleware with the settings above
    page = client.get(url).content.decode()
    assets = [a for a in ASSET.findall(page) if a.startswith(settings.STATIC_URL)]

    assert assets, "the page references no static assets"
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert b"".join(response.streaming_content), asset


@pytest.mark.parametrize(
    "path, method, codes",
    [
        ("/api/widgets/", "get", {"200", "400", "401", "403"}),
        ("/api/widgets/", "post", {"201", "400", "401", "403"}),
        ("/api/widgets/{id}/", "patch", {"200", "400", "401", "403", "404"}),
        ("/api/widgets/{id}/", "delete", {"204", "401", "403", "404", "409"}),
        ("/api/widgets/{id}/adjust/", "post", {"201", "400", "401", "403", "404", "409"}),
        ("/api/movements/{id}/", "get", {"200", "401", "403", "404"}),
    ],
)
def test_schema_describes_the_error_responses(schema, path, method, codes):
    responses = schema["paths"][path][method]["responses"]

    assert codes <= set(responses)
    assert responses["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(schema["components"]["schemas"]["Error"]["properties"]) >= {"detail", "code"}


def test_every_operation_has_a_summary_that_reads_like_documentation(schema):
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]

    summaries = {(method.upper(), path): op.get("summary") for path, method, op in operations}

    assert all(summaries.values()), [key for key, summary in summaries.items() if not summary]
    assert not [s for s in summaries.values() if "_" in s or s == s.lower()], summaries
    assert summaries[("GET", "/api/widgets/")] == "List widgets"
    assert summaries[("POST", "/api/widgets/{id}/adjust/")] == "Add or remove stock"
    assert summaries[("GET", "/api/movements/{id}/")] == "Get a stock movement"


# --- The written docs: README.md and docs/ ---------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def test_readme_is_a_front_door_and_docs_hold_the_manual():
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])

    assert len(readme.splitlines()) <= 160
    assert "make run" in first_screen and "make test" in first_screen
    for doc in ["api", "security", "configuration", "deploy", "development", "performance", "reliability"]:
        assert (ROOT / "docs" / f"{doc}.md").exists(), doc
        assert f"(docs/{doc}.md)" in readme, doc


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_in_the_docs_lead_somewhere(doc):
    targets = [t for t in LINK.findall(doc.read_text()) if "://" not in t and not t.startswith("mailto:")]

    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert missing == []


def test_nothing_points_at_the_old_reliability_file():
    texts = [ROOT / "Makefile", ROOT / ".ci" / "run", *DOCS, *ROOT.glob("bench/*"), *ROOT.glob("tests/**/*.py")]

    assert [
        str(p)
        for p in texts
        if p.is_file() and "RELIABILITY.md" in p.read_text(errors="replace") and p != Path(__file__)
    ] == []


def test_every_environment_variable_is_documented():
    names = set()
    for source in [ROOT / "config" / "settings.py", ROOT / "gunicorn.conf.py"]:
        names |= set(
            re.findall(r"[\"']((?:DJANGO|RDS|GUNICORN)_[A-Z_]+|DATABASE_URL|REDIS_URL)[\"']", source.read_text())
        )
    documented = (ROOT / "docs" / "configuration.md").read_text() + (ROOT / "docs" / "deploy.md").read_text()

    assert len(names) > 20
    assert sorted(n for n in names if n not in documented) == []
