"""
Settings for Widget Inventory, read from the environment once at start-up.

Every knob is an environment variable (docs/configuration.md lists them all), read through
``config.env.env``: a missing or malformed value stops start-up with one line naming the
variable. The defaults are the production ones: DEBUG off and a secret key that must be
provided. Locally, ``make run`` writes a git-ignored ``.env`` (DEBUG on, a local secret key)
that ``manage.py`` reads; the web server and the test suite never read it (config/env.py).
"""

from pathlib import Path

import dj_database_url

from config.env import SettingsError, env

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core ---------------------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    raise SettingsError(
        "DJANGO_SECRET_KEY is not set. Locally, `make run` writes one to .env; elsewhere set it to a "
        "long random string (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
    )
# While the secret key is rotated, the previous key(s) still verify sessions and signed values
# (comma-separated); drop them once sessions signed with them have expired (docs/deploy.md).
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default="")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default="localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "widgets",
    "webhooks",
]

MIDDLEWARE = [
    "config.middleware.RequestLogMiddleware",  # outermost: times and logs every request
    "config.middleware.ApiJsonErrorsMiddleware",  # JSON errors under /api/ whatever DEBUG says
    "config.middleware.RequestSizeMiddleware",  # an over-long URL or header: 414/431 as JSON
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.HealthCheckMiddleware",  # before CommonMiddleware validates the Host
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.middleware.LazyMessageMiddleware",  # contrib.messages, its storage made when used
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "widgets.api.middleware.DatabaseUnavailableMiddleware",  # innermost: sees the view's own errors
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Database -----------------------------------------------------------------------------
# A SQLite file by default; PostgreSQL through DATABASE_URL or, on Elastic Beanstalk with an
# attached RDS instance, the RDS_* variables (an explicit DATABASE_URL wins over them).
# Connections persist and are health-checked before reuse. DJANGO_DB_SSLMODE is libpq's
# sslmode (`require` encrypts; `verify-full` also checks the server's certificate against
# DJANGO_DB_SSLROOTCERT, e.g. the RDS CA bundle). A database that does not answer fails the
# request within the connect timeout (503 under /api/) instead of hanging a worker.

CONN_MAX_AGE = env.int("DJANGO_CONN_MAX_AGE", default=600, minimum=0)
# The hottest statements are prepared once per connection (widgets/prepared.py); turn it off
# behind a pooler that shares server sessions between clients (PgBouncer in transaction mode).
PREPARED_STATEMENTS = env.bool("DJANGO_PREPARED_STATEMENTS", default=True)
# Django's PostgreSQL backend with a health check that asks the socket, not the server.
POSTGRESQL_ENGINE = "config.postgresql"
DB_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def database() -> dict:
    if env.str("DATABASE_URL", default="") or not env.str("RDS_HOSTNAME", default=""):
        try:
            db = dj_database_url.config(
                default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=CONN_MAX_AGE, conn_health_checks=True
            )
        except ValueError as exc:  # dj-database-url's errors do not name the variable
            raise SettingsError(f"DATABASE_URL must be a database URL (postgres://...): {exc}") from None
    else:
        missing = [name for name in ("RDS_DB_NAME", "RDS_USERNAME", "RDS_PASSWORD") if name not in env]
        if missing:
            raise SettingsError(f"RDS_HOSTNAME is set but {', '.join(missing)} is not.")
        db = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": env.str("RDS_HOSTNAME"),
            "PORT": str(env.int("RDS_PORT", default=5432, minimum=1, what="a port number")),
            "NAME": env.ENVIRON["RDS_DB_NAME"],
            "USER": env.ENVIRON["RDS_USERNAME"],
            "PASSWORD": env.ENVIRON["RDS_PASSWORD"],
            "CONN_MAX_AGE": CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
        }
    postgres = db["ENGINE"] in ("django.db.backends.postgresql", POSTGRESQL_ENGINE)
    sslmode = env.str("DJANGO_DB_SSLMODE", default="")
    if sslmode:
        if sslmode not in DB_SSLMODES:
            raise SettingsError(f"DJANGO_DB_SSLMODE must be one of {', '.join(DB_SSLMODES)}, not {sslmode!r}.")
        if not postgres:
            raise SettingsError("DJANGO_DB_SSLMODE applies to PostgreSQL only.")
        db.setdefault("OPTIONS", {})["sslmode"] = sslmode
        if env.str("DJANGO_DB_SSLROOTCERT", default=""):
            db["OPTIONS"]["sslrootcert"] = env.str("DJANGO_DB_SSLROOTCERT")
    if postgres:
        db["ENGINE"] = POSTGRESQL_ENGINE
        db.setdefault("OPTIONS", {}).setdefault(
            "connect_timeout", env.int("DJANGO_DB_CONNECT_TIMEOUT", default=3, minimum=1)
        )
    return db


