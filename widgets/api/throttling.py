"""Request rates: anonymous clients, each user, and the strict limit on logging in.

Counts live in the Django cache (Redis when REDIS_URL is set), so a limit holds across
every process and instance. Rates are REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
(`DJANGO_THROTTLE_ANON`, `_USER`, `_LOGIN`).
"""

import hashlib
import logging
import math
import unicodedata
from functools import wraps

from django.template.response import TemplateResponse
from redis.exceptions import RedisError
from rest_framework import throttling
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


class CountingRateThrottle(throttling.SimpleRateThrottle):
    """DRF's SimpleRateThrottle, counting with one atomic increment per request.

    DRF keeps a list of timestamps that it reads, appends to and writes back, so two
    processes answering at the same moment can overwrite each other's hit and let a
    request through uncounted. Here a window opens with a client's first request and lasts
    one rate period, and its counter is raised atomically. ``Retry-After`` is the time left
    until the window closes.

    On Redis (``config.cache.RedisCache``) that is one round trip, a Lua script; other
    caches (the process-local one of the embedded default) go through the cache API.
    """

    def get_rate(self):
        # Read on every request rather than once at import, like the rest of api_settings.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        # Already counted, with this key, in authentication's round trip to Redis (it reads the
        # credentials generation in the same call: widgets.api.authentication).
        counted = getattr(request, "throttle_counted", {}).pop(key, None)
        if counted is not None:
            count, left = counted
            self.window_end = self.now + left
            return count <= self.num_requests
        try:
            if hasattr(self.cache, "count_in_window"):  # config.cache.RedisCache
                count, left = self.cache.count_in_window(key, self.duration)
                self.window_end = self.now + left
            else:
                count, self.window_end = self._count_in_cache(key)
        except RedisError as exc:
            # Redis down or failing over: keep serving (logins still cost a slow password
            # hash each) rather than turn every request into a 500.
            logger.warning("Throttle counts unavailable, request not counted: %s", exc)
            return True
        return count <= self.num_requests

    def _count_in_cache(self, key: str) -> tuple[int, float]:
        window_start = self._window_start(key)
        counter = f"{key}:{window_start}"
        # The counter outlives its window, so it never expires between add() and incr().
        self.cache.add(counter, 0, timeout=self.duration + 5)
        return self.cache.incr(counter), window_start + self.duration

    def _window_start(self, key: str) -> float:
        # add() is SET NX: of concurrent first requests one sets the start, all read it.
        start_key = f"{key}:start"
        self.cache.add(start_key, self.now, timeout=self.duration)
        start = self.cache.get(start_key)
        return self.now if start is None else start  # None: the window closed just now

    def wait(self):
        return max(self.window_end - self.now, 1)


class AnonRateThrottle(CountingRateThrottle, throttling.AnonRateThrottle):
    """Clients without credentials, per IP address."""


class UserRateThrottle(CountingRateThrottle, throttling.UserRateThrottle):
    """Authenticated users, per user (anonymous clients per IP address)."""


class LoginThrottle(CountingRateThrottle):
    """Every login attempt (POST) counts, right password or wrong."""

    scope = "login"

    def allow_request(self, request, view):
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


class LoginIPThrottle(LoginThrottle):
    def get_cache_key(self, request, view):
        return f"throttle_login_ip_{self.get_ident(request)}"


class LoginUsernameThrottle(LoginThrottle):
    def get_cache_key(self, request, view):
        # DRF requests carry parsed JSON or form data in .data, Django's login forms .POST.
        data = request.data if hasattr(request, "data") else request.POST
        username = data.get("username") if hasattr(data, "get") else None
        if not isinstance(username, str) or not username:
            return None
        # Case and Unicode variants of one name share a count; hashed to bound the key.
        normalized = unicodedata.normalize("NFKC", username).casefold()
        return f"throttle_login_user_{hashlib.sha256(normalized.encode()).hexdigest()[:32]}"


LOGIN_THROTTLES = [LoginIPThrottle, LoginUsernameThrottle]


def throttle_login(view):
    """Apply the login throttles to a plain Django login view (admin, browsable API).

    Over the limit the attempt never reaches the view: the answer is a 429 page with
    ``Retry-After``.
    """

    @wraps(view)
    def throttled_view(request, *args, **kwargs):
        waits = []
        for throttle in (cls() for cls in LOGIN_THROTTLES):
            if not throttle.allow_request(request, None):
                waits.append(throttle.wait())
        if waits:
            wait = math.ceil(max(waits))
            response = TemplateResponse(request, "429.html", {"wait": wait}, status=429)
            response["Retry-After"] = str(wait)
            return response
        return view(request, *args, **kwargs)

    return throttled_view
