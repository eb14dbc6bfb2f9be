"""gunicorn settings for the `web` process (Procfile). Every knob can be set from the environment.

On Elastic Beanstalk nginx on the instance proxies to 127.0.0.1:8000 (the Python platform's
default WSGI port); PORT overrides it, and nginx follows PORT too.
"""

import multiprocessing
import os

from gunicorn import glogging

from config import gunicorn_errors
from config.env import env  # a bad value stops start-up naming the variable

bind = f"{os.environ.get('GUNICORN_HOST', '127.0.0.1')}:{env.int('PORT', default=8000, minimum=1, what='a port')}"

# One request at a time per process, and two processes per core (plus one). The requests are
# CPU-bound Python (a widget page spends far longer in Python than waiting for PostgreSQL), so
# threads in a process would mostly queue for the GIL: measured with bench/ at 8 connections,
# 4 threads per worker gave the same requests/s as 1 but a p99 latency 2-3x higher (bench/RESULTS.md).
# gthread with one thread still keeps idle keep-alive connections off the worker.
workers = env.int("GUNICORN_WORKERS", default=2 * multiprocessing.cpu_count() + 1, minimum=1)
threads = env.int("GUNICORN_THREADS", default=1, minimum=1)

# A request that runs longer than this is killed (the worker is replaced); the ALB's idle
# timeout is 60 s, so a client gets a clear 502 from us rather than a hang.
timeout = env.int("GUNICORN_TIMEOUT", default=30, minimum=0)
# On SIGTERM (deployments, scale-in) in-flight requests get this long to finish; it is under
# the target group's deregistration delay (30 s, .ebextensions/01_options.config).
graceful_timeout = env.int("GUNICORN_GRACEFUL_TIMEOUT", default=25, minimum=0)
keepalive = env.int("GUNICORN_KEEPALIVE", default=75, minimum=0)  # above nginx's upstream keep-alive

# Recycle workers now and then so a slow leak cannot grow forever; the jitter keeps them from
# all restarting at once.
# At a few hundred requests/s per worker, every ~30 s or more (a fresh worker starts with cold
# caches: its token look-ups, database connection and serializer fields).
max_requests = env.int("GUNICORN_MAX_REQUESTS", default=10000, minimum=0)
max_requests_jitter = env.int("GUNICORN_MAX_REQUESTS_JITTER", default=1000, minimum=0)

# Logs: gunicorn's own messages (start, worker timeouts) go to stderr as JSON lines like the
# application's (config/logs.py). The access log is the application's: one JSON line per request
# on stdout (config/middleware.py), which knows the user and the request id and never writes the
# query string; gunicorn's own access log is off (Logger, below) so that no request is logged twice.
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


class Logger(glogging.Logger):
    """gunicorn's logger without its access log. With ``logconfig_dict`` set, gunicorn would
    build its access line's values for every request (4-5% of a worker's CPU on a widget's
    retrieve, measured with py-spy under wrk) and hand them to a logger with no handler."""

    def access(self, resp, req, environ, request_time):
        pass


logger_class = Logger
logconfig_dict = {
    "formatters": {"json": {"()": "config.logs.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}

# gunicorn's control socket defaults to one path in $HOME, shared by every gunicorn of the
# user; nothing here uses it.
control_socket_disable = True

# Load the app in the master so a broken deploy fails at start-up, not in every worker.
preload_app = True

# gunicorn's own answers (a request line over 8190 bytes, a header over 8190, a malformed
# request) as JSON, like every other error (config/gunicorn_errors.py). The request line may be
# as long as gunicorn allows; the app refuses a URL over MAX_URL_BYTES itself, as JSON.
gunicorn_errors.install()
limit_request_line = env.int("GUNICORN_LIMIT_REQUEST_LINE", default=8190, minimum=0)
