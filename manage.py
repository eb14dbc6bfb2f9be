#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

Reads the local .env that `make run` writes (config/env.py), so every command works locally
without setting a variable; a setting that is missing or malformed is one line, not a traceback.
"""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config.env import SettingsError, read_env_file

    read_env_file()
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings)
    except SettingsError as exc:
        sys.exit(f"Configuration error: {exc}")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
