"""Settings: embedded defaults, and one-line errors naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailer.core.config import DEFAULT_SECRET, load_settings
from mailer.core.errors import ConfigurationError


def test_embedded_defaults_need_no_server(tmp_path):
    s = load_settings(var_dir=tmp_path)
    assert s.database.startswith("sqlite:///") and s.database.endswith("newsletter.db")
    assert s.broker == "filesystem://"
    assert s.smtp_url is None and s.outbox_dir == tmp_path / "outbox"


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"database_url": "mysql://root@localhost/x"}, "NEWSLETTER_DATABASE_URL"),
        ({"broker_url": "amqp://guest@localhost//"}, "NEWSLETTER_BROKER_URL"),
        ({"smtp_url": "ftp://relay.example.com"}, "NEWSLETTER_SMTP_URL"),
        ({"smtp_url": "smtp://"}, "NEWSLETTER_SMTP_URL"),
        ({"base_url": "news.example.com"}, "NEWSLETTER_BASE_URL"),
        ({"env": "production", "secret_key": DEFAULT_SECRET}, "NEWSLETTER_SECRET_KEY"),
        ({"NEWSLETTER_FROM": "not an address"}, "NEWSLETTER_FROM"),
        ({"NEWSLETTER_FROM": "Evil <a@b.com>\r\nBcc: x@y.com"}, "NEWSLETTER_FROM"),
        ({"dkim_selector": "s1"}, "NEWSLETTER_DKIM"),
    ],
)
def test_bad_setting_names_itself_in_one_line(overrides, setting):
    with pytest.raises(ConfigurationError) as err:
        load_settings(**overrides)
    message = str(err.value)
    assert message.startswith(setting) and "\n" not in message


def test_production_accepts_a_real_secret():
    assert load_settings(env="production", secret_key="x" * 40).env == "production"


def run_cli(*args, env_extra=None, stdin=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "mailer.cli", *args], capture_output=True, text=True, env=env,
                          input=stdin, cwd=cwd, timeout=60)


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"NEWSLETTER_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"}, "NEWSLETTER_DATABASE_URL"),
        ({"NEWSLETTER_DATABASE_URL": "oracle://x"}, "NEWSLETTER_DATABASE_URL"),
        ({"NEWSLETTER_SMTP_URL": "gopher://relay"}, "NEWSLETTER_SMTP_URL"),
        ({"NEWSLETTER_ENV": "production"}, "NEWSLETTER_SECRET_KEY"),
    ],
)
def test_cli_stops_with_exit_2_and_one_line(tmp_path, env, setting):
    result = run_cli("db", "upgrade", env_extra={"NEWSLETTER_VAR_DIR": str(tmp_path), **env})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0] and "Traceback" not in result.stderr
