"""Too much sent is a JSON error, whoever refuses it: the app (414, 431, 413) or gunicorn
in front of it (its own 414 and 431). nginx's answers, with the .platform snippet, are
rehearsed by `make deploy-check`."""

import json
import socket

import pytest

from tests import processes

QUERY_20_KB = "x=" + "a" * 20_000
HEADER_16_KB = "b" * 16_000


def assert_json_error(response, status, code):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == code


@pytest.mark.django_db
class TestTheAppAnswersJson:
    def test_a_20_kb_query_is_414(self, viewer):
        assert_json_error(viewer.get(f"/api/widgets/?{QUERY_20_KB}"), 414, "uri_too_long")

    def test_a_16_kb_header_is_431_naming_it(self, viewer):
        response = viewer.get("/api/widgets/", headers={"X-Padding": HEADER_16_KB})

        assert_json_error(response, 431, "header_too_large")
        assert "X-Padding" in response.json()["detail"]

    def test_a_2_mb_body_is_413(self, manager):
        body = json.dumps({"name": "n", "description": "d" * 2_000_000})

        response = manager.post("/api/widgets/", body, content_type="application/json")

        assert_json_error(response, 413, "request_too_large")

    def test_requests_within_the_limits_are_served(self, viewer):
        assert viewer.get(f"/api/widgets/?x={'a' * 7000}").status_code == 200
        assert viewer.get("/api/widgets/", headers={"X-Padding": "b" * 7000}).status_code == 200


def raw_request(port: int, head: str) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory):
    """gunicorn as the Procfile runs it (gunicorn.conf.py), one worker; no database needed:
    every request here is answered before a view runs."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    env = processes.project_env(DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}", GUNICORN_WORKERS="1")
    with processes.servers(1, env, tmp, command=processes.procfile_gunicorn) as [url]:
        yield int(url.rsplit(":", 1)[1])


class TestBehindGunicorn:
    @pytest.mark.parametrize(
        "query, status, code",
        [
            ("a" * 20_000, 414, "uri_too_long"),  # over gunicorn's 8190-byte request line
            ("a" * 8100, 414, "uri_too_long"),  # through gunicorn, over the app's limit
        ],
    )
    def test_an_over_long_url_is_414_json(self, gunicorn_port, query, status, code):
        got, headers, body = raw_request(
            gunicorn_port, f"GET /healthz?x={query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )

        assert (got, headers["content-type"]) == (status, "application/json"), body[:300]
        assert json.loads(body)["code"] == code

    def test_a_16_kb_header_is_431_json(self, gunicorn_port):
        status, headers, body = raw_request(
            gunicorn_port,
            f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {HEADER_16_KB}\r\nConnection: close\r\n\r\n",
        )

        assert (status, headers["content-type"]) == (431, "application/json"), body[:300]
        assert json.loads(body)["code"] == "header_too_large"

    def test_a_malformed_request_is_400_json(self, gunicorn_port):
        status, headers, body = raw_request(gunicorn_port, "NOT A REQUEST\r\n\r\n")

        assert (status, headers["content-type"]) == (400, "application/json"), body[:300]
        assert json.loads(body)["code"] == "bad_request"

    def test_a_6_kb_query_reaches_the_app(self, gunicorn_port):
        """gunicorn's default line limit (4094) would refuse it, as HTML."""
        status, _, body = raw_request(
            gunicorn_port, f"GET /healthz?x={'a' * 6000} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )

        assert status == 200, body[:300]
