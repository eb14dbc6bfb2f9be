"""Deployment rehearsal (`make deploy-check`): does on this machine what Elastic Beanstalk does.

1. bundle      `git archive HEAD` minus .ebignore, unpacked into a temporary directory
2. validate    every .ebextensions file against deploy/eb_options.yaml; the Procfile
3. virtualenv  a fresh one with requirements.txt only (no test tools)
4. deploy      container_commands in order, with the environment properties from
               .ebextensions and RDS_* pointing at a fresh local PostgreSQL database
5. serve       the Procfile's `web` command, probed as the load balancer and clients would
6. scale out   a second instance of the same bundle (no leader-only commands) on the same
               PostgreSQL and Redis: state is shared across instances; the Procfile's `worker`
               on the second instance delivers a webhook for an adjustment made on the first
7. nginx       Debian's nginx in front of both instances, with the bundle's
               .platform/nginx/conf.d snippets included where Elastic Beanstalk includes them:
               nginx's own refusals (a 20 KB URL, a 16 KB header, a 2 MB body, no upstream)
               are JSON, and the app's own errors pass through
8. stop        everything started here; the database is dropped

Each step is reported as PASS or FAIL; the exit status is non-zero if any failed.
Knobs (environment): DEPLOY_CHECK_PORT (first instance, default 8500; the second uses the
next port, nginx the one after, the webhook receiver the one after that), DEPLOY_CHECK_POSTGRES (an admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
DEPLOY_CHECK_REDIS_URL (default redis://127.0.0.1:6379/5), DEPLOY_CHECK_KEEP=1 keeps the
temporary directory for inspection.
"""

import http.client
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("DEPLOY_CHECK_PORT", "8500"))
POSTGRES = os.environ.get("DEPLOY_CHECK_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEPLOY_CHECK_REDIS_URL", "redis://127.0.0.1:6379/5")
KEEP = os.environ.get("DEPLOY_CHECK_KEEP") == "1"

# What the environment gets from `eb setenv` in docs/deploy.md, with stand-in values.
PUBLIC_HOST = "widgets.example.com"
PRIVATE_IP = "10.0.3.17"  # how the load balancer's health checks address an instance
# On the instance the EB venv lives here; the rehearsal's venv takes its place.
EB_VENV_ACTIVATE = "/var/app/venv/*/bin/activate"
# The Python platform's nginx serves this URL path from this bundle folder by default.
EB_DEFAULT_STATIC_MAPPING = {"/static": "static"}
SECRETS_NEVER_IN_BUNDLE = {"DJANGO_SECRET_KEY", "DJANGO_TOKEN_HMAC_KEY", "RDS_PASSWORD", "DATABASE_URL", "REDIS_URL"}
THROTTLE_LOGIN = 3  # per minute, on both instances


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


