"""Settings, read once from ``NEWSLETTER_*`` environment variables (or a ``.env`` file).

Every setting has an embedded default so a fresh clone runs with no server at all:
SQLite under ``./var/``, Celery's filesystem broker under ``./var/``, and an outbox folder
of ``.eml`` files instead of an SMTP relay. Production points the same settings at
PostgreSQL, Redis and a relay.
"""

from __future__ import annotations

import functools
import sys
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailer.core.errors import ConfigurationError

DEFAULT_SECRET = "change-me-in-production"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What ships with the project (templates/, examples/): the checkout itself, or, for a
# regular install, <prefix>/share/newsletter (pyproject.toml's data-files).
SHIPPED = PROJECT_ROOT if (PROJECT_ROOT / "templates").is_dir() else Path(sys.prefix) / "share" / "newsletter"
SHIPPED_TEMPLATES = SHIPPED / "templates"

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
BROKER_SCHEMES = ("filesystem", "redis", "rediss", "memory")
SMTP_SCHEMES = ("smtp", "smtps", "smtp+starttls")
MAILBOX_SCHEMES = ("imap", "imaps", "imap+starttls", "pop3", "pop3s", "pop3+starttls")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = "development"
    var_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    smtp_url: str | None = None
    smtp_timeout: float = 30.0
    # How long /readyz and `newsletter status` wait for each service (mailer.health).
    health_timeout: float = Field(2.0, gt=0, le=30, description="seconds a readiness check waits per service")
    # Metrics (mailer.core.metrics): the folder every process writes its values into
    # (PROMETHEUS_MULTIPROC_DIR wins when set), and the bearer token /metrics asks for.
    metrics_dir: Path | None = None
    # Pre-flight scores the message with SpamAssassin when it is installed (~2.5 s a start).
    spamassassin: bool = True
    # The DNS server `newsletter doctor` asks (host or host:port); unset: the system's.
    dns_resolver: str | None = None
    metrics_token: str = ""
    # Logs (mailer.core.logs): one line per event, plain text or JSON objects.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    base_url: str = "http://localhost:8000"
    secret_key: str = DEFAULT_SECRET
    # Old secrets, comma separated: links signed with them keep working during rotation.
    old_secret_keys: str = ""
    from_: str = Field("Weekly Newsletter <news@example.com>", alias="NEWSLETTER_FROM")
    postal_address: str = "Example Media Ltd, 1 Example Street, 00000 Example City"
    templates_dir: Path | None = None
    # Every render warning (an image without alt text, a relative or http link, ...)
    # refuses the issue instead of being printed: for teams that want none to go out.
    strict_render: bool = False
    # Sending engine.
    batch_size: int = Field(200, ge=1, le=10_000)
    lease_seconds: int = Field(300, ge=5)
    max_attempts: int = Field(5, ge=1, le=50)
    retry_base_seconds: float = Field(30.0, ge=0)
    rate_limit: float = Field(0.0, ge=0, description="messages per second over all workers; 0 = none")
    domain_concurrency: int = Field(0, ge=0, description="connections per recipient domain; 0 = no cap")
    permanent_error_limit: int = Field(25, ge=1, description="permanent errors in a row that pause a campaign")
    # Tasks queued at once for one campaign: enough to keep every worker busy; an extra
    # task is harmless (it finds no batch to claim and ends).
    parallel_tasks: int = Field(8, ge=1, le=1000, description="send tasks queued at once per campaign")
    # SMTP connections one send task keeps open, each sending its own batch on its own
    # thread: a connection spends most of its time waiting for the relay's reply, so a
    # few per worker process keep both the relay and the process busy.
    smtp_connections: int = Field(2, ge=1, le=64, description="SMTP connections per send task (one batch each)")
    # Messages a connection marks, sends and then records together (mailer.sending): the
    # duplicate bound after a crash is this many per connection. One database round trip
    # per 8 messages instead of per message roughly doubles the PostgreSQL send rate
    # (bench/send.py); at the relay's pace a window goes out in tens of milliseconds.
    send_window: int = Field(8, ge=1, le=200, description="messages marked and recorded together per connection")
    sweep_seconds: float = Field(15.0, gt=0, description="how often beat hands out lost or expired work")
    # Outbound webhooks (mailer.hookdelivery): a short timeout, as an endpoint that hangs
    # holds a webhook worker for that long; then doubling waits, up to an hour apart.
    webhook_timeout: float = Field(5.0, gt=0, le=60, description="seconds a webhook endpoint has to answer")
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="attempts before a webhook delivery fails")
    webhook_retry_seconds: float = Field(30.0, ge=0, description="the first wait before a webhook is tried again")
    dispatch_seconds: float = Field(60.0, gt=0, description="how often beat starts due campaigns")
    missed_limit_hours: float = Field(6.0, ge=0, description="a campaign missed by more is held for the editor")
    # Clicks and opens (mailer.engagement): kept per delivery this long, then only counted.
    tracking_days: float = Field(30.0, gt=0, description="days a click or open is kept with its delivery")
    tracking_strict: bool = Field(False, description="keep only the counts of clicks and opens, from the start")
    # What comes back (mailer.bounces, mailer.operations.inbound).
    soft_bounce_limit: int = Field(3, ge=1, le=1000, description="transient bounces in the window that suppress")
    soft_bounce_days: float = Field(15.0, gt=0, description="the window of the soft-bounce limit")
    bounce_match_days: float = Field(30.0, gt=0, description="how far back a report's address finds its delivery")
    inbound_max_bytes: int = Field(262_144, ge=1024, description="raw bytes kept of an unprocessed message")
    # Domains the SMTP/LMTP listener takes mail for, comma separated; empty: the From domain.
    inbound_domains: str = ""
    bounce_mailbox: str | None = None  # imaps://user:password@host/INBOX or pop3s://...
    # Provider webhooks: each is refused (404) until its secret is set.
    ses_topic_arns: str = ""  # comma separated: SNS topics whose notifications are taken
    postmark_webhook_auth: str = ""  # "user:password" of the webhook URL's HTTP basic auth
    mailgun_signing_key: str = ""
    sendgrid_public_key: str = ""  # the "verification key" (base64 DER) or a PEM
    # The web app's request body limits (bytes): what anyone may post, and the editor's.
    max_public_body: int = Field(64 * 1024, ge=1024, description="largest body of a public request")
    max_editor_body: int = Field(200 * 1024 * 1024, ge=1024, description="largest body of an admin request")
    # DKIM: all three or none.
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: str | None = None  # a path to a PEM file, or the PEM itself
    # A second, Ed25519 signature (RFC 8463) next to the RSA one: its own selector and key.
    dkim_ed25519_selector: str | None = None
    dkim_ed25519_private_key: str | None = None

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, v: str) -> str:
        return _with_scheme(v, DATABASE_SCHEMES, "sqlite:/// or postgresql+psycopg://")

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _log_case(cls, v, info):
        if not isinstance(v, str):
            return v
        return v.strip().upper() if info.field_name == "log_level" else v.strip().lower()

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, v: str) -> str:
        return _with_scheme(v, BROKER_SCHEMES, "filesystem:// or redis://")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, v: str | None) -> str | None:
        if not v:
            return None
        parts = urlsplit(v)
        if parts.scheme not in SMTP_SCHEMES:
            raise ValueError(f"unknown scheme {parts.scheme!r}; use smtp://, smtps:// or smtp+starttls://")
        if not parts.hostname:
            raise ValueError("no host in the URL")
        return v

    @field_validator("bounce_mailbox")
    @classmethod
    def _mailbox_scheme(cls, v: str | None) -> str | None:
        if not v:
            return None
        parts = urlsplit(v)
        if parts.scheme not in MAILBOX_SCHEMES:
            raise ValueError(f"unknown scheme {parts.scheme!r}; use imaps://, imap://, imap+starttls://, pop3s://, "
                             "pop3:// or pop3+starttls://")
        if not parts.hostname or not parts.username:
            raise ValueError("give a user and a host: imaps://user:password@host/INBOX")
        return v

    @field_validator("postmark_webhook_auth")
    @classmethod
    def _basic_auth(cls, v: str) -> str:
        if v and ":" not in v:
            raise ValueError("write it as user:password")
        return v

    @field_validator("from_")
    @classmethod
    def _from_address(cls, v: str) -> str:
        name, addr = parseaddr(v)
        if "@" not in addr or "\n" in v or "\r" in v:
            raise ValueError(f"not an address: {v!r}")
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname:
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _production_rules(self) -> "Settings":
        if self.env != "development" and self.secret_key == DEFAULT_SECRET:
            raise ValueError("NEWSLETTER_SECRET_KEY: the default secret is refused outside development")
        dkim = [self.dkim_selector, self.dkim_domain, self.dkim_private_key]
        if any(dkim) and not all(dkim):
            raise ValueError(
                "NEWSLETTER_DKIM_SELECTOR, NEWSLETTER_DKIM_DOMAIN and NEWSLETTER_DKIM_PRIVATE_KEY go together"
            )
        ed = [self.dkim_ed25519_selector, self.dkim_ed25519_private_key]
        if any(ed) and not (all(ed) and all(dkim)):
            raise ValueError("NEWSLETTER_DKIM_ED25519_SELECTOR and NEWSLETTER_DKIM_ED25519_PRIVATE_KEY go together, "
                             "next to the RSA key (receivers still expect an RSA signature)")
        return self

    # Derived values: the embedded defaults live under var_dir.
    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'newsletter.db').as_posix()}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.var_dir / "broker"

    @property
    def metrics_folder(self) -> Path:
        return self.metrics_dir or self.var_dir / "metrics"

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """The secret that signs, then the old ones that still verify (key rotation)."""
        old = [k.strip() for k in self.old_secret_keys.split(",") if k.strip()]
        return (self.secret_key, *old)

    @property
    def inbound_domain_list(self) -> tuple[str, ...]:
        """The domains inbound mail is taken for: the bounce (VERP) domain, which is the
        From domain, and any others listed."""
        extra = [d.strip().lower() for d in self.inbound_domains.split(",") if d.strip()]
        return tuple(dict.fromkeys([self.sending_domain.lower(), *extra]))

    @property
    def ses_topics(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.ses_topic_arns.split(",") if t.strip())

    @property
    def from_address(self) -> Address:
        name, addr = parseaddr(self.from_)
        return Address(display_name=name, addr_spec=addr)

    @property
    def sending_domain(self) -> str:
        return self.from_address.domain

    @property
    def template_folders(self) -> list[Path]:
        """Operator overrides first, then the templates shipped with the project."""
        return [self.templates_dir, SHIPPED_TEMPLATES] if self.templates_dir else [SHIPPED_TEMPLATES]


def _with_scheme(url: str, schemes: tuple[str, ...], hint: str) -> str:
    if url and urlsplit(url).scheme not in schemes:
        raise ValueError(f"unknown scheme {urlsplit(url).scheme!r}; use {hint}")
    return url


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = first.get("loc") or ()
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if msg.startswith("NEWSLETTER_"):
        return msg
    field = str(loc[0]) if loc else ""
    name = "NEWSLETTER_FROM" if field in ("from_", "NEWSLETTER_FROM") else f"NEWSLETTER_{field.upper()}"
    return f"{name}: {msg}"


def load_settings(**overrides) -> Settings:
    """Read the settings, turning a validation error into a one-line ``ConfigurationError``
    that names the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigurationError(_one_line(err)) from err


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
