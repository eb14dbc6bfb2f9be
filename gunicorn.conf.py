"""gunicorn settings for the `web` process (Procfile). Every knob can be set from the environment.

On Elastic Beanstalk nginx on the instance proxies to 127.0.0.1:8000 (the Python platform's
default WSGI port); PORT overrides it, and nginx follows PORT too.
"""
import multiprocessing
import os

bind = f"{os.environ.get('GUNICORN_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"

# Threads serve concurrent requests that wait on the database; a couple of processes per core
# use the CPUs. Defaults suit a small instance (t3.small: 2 vCPUs -> 3 workers x 4 threads).
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# A request that runs longer than this is killed (the worker is replaced); the ALB's idle
# timeout is 60 s, so a client gets a clear 502 from us rather than a hang.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM (deployments, scale-in) in-flight requests get this long to finish; it is under
# the target group's deregistration delay (30 s, .ebextensions/01_options.config).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))  # above nginx's upstream keep-alive

# Recycle workers now and then so a slow leak cannot grow forever; the jitter keeps them from
# all restarting at once.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "200"))

# The application writes the one access line per request itself, as JSON on stdout (see
# config/middleware.py): it knows the user and the request id, and it never logs the query
# string. gunicorn's own access log would be a second line with the raw request line, so it
# is off unless GUNICORN_ACCESS_LOG is set (to "-" for stdout).
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
access_log_format = '{"logger": "gunicorn.access", "method": "%(m)s", "path": "%(U)s", "status": %(s)s, "duration_ms": %(M)s}'
errorlog = "-"  # gunicorn's own messages (start, worker timeouts) on stderr
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Load the app in the master so a broken deploy fails at start-up, not in every worker.
preload_app = True
