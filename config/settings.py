"""
Settings for Widget Inventory, read from the environment once at start-up.

Every knob is an environment variable; the README lists them all. Outside
`make run` (which turns DEBUG on) the defaults are the production ones: DEBUG off
and a secret key that must be provided.
"""
import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false/1/0), not {value!r}.")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core -------------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", default=False)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. Set it to a long random string "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))'); "
        "`make run` and `make test` generate a local one for you."
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

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
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.HealthCheckMiddleware",  # before CommonMiddleware validates the Host
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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

# --- Database -----------------------------------------------------------------------
# SQLite file by default (the embedded default); PostgreSQL through DATABASE_URL,
# with persistent connections that are health-checked before reuse.

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "600")),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Deployment: database on Elastic Beanstalk ---------------------------------------------
# An RDS instance attached to an Elastic Beanstalk environment is described by RDS_* variables;
# an explicit DATABASE_URL wins over them. DJANGO_DB_SSLMODE is libpq's sslmode for the
# connection (`require` encrypts; `verify-full` also checks the server's certificate against
# DJANGO_DB_SSLROOTCERT, e.g. the RDS CA bundle).

if not os.environ.get("DATABASE_URL") and os.environ.get("RDS_HOSTNAME"):
    _missing = [name for name in ("RDS_DB_NAME", "RDS_USERNAME", "RDS_PASSWORD") if name not in os.environ]
    if _missing:
        raise ImproperlyConfigured(f"RDS_HOSTNAME is set but {', '.join(_missing)} is not.")
    if not os.environ.get("RDS_PORT", "5432").isdigit():
        raise ImproperlyConfigured(f"RDS_PORT must be a port number, not {os.environ['RDS_PORT']!r}.")
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ["RDS_HOSTNAME"],
        "PORT": os.environ.get("RDS_PORT", "5432"),
        "NAME": os.environ["RDS_DB_NAME"],
        "USER": os.environ["RDS_USERNAME"],
        "PASSWORD": os.environ["RDS_PASSWORD"],
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
    }

DB_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DB_SSLMODE = os.environ.get("DJANGO_DB_SSLMODE", "")
if DB_SSLMODE:
    if DB_SSLMODE not in DB_SSLMODES:
        raise ImproperlyConfigured(f"DJANGO_DB_SSLMODE must be one of {', '.join(DB_SSLMODES)}, not {DB_SSLMODE!r}.")
    if "postgresql" not in DATABASES["default"]["ENGINE"]:
        raise ImproperlyConfigured("DJANGO_DB_SSLMODE applies to PostgreSQL only.")
    DATABASES["default"].setdefault("OPTIONS", {})["sslmode"] = DB_SSLMODE
    if os.environ.get("DJANGO_DB_SSLROOTCERT"):
        DATABASES["default"]["OPTIONS"]["sslrootcert"] = os.environ["DJANGO_DB_SSLROOTCERT"]

# --- Cache ----------------------------------------------------------------------------
# Redis when REDIS_URL is set, so every process and instance shares one cache;
# otherwise memory local to the process.

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "config.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Lets several deployments (or test runs) share one Redis database without sharing keys.
CACHES["default"]["KEY_PREFIX"] = os.environ.get("DJANGO_CACHE_KEY_PREFIX", "")

# --- Auth -----------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/api-auth/login/"
LOGIN_REDIRECT_URL = "/api/"

# --- Internationalisation -------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------------

# Not /static/: Elastic Beanstalk's Python platform has nginx serve the path /static from the
# bundle's static/ folder (our sources, not collectstatic's output), so /static/ URLs would
# 404 before reaching WhiteNoise.
STATIC_URL = "assets/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
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

# --- REST framework -----------------------------------------------------------------------

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
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "widgets.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "widgets.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "widgets.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

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
        "webhooks.schema.ping_event",
    ],
}

# --- Deployment: secret key rotation ---------------------------------------------------------
# While the secret key is rotated, the previous key(s) still verify sessions and signed values
# (comma-separated); drop them once sessions signed with them have expired (README, "Deploying").

SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS")

# --- Deployment: logging ---------------------------------------------------------------------
# Everything goes to stdout (Elastic Beanstalk collects it): one JSON object per line, with the
# request id, plus one access line per request from config.middleware.RequestLogMiddleware.
# Errors carry their traceback. DJANGO_LOG_FORMAT=text gives plain lines (the default with DEBUG).

