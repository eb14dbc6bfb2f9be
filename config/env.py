"""Reading the environment: typed values whose errors name the variable, and the local .env file.

Settings read every knob through ``env`` (django-environ). A missing or malformed value stops
start-up with a ``SettingsError`` naming the variable and what it must be; ``manage.py``
prints that as one line instead of a traceback.

The local ``.env`` file (written by ``make run``: DEBUG on and a local secret key) is read by
``manage.py`` only, through ``read_env_file()``. The web server (gunicorn imports
``config.wsgi``) and the test suite (pytest imports the settings directly) never read it, so
a stray ``.env`` can change neither production nor a test run. ``DJANGO_ENV_FILE`` names
another file; set to empty it turns the file off (the test suite's subprocesses do that).
Variables already in the environment always win over the file.
"""

import os
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = BASE_DIR / ".env"

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ImproperlyConfigured):
    """An environment variable is missing or malformed; the message names it."""


def read_env_file() -> None:
    """Adds the variables of the local env file (``DJANGO_ENV_FILE``, default ``.env``)
    that the environment does not already set. A missing file is not an error."""
    path = os.environ.get("DJANGO_ENV_FILE", str(DEFAULT_ENV_FILE))
    if path and Path(path).is_file():
        environ.Env.read_env(path, overwrite=False)


class Env(environ.Env):
    """django-environ's ``Env`` with strict booleans and errors that name the variable.

    django-environ reads any unknown word as false for a boolean (``DEBUG=maybe`` would
    turn DEBUG off silently), lets ``int()``'s error through without the variable's name and
    reads ``$NAME`` as a reference to another variable; here the first two stop start-up
    with ``NAME must be ..., not 'value'`` and a value is taken as it is. An empty value
    counts as unset.
    """

    def _raw(self, var: str) -> str:
        return self.ENVIRON.get(var, "")

    def str(self, var, default=environ.Env.NOTSET, multiline=False):
        # The value as it is: django-environ would read a value starting with "$" as the name
        # of another variable, and a secret key or password may well start with one.
        value = self._raw(var)
        if not value:
            if default is self.NOTSET:
                raise SettingsError(f"{var} is not set.")
            return default
        return value

    def bool(self, var, default=environ.Env.NOTSET):
        raw = self._raw(var)
        if not raw:
            return self.str(var, default=default)  # the default, or "is not set"
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise SettingsError(f"{var} must be a boolean (true/false/1/0), not {raw!r}.")

    def int(self, var, default=environ.Env.NOTSET, *, minimum=None, what="a whole number"):
        raw = self._raw(var).strip()
        if not raw:
            value = self.str(var, default=default)
        elif re.fullmatch(r"[+-]?[0-9]+", raw):
            value = int(raw)
        else:
            raise SettingsError(f"{var} must be {what}, not {raw!r}.")
        if minimum is not None and value < minimum:
            raise SettingsError(f"{var} must be {what}, not {raw!r}.")
        return value

    def list(self, var, cast=None, default=environ.Env.NOTSET):
        """Comma-separated, blanks and surrounding spaces dropped."""
        raw = self._raw(var)
        if not raw:
            raw = self.str(var, default=default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def choice(self, var, choices, default=environ.Env.NOTSET):
        value = self.str(var, default=default)
        if value not in choices:
            raise SettingsError(f"{var} must be one of {', '.join(choices)}, not {value!r}.")
        return value

    def rate(self, var, default):
        """A DRF throttle rate such as ``5/min``."""
        value = self.str(var, default=default)
        if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
            raise SettingsError(f"{var} must be a rate such as 5/min or 100/hour, not {value!r}.")
        return value


env = Env()
