"""The server's log behind gunicorn, as the Procfile runs it: one JSON line per request,
the application's (config/middleware.py), and nothing from gunicorn's own access log."""

import json
import urllib.error
import urllib.request

from tests import processes


def test_each_request_is_logged_once_as_the_apps_json_line(tmp_path):
    env = processes.project_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", GUNICORN_WORKERS="1")
    with processes.servers(1, env, tmp_path, command=processes.procfile_gunicorn) as [url]:
        [log] = tmp_path.glob("server-*.log")
        before = len(log.read_text().splitlines())  # the start, and the checks that it is up
        statuses = []
        for path in ["/healthz", "/api/widgets/", "/api/widgets/?x=1", "/healthz"]:
            try:
                # As the load balancer forwards it (plain HTTP would be redirected to HTTPS).
                request = urllib.request.Request(url + path, headers={"X-Forwarded-Proto": "https"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:  # no token: 401, as JSON
                statuses.append(error.code)
        lines = log.read_text().splitlines()

    # Every line written while serving is JSON (start-up may warn in plain text: WhiteNoise
    # without collectstatic).
    records = [json.loads(line) for line in lines[before:]]
    served = [(r["method"], r["path"], r["status"]) for r in records if r["logger"] == "access"]
    assert statuses == [200, 401, 401, 200]
    assert served == [
        ("GET", "/healthz", 200),
        ("GET", "/api/widgets/", 401),
        ("GET", "/api/widgets/", 401),  # never the query string
        ("GET", "/healthz", 200),
    ]
    assert not [r for r in records if r["logger"] == "gunicorn.access"]