DATABASES = {"default": database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Read replicas ---------------------------------------------------------------------------
# DATABASE_REPLICA_URLS (comma-separated database URLs, e.g. RDS read replicas) adds replicas
# as the aliases replica_0, replica_1, ...: config.replicas then sends the reads of HTTP
# requests to them and everything else to the primary (docs/read-replicas.md). A user who
# has just written reads from the primary for DATABASE_REPLICA_STICKY_SECONDS (a marker in
# the cache, so set REDIS_URL when several processes serve); an unreachable replica is skipped
# for DATABASE_REPLICA_RETRY_SECONDS. Unset: one database, no router, nothing changes.

DATABASE_REPLICA_STICKY_SECONDS = env.int("DATABASE_REPLICA_STICKY_SECONDS", default=5, minimum=1)
DATABASE_REPLICA_RETRY_SECONDS = env.int("DATABASE_REPLICA_RETRY_SECONDS", default=10, minimum=1)
for _index, _url in enumerate(env.list("DATABASE_REPLICA_URLS", default="")):
    try:
        _replica = dj_database_url.parse(_url, conn_max_age=CONN_MAX_AGE, conn_health_checks=True)
    except ValueError:  # the URL holds a password: name its position, never the URL
        raise SettingsError(f"DATABASE_REPLICA_URLS: entry {_index + 1} is not a database URL.") from None
    if _replica["ENGINE"] == "django.db.backends.postgresql":
        _replica["ENGINE"] = POSTGRESQL_ENGINE
    if _replica["ENGINE"] != DATABASES["default"]["ENGINE"]:
        raise SettingsError(f"DATABASE_REPLICA_URLS: entry {_index + 1} is not the primary's kind of database.")
    _replica["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), **_replica.get("OPTIONS", {})}
    if _replica["ENGINE"] == POSTGRESQL_ENGINE:
        # A replica that stopped answering is skipped: find out quickly (libpq's minimum is 2 s).
        _replica["OPTIONS"]["connect_timeout"] = min(2, _replica["OPTIONS"].get("connect_timeout", 2))
    _replica["TEST"] = {"MIRROR": "default"}  # tests read their own writes from the test database
    DATABASES[f"replica_{_index}"] = _replica
if len(DATABASES) > 1:
    DATABASE_ROUTERS = ["config.replicas.ReplicaRouter"]
    # Innermost, inside the session and user middleware: a retry on the primary redoes only the view.
    MIDDLEWARE.append("config.replicas.ReplicaMiddleware")

# --- Cache --------------------------------------------------------------------------------
# Redis when REDIS_URL is set, so every process and instance shares one cache (throttle
# counts among others); otherwise memory local to the process. The key prefix lets several
# deployments (or test runs) share one Redis database without sharing keys.

REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": {
        **(
            {"BACKEND": "config.cache.RedisCache", "LOCATION": REDIS_URL}
            if REDIS_URL
            else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        ),
        "KEY_PREFIX": env.str("DJANGO_CACHE_KEY_PREFIX", default=""),
    }
}

# --- Auth and API tokens ------------------------------------------------------------------
# Token keys are stored as HMAC-SHA256 digests under DJANGO_TOKEN_HMAC_KEY. When unset it is
# derived from SECRET_KEY, so rotating the secret key then invalidates every token. A
# verified token (with its user's permissions) is remembered per process for
# DJANGO_TOKEN_CACHE_SECONDS: revocation and role changes take effect within that time (0 = off).

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/api-auth/login/"
LOGIN_REDIRECT_URL = "/api/"

TOKEN_HMAC_KEY = env.str("DJANGO_TOKEN_HMAC_KEY", default="") or f"token-hmac:{SECRET_KEY}"
TOKEN_DEFAULT_EXPIRY_DAYS = env.int("DJANGO_TOKEN_EXPIRY_DAYS", default=90, minimum=1)
API_TOKEN_CACHE_SECONDS = env.int("DJANGO_TOKEN_CACHE_SECONDS", default=5, minimum=0)