class Rehearsal:
    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="deploy-check-"))
        self.bundle = self.tmp / "bundle"
        self.venv = self.tmp / "venv"
        self.database = f"widgets_deploy_{secrets.token_hex(4)}"
        self.database_created = False
        self.servers = {}  # port -> (Popen, log path)
        self.results = []  # (step, ok, seconds, notes)
        self.notes = []
        self.ebextensions = {}
        self.environment_properties = {}
        self.token = None
        self.secret_key = secrets.token_urlsafe(50)
        self.cache_prefix = f"deploy-check-{secrets.token_hex(4)}"
        self.nginx = None  # (Popen, error log path)

    # --- running the steps ---------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        steps = [
            ("1 bundle from git archive HEAD", self.build_bundle),
            ("2 validate .ebextensions and Procfile", self.validate),
            ("3 fresh virtualenv, requirements.txt only", self.create_virtualenv),
            ("4 container_commands against fresh PostgreSQL", self.deploy),
            ("5 serve the Procfile's web command and probe it", self.serve),
            ("6 second instance: shared PostgreSQL and Redis", self.scale_out),
            ("7 nginx in front, with the bundle's .platform snippets", self.behind_nginx),
        ]
        failed = False
        try:
            for name, step in steps:
                if failed:
                    self.results.append((name, None, 0.0, ["not run: an earlier step failed"]))
                    continue
                failed = not self.run_step(name, step)
        finally:
            self.run_step("8 stop everything, drop the database", self.stop)
        self.report(time.monotonic() - started)
        return 0 if all(ok for _, ok, _, _ in self.results) else 1

    def run_step(self, name, step):
        print(f"\n--- {name}", flush=True)
        self.notes = []
        began = time.monotonic()
        try:
            step()
            ok = True
        except Failed as error:
            self.notes.append(f"FAILED: {error}")
            ok = False
        except Exception as error:  # an unexpected answer must still end in a report and a clean-up
            self.notes.append(f"FAILED: {type(error).__name__}: {error}")
            ok = False
        for note in self.notes:
            print(f"    {note}", flush=True)
        self.results.append((name, ok, time.monotonic() - began, list(self.notes)))
        return ok

    def note(self, text):
        self.notes.append(text)

    def report(self, seconds):
        print("\n=== deploy-check report")
        for name, ok, took, notes in self.results:
            status = "PASS" if ok else "FAIL"
            print(f"{status}  {name}  ({took:.1f}s)")
            if not ok:
                for note in notes:
                    print(f"        {note}")
        print(f"total {seconds:.1f}s" + (f"; kept {self.tmp}" if KEEP else ""))

    # --- 1. bundle ------------------------------------------------------------------------

    def build_bundle(self):
        self.bundle.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", "HEAD"], capture_output=True, check=True
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(self.bundle, filter="data")
        ebignore = self.bundle / ".ebignore"
        check(ebignore.exists(), ".ebignore is not committed")
        files = subprocess.run(
            ["git", "-C", str(REPO), "ls-tree", "-r", "-z", "--name-only", "HEAD"], capture_output=True, check=True
        ).stdout
        ignored = (
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "-c",
                    f"core.excludesFile={ebignore}",
                    "check-ignore",
                    "--no-index",
                    "-z",
                    "--stdin",
                ],
                input=files,
                capture_output=True,
            )
            .stdout.decode()
            .split("\0")
        )
        for path in filter(None, ignored):
            (self.bundle / path).unlink()
        for directory in sorted((p for p in self.bundle.rglob("*") if p.is_dir()), reverse=True):
            if not any(directory.iterdir()):
                directory.rmdir()
        for required in ("Procfile", "requirements.txt", "manage.py", "gunicorn.conf.py", ".ebextensions"):
            check((self.bundle / required).exists(), f"{required} is missing from the bundle")
        for excluded in ("tests", "bench", "deploy", ".venv", "db.sqlite3", "requirements-dev.txt"):
            check(not (self.bundle / excluded).exists(), f"{excluded} is in the bundle")
        count = sum(1 for p in self.bundle.rglob("*") if p.is_file())
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        self.note(f"HEAD {commit}: {count} files, {len([p for p in ignored if p])} left out by .ebignore")

    # --- 2. validate ----------------------------------------------------------------------

    def validate(self):
        vocabulary = yaml.safe_load((REPO / "deploy" / "eb_options.yaml").read_text())
        configs = sorted((self.bundle / ".ebextensions").glob("*.config"))
        check(configs, "no .ebextensions/*.config files")
        problems = []
        for path in configs:
            name = path.name
            content = yaml.safe_load(path.read_text())
            if not isinstance(content, dict):
                problems.append(f"{name}: not a YAML mapping")
                continue
            self.ebextensions[name] = content
            for key in content:
                if key not in vocabulary["top_level_keys"]:
                    problems.append(f"{name}: unknown top-level key {key!r}")
            for namespace, option, value in option_settings(content.get("option_settings") or {}):
                allowed = vocabulary["namespaces"].get(namespace)
                if allowed is None:
                    problems.append(f"{name}: unknown namespace {namespace!r}")
                elif isinstance(allowed, dict) and not re.search(allowed["pattern"], option):
                    problems.append(f"{name}: {namespace}: option {option!r} does not match {allowed['pattern']}")
                elif isinstance(allowed, list) and option not in allowed:
                    problems.append(f"{name}: {namespace}: unknown option {option!r}")
                if namespace == "aws:elasticbeanstalk:application:environment":
                    if option in SECRETS_NEVER_IN_BUNDLE:
                        problems.append(f"{name}: {option} is a secret; set it with `eb setenv`, not in the bundle")
                    self.environment_properties[option] = str(value)
            for command_name, command in (content.get("container_commands") or {}).items():
                if not isinstance(command, dict) or "command" not in command:
                    problems.append(f"{name}: container command {command_name} has no `command`")
                    continue
                for key in command:
                    if key not in vocabulary["container_command_keys"]:
                        problems.append(f"{name}: container command {command_name}: unknown key {key!r}")
                text = str(command["command"])
                if re.search(r"\bmigrate\b", text) and command.get("leader_only") not in (True, "true"):
                    problems.append(f"{name}: {command_name} migrates without leader_only: true (instances would race)")
                if "manage.py" in text and EB_VENV_ACTIVATE not in text:
                    problems.append(
                        f"{name}: {command_name} runs manage.py outside the app's virtualenv ({EB_VENV_ACTIVATE})"
                    )
        process = dict(
            ((o, v) for ns, o, v in self.all_options() if ns == "aws:elasticbeanstalk:environment:process:default")
        )
        if process.get("HealthCheckPath") != "/healthz":
            problems.append("the load balancer's HealthCheckPath is not /healthz")
        procfile = (self.bundle / "Procfile").read_text().splitlines()
        if not procfile or not procfile[0].startswith("web:"):
            problems.append("the Procfile's first process is not `web`")
        elif "gunicorn" not in procfile[0] or "config.wsgi:application" not in procfile[0]:
            problems.append("the Procfile's web process does not run gunicorn on config.wsgi:application")
        check(not problems, "; ".join(dict.fromkeys(problems)))
        commands = [
            f"{n} ({'leader only' if c.get('leader_only') else 'every instance'})"
            for _, n, c in self.container_commands()
        ]
        self.note(f"{len(configs)} files valid; container_commands: {', '.join(commands)}")
        self.note(f"health check path {process['HealthCheckPath']}; Procfile: {procfile[0]}")

    def all_options(self):
        for content in self.ebextensions.values():
            yield from option_settings(content.get("option_settings") or {})

    def container_commands(self):
        """Every container command, in the order Elastic Beanstalk runs them: files by name,
        then commands by name within a file."""
        for file_name in sorted(self.ebextensions):
            for name, command in sorted((self.ebextensions[file_name].get("container_commands") or {}).items()):
                yield file_name, name, command

    # --- 3. virtualenv --------------------------------------------------------------------

    def create_virtualenv(self):
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        pip = [str(self.venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
        result = subprocess.run(
            [*pip, "install", "-r", str(self.bundle / "requirements.txt")], capture_output=True, text=True
        )
        check(result.returncode == 0, f"pip install failed: {result.stderr[-2000:]}")
        for dev_only in ("pytest", "pytest-django"):
            shown = subprocess.run([*pip, "show", dev_only], capture_output=True)
            check(shown.returncode != 0, f"{dev_only} (a test tool) is installed by requirements.txt")
        frozen = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=True).stdout.split()
        self.note(f"{len(frozen)} packages installed; no test tools")

    # --- 4. deploy ------------------------------------------------------------------------

    def environment(self, port, **extra):
        """The process environment on an instance: environment properties from .ebextensions,
        what docs/deploy.md has the operator set with `eb setenv`, and what EB sets for RDS."""
        database = urlsplit(POSTGRES)
        env = {
            "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            **self.environment_properties,
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_ALLOWED_HOSTS": PUBLIC_HOST,
            "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{PUBLIC_HOST}",
            "REDIS_URL": REDIS_URL,
            "RDS_HOSTNAME": database.hostname or "127.0.0.1",
            "RDS_PORT": str(database.port or 5432),
            "RDS_DB_NAME": self.database,
            "RDS_USERNAME": database.username or "postgres",
            "RDS_PASSWORD": database.password or "",
            "PORT": str(port),
            "DJANGO_THROTTLE_LOGIN": f"{THROTTLE_LOGIN}/min",
            # Our own keys in a Redis database that may hold others' (once the setting exists).
            "DJANGO_CACHE_KEY_PREFIX": self.cache_prefix,
            **extra,
        }
        if env.get("DJANGO_DB_SSLMODE") in ("require", "verify-ca", "verify-full"):
            # The local PostgreSQL has no TLS; RDS has. The option itself is covered by the tests.
            env["DJANGO_DB_SSLMODE"] = "prefer"
        return env

    def deploy(self):
        psql(f"CREATE DATABASE {self.database}")
        self.database_created = True
        if self.environment_properties.get("DJANGO_DB_SSLMODE") in ("require", "verify-ca", "verify-full"):
            self.note(
                f"DJANGO_DB_SSLMODE={self.environment_properties['DJANGO_DB_SSLMODE']} from .ebextensions "
                "is replaced by `prefer` here: the local PostgreSQL has no TLS"
            )
        self.run_container_commands(self.bundle, leader=True)
        static_url = (
            self.manage(self.bundle, "shell", "-c", "from django.conf import settings; print(settings.STATIC_URL)")
            .strip()
            .splitlines()[-1]
        )
        shadowing = dict(EB_DEFAULT_STATIC_MAPPING)
        shadowing.update(
            {o: v for ns, o, v in self.all_options() if ns == "aws:elasticbeanstalk:environment:proxy:staticfiles"}
        )
        for url_path in shadowing:
            check(
                not ("/" + static_url.strip("/") + "/").startswith(url_path.rstrip("/") + "/"),
                f"STATIC_URL {static_url} is served by the platform's nginx from {shadowing[url_path]}/, "
                "not by WhiteNoise",
            )
        manifest = self.bundle / "staticfiles" / "staticfiles.json"
        check(manifest.exists(), "collectstatic wrote no manifest")
        self.static_url = "/" + static_url.strip("/") + "/"
        self.note(
            f"database {self.database} migrated; STATIC_URL {static_url} (not under nginx's {', '.join(shadowing)})"
        )

    def run_container_commands(self, directory, leader):
        for file_name, name, command in self.container_commands():
            if command.get("leader_only") and not leader:
                self.note(f"{name}: skipped (leader only)")
                continue
            text = str(command["command"]).replace(EB_VENV_ACTIVATE, str(self.venv / "bin" / "activate"))
            env = {**self.environment(PORT), **{k: str(v) for k, v in (command.get("env") or {}).items()}}
            cwd = directory / command["cwd"] if command.get("cwd") else directory
            if (
                command.get("test")
                and subprocess.run(["bash", "-c", str(command["test"])], cwd=cwd, env=env).returncode != 0
            ):
                self.note(f"{name}: skipped (its test is false)")
                continue
            began = time.monotonic()
            result = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True)
            if result.returncode != 0 and str(command.get("ignoreErrors")).lower() != "true":
                raise Failed(
                    f"{file_name}: {name} exited {result.returncode}: {(result.stdout + result.stderr)[-1500:]}"
                )
            self.note(f"{name}: ok ({time.monotonic() - began:.1f}s)")

    def manage(self, directory, *args):
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), "manage.py", *args],
            cwd=directory,
            env=self.environment(PORT),
            capture_output=True,
            text=True,
        )
        check(result.returncode == 0, f"manage.py {args[0]} failed: {result.stderr[-1500:]}")
        return result.stdout

    # --- 5. serve -------------------------------------------------------------------------

    def start_web(self, directory, port):
        line = (directory / "Procfile").read_text().splitlines()[0]
        command = line.split(":", 1)[1].strip()
        log = self.tmp / f"web-{port}.log"
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=directory,
            env=self.environment(port),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.servers[port] = (process, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            check(process.poll() is None, f"the web process on port {port} exited: {log.read_text()[-1500:]}")
            try:
                if request(port, "GET", "/healthz", host=PRIVATE_IP)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise Failed(f"the web process on port {port} did not answer /healthz within 60s")

    def serve(self):
        self.start_web(self.bundle, PORT)
        self.note(f"`{(self.bundle / 'Procfile').read_text().splitlines()[0]}` with PORT={PORT}")

        status, _, body = request(PORT, "GET", "/healthz", host=PRIVATE_IP)
        check(status == 200, f"/healthz with Host {PRIVATE_IP} over plain HTTP: {status} {body[:200]!r}")
        self.note(f"/healthz, Host {PRIVATE_IP}, plain HTTP -> 200")
        status, _, _ = request(PORT, "GET", "/api/", host=PRIVATE_IP, https=True)
        check(status == 400, f"/api/ with Host {PRIVATE_IP} must be refused (400), got {status}")
        self.note(f"/api/, Host {PRIVATE_IP} -> 400 (ALLOWED_HOSTS is not opened)")

        status, headers, _ = request(PORT, "GET", "/api/widgets/?limit=1")
        location = headers.get("location", "")
        check(
            status == 301 and location == f"https://{PUBLIC_HOST}/api/widgets/?limit=1",
            f"plain HTTP: {status} {location}",
        )
        self.note(f"plain HTTP /api/widgets/ -> 301 {location}")

        status, headers, body = request(PORT, "GET", "/readyz", https=True)
        check(status == 200 and json.loads(body)["database"] == "ok", f"/readyz: {status} {body[:200]!r}")
        check(headers.get("strict-transport-security"), "no HSTS header over HTTPS")
        self.note("/readyz over HTTPS -> 200, database ok, HSTS set")

        self.check_static_file()

        self.manage(
            self.bundle,
            "createsuperuser",
            "--noinput",
            "--username",
            "deploycheck",
            "--email",
            "deploycheck@example.com",
        )
        self.token = (
            self.manage(self.bundle, "issue_token", "deploycheck", "--name", "deploy-check").strip().splitlines()[-1]
        )
        status, headers, body = request(
            PORT, "GET", "/api/widgets/", https=True, token=self.token, extra={"X-Request-ID": "deploy-check-1"}
        )
        check(status == 200 and "results" in json.loads(body), f"/api/widgets/ with a token: {status} {body[:200]!r}")
        check(
            headers.get("x-request-id") == "deploy-check-1", f"X-Request-ID not echoed: {headers.get('x-request-id')!r}"
        )
        self.note("/api/widgets/ with a token -> 200, X-Request-ID echoed")

        for page in ("/api/docs/", "/api/redoc/"):
            self.check_docs_page(page)

        self.check_logs(PORT)

    def check_static_file(self):
        manifest = json.loads((self.bundle / "staticfiles" / "staticfiles.json").read_text())["paths"]
        static_url = self.static_url
        hashed = manifest["admin/css/base.css"]
        status, headers, body = request(
            PORT, "GET", static_url + hashed, https=True, extra={"Accept-Encoding": "gzip, br"}
        )
        check(status == 200, f"{static_url}{hashed}: {status}")
        max_age = int(re.search(r"max-age=(\d+)", headers.get("cache-control", "max-age=0")).group(1))
        check(max_age >= 365 * 24 * 3600, f"Cache-Control of a hashed file is {headers.get('cache-control')!r}")
        encoding = headers.get("content-encoding")
        check(encoding in ("gzip", "br"), f"no compressed variant served (Content-Encoding {encoding!r})")
        plain = request(PORT, "GET", static_url + hashed, https=True)
        check(len(body) < len(plain[2]), "the compressed variant is not smaller")
        self.note(
            f"{static_url}{hashed} -> 200, {headers['cache-control']}, {encoding} {len(body)} of {len(plain[2])} bytes"
        )

    def check_docs_page(self, page):
        status, _, body = request(PORT, "GET", page, https=True, extra={"Accept": "text/html"})
        check(status == 200, f"{page}: {status}")
        assets = AssetParser.parse(body.decode())
        external = [url for url in assets if url.startswith(("http:", "https:", "//"))]
        check(not external, f"{page} loads from elsewhere: {external}")
        check(assets, f"{page} references no assets")
        for url in assets:
            status, _, _ = request(PORT, "GET", url, https=True)
            check(status == 200, f"{page}: asset {url} -> {status}")
        status, _, schema = request(PORT, "GET", "/api/schema/", https=True)
        check(status == 200 and b"openapi" in schema, f"/api/schema/: {status}")
        self.note(f"{page} -> 200, its {len(assets)} assets all load from this server, the schema too")

    def check_logs(self, port):
        _, log = self.servers[port]
        text = log.read_text()
        try:
            lines = [json.loads(line) for line in text.splitlines()]
        except json.JSONDecodeError as error:
            raise Failed(f"a log line is not JSON: {error.doc[:200]!r}") from None
        access = [line for line in lines if line.get("logger") == "access"]
        check(len(access) == REQUESTS[port], f"{len(access)} access lines for {REQUESTS[port]} requests")
        check(
            all(line.get("request_id") and "duration_ms" in line for line in access),
            "an access line lacks its request id or duration",
        )
        check(
            any(line["request_id"] == "deploy-check-1" and line["user_id"] for line in access),
            "the token request's line lacks its id or user",
        )
        check(self.token not in text and self.token[:12] not in text, "the API token appears in the log")
        check(self.secret_key not in text, "the secret key appears in the log")
        self.note(
            f"log: every line JSON; {len(access)} access lines for {REQUESTS[port]} requests, with request ids; "
            "no token or secret key"
        )

    # --- 6. scale out ---------------------------------------------------------------------

    def scale_out(self):
        second = self.tmp / "bundle-2"
        shutil.copytree(self.bundle, second, ignore=shutil.ignore_patterns("staticfiles", "__pycache__"))
        self.run_container_commands(second, leader=False)
        self.start_web(second, PORT + 1)
        a, b = PORT, PORT + 1
        self.note(f"second instance on port {b}: same database, same Redis ({REDIS_URL})")

        self.check_session_across_instances(a, b)
        self.check_login_throttle_across_instances(a, b)
        self.check_idempotency_across_instances(a, b)
        self.check_cache_across_instances(a, b)
        self.check_webhook_delivered_by_a_worker(a, second)

    def check_session_across_instances(self, a, b):
        """A browser logged in through one instance stays logged in on the other."""
        password = secrets.token_urlsafe(16)
        self.manage(
            self.bundle,
            "shell",
            "-c",
            f"from django.contrib.auth.models import User; u = User.objects.get(username='deploycheck'); "
            f"u.set_password({password!r}); u.save()",
        )
        status, headers, body = request(a, "GET", "/admin/login/", https=True)
        csrf_cookie = cookie(headers, "csrftoken")
        csrf_field = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
        form = f"csrfmiddlewaretoken={csrf_field}&username=deploycheck&password={password}&next=/admin/"
        status, headers, _ = request(
            a,
            "POST",
            "/admin/login/",
            https=True,
            body=form.encode(),
            extra={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={csrf_cookie}",
                "Origin": f"https://{PUBLIC_HOST}",
                "Referer": f"https://{PUBLIC_HOST}/admin/login/",
            },
        )
        session = cookie(headers, "sessionid")
        check(status == 302 and session, f"admin login on instance A: {status}")
        status, _, _ = request(b, "GET", "/admin/", https=True, extra={"Cookie": f"sessionid={session}"})
        check(status == 200, f"instance B does not know the session made on A: {status}")
        self.note("session: logged in on A, the admin answers 200 on B (sessions live in PostgreSQL)")

    def check_login_throttle_across_instances(self, a, b):
        """Failed logins alternate between the instances; the limit counts them together.

        With counters per instance each would refuse only its own (limit+1)th attempt, i.e.
        attempt 2*limit+1 overall; shared counters refuse by attempt limit+1 (earlier if this
        address already logged in once, as the session check may have)."""
        username = f"nobody-{secrets.token_hex(4)}"
        statuses = []
        for attempt in range(2 * THROTTLE_LOGIN + 1):
            port = a if attempt % 2 == 0 else b
            body = json.dumps({"username": username, "password": "wrong"}).encode()
            statuses.append(
                request(
                    port, "POST", "/api/auth/token/", https=True, body=body, extra={"Content-Type": "application/json"}
                )[0]
            )
        first_429 = statuses.index(429) if 429 in statuses else None
        check(
            first_429 is not None and 0 < first_429 <= THROTTLE_LOGIN and all(s < 500 for s in statuses),
            f"login limit {THROTTLE_LOGIN}/min, attempts alternating A,B: statuses {statuses}",
        )
        self.note(
            f"login throttle {THROTTLE_LOGIN}/min, attempts alternating A/B: {statuses} (counted together in Redis)"
        )

    def create_widget(self, port, name: str, *, stock: int) -> int:
        """A new widget made through the API of the instance on ``port``; returns its id."""
        status, _, body = request(
            port,
            "POST",
            "/api/widgets/",
            https=True,
            token=self.token,
            body=json.dumps({"name": f"{name} {secrets.token_hex(3)}", "stock": stock}).encode(),
            extra={"Content-Type": "application/json"},
        )
        check(status == 201, f"create widget on port {port}: {status} {body[:200]!r}")
        return json.loads(body)["id"]

    def check_idempotency_across_instances(self, a, b):
        """A retry that lands on the other instance replays the first answer and changes nothing."""
        auth = {"Content-Type": "application/json"}
        widget = self.create_widget(a, "Rehearsal", stock=10)
        key = f"deploy-check-{secrets.token_hex(8)}"
        adjust = json.dumps({"delta": -3, "reason": "sold"}).encode()
        first = request(
            a,
            "POST",
            f"/api/widgets/{widget}/adjust/",
            https=True,
            token=self.token,
            body=adjust,
            extra={**auth, "Idempotency-Key": key},
        )
        retry = request(
            b,
            "POST",
            f"/api/widgets/{widget}/adjust/",
            https=True,
            token=self.token,
            body=adjust,
            extra={**auth, "Idempotency-Key": key},
        )
        check(first[0] == 201, f"adjust on A: {first[0]} {first[2][:200]!r}")
        check(
            retry[0] == 201 and retry[1].get("idempotent-replayed") == "true" and retry[2] == first[2],
            f"retry on B: {retry[0]} replayed={retry[1].get('idempotent-replayed')}",
        )
        stock = json.loads(request(b, "GET", f"/api/widgets/{widget}/", https=True, token=self.token)[2])["stock"]
        check(stock == 7, f"stock after one sale of 3 retried on another instance is {stock}, not 7")
        self.note("Idempotency-Key: sold 3 on A, retried on B -> replayed, stock 10 -> 7 once")

    def check_webhook_delivered_by_a_worker(self, a, second):
        """An adjustment on instance A is delivered, signed, by the worker on instance B.

        The receiver is a local HTTP server, so the worker (only) is allowed private addresses,
        and the subscription is made with manage.py shell: the API would refuse a loopback URL."""
        import base64
        import hashlib
        import hmac
        import http.server
        import threading

        received = []

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT + 3), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{PORT + 3}/hooks"
            secret = (
                self.manage(
                    self.bundle,
                    "shell",
                    "-c",
                    (
                        "from webhooks import services; "
                        f"print(services.create_subscription(url={url!r}, event_types=['stock.adjusted']).secret)"
                    ),
                )
                .strip()
                .splitlines()[-1]
            )
            line = next(
                entry for entry in (second / "Procfile").read_text().splitlines() if entry.startswith("worker:")
            )
            log = self.tmp / "worker.log"
            process = subprocess.Popen(
                ["bash", "-c", f"exec {line.split(':', 1)[1].strip()}"],
                cwd=second,
                env=self.environment(PORT + 1, DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS="1"),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.servers["worker"] = (process, log)
            auth = {"Content-Type": "application/json"}
            widget = self.create_widget(a, "Hooked", stock=5)
            status, _, body = request(
                a,
                "POST",
                f"/api/widgets/{widget}/adjust/",
                https=True,
                token=self.token,
                body=json.dumps({"delta": -2, "reason": "sold"}).encode(),
                extra=auth,
            )
            check(status == 201, f"adjust on A: {status} {body[:200]!r}")
            movement = json.loads(body)["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(b'"id":%d,' % movement in body for _, body in received):
                check(process.poll() is None, f"the worker exited: {log.read_text()[-1500:]}")
                time.sleep(0.3)
            mine = [(h, body) for h, body in received if b'"id":%d,' % movement in body]
            check(mine, f"no delivery of the adjustment within 60 s; worker log: {log.read_text()[-1500:]}")
            headers, body = mine[0]
            headers = {k.lower(): v for k, v in headers.items()}
            key = base64.b64decode(secret.removeprefix("whsec_"))
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
            expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            check(headers["webhook-signature"] == expected, "the delivery's webhook-signature does not verify")
            event = json.loads(body)
            check(event["type"] == "stock.adjusted" and event["data"]["widget"]["stock"] == 3, f"delivered: {event}")
            self.note(f"webhook: adjusted on A, delivered by B's `{line}` to a local receiver, signature verified")
        finally:
            server.shutdown()
            server.server_close()

    def check_cache_across_instances(self, a, b):
        """Both instances use the one Redis cache: a value one instance's configuration writes
        is read through the other's (the web processes expose no cache endpoint of their own)."""
        key = f"deploy-check:{secrets.token_hex(8)}"
        write = (
            f"from django.core.cache import cache, caches; cache.set({key!r}, 'from A', 60); "
            "print(type(caches['default']).__name__)"
        )
        read = f"from django.core.cache import cache; print(cache.get({key!r})); cache.delete({key!r})"
        backend = self.manage(self.bundle, "shell", "-c", write).strip().splitlines()[-1]
        value = self.manage(self.tmp / "bundle-2", "shell", "-c", read).strip().splitlines()[-1]
        check(backend == "RedisCache" and value == "from A", f"cache: {backend}, read back {value!r}")
        self.note("cache: RedisCache; a value written with instance A's settings is read with B's")

    # --- 7. nginx -------------------------------------------------------------------------

    def behind_nginx(self):
        nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
        check(nginx, "nginx is not installed (Debian: apt-get install -y nginx; .ci/run installs it)")
        platform = self.bundle / ".platform" / "nginx" / "conf.d"
        server_level = sorted((platform / "elasticbeanstalk").glob("*.conf"))
        check(server_level, ".platform/nginx/conf.d/elasticbeanstalk/*.conf: no server-level snippet in the bundle")
        root = self.tmp / "nginx"
        root.mkdir()
        port = PORT + 2
        conf = root / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                root=root,
                port=port,
                a=PORT,
                b=PORT + 1,
                http_level=platform,
                server_level=platform / "elasticbeanstalk",
            )
        )
        result = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
        check(result.returncode == 0, f"nginx -t: {result.stderr.strip()[-500:]}")
        process = subprocess.Popen(
            [nginx, "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.nginx = (process, root / "error.log")
        deadline = time.monotonic() + 20
        while True:
            check(process.poll() is None, f"nginx exited: {(root / 'error.log').read_text()[-500:]}")
            try:
                if request(port, "GET", "/healthz", host=PRIVATE_IP)[0] == 200:
                    break
            except OSError:
                pass
            check(time.monotonic() < deadline, "nginx did not answer /healthz within 20s")
            time.sleep(0.2)
        self.note(
            f"nginx {nginx_version(nginx)} on port {port}, upstream the two instances; "
            f"included {', '.join(p.name for p in server_level)} in the server block"
        )

        status, _, body = request(port, "GET", "/api/widgets/?limit=1", https=True, token=self.token)
        check(status == 200 and "results" in json.loads(body), f"/api/widgets/ through nginx: {status} {body[:200]!r}")
        status, _, body = request(port, "GET", "/api/widgets/?category=no-such-category", https=True, token=self.token)
        check(
            status == 400 and "category" in json.loads(body),
            f"the app's own 400 through nginx: {status} {body[:200]!r}",
        )
        self.note("through nginx: /api/widgets/ -> 200; the app's own 400 (naming category) passes through")

        probes = [
            ("a 20 KB query", 414, dict(method="GET", path="/api/widgets/?x=" + "a" * 20_000)),
            ("a 16 KB header", 400, dict(method="GET", path="/api/widgets/", extra={"X-Padding": "b" * 16_000})),
            (
                "a 2 MB body",
                413,
                dict(
                    method="POST",
                    path="/api/widgets/",
                    body=b"{}" + b" " * 2_000_000,
                    extra={"Content-Type": "application/json"},
                ),
            ),
            ("no upstream", 502, dict(method="GET", path="/__deploy_check_no_upstream")),
        ]
        answers = []
        for what, expected, options in probes:
            status, headers, body = request(
                port, options.pop("method"), options.pop("path"), https=True, token=self.token, **options
            )
            content_type = headers.get("content-type", "")
            try:
                code = json.loads(body)["code"]
            except (ValueError, KeyError, TypeError):
                raise Failed(
                    f"{what} through nginx: {status} {content_type} {body[:200]!r}, not a JSON error"
                ) from None
            check(
                status == expected and content_type.startswith("application/json"),
                f"{what} through nginx: {status} {content_type}, expected {expected} JSON",
            )
            answers.append(f"{what} -> {status} {code}")
        self.note("nginx's own answers are JSON: " + "; ".join(answers))

    # --- 8. stop --------------------------------------------------------------------------

    def stop(self):
        problems = []
        if self.nginx is not None:
            process, _ = self.nginx
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            self.note("nginx stopped")
        for port, (process, _log) in self.servers.items():
            began = time.monotonic()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # what systemd does on a deployment
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    problems.append(f"port {port} did not stop on SIGTERM")
            what = "worker" if port == "worker" else f"web on port {port}"
            self.note(f"{what} stopped on SIGTERM in {time.monotonic() - began:.1f}s (exit {process.returncode})")
        if self.database_created:
            began = time.monotonic()
            psql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            self.note(f"dropped {self.database} ({time.monotonic() - began:.1f}s)")
        if KEEP:
            self.note(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        check(not problems, "; ".join(problems))


def option_settings(settings):
    """(namespace, option, value) from either form .ebextensions allows."""
    if isinstance(settings, dict):
        for namespace, options in settings.items():
            for option, value in (options or {}).items():
                yield namespace, option, value
    else:
        for item in settings:
            yield (
                item.get("namespace", "aws:elasticbeanstalk:application:environment"),
                item["option_name"],
                item.get("value"),
            )


# What Elastic Beanstalk's nginx on Amazon Linux 2023 does with a bundle's .platform/nginx/conf.d:
# conf.d/*.conf inside the http block, conf.d/elasticbeanstalk/*.conf inside the server block
# next to the proxy location (its defaults: 8 KB header buffers, 1 MB bodies, HTTP/1.1 to the app).
NGINX_CONF = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {http_level}/*.conf;
    upstream app {{
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port} default_server;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        # Only for the rehearsal: an upstream that refuses connections, for nginx's own 502.
        location = /__deploy_check_no_upstream {{
            proxy_pass http://127.0.0.1:9;
        }}
        include {server_level}/*.conf;
    }}
}}
"""


def nginx_version(nginx):
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    return (result.stderr or result.stdout).strip().rsplit("/", 1)[-1]


REQUESTS = {}  # port -> requests sent


def request(port, method, path, host=PUBLIC_HOST, https=False, token=None, body=None, extra=None):
    """One HTTP request as nginx would pass it on: Host as sent, X-Forwarded-Proto from the ALB."""
    headers = {"Host": host, **(extra or {})}
    if https:
        headers["X-Forwarded-Proto"] = "https"
    if token:
        headers["Authorization"] = f"Token {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        REQUESTS[port] = REQUESTS.get(port, 0) + 1
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def cookie(headers, name):
    match = re.search(rf"{name}=([^;]+)", headers.get("set-cookie", ""))
    return match.group(1) if match else None


def psql(sql):
    result = subprocess.run(["psql", POSTGRES, "-v", "ON_ERROR_STOP=1", "-qc", sql], capture_output=True, text=True)
    check(result.returncode == 0, f"psql {sql!r}: {result.stderr.strip()}")


class AssetParser(HTMLParser):
    """Collects the scripts, stylesheets and icons a page loads."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet", "icon", "shortcut icon"):
            self.urls.append(attrs["href"])

    @classmethod
    def parse(cls, html):
        parser = cls()
        parser.feed(html)
        return parser.urls


if __name__ == "__main__":
    sys.exit(Rehearsal().run())