LOG_FORMAT = os.environ.get("DJANGO_LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"DJANGO_LOG_FORMAT must be json or text, not {LOG_FORMAT!r}.")
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
    "root": {"handlers": ["stdout"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
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

# --- API tokens ----------------------------------------------------------------------------
# Keys are stored as HMAC-SHA256 digests under this server-side secret. When unset it is
# derived from SECRET_KEY, so rotating the secret key then invalidates every token.

TOKEN_HMAC_KEY = os.environ.get("DJANGO_TOKEN_HMAC_KEY") or f"token-hmac:{SECRET_KEY}"
TOKEN_DEFAULT_EXPIRY_DAYS = int(os.environ.get("DJANGO_TOKEN_EXPIRY_DAYS", "90"))

# --- Conditional requests ------------------------------------------------------------------
# When true, PUT/PATCH/DELETE of widgets and categories without If-Match are refused with
# 428 Precondition Required, so no client can overwrite a change it never saw.

REQUIRE_IF_MATCH = env_bool("DJANGO_REQUIRE_IF_MATCH", default=False)

# --- Idempotency keys ----------------------------------------------------------------------
# Stored answers are kept at least 24 hours. On average one new key in this many also
# deletes a batch of expired ones after its request commits (0 = never: then run
# `manage.py purge_idempotency_keys` daily from a scheduler).
IDEMPOTENCY_PURGE_EVERY = int(os.environ.get("DJANGO_IDEMPOTENCY_PURGE_EVERY", "200"))
if IDEMPOTENCY_PURGE_EVERY < 0:
    raise ImproperlyConfigured("DJANGO_IDEMPOTENCY_PURGE_EVERY must be 0 (off) or a positive number.")

# --- Production security ------------------------------------------------------------------
# On by default whenever DEBUG is off. The load balancer terminates TLS and says so in
# X-Forwarded-Proto; its health checks arrive over plain HTTP and must not be redirected.

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- Performance --------------------------------------------------------------------------
# A verified API token (with its user's permissions) is remembered per process for this
# many seconds: revocation and role changes take effect within that time. 0 = off.
API_TOKEN_CACHE_SECONDS = int(os.environ.get("DJANGO_TOKEN_CACHE_SECONDS", "5"))
# List counts are exact up to this many rows; above it PostgreSQL's estimate is returned
# with count_is_estimate=true, so a list never counts a million rows per request.
API_EXACT_COUNT_LIMIT = int(os.environ.get("DJANGO_EXACT_COUNT_LIMIT", "10000"))

# --- Throttling ------------------------------------------------------------------------------
# DRF rate syntax (`5/min`, `100/hour`). Counts live in the Django cache: Redis when REDIS_URL
# is set, so a limit holds across processes and instances. "login" is the strict limit on
# POST /api/auth/token/, /admin/login/ and /api-auth/login/, counted per username and per
# client IP. The client IP is REMOTE_ADDR unless DJANGO_NUM_PROXIES says how many proxies
# (load balancer, nginx) append to X-Forwarded-For in front of the app; a larger number than
# really exists would let clients pick their own IP.


def env_rate(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must be a rate such as 5/min or 100/hour, not {value!r}.")
    return value


NUM_PROXIES = os.environ.get("DJANGO_NUM_PROXIES", "0")
if not (NUM_PROXIES.isascii() and NUM_PROXIES.isdigit()):
    raise ImproperlyConfigured(f"DJANGO_NUM_PROXIES must be a whole number (0 = none), not {NUM_PROXIES!r}.")

REST_FRAMEWORK.update(
    {
        "DEFAULT_THROTTLE_CLASSES": [
            "widgets.api.throttling.AnonRateThrottle",
            "widgets.api.throttling.UserRateThrottle",
        ],
        "DEFAULT_THROTTLE_RATES": {
            "anon": env_rate("DJANGO_THROTTLE_ANON", "60/min"),
            "user": env_rate("DJANGO_THROTTLE_USER", "1200/min"),
            "login": env_rate("DJANGO_THROTTLE_LOGIN", "5/min"),
        },
        "NUM_PROXIES": int(NUM_PROXIES),
    }
)

# --- Reliability ----------------------------------------------------------------------------
# Bounded inputs and fast failure: a request body is refused (413) over this size; a
# database that does not answer fails the request within the connect timeout (503 under
# /api/, see widgets.api.exceptions) instead of hanging a worker.

DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DJANGO_MAX_REQUEST_BYTES", str(1024 * 1024)))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DJANGO_DB_CONNECT_TIMEOUT", "3"))
    )

# --- Events and webhooks (docs/events.md) ----------------------------------------------------
# Deliveries are tasks of Django's Tasks API (the django-tasks backport) stored in the database
# by django-tasks-db: enqueued in the transaction of the change itself and run by
# `manage.py db_worker` (`make worker`; the Procfile's worker line). Another backend (a dedicated
# queue) can replace this one here when a deployment outgrows the database.

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# Plain http and hosts on loopback/private/link-local networks are refused unless this is on
# (development and tests only: in production it would let a subscriber probe the network).
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env_bool("DJANGO_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", default=False)


def env_seconds(name: str, default: float, *, unit: float = 1) -> float:
    value = os.environ.get(name) or str(default)
    try:
        number = float(value)
    except ValueError:
        number = -1
    if not 0 <= number < 10**9:
        raise ImproperlyConfigured(f"{name} must be a non-negative number, not {value!r}.")
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
# A worker holds a delivery this long while it sends it (longer than the 10 s request timeout):
# another worker takes it over only after that, so a delivery is sent by one worker at a time,
# and one whose worker died is sent again (same webhook-id) after at most this long.
WEBHOOK_LEASE_SECONDS = 30
