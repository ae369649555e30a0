"""mailer.core.logs: the masked address (pure), the two line formats, and a bad setting
refused in one line by the CLI. A worker's real logs: tests/test_logs.py."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mailer.core import logs
from mailer.core.config import load_settings
from mailer.core.errors import ConfigurationError
from tests.support.cli import assert_one_line_error, cli


@pytest.mark.parametrize("address, masked", [
    ("jane@example.com", "j***@example.com"),
    ("j@example.com", "j***@example.com"),
    ("first.last+tag@mail.example.co.uk", "f***@mail.example.co.uk"),
    ('"odd@local"@example.com', '"***@example.com'),
    ("no-at-sign", "***"),
    ("@example.com", "***"),
    ("jane@", "***"),
    ("", "***"),
])
def test_mask_address(address, masked):
    assert logs.mask_address(address) == masked


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _one_event(fmt: str, level: str = "INFO") -> str:
    out = io.StringIO()
    logs.configure(fmt=fmt, level=level, stream=out)
    log = logging.getLogger("mailer.test")
    logs.event(log, "message sent", campaign_id=7, delivery_id=42, recipient=logs.mask_address("jane@example.com"))
    logs.event(log, "message sent", level=logging.DEBUG, delivery_id=42, address="jane@example.com")
    return out.getvalue()


def test_text_is_the_default_one_line_with_fields(settings, restore_root):
    settings = load_settings()
    assert (settings.log_format, settings.log_level) == ("text", "INFO")
    written = _one_event(settings.log_format)
    assert written.count("\n") == 1
    assert written.rstrip().endswith("INFO mailer.test: message sent campaign_id=7 delivery_id=42 "
                                     "recipient=j***@example.com")
    with pytest.raises(ValueError):
        json.loads(written)
    assert "jane@example.com" not in written  # the DEBUG line is not written at INFO


def test_json_lines_and_debug(restore_root):
    written = _one_event("json", "DEBUG")
    first, second = (json.loads(line) for line in written.splitlines())
    assert first == {**first, "level": "INFO", "logger": "mailer.test", "message": "message sent", "campaign_id": 7,
                     "delivery_id": 42, "recipient": "j***@example.com"}
    assert second["level"] == "DEBUG" and second["address"] == "jane@example.com"


def test_a_traceback_stays_on_its_line(restore_root):
    for fmt in ("text", "json"):
        out = io.StringIO()
        logs.configure(fmt=fmt, stream=out)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("mailer.test").exception("it failed")
        assert out.getvalue().count("\n") == 1 and "boom" in out.getvalue()


def test_settings_are_case_blind_and_refuse_the_rest():
    assert load_settings(log_format="JSON", log_level="debug").log_format == "json"
    with pytest.raises(ConfigurationError, match="NEWSLETTER_LOG_FORMAT: Input should be 'text' or 'json'"):
        load_settings(log_format="xml")
    with pytest.raises(ConfigurationError, match="NEWSLETTER_LOG_LEVEL"):
        load_settings(log_level="loud")


@pytest.mark.parametrize("env, setting", [({"NEWSLETTER_LOG_FORMAT": "xml"}, "NEWSLETTER_LOG_FORMAT"),
                                          ({"NEWSLETTER_LOG_LEVEL": "chatty"}, "NEWSLETTER_LOG_LEVEL")])
def test_cli_refuses_a_bad_log_setting_in_one_line(settings, monkeypatch, env, setting):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert_one_line_error(cli("issue", "list"), setting)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_time_formatted_once_per_second_reads_as_loggings_own(fmt):
    """The formatters keep the date and time of the last second: each record's time still
    reads exactly as ``logging.Formatter`` writes it, milliseconds included, across
    seconds and back again."""
    ours, plain = logs.formatter(fmt), logging.Formatter()
    for created in (1764676800.0, 1764676800.999, 1764676801.0005, 1764676801.25, 1764676799.5, 1764676862.125):
        record = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        assert ours.formatTime(record) == plain.formatTime(record), created