# --- REST framework and the API -----------------------------------------------------------
# Throttle rates use DRF's syntax (`5/min`, `100/hour`); counts live in the cache, so with
# Redis a limit holds across processes and instances. "login" is the strict limit on
# POST /api/auth/token/, /admin/login/ and /api-auth/login/, counted per username and per
# client IP. The client IP is REMOTE_ADDR unless DJANGO_NUM_PROXIES says how many proxies
# (load balancer, nginx) append to X-Forwarded-For in front of the app; a larger number
# than really exists would let clients pick their own IP.

REST_FRAMEWORK = {
    # Token first, so an anonymous API client gets 401 with WWW-Authenticate, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "widgets.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["widgets.api.permissions.ModelPermissions"],
    "DEFAULT_PAGINATION_CLASS": "widgets.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # django-filter's backend, skipping the FilterSet when no filter is asked for.
    "DEFAULT_FILTER_BACKENDS": ["widgets.api.filters.FilterBackend"],
    # orjson: the same JSON as DRF's renderer and parser, faster (widgets/api/renderers.py).
    "DEFAULT_RENDERER_CLASSES": [
        "widgets.api.renderers.ORJSONRenderer",
        "widgets.api.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "widgets.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "widgets.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "widgets.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": [
        "widgets.api.throttling.AnonRateThrottle",
        "widgets.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.rate("DJANGO_THROTTLE_ANON", "60/min"),
        "user": env.rate("DJANGO_THROTTLE_USER", "1200/min"),
        "login": env.rate("DJANGO_THROTTLE_LOGIN", "5/min"),
    },
    "NUM_PROXIES": env.int("DJANGO_NUM_PROXIES", default=0, minimum=0, what="a whole number (0 = none)"),
}

# List counts are exact up to this many rows; above it PostgreSQL's estimate is returned
# with count_is_estimate=true, so a list never counts a million rows per request.
API_EXACT_COUNT_LIMIT = env.int("DJANGO_EXACT_COUNT_LIMIT", default=10000, minimum=0)
# When true, PUT/PATCH/DELETE of widgets and categories without If-Match are refused with
# 428 Precondition Required, so no client can overwrite a change it never saw.
REQUIRE_IF_MATCH = env.bool("DJANGO_REQUIRE_IF_MATCH", default=False)
# Idempotency-Key answers are kept at least 24 hours. On average one new key in this many
# also deletes a batch of expired ones after its request commits (0 = never: then run
# `manage.py purge_idempotency_keys` daily from a scheduler).
IDEMPOTENCY_PURGE_EVERY = env.int(
    "DJANGO_IDEMPOTENCY_PURGE_EVERY", default=200, minimum=0, what="0 (off) or a positive number"
)
# A request body over this size is refused (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_MAX_REQUEST_BYTES", default=1024 * 1024, minimum=1)
# The longest URL (path and query) and header value answered; longer ones get 414 / 431 as
# JSON (config.middleware.RequestSizeMiddleware). Under nginx's and gunicorn's 8 KB limits.
MAX_URL_BYTES = 8000
MAX_HEADER_BYTES = 8000

SPECTACULAR_SETTINGS = {
    "TITLE": "Widget Inventory API",
    "DESCRIPTION": (
        "Widgets, categories and an append-only stock ledger. Stock changes only through "
        "`POST /api/widgets/{id}/adjust/`. Authenticate with `Authorization: Token <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI and ReDoc assets come from drf-spectacular-sidecar: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The validator badge would send our schema to validator.swagger.io: keep it home.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "StockMovementReasonEnum": "widgets.models.StockMovement.Reason",
        "AdjustmentReasonEnum": "widgets.api.serializers.ADJUSTABLE_REASONS",
        "ReservationStatusEnum": "widgets.models.Reservation.STATES",
        "DeliveryStatusEnum": "webhooks.models.Delivery.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "widgets.api.schema.allow_empty_query_values",
        "widgets.api.schema.add_error_responses",
        "widgets.api.schema.add_request_id_header",
        "webhooks.schema.x_webhooks",
    ],
    # The events POSTed to webhook subscribers (docs/events.md).
    "WEBHOOKS": [
        "webhooks.schema.widget_events",
        "webhooks.schema.category_events",
        "webhooks.schema.stock_events",
        "webhooks.schema.reservation_events",
        "webhooks.schema.ping_event",
    ],
}

