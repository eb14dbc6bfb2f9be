"""The local admin of `make run`: created once with a printed password, then left alone."""

import io
import re
import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from tests.processes import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture
def local(settings):
    settings.DEBUG = True


def ensure_local_admin(*args) -> str:
    out = io.StringIO()
    call_command("ensure_local_admin", *args, stdout=out)
    return out.getvalue()


def printed_password(output: str) -> str:
    match = re.search(r"username admin\s+password (\S+)", output)
    assert match, output
    return match.group(1)


def test_first_run_creates_a_superuser_with_the_printed_password(local, client):
    password = printed_password(ensure_local_admin())

    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert client.login(username="admin", password=password)


def test_later_runs_keep_the_password_and_its_sessions_and_say_how_to_reset(local, client):
    password = printed_password(ensure_local_admin())
    client.login(username="admin", password=password)

    output = ensure_local_admin()

    assert "exists" in output and "make admin-password" in output
    assert "password " not in output.replace("password is unchanged", "")
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert client.get("/admin/").status_code == 200  # still logged in


def test_a_password_the_user_chose_survives_later_runs(local):
    ensure_local_admin()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("my own choice 42")
    admin.save()

    ensure_local_admin()

    assert get_user_model().objects.get(username="admin").check_password("my own choice 42")


def test_reset_password_prints_a_new_one_that_works(local, client):
    old = printed_password(ensure_local_admin())

    new = printed_password(ensure_local_admin("--reset-password"))

    assert new != old
    assert client.login(username="admin", password=new)
    assert not client.login(username="admin", password=old)


def test_make_admin_password_resets_it():
    result = subprocess.run(
        ["make", "-n", "-f", str(ROOT / "Makefile"), "admin-password"], cwd=ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert "manage.py ensure_local_admin --reset-password" in result.stdout


def test_refused_outside_local_development(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="local development"):
        ensure_local_admin()