# --- Events and webhooks (docs/events.md) ----------------------------------------------------
# Deliveries are tasks of Django's Tasks API (the django-tasks backport) stored in the database
# by django-tasks-db: enqueued in the transaction of the change itself and run by
# `manage.py run_worker` (`make worker`; the Procfile's worker line). Another backend (a
# dedicated queue) can replace this one here when a deployment outgrows the database.

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# Plain http and hosts on loopback/private/link-local networks are refused unless this is on
# (development and tests only: in production it would let a subscriber probe the network).
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env.bool("DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", default=False)


def env_seconds(name: str, default: float, *, unit: float = 1) -> float:
    value = env.str(name, default=str(default))
    try:
        number = float(value)
    except ValueError:
        number = -1
    if not 0 <= number < 10**9:
        raise SettingsError(f"{name} must be a non-negative number, not {value!r}.")
    return number * unit


# A failed delivery is retried with exponential backoff (this first delay, doubling up to the
# cap, with jitter) for this long after it was created, then marked failed.
WEBHOOK_RETRY_FOR = env_seconds("DJANGO_WEBHOOK_RETRY_HOURS", 24, unit=3600)
WEBHOOK_RETRY_BASE_DELAY = env_seconds("DJANGO_WEBHOOK_RETRY_BASE_SECONDS", 10)
WEBHOOK_RETRY_MAX_DELAY = env_seconds("DJANGO_WEBHOOK_RETRY_MAX_SECONDS", 3 * 3600)
# A subscription with no successful delivery for this long, while deliveries fail, is disabled.
WEBHOOK_DISABLE_AFTER = env_seconds("DJANGO_WEBHOOK_DISABLE_AFTER_HOURS", 72, unit=3600)
# `manage.py purge_webhook_deliveries` removes finished deliveries (and their events) older than this.
WEBHOOK_RETENTION = env_seconds("DJANGO_WEBHOOK_RETENTION_DAYS", 30, unit=86400)
# Each attempt's HTTP timeouts: to connect, and for the whole request (answer included).
WEBHOOK_CONNECT_TIMEOUT = 3
WEBHOOK_TIMEOUT = 10
# A worker holds a delivery this long while it sends it (longer than the 10 s request timeout):
# another worker takes it over only after that, so a delivery is sent by one worker at a time,
# and one whose worker died is sent again (same webhook-id) after at most this long.
WEBHOOK_LEASE_SECONDS = 30

# --- Static files -------------------------------------------------------------------------
# Not /static/: Elastic Beanstalk's Python platform has nginx serve the path /static from the
# bundle's static/ folder (our sources, not collectstatic's output), so /static/ URLs would
# 404 before reaching WhiteNoise.

STATIC_URL = "assets/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Files browsers ask for at the site's root (/favicon.ico), served by WhiteNoise.
WHITENOISE_ROOT = BASE_DIR / "static" / "root"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security -----------------------------------------------------------------------------
# On by default whenever DEBUG is off. The load balancer terminates TLS and says so in
# X-Forwarded-Proto; its health checks arrive over plain HTTP and must not be redirected.

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default="")

# --- Logging ------------------------------------------------------------------------------
# Everything goes to stdout (Elastic Beanstalk collects it): one JSON object per line, with the
# request id, plus one access line per request from config.middleware.RequestLogMiddleware.
# Errors carry their traceback. DJANGO_LOG_FORMAT=text gives plain lines (the default with DEBUG).

LOG_FORMAT = env.choice("DJANGO_LOG_FORMAT", ("json", "text"), default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "config.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {
        "handlers": ["stdout"],
        "level": env.choice("DJANGO_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), default="INFO"),
    },
    "loggers": {
        # Through the root handler only (Django's own console handler would print twice).
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # 4xx are in the access line already; 5xx are logged here with their traceback.
        "django.request": {"handlers": [], "level": "ERROR", "propagate": True},
        # Scanners send any Host through the load balancer; the access line records the 400
        # without a traceback per probe.
        "django.security.DisallowedHost": {"handlers": [], "level": "CRITICAL", "propagate": True},
    },
}
